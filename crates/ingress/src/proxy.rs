//! One request through the ingress: route by host and path, forward to a ready endpoint of
//! the backend (a random one first, the next ones on connection failure, up to
//! [`ATTEMPTS`]), add the `X-Forwarded-*` headers, splice WebSocket (and any other HTTP/1.1
//! `Upgrade`) connections through, answer 404 / 502 / 503 with a plain body that says why, and
//! write one access-log line.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand::Rng;

use crate::pool::{Pool, SendError};
use crate::routes::Table;

/// How many endpoints a request is tried on when connections fail.
pub const ATTEMPTS: usize = 3;

/// The response body type.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The body of the 404 for a request that no rule matches.
pub const NOT_FOUND: &str = "default backend - 404\n";

/// The body of the 503 for a backend without a ready endpoint, saying why.
pub fn unavailable(why: &str) -> String {
    format!("503 Service Unavailable: {why}\n")
}

/// Writes the access-log line of one request (target `ingress::access`), the same for the
/// HTTP/1 and HTTP/2 paths: client, request, status, who answered, time taken.
#[allow(clippy::too_many_arguments)]
pub fn log_access(
    client: IpAddr,
    method: &str,
    host: &str,
    path: &str,
    version: fmt::Arguments<'_>,
    status: u16,
    upstream: &dyn fmt::Display,
    start: Instant,
) {
    tracing::info!(
        target: "ingress::access",
        "{client} \"{method} {host}{path} {version}\" {status} {upstream} {:.1}ms",
        start.elapsed().as_secs_f64() * 1e3,
    );
}

/// What every request handler shares.
#[derive(Clone)]
pub struct Shared {
    /// The current routing table, replaced by the watch loop.
    pub table: Arc<RwLock<Arc<Table>>>,
    /// Backend connections of the HTTP/2 path.
    pub pool: Pool,
    /// Backend connections of the HTTP/1 fast path.
    pub backends: crate::http1::backends::Backends,
    /// How long the HTTP/1 fast path waits on clients and backends.
    pub timeouts: crate::http1::Timeouts,
}

/// The listener a request came in on.
#[derive(Clone, Copy)]
pub struct Listener {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The port it listens on (for `X-Forwarded-Port`).
    pub port: u16,
}

/// Handles one request from `client`.
pub async fn handle(
    shared: Shared,
    listener: Listener,
    client: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let start = Instant::now();
    let method = req.method().clone();
    let version = req.version();
    let host = request_host(&req);
    let path = req.uri().path().to_string();
    let table = shared.table.read().map(|t| t.clone()).ok();
    let backend = table.as_ref().and_then(|t| t.route(&host, &path)).cloned();
    let (resp, upstream) = match backend {
        None => (
            plain(StatusCode::NOT_FOUND, NOT_FOUND.into()),
            "-".to_string(),
        ),
        Some(backend) => match &backend.endpoints {
            Err(why) => (
                plain(StatusCode::SERVICE_UNAVAILABLE, unavailable(why)),
                backend.name.clone(),
            ),
            Ok(endpoints) => forward(&shared.pool, listener, client, &host, req, endpoints).await,
        },
    };
    log_access(
        client.ip(),
        method.as_str(),
        &host,
        &path,
        format_args!("{version:?}"),
        resp.status().as_u16(),
        &upstream,
        start,
    );
    Ok(resp)
}

/// Tries the endpoints, starting from a random one, until one takes the request.
async fn forward(
    pool: &Pool,
    listener: Listener,
    client: SocketAddr,
    host: &str,
    mut req: Request<Incoming>,
    endpoints: &[SocketAddr],
) -> (Response<Body>, String) {
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut req = match outgoing(req, listener, client, host, upgrade) {
        Ok(r) => r,
        Err(why) => return (plain(StatusCode::BAD_REQUEST, why), "-".into()),
    };
    let first = rand::rng().random_range(0..endpoints.len());
    let mut last_error = String::new();
    for i in 0..endpoints.len().min(ATTEMPTS) {
        let addr = endpoints[(first + i) % endpoints.len()];
        match pool.send(addr, req, upgrade).await {
            Ok(mut resp) => {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(client_side) = client_upgrade
                {
                    let backend_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(splice(client_side, backend_side, addr));
                    let (parts, _) = resp.into_parts();
                    return (Response::from_parts(parts, empty()), addr.to_string());
                }
                return (response(resp), addr.to_string());
            }
            Err(SendError::Connect(e, unsent)) => {
                tracing::debug!(%addr, "ingress: connecting to the backend failed: {e}");
                last_error = format!("{addr}: {e}");
                req = *unsent;
            }
            Err(SendError::Exchange(e)) => {
                return (
                    plain(
                        StatusCode::BAD_GATEWAY,
                        format!("502 Bad Gateway: {addr}: {e}\n"),
                    ),
                    addr.to_string(),
                );
            }
        }
    }
    (
        plain(
            StatusCode::BAD_GATEWAY,
            format!("502 Bad Gateway: no backend answered (last: {last_error})\n"),
        ),
        "-".into(),
    )
}

