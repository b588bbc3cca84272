//! The agent's HTTPS endpoint (kubelet's port 10250), which the API server proxies
//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward` to:
//!
//! - TLS with the node's serving certificate; HTTP/1.1 (upgrades need it).
//! - Only the API server may call: a client certificate signed by the cluster CA whose CN is
//!   [`API_SERVER_CN`]. No certificate is a 401, another name a 403 (as `Status`); a
//!   certificate from another CA fails the handshake.
//! - `GET /containerLogs/{ns}/{pod}/{container}`: [`logs`].
//! - `/exec/{ns}/{pod}/{container}`, `/attach/{ns}/{pod}/{container}`,
//!   `/portForward/{ns}/{pod}`: [`streams`], proxied to the runtime; kubectl's WebSocket
//!   protocols that containerd lacks are translated ([`translate`], with [`websocket`] and
//!   [`spdy`]).
//! - `GET /healthz`: `ok`.
//!
//! Containers are found through CRI by their labels ([`resolve`]).

pub mod logs;
pub mod resolve;
pub mod spdy;
pub mod streams;
pub mod translate;
pub mod websocket;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::credentials::Credentials;
use crate::runtime::Cri;

/// The common name of the only client the endpoint serves: the API server's
/// `kube-apiserver-kubelet-client` certificate.
pub const API_SERVER_CN: &str = "kube-apiserver-kubelet-client";

/// A response body: buffered, streamed, or relayed from the runtime.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What request handlers share.
pub struct Ctx {
    /// The container runtime.
    pub cri: Cri,
    /// The API client (for pod status: `--previous` and waiting reasons).
    pub client: kube::Client,
}

/// The TLS configuration: the serving certificate, client certificates verified against the
/// cluster CA (requested; their absence is answered with a 401 by the handler).
pub fn tls_config(creds: &Credentials) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(creds.serving_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .context("serving certificate is unreadable")?;
    let key = PrivateKeyDer::from_pem_slice(creds.serving_key_pem.as_bytes())
        .context("serving key is unreadable")?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(creds.ca_pem.as_bytes()) {
        roots
            .add(ca.context("cluster CA is unreadable")?)
            .context("cluster CA is invalid")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("serving certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds the endpoint on all addresses at `port`.
pub async fn bind(port: u16) -> Result<TcpListener> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (the agent's port, --agent-port)"))
}

/// Serves connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Arc<Ctx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("agent endpoint: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "agent endpoint: TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let caller = Caller::of(tls.get_ref().1.peer_certificates());
            let service = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                let caller = caller.clone();
                async move { Ok::<_, Infallible>(handle(&ctx, &caller, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "agent endpoint: connection: {e}");
            }
        });
    }
}

/// Who is calling, from the connection's client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No certificate.
    Anonymous,
    /// A certificate of the cluster CA with this common name.
    Named(String),
}

impl Caller {
    fn of(chain: Option<&[CertificateDer<'_>]>) -> Self {
        use x509_parser::prelude::FromDer;
        let Some(leaf) = chain.and_then(|c| c.first()) else {
            return Self::Anonymous;
        };
        let cn = x509_parser::certificate::X509Certificate::from_der(leaf)
            .ok()
            .and_then(|(_, c)| {
                c.subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok().map(str::to_string))
            })
            .unwrap_or_default();
        Self::Named(cn)
    }
}

async fn handle(ctx: &Ctx, caller: &Caller, req: Request<Incoming>) -> Response<Body> {
    match caller {
        Caller::Named(cn) if cn == API_SERVER_CN => {}
        Caller::Anonymous => return status(401, "Unauthorized", "Unauthorized"),
        Caller::Named(cn) => {
            return status(
                403,
                "Forbidden",
                &format!("user \"{cn}\" is not allowed to use the node agent's endpoint"),
            );
        }
    }
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let result = match (segments.as_slice(), method.as_str()) {
        (["healthz"], "GET") => return text(200, "ok"),
        (["containerLogs", ns, pod, container], "GET") => {
            logs::serve(ctx, ns, pod, container, &query).await
        }
        (["exec", ns, pod, container], "GET" | "POST") => {
            streams::serve(ctx, streams::Kind::Exec, ns, pod, Some(container), req).await
        }
        (["attach", ns, pod, container], "GET" | "POST") => {
            streams::serve(ctx, streams::Kind::Attach, ns, pod, Some(container), req).await
        }
        (["portForward", ns, pod], "GET" | "POST") => {
            streams::serve(ctx, streams::Kind::PortForward, ns, pod, None, req).await
        }
        (
            [
                "containerLogs" | "exec" | "attach" | "portForward" | "healthz",
                ..,
            ],
            _,
        ) if !matches!(method.as_str(), "GET" | "POST") => Err(Error::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        )),
        _ => Err(Error::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    };
    result.unwrap_or_else(|e| status(e.code, e.reason, &e.message))
}

/// An error answered as a `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// HTTP status code.
    pub code: u16,
    /// The Status reason.
    pub reason: &'static str,
    /// The message, in upstream's words.
    pub message: String,
}

impl Error {
    /// An error with this code, reason and message.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "NotFound", message)
    }

    /// A 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }
}

/// A `Status` response.
pub fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    let mut resp = full(code, Bytes::from(body.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A plain-text response.
pub fn text(code: u16, body: &'static str) -> Response<Body> {
    let mut resp = full(code, Bytes::from_static(body.as_bytes()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn full(code: u16, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body).map_err(|e| match e {}).boxed_unsync());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp
}

/// The query's `key=value` pairs, form-decoded, in order.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
