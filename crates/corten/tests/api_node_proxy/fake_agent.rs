//! `FakeAgent`: a test-only HTTPS server that stands in for corten's node agent (crate
//! `kubelet`, being written in parallel) until the agent lands. It behaves as the agent must
//! towards the API server:
//! - it serves with the serving certificate the node obtained from
//!   `/corten/v1/node-credentials` (so the API server can verify it against the cluster CA);
//! - it requires a client certificate signed by the cluster CA whose CN is
//!   `kube-apiserver-kubelet-client`, and refuses any other peer;
//! - `GET /containerLogs/{ns}/{pod}/{container}` writes three lines, and with `follow=true`
//!   keeps writing a `tick N` line every 100 ms until the connection goes; the container
//!   `broken` answers 400 with a plain-text reason, as kubelet does;
//! - `/exec/...`, `/attach/...` and `/portForward/...` answer an upgrade with `101 Switching
//!   Protocols` (WebSocket: `Sec-WebSocket-Accept` and the first offered subprotocol; SPDY: the
//!   first `X-Stream-Protocol-Version`), then write one JSON line describing the request and
//!   echo every byte back, except for `exec` into the pod `shell` over WebSocket, which
//!   speaks just enough of `v5.channel.k8s.io` for `kubectl exec shell -- echo ...`: the
//!   arguments on stdout (channel 1), a `Success` Status on the error channel (3), a close.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::common::nodes::NodeCredentials;

/// The only client the agent serves: the API server.
const API_SERVER_CN: &str = "kube-apiserver-kubelet-client";

/// One request the fake agent served.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `POST`.
    pub method: String,
    /// Path and query as received.
    pub path_and_query: String,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    open_follows: AtomicUsize,
    refused_peers: AtomicUsize,
}

