//! `/exec/{ns}/{pod}/{container}`, `/attach/{ns}/{pod}/{container}` and
//! `/portForward/{ns}/{pod}`: the agent asks the runtime for a streaming session (CRI `Exec`,
//! `Attach`, `PortForward`), which answers with a URL on containerd's streaming server
//! (127.0.0.1, a random port), and proxies the client's upgrade request to that URL byte for
//! byte: the runtime's answer (`101 Switching Protocols` and its headers, or its error) goes
//! back as it is, then the two upgraded connections are spliced until either closes. This is
//! upstream kubelet's behaviour with `redirectContainerStreaming` off.
//!
//! containerd 1.6's streaming server speaks SPDY/3.1 (`channel.k8s.io`, `v2`-`v4`,
//! `portforward.k8s.io`) and WebSocket with the `channel.k8s.io` / `base64.channel.k8s.io`
//! families up to v4. kubectl v1.32 first asks for WebSocket with `v5.channel.k8s.io` (exec,
//! attach) or `SPDY/3.1+portforward.k8s.io` (port-forward), which containerd does not know; a
//! non-101 answer makes kubectl fall back to SPDY, so such a request is answered 400 with a
//! `Status` saying so before any runtime session is made. WebSocket requests offering
//! protocols containerd knows go through with only those offered.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::{Body, BoxError, Ctx, Error, query_pairs, resolve};
use crate::runtime::cri;

/// Which streaming request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Run a command in a container.
    Exec,
    /// Attach to a container's main process.
    Attach,
    /// Forward ports of the pod's network namespace.
    PortForward,
}

impl Kind {
    /// The WebSocket subprotocols containerd's streaming server accepts for this kind.
    pub fn websocket_protocols(self) -> &'static [&'static str] {
        match self {
            Self::Exec | Self::Attach => &[
                "v4.channel.k8s.io",
                "v4.base64.channel.k8s.io",
                "channel.k8s.io",
                "base64.channel.k8s.io",
            ],
            Self::PortForward => &["v4.channel.k8s.io", "v4.base64.channel.k8s.io"],
        }
    }
}

/// The stdio options of exec and attach (upstream's `remotecommand.NewOptions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StdioOptions {
    /// Attach stdin.
    pub stdin: bool,
    /// Attach stdout.
    pub stdout: bool,
    /// Attach stderr (never with a TTY, which merges it into stdout).
    pub stderr: bool,
    /// Allocate a TTY.
    pub tty: bool,
}

