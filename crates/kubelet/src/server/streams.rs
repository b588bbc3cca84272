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
//! attach) or `SPDY/3.1+portforward.k8s.io` (port-forward), which containerd does not know:
//! the agent serves those itself ([`super::translate`]). Other WebSocket requests go through
//! with only the protocols containerd knows offered; one offering none of them is a 400 (a
//! non-101 answer makes kubectl fall back to SPDY), answered before any runtime session is
//! made ([`plan`]).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::{Body, BoxError, Ctx, Error, query_pairs, resolve, translate};
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

    /// Every WebSocket subprotocol the agent serves for this kind.
    pub fn served_protocols(self) -> Vec<&'static str> {
        let own = match self {
            Self::Exec | Self::Attach => translate::V5,
            Self::PortForward => translate::PORT_FORWARD_TUNNEL,
        };
        std::iter::once(own)
            .chain(self.websocket_protocols().iter().copied())
            .collect()
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

/// How a request is served.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Proxied to the runtime byte for byte; `Some(list)` rewrites `Sec-WebSocket-Protocol` to
    /// the protocols the runtime knows.
    Proxy(Option<String>),
    /// WebSocket `v5.channel.k8s.io`, translated to SPDY by the agent.
    TranslateV5,
    /// WebSocket carrying SPDY port-forwarding, unwrapped by the agent.
    Tunnel,
}

/// How to serve a request of `kind` that asks for `upgrade`. kubectl's own protocols come
/// first (translated); other WebSocket protocols the runtime knows are proxied; a WebSocket
/// request offering neither is a 400.
pub fn plan(kind: Kind, upgrade: &Upgrade) -> Result<Plan, Error> {
    let offered = match upgrade {
        Upgrade::Spdy => return Ok(Plan::Proxy(None)),
        Upgrade::WebSocket(offered) if offered.is_empty() => return Ok(Plan::Proxy(None)),
        Upgrade::WebSocket(offered) => offered,
    };
    let has = |p: &str| offered.iter().any(|o| o == p);
    match kind {
        Kind::Exec | Kind::Attach if has(translate::V5) => return Ok(Plan::TranslateV5),
        Kind::PortForward if has(translate::PORT_FORWARD_TUNNEL) => return Ok(Plan::Tunnel),
        _ => {}
    }
    let known: Vec<&str> = offered
        .iter()
        .map(String::as_str)
        .filter(|p| kind.websocket_protocols().contains(p))
        .collect();
    if known.is_empty() {
        return Err(Error::bad_request(format!(
            "unsupported WebSocket protocol(s) [{}]: the node agent serves [{}] for this \
             request over WebSocket, and SPDY/3.1",
            offered.join(", "),
            kind.served_protocols().join(", ")
        )));
    }
    Ok(Plan::Proxy(Some(known.join(", "))))
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
    let plan = plan(kind, &Upgrade::of(req.headers())?)?;
    let pairs = query_pairs(req.uri().query().unwrap_or(""));
    let mut rt = ctx.cri.runtime.clone();
    let mut stdio = StdioOptions::default();
    let url = match kind {
        Kind::Exec => {
            stdio = StdioOptions::parse(&pairs)?;
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
            stdio = StdioOptions::parse(&pairs)?;
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
    match plan {
        Plan::Proxy(protocols) => proxy(req, &url, protocols).await,
        Plan::TranslateV5 => translate::exec_v5(req, &url, stdio).await,
        Plan::Tunnel => translate::port_forward_tunnel(req, &url).await,
    }
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

/// A connection to the runtime's streaming server for `url`: the request sender, the path
/// (and query) to ask for, and the `Host` to name.
pub struct RuntimeConn {
    /// Sends the one request (the connection's driver runs with upgrades on).
    pub sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    /// The URL's path and query.
    pub path: String,
    /// The URL's authority.
    pub authority: String,
}

/// Dials the runtime's streaming server at `url` (plain HTTP on loopback).
pub async fn dial(url: &str) -> Result<RuntimeConn, Error> {
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
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| Error::internal(format!("dial {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| {
            Error::internal(format!("connecting to the runtime's streaming server: {e}"))
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("runtime streaming connection: {e}");
        }
    });
    Ok(RuntimeConn {
        sender,
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        authority: authority.to_string(),
    })
}

/// Forwards `req` to the runtime's streaming `url` and, on `101`, splices the connections.
async fn proxy(
    mut req: Request<Incoming>,
    url: &str,
    protocols: Option<String>,
) -> Result<Response<Body>, Error> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let RuntimeConn {
        mut sender,
        path,
        authority,
    } = dial(url).await?;
    let mut out = Request::builder()
        .method(req.method().clone())
        .uri(path.as_str())
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
    if let Ok(v) = HeaderValue::from_str(&authority) {
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
    let what = path;
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
    fn kubectls_protocols_are_translated_and_others_proxied_or_refused() {
        let ws = |p: &[&str]| Upgrade::WebSocket(p.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            plan(Kind::Exec, &ws(&["v5.channel.k8s.io"])).unwrap(),
            Plan::TranslateV5
        );
        assert_eq!(
            plan(Kind::PortForward, &ws(&["SPDY/3.1+portforward.k8s.io"])).unwrap(),
            Plan::Tunnel
        );
        assert_eq!(
            plan(Kind::Attach, &ws(&["v4.channel.k8s.io", "x"])).unwrap(),
            Plan::Proxy(Some("v4.channel.k8s.io".into()))
        );
        assert_eq!(plan(Kind::Exec, &ws(&[])).unwrap(), Plan::Proxy(None));
        assert_eq!(plan(Kind::Exec, &Upgrade::Spdy).unwrap(), Plan::Proxy(None));
        let e = plan(Kind::PortForward, &ws(&["v5.channel.k8s.io"])).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message.contains("SPDY/3.1+portforward.k8s.io"),
            "{}",
            e.message
        );
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