/// The stand-in agent; stops when dropped.
pub struct FakeAgent {
    /// The HTTPS port on 127.0.0.1.
    pub port: u16,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeAgent {
    /// Serves on a free port of 127.0.0.1 with the node's serving certificate.
    pub fn start(creds: &NodeCredentials) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let tls = tls_config(creds);
        let shared = Arc::new(Shared::default());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let s = shared.clone();
        runtime.spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, s) = (acceptor.clone(), s.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        s.refused_peers.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let cn = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| common_name(c));
                    if cn.as_deref() != Some(API_SERVER_CN) {
                        s.refused_peers.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let service = hyper::service::service_fn(move |req| handle(req, s.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakeAgent {
            port,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Every request served so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("lock").clone()
    }

    /// The path and query of the last request served.
    pub fn last(&self) -> String {
        self.seen()
            .last()
            .map(|s| s.path_and_query.clone())
            .unwrap_or_default()
    }

    /// How many `follow=true` log streams are open.
    pub fn open_follows(&self) -> usize {
        self.shared.open_follows.load(Ordering::SeqCst)
    }

    /// How many connections were refused (no or wrong client certificate).
    pub fn refused_peers(&self) -> usize {
        self.shared.refused_peers.load(Ordering::SeqCst)
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn tls_config(creds: &NodeCredentials) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(creds.ca_pem.as_bytes()).expect("CA"))
        .expect("CA root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let certs = CertificateDer::pem_slice_iter(creds.serving_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("serving cert");
    let key = PrivateKeyDer::from_pem_slice(creds.serving_key_pem.as_bytes()).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("serving cert and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

type Body = BoxBody<Bytes, Infallible>;

fn text(code: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Decrements the open-follow count when a follow stream is dropped.
struct FollowGuard(Arc<Shared>);

impl Drop for FollowGuard {
    fn drop(&mut self) {
        self.0.open_follows.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(mut req: Request<Incoming>, s: Arc<Shared>) -> Result<Response<Body>, Infallible> {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    s.seen.lock().expect("lock").push(Seen {
        method: req.method().to_string(),
        path_and_query: path_and_query.clone(),
    });
    let segments: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["containerLogs", _ns, pod, container] => {
            if *container == "broken" {
                return Ok(text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "container \"broken\" in pod \"{pod}\" is waiting to start: ContainerCreating"
                    ),
                ));
            }
            let lines: Vec<String> = (1..=3)
                .map(|i| format!("line {i} of {pod}/{container}\n"))
                .collect();
            let follow = req.uri().query().unwrap_or("").contains("follow=true");
            if !follow {
                return Ok(text(StatusCode::OK, lines.concat()));
            }
            s.open_follows.fetch_add(1, Ordering::SeqCst);
            let guard = FollowGuard(s.clone());
            let ticks = futures::stream::unfold((1u64, guard), |(n, guard)| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Bytes::from(format!("tick {n}\n")), (n + 1, guard)))
            });
            let stream = futures::StreamExt::map(
                futures::StreamExt::chain(
                    futures::stream::iter(lines.into_iter().map(Bytes::from)),
                    ticks,
                ),
                |b| Ok::<_, Infallible>(Frame::data(b)),
            );
            let mut r = Response::new(StreamBody::new(stream).boxed());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(r)
        }
        ["exec" | "attach", _, _, _] | ["portForward", _, _] => {
            Ok(upgrade(&mut req, path_and_query))
        }
        _ => Ok(text(StatusCode::NOT_FOUND, "404 page not found".into())),
    }
}

/// Answers an upgrade with 101, then describes the request in one JSON line and echoes.
fn upgrade(req: &mut Request<Incoming>, path_and_query: String) -> Response<Body> {
    let headers = req.headers().clone();
    let all = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    };
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if upgrade.is_empty()
        || !all("connection")
            .iter()
            .any(|c| c.eq_ignore_ascii_case("upgrade"))
    {
        return text(StatusCode::BAD_REQUEST, "Upgrade request required".into());
    }
    let mut resp = Response::new(Full::new(Bytes::new()).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::UPGRADE,
        HeaderValue::from_str(&upgrade).expect("upgrade"),
    );
    let stream_protocols = all("x-stream-protocol-version");
    let ws_protocols = all("sec-websocket-protocol");
    if upgrade.eq_ignore_ascii_case("websocket") {
        let key = headers
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        h.insert(
            "sec-websocket-accept",
            HeaderValue::from_str(&websocket_accept(key)).expect("accept"),
        );
        if let Some(p) = ws_protocols.first() {
            h.insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(p).expect("protocol"),
            );
        }
    } else if let Some(p) = stream_protocols.first() {
        h.insert(
            "x-stream-protocol-version",
            HeaderValue::from_str(p).expect("protocol"),
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut *req);
    let shell = path_and_query.starts_with("/exec/default/shell/")
        && upgrade.eq_ignore_ascii_case("websocket");
    if shell {
        let args: Vec<String> = url_pairs(req.uri().query().unwrap_or(""))
            .into_iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v)
            .collect();
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            run_echo(TokioIo::new(upgraded), &args).await;
        });
        return resp;
    }
    let description = serde_json::json!({
        "pathAndQuery": path_and_query,
        "streamProtocols": stream_protocols,
        "websocketProtocols": ws_protocols,
        "authorization": headers.get(header::AUTHORIZATION).is_some(),
    });
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let line = format!("{description}\n");
        if io.write_all(line.as_bytes()).await.is_err() {
            return;
        }
        let mut buf = [0u8; 4096];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = io.shutdown().await;
    });
    resp
}

/// Runs `echo ARGS...` for kubectl over `v5.channel.k8s.io`: one binary WebSocket message per
/// channel write (first byte: the channel), then a close.
async fn run_echo(mut io: TokioIo<hyper::upgrade::Upgraded>, args: &[String]) {
    let stdout = match args.split_first() {
        Some((cmd, rest)) if cmd == "echo" => format!("{}\n", rest.join(" ")),
        _ => format!("fake agent: cannot run {args:?}\n"),
    };
    let status = br#"{"metadata":{},"status":"Success"}"#;
    let mut out = ws_frame(0x2, &[&[1u8][..], stdout.as_bytes()].concat());
    out.extend(ws_frame(0x2, &[&[3u8][..], &status[..]].concat()));
    out.extend(ws_frame(0x8, &1000u16.to_be_bytes()));
    if io.write_all(&out).await.is_err() {
        return;
    }
    // The client answers the close (or goes); then the server closes the connection.
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await;
    let _ = io.shutdown().await;
}

/// An unmasked (server-to-client) WebSocket frame.
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// Decoded query pairs (`+` and `%XX`).
fn url_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = vec![];
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// RFC 6455's `Sec-WebSocket-Accept` for a key.
pub fn websocket_accept(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}