impl StdioOptions {
    /// Reads `input`, `output`, `error` and `tty` (`1` is on).
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, Error> {
        let on = |key: &str| pairs.iter().any(|(k, v)| k == key && v == "1");
        let tty = on("tty");
        let o = Self {
            stdin: on("input"),
            stdout: on("output"),
            stderr: on("error") && !tty,
            tty,
        };
        if !o.stdin && !o.stdout && !o.stderr {
            return Err(Error::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        Ok(o)
    }
}

/// How the client asks to upgrade.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// `Upgrade: SPDY/3.1`.
    Spdy,
    /// `Upgrade: websocket` with these subprotocols offered (in order).
    WebSocket(Vec<String>),
}

impl Upgrade {
    /// The upgrade a request asks for; a 400 when it asks for none.
    pub fn of(headers: &HeaderMap) -> Result<Self, Error> {
        let upgrade = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if upgrade.eq_ignore_ascii_case("websocket") {
            let protocols = headers
                .get_all(header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect();
            return Ok(Self::WebSocket(protocols));
        }
        if upgrade.to_ascii_lowercase().starts_with("spdy/") {
            return Ok(Self::Spdy);
        }
        Err(Error::bad_request("Upgrade request required"))
    }
}

/// What the `Sec-WebSocket-Protocol` header sent to the runtime should say: `Ok(None)` to
/// leave it as it is, `Ok(Some(list))` to offer only the protocols the runtime knows, and an
/// error when the client offered none of them.
pub fn runtime_protocols(kind: Kind, offered: &[String]) -> Result<Option<String>, Error> {
    if offered.is_empty() {
        return Ok(None);
    }
    let known: Vec<&str> = offered
        .iter()
        .map(String::as_str)
        .filter(|p| kind.websocket_protocols().contains(p))
        .collect();
    if known.is_empty() {
        return Err(Error::bad_request(format!(
            "the container runtime's streaming server does not support the WebSocket \
             protocol(s) [{}]; it supports [{}] over WebSocket, and SPDY/3.1 (clients such as \
             kubectl fall back to SPDY)",
            offered.join(", "),
            kind.websocket_protocols().join(", ")
        )));
    }
    Ok(Some(known.join(", ")))
}

/// Serves one exec, attach or port-forward request.
pub async fn serve(
    ctx: &Ctx,
    kind: Kind,
    ns: &str,
    pod: &str,
    container: Option<&str>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    let upgrade = Upgrade::of(req.headers())?;
    let protocols = match &upgrade {
        Upgrade::WebSocket(offered) => runtime_protocols(kind, offered)?,
        Upgrade::Spdy => None,
    };
    let pairs = query_pairs(req.uri().query().unwrap_or(""));
    let mut rt = ctx.cri.runtime.clone();
    let url = match kind {
        Kind::Exec => {
            let stdio = StdioOptions::parse(&pairs)?;
            let cmd: Vec<String> = pairs
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect();
            if cmd.is_empty() {
                return Err(Error::bad_request(
                    "you must specify at least one command for the container",
                ));
            }
            let name = container.unwrap_or_default();
            let c = resolve::running_container(&ctx.cri, ns, pod, name).await?;
            rt.exec(cri::ExecRequest {
                container_id: c.id,
                cmd,
                tty: stdio.tty,
                stdin: stdio.stdin,
                stdout: stdio.stdout,
                stderr: stdio.stderr,
            })
            .await
            .map_err(runtime_error)?
            .into_inner()
            .url
        }
        Kind::Attach => {
            let stdio = StdioOptions::parse(&pairs)?;
            let name = container.unwrap_or_default();
            let c = resolve::running_container(&ctx.cri, ns, pod, name).await?;
            rt.attach(cri::AttachRequest {
                container_id: c.id,
                stdin: stdio.stdin,
                tty: stdio.tty,
                stdout: stdio.stdout,
                stderr: stdio.stderr,
            })
            .await
            .map_err(runtime_error)?
            .into_inner()
            .url
        }
        Kind::PortForward => {
            let mut ports = vec![];
            for (_, v) in pairs.iter().filter(|(k, _)| k == "port") {
                for p in v.split(',').filter(|p| !p.is_empty()) {
                    ports.push(
                        p.trim()
                            .parse::<i32>()
                            .map_err(|_| Error::bad_request(format!("invalid port {p:?}")))?,
                    );
                }
            }
            let sandbox = resolve::ready_sandbox(&ctx.cri, ns, pod).await?;
            rt.port_forward(cri::PortForwardRequest {
                pod_sandbox_id: sandbox.id,
                port: ports,
            })
            .await
            .map_err(runtime_error)?
            .into_inner()
            .url
        }
    };
    proxy(req, &url, protocols).await
}

fn runtime_error(s: tonic::Status) -> Error {
    match s.code() {
        tonic::Code::NotFound => Error::not_found(s.message()),
        tonic::Code::InvalidArgument => Error::bad_request(s.message()),
        _ => Error::internal(s.message()),
    }
}

/// Request headers not sent to the runtime: this hop's framing and host.
fn hop_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "content-length" | "transfer-encoding" | "te" | "trailer" | "keep-alive"
    )
}