/// Copies bytes both ways between an upgraded client connection and the backend's.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    addr: SocketAddr,
) {
    match tokio::try_join!(client, backend) {
        Ok((c, b)) => {
            let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut b).await {
                tracing::debug!(%addr, "ingress: upgraded connection ended: {e}");
            }
        }
        Err(e) => tracing::debug!(%addr, "ingress: upgrade failed: {e}"),
    }
}

/// The request as the backend gets it: HTTP/1.1, origin-form URI, the client's Host, no
/// hop-by-hop headers (but `Connection: upgrade` + `Upgrade` for upgrades), `X-Forwarded-*`.
fn outgoing(
    req: Request<Incoming>,
    listener: Listener,
    client: SocketAddr,
    host: &str,
    upgrade: bool,
) -> Result<Request<Incoming>, String> {
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| header_str(&parts.headers, header::HOST).map(str::to_string))
        .unwrap_or_else(|| host.to_string());
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = path
        .parse::<Uri>()
        .map_err(|e| format!("400 Bad Request: {e}\n"))?;
    let upgrade_to = header_str(&parts.headers, header::UPGRADE).map(str::to_string);
    strip_hop_by_hop(&mut parts.headers);
    if upgrade && let Some(proto) = upgrade_to.and_then(|p| HeaderValue::from_str(&p).ok()) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto);
    }
    if parts.version == Version::HTTP_2 {
        // HTTP/2 cookies may come as several fields; HTTP/1.1 wants one.
        let cookies: Vec<String> = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        if cookies.len() > 1
            && let Ok(v) = HeaderValue::from_str(&cookies.join("; "))
        {
            parts.headers.insert(header::COOKIE, v);
        }
    }
    parts.version = Version::HTTP_11;
    if let Ok(v) = HeaderValue::from_str(&authority) {
        parts.headers.insert(header::HOST, v.clone());
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-host"), v);
    }
    let ip = client.ip().to_string();
    let xff = match header_str(&parts.headers, HeaderName::from_static("x-forwarded-for")) {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip.clone(),
    };
    let set = |h: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set(&mut parts.headers, "x-forwarded-for", xff);
    set(&mut parts.headers, "x-real-ip", ip);
    set(
        &mut parts.headers,
        "x-forwarded-proto",
        listener.scheme.to_string(),
    );
    set(
        &mut parts.headers,
        "x-forwarded-port",
        listener.port.to_string(),
    );
    Ok(Request::from_parts(parts, body))
}

/// The backend's response for the client, without hop-by-hop headers.
fn response(resp: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}

/// The hop-by-hop header fields (RFC 9110 §7.6.1 and the common non-standard ones), which a
/// proxy does not pass on.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1), including those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Whether the request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request's host, lowercase, without port or trailing dot: the URI's authority (HTTP/2,
/// absolute-form) or the Host header.
fn request_host(req: &Request<Incoming>) -> String {
    let raw = req
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| header_str(req.headers(), header::HOST).map(str::to_string))
        .unwrap_or_default();
    host_only(&raw)
}

/// `Example.COM:8080` → `example.com`; `[::1]:80` → `::1`.
pub(crate) fn host_only(raw: &str) -> String {
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        raw.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(raw, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// A plain-text answer of the ingress itself.
fn plain(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_port_case_and_trailing_dot() {
        assert_eq!(host_only("Example.COM:8080"), "example.com");
        assert_eq!(host_only("example.com."), "example.com");
        assert_eq!(host_only("[::1]:80"), "::1");
        assert_eq!(host_only("10.0.0.1"), "10.0.0.1");
        assert_eq!(host_only(""), "");
    }

    #[test]
    fn hop_by_hop_headers_go_with_those_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrades_need_both_headers() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(!is_upgrade(&h));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_upgrade(&h));
    }
}