/// Forwards `req` to the runtime's streaming `url` and, on `101`, splices the connections.
async fn proxy(
    mut req: Request<Incoming>,
    url: &str,
    protocols: Option<String>,
) -> Result<Response<Body>, Error> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::internal(format!("the runtime's streaming URL {url:?}: {e}")))?;
    let authority = uri
        .authority()
        .ok_or_else(|| Error::internal(format!("the runtime's streaming URL {url:?} has no host")))?
        .clone();
    let addr: SocketAddr = match authority.port_u16() {
        Some(_) => authority.as_str().parse(),
        None => format!("{}:80", authority.host()).parse(),
    }
    .map_err(|e| Error::internal(format!("the runtime's streaming address {authority}: {e}")))?;
    let client_upgrade = hyper::upgrade::on(&mut req);
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| Error::internal(format!("dial {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| {
            Error::internal(format!("connecting to the runtime's streaming server: {e}"))
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("runtime streaming connection: {e}");
        }
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Request::builder()
        .method(req.method().clone())
        .uri(path)
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::internal(format!("building the runtime request: {e}")))?;
    for (name, value) in req.headers() {
        if !hop_header(name) {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    if let Some(p) = protocols
        && let Ok(v) = HeaderValue::from_str(&p)
    {
        out.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
        out.headers_mut().insert(header::HOST, v);
    }
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| Error::internal(format!("the runtime's streaming server: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (head, body) = resp.into_parts();
        let mut relayed = Response::new(body.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
        *relayed.status_mut() = head.status;
        for (name, value) in &head.headers {
            if !hop_header(name) && !matches!(name.as_str(), "connection" | "upgrade") {
                relayed.headers_mut().append(name.clone(), value.clone());
            }
        }
        return Ok(relayed);
    }
    let runtime_upgrade = hyper::upgrade::on(&mut resp);
    let mut switching = Response::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync());
    *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *switching.headers_mut() = resp.headers().clone();
    let what = path.to_string();
    tokio::spawn(async move {
        let (client, runtime) = match tokio::try_join!(client_upgrade, runtime_upgrade) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%what, "upgrade failed: {e}");
                return;
            }
        };
        let (mut client, mut runtime) = (TokioIo::new(client), TokioIo::new(runtime));
        match tokio::io::copy_bidirectional(&mut client, &mut runtime).await {
            Ok((up, down)) => tracing::debug!(%what, up, down, "stream closed"),
            Err(e) => tracing::debug!(%what, "stream ended: {e}"),
        }
    });
    Ok(switching)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        query_pairs(q)
    }

    #[test]
    fn stdio_options_follow_upstream() {
        let o = StdioOptions::parse(&pairs("input=1&output=1&error=1&tty=1")).unwrap();
        assert_eq!(
            o,
            StdioOptions {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            }
        );
        let o = StdioOptions::parse(&pairs("output=1&error=1")).unwrap();
        assert!(o.stdout && o.stderr && !o.stdin && !o.tty);
        assert_eq!(
            StdioOptions::parse(&pairs("output=true")).unwrap_err().code,
            400
        );
    }

    #[test]
    fn websocket_protocols_containerd_cannot_serve_are_refused() {
        let v5 = vec!["v5.channel.k8s.io".to_string()];
        let e = runtime_protocols(Kind::Exec, &v5).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("v5.channel.k8s.io"), "{}", e.message);
        let tunnel = vec!["SPDY/3.1+portforward.k8s.io".to_string()];
        assert!(runtime_protocols(Kind::PortForward, &tunnel).is_err());
        let both = vec![
            "v5.channel.k8s.io".to_string(),
            "v4.channel.k8s.io".to_string(),
        ];
        assert_eq!(
            runtime_protocols(Kind::Exec, &both).unwrap().as_deref(),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(runtime_protocols(Kind::Attach, &[]).unwrap(), None);
    }

    #[test]
    fn upgrades_are_recognised() {
        let mut h = HeaderMap::new();
        assert_eq!(Upgrade::of(&h).unwrap_err().code, 400);
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert_eq!(Upgrade::of(&h).unwrap(), Upgrade::Spdy);
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
        );
        assert_eq!(
            Upgrade::of(&h).unwrap(),
            Upgrade::WebSocket(vec!["v5.channel.k8s.io".into(), "v4.channel.k8s.io".into()])
        );
    }
}
