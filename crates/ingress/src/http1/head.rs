//! HTTP/1.x message heads on the ingress's fast path: a client's request head parsed (with
//! `httparse`) and rewritten for the backend in one pass, a backend's response head parsed and
//! rewritten for the client. Pure: bytes in, bytes and facts out.
//!
//! What the rewriting does, as nginx's `proxy_pass` with the headers of `bench-ingress.sh`:
//! the request goes out as HTTP/1.1 in origin form with the client's Host; hop-by-hop headers
//! (RFC 9110 §7.6.1, and those `Connection` names) are dropped both ways; `X-Forwarded-For`
//! gets the client's address appended, `X-Real-IP`, `X-Forwarded-Host`, `-Proto` and `-Port`
//! are set; `Expect: 100-continue` is answered by the ingress itself (as nginx does), so it is
//! not forwarded. Bodies keep their framing (`Content-Length` or chunked); a request with both
//! is refused (request smuggling), as is a transfer coding other than chunked.

use std::net::SocketAddr;

use super::body::Framing;
use crate::proxy::{HOP_BY_HOP, Listener, host_only};

/// Most header fields in one head.
const MAX_HEADERS: usize = 100;

/// A request head that cannot be served, with the status to answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 405, 417, 431 or 501.
    pub status: u16,
    /// Why, for the plain-text body.
    pub why: String,
}

fn refuse(status: u16, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        why: why.into(),
    }
}

/// A client's request, parsed.
#[derive(Debug)]
pub struct Request {
    /// Bytes of the head in the client's buffer.
    pub len: usize,
    /// The method (`GET`).
    pub method: String,
    /// The request target as sent to the backend (origin form: path and query).
    pub target: String,
    /// The host, lowercase, without port (what routing matches).
    pub host: String,
    /// HTTP/1.0 (`false`) or HTTP/1.1 (`true`).
    pub http11: bool,
    /// Whether the client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// The request body's framing.
    pub body: Framing,
    /// `Expect: 100-continue` was asked.
    pub expect_continue: bool,
    /// The protocol of an `Upgrade` request (`websocket`).
    pub upgrade: Option<String>,
    /// The head to send to the backend.
    pub outgoing: Vec<u8>,
}

impl Request {
    /// The path, without the query (what routing matches).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("/")
    }

    /// `HTTP/1.0` or `HTTP/1.1`.
    pub fn version(&self) -> &'static str {
        if self.http11 { "HTTP/1.1" } else { "HTTP/1.0" }
    }

    /// Whether the request has a body.
    pub fn has_body(&self) -> bool {
        self.body != Framing::Length(0) && self.body != Framing::None
    }
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is incomplete.
pub fn request(
    buf: &[u8],
    client: SocketAddr,
    listener: Listener,
) -> Result<Option<Request>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(431, "too many header fields"));
        }
        Err(e) => return Err(refuse(400, format!("malformed request: {e}"))),
    };
    let method = req.method.unwrap_or("GET");
    let raw_target = req.path.unwrap_or("/");
    let http11 = req.version == Some(1);
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err(refuse(405, "CONNECT is not proxied"));
    }
    // Absolute form (`GET http://host/path`): its authority is the host.
    let (mut authority, target) = match raw_target.split_once("://") {
        Some((_, rest)) if !raw_target.starts_with('/') => {
            let (auth, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            let path = if path.starts_with('/') {
                path.to_string()
            } else {
                format!("/{path}")
            };
            (Some(auth.to_string()), path)
        }
        _ if raw_target.starts_with('/') || raw_target == "*" => (None, raw_target.to_string()),
        _ => return Err(refuse(400, format!("bad request target {raw_target:?}"))),
    };

    // First pass: what the hop-by-hop and framing headers say.
    let mut facts = Facts::default();
    for h in req.headers.iter() {
        facts.note(h)?;
    }
    if authority.is_none() {
        authority = facts.host.take();
    }
    if authority.is_none() && http11 {
        return Err(refuse(400, "an HTTP/1.1 request needs a Host header"));
    }
    let authority = authority.unwrap_or_default();
    let body = match (facts.chunked, facts.content_length) {
        (true, Some(_)) => {
            return Err(refuse(400, "both Content-Length and Transfer-Encoding"));
        }
        (true, None) if !http11 => {
            return Err(refuse(400, "Transfer-Encoding in an HTTP/1.0 request"));
        }
        (true, None) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::Length(0),
    };
    let keep_alive = if http11 {
        !facts.close
    } else {
        facts.keep_alive
    };
    let upgrade = facts
        .upgrade
        .clone()
        .filter(|_| facts.connection_upgrade && http11);

    // Second pass: the head for the backend.
    let mut out = Vec::with_capacity(len + 256);
    for part in [method, " ", &target, " HTTP/1.1\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    for h in req.headers.iter() {
        if dropped_from_request(h.name) || facts.named_by_connection(h.name) {
            continue;
        }
        push_header(&mut out, h.name, h.value);
    }
    if !authority.is_empty() {
        push_header(&mut out, "Host", authority.as_bytes());
        push_header(&mut out, "X-Forwarded-Host", authority.as_bytes());
    }
    let ip = client.ip().to_string();
    match facts.forwarded_for {
        Some(mut prior) => {
            prior.extend_from_slice(b", ");
            prior.extend_from_slice(ip.as_bytes());
            push_header(&mut out, "X-Forwarded-For", &prior);
        }
        None => push_header(&mut out, "X-Forwarded-For", ip.as_bytes()),
    }
    push_header(&mut out, "X-Real-IP", ip.as_bytes());
    push_header(&mut out, "X-Forwarded-Proto", listener.scheme.as_bytes());
    push_header(
        &mut out,
        "X-Forwarded-Port",
        listener.port.to_string().as_bytes(),
    );
    if let Some(proto) = &upgrade {
        push_header(&mut out, "Connection", b"upgrade");
        push_header(&mut out, "Upgrade", proto.as_bytes());
    }
    match body {
        Framing::Chunked => push_header(&mut out, "Transfer-Encoding", b"chunked"),
        Framing::Length(n) if facts.content_length.is_some() => {
            push_header(&mut out, "Content-Length", n.to_string().as_bytes());
        }
        _ => {}
    }
    out.extend_from_slice(b"\r\n");

    Ok(Some(Request {
        len,
        method: method.to_string(),
        host: host_only(&authority),
        target,
        http11,
        keep_alive,
        body,
        expect_continue: facts.expect_continue,
        upgrade,
        outgoing: out,
    }))
}

/// A backend's response head, parsed and rewritten for the client.
#[derive(Debug)]
pub struct Response {
    /// Bytes of the head in the backend's buffer.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// The response body's framing as the backend sends it.
    pub body: Framing,
    /// Whether the backend connection can take another request after this response.
    pub reusable: bool,
    /// The head for the client, without its final blank line (the caller adds the
    /// connection headers it decides on, then `\r\n`).
    pub outgoing: Vec<u8>,
}

/// Parses the response head at the start of `buf` (`Ok(None)` while incomplete) to the
/// request `req`; `Err` says why the backend's answer is not HTTP.
pub fn response(buf: &[u8], req: &Request) -> Result<Option<Response>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response from the backend: {e}")),
    };
    let status = resp.code.unwrap_or(502);
    let mut facts = Facts::default();
    for h in resp.headers.iter() {
        facts.note(h).map_err(|r| r.why)?;
    }
    let no_body = req.method == "HEAD" || status < 200 || status == 204 || status == 304;
    let body = if no_body {
        Framing::None
    } else if facts.chunked {
        Framing::Chunked
    } else if let Some(n) = facts.content_length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    // Both lengths is a smuggling shape (RFC 9112 §6.3): relayed as chunked, then closed.
    let reusable = body != Framing::Close
        && status != 101
        && !(facts.chunked && facts.content_length.is_some())
        && if resp.version == Some(1) {
            !facts.close
        } else {
            facts.keep_alive
        };
    let mut out = Vec::with_capacity(len + 64);
    out.extend_from_slice(format!("HTTP/1.1 {status} ").as_bytes());
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        if is_hop_by_hop(h.name)
            || facts.named_by_connection(h.name)
            || h.name.eq_ignore_ascii_case("content-length")
        {
            continue;
        }
        push_header(&mut out, h.name, h.value);
    }
    // The length as the backend gave it (a HEAD or 304 answer keeps the GET's), unless the
    // body is chunked.
    if let Some(n) = facts.content_length.filter(|_| !facts.chunked) {
        push_header(&mut out, "Content-Length", n.to_string().as_bytes());
    }
    if status == 101
        && let Some(proto) = &facts.upgrade
    {
        push_header(&mut out, "Connection", b"upgrade");
        push_header(&mut out, "Upgrade", proto.as_bytes());
    }
    Ok(Some(Response {
        len,
        status,
        body,
        reusable,
        outgoing: out,
    }))
}

/// What a head's hop-by-hop and framing headers say.
#[derive(Default)]
struct Facts {
    /// Lowercase tokens of `Connection` other than close/keep-alive/upgrade.
    connection_names: Vec<String>,
    close: bool,
    keep_alive: bool,
    connection_upgrade: bool,
    upgrade: Option<String>,
    host: Option<String>,
    content_length: Option<u64>,
    chunked: bool,
    expect_continue: bool,
    forwarded_for: Option<Vec<u8>>,
}

impl Facts {
    fn note(&mut self, h: &httparse::Header<'_>) -> Result<(), Refusal> {
        let name = h.name;
        let text = || String::from_utf8_lossy(h.value);
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("proxy-connection")
        {
            for token in text().split(',').map(|t| t.trim().to_ascii_lowercase()) {
                match token.as_str() {
                    "close" => self.close = true,
                    "keep-alive" => self.keep_alive = true,
                    "upgrade" => self.connection_upgrade = true,
                    "" => {}
                    _ => self.connection_names.push(token),
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            self.upgrade = Some(text().trim().to_string());
        } else if name.eq_ignore_ascii_case("host") {
            if self.host.is_some() {
                return Err(refuse(400, "more than one Host header"));
            }
            self.host = Some(text().trim().to_string());
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| refuse(400, format!("bad Content-Length {:?}", text())))?;
            if self.content_length.is_some_and(|m| m != n) {
                return Err(refuse(400, "conflicting Content-Length headers"));
            }
            self.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let value = text();
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") || value.contains(',') {
                return Err(refuse(
                    501,
                    format!("transfer coding {:?} is not supported", value.trim()),
                ));
            }
            self.chunked = true;
        } else if name.eq_ignore_ascii_case("expect") {
            if text().trim().eq_ignore_ascii_case("100-continue") {
                self.expect_continue = true;
            } else {
                return Err(refuse(417, format!("unsupported expectation {:?}", text())));
            }
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            let prior = self.forwarded_for.get_or_insert_with(Vec::new);
            if !prior.is_empty() {
                prior.extend_from_slice(b", ");
            }
            prior.extend_from_slice(h.value);
        }
        Ok(())
    }

    /// Whether `Connection` names `name` (so it goes). The framing headers are written from
    /// the parsed framing, so naming them changes nothing.
    fn named_by_connection(&self, name: &str) -> bool {
        self.connection_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }
}

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Request headers not passed on as they came: hop-by-hop ones, and those the ingress sets
/// (the framing ones included, so that nothing can drop or double them).
fn dropped_from_request(name: &str) -> bool {
    is_hop_by_hop(name)
        || [
            "host",
            "content-length",
            "expect",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-proto",
            "x-forwarded-port",
            "x-real-ip",
        ]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTENER: Listener = Listener {
        scheme: "http",
        port: 80,
    };

    fn client() -> SocketAddr {
        "10.0.0.9:5555".parse().unwrap()
    }

    /// Parses `raw`, given a Host header after the request line if it has none.
    fn parse(raw: &str) -> Result<Option<Request>, Refusal> {
        let with_host;
        let raw = if raw.to_ascii_lowercase().contains("\r\nhost:") || raw.contains("://") {
            raw
        } else {
            let (line, rest) = raw.split_once("\r\n").unwrap_or((raw, ""));
            with_host = format!("{line}\r\nHost: t\r\n{rest}");
            &with_host
        };
        request(raw.as_bytes(), client(), LISTENER)
    }

    fn text(out: &[u8]) -> String {
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn request_is_rewritten_for_the_backend() {
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: Shop.Example:8080\r\nConnection: keep-alive, x-secret\r\n\
                   X-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 1.2.3.4\r\n\
                   X-Forwarded-Proto: https\r\nAccept: */*\r\n\r\nrest";
        let r = parse(raw).unwrap().unwrap();
        assert_eq!(r.len, raw.len() - 4);
        assert_eq!((r.host.as_str(), r.path()), ("shop.example", "/a"));
        assert!(r.http11 && r.keep_alive && !r.has_body());
        assert_eq!(
            text(&r.outgoing),
            "GET /a?b=1 HTTP/1.1\r\nAccept: */*\r\nHost: Shop.Example:8080\r\n\
             X-Forwarded-Host: Shop.Example:8080\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\n\
             X-Real-IP: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 80\r\n\r\n"
        );
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
    }

    #[test]
    fn absolute_form_names_the_host() {
        let r = parse("GET http://Example.com/x?y HTTP/1.1\r\nHost: other\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.host.as_str(), r.target.as_str()),
            ("example.com", "/x?y")
        );
        assert!(text(&r.outgoing).starts_with("GET /x?y HTTP/1.1\r\n"));
        assert!(text(&r.outgoing).contains("Host: Example.com\r\n"));
        let r = parse("GET http://example.com HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.target, "/");
    }

    #[test]
    fn keep_alive_follows_the_version() {
        let r = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!r.http11 && !r.keep_alive);
        assert!(text(&r.outgoing).starts_with("GET / HTTP/1.1\r\n"));
        let r = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.keep_alive);
        let r = parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive);
    }

    #[test]
    fn body_framing_and_smuggling() {
        let r = parse("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.body, Framing::Length(12));
        assert!(text(&r.outgoing).contains("Content-Length: 12\r\n"));
        let r = parse("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.body, Framing::Chunked);
        assert!(
            text(&r.outgoing).ends_with("Transfer-Encoding: chunked\r\n\r\n"),
            "{}",
            text(&r.outgoing)
        );
        let status = |raw: &str| parse(raw).unwrap_err().status;
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            400
        );
        assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status("CONNECT a:443 HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status("GET nowhere HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nBad Header\r\n\r\n"), 400);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
    }

    #[test]
    fn framing_headers_cannot_be_dropped_or_doubled() {
        // A Connection token naming Content-Length must not strip it (request smuggling).
        let r = parse("POST / HTTP/1.1\r\nConnection: content-length\r\nContent-Length: 4\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.body, Framing::Length(4));
        let out = text(&r.outgoing);
        assert_eq!(out.matches("Content-Length: 4\r\n").count(), 1, "{out}");
        // HTTP/1.1 needs a Host; HTTP/1.0 does not.
        let refused = request(b"GET / HTTP/1.1\r\n\r\n", client(), LISTENER).unwrap_err();
        assert_eq!(refused.status, 400);
        assert!(request(b"GET / HTTP/1.0\r\n\r\n", client(), LISTENER).is_ok());
    }

    #[test]
    fn expect_continue_is_answered_here_not_forwarded() {
        let r = parse("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.expect_continue);
        assert!(!text(&r.outgoing).to_ascii_lowercase().contains("expect"));
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let r = parse(
            "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: k\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.upgrade.as_deref(), Some("websocket"));
        let out = text(&r.outgoing);
        assert!(
            out.contains("Connection: upgrade\r\nUpgrade: websocket\r\n"),
            "{out}"
        );
        assert!(out.contains("Sec-WebSocket-Key: k\r\n"));
        // Upgrade without Connection: upgrade is no upgrade.
        let r = parse("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.upgrade.is_none());
        assert!(!text(&r.outgoing).contains("Upgrade"));
    }

    fn get(method: &str) -> Request {
        parse(&format!("{method} / HTTP/1.1\r\nHost: a\r\n\r\n"))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn response_framing() {
        let body =
            |raw: &str, method: &str| response(raw.as_bytes(), &get(method)).unwrap().unwrap();
        let r = body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "GET");
        assert_eq!(
            (r.status, r.body, r.reusable, r.len),
            (200, Framing::Length(5), true, 38)
        );
        let r = body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD");
        assert_eq!(r.body, Framing::None);
        let r = body(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            "GET",
        );
        assert_eq!(r.body, Framing::None);
        let r = body(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET",
        );
        assert_eq!((r.body, r.reusable), (Framing::Chunked, true));
        assert!(!text(&r.outgoing).contains("chunked"));
        let r = body("HTTP/1.1 200 OK\r\n\r\n", "GET");
        assert_eq!((r.body, r.reusable), (Framing::Close, false));
        let r = body(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            "GET",
        );
        assert!(!r.reusable);
        assert_eq!(
            text(&r.outgoing),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
        );
        let r = body("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "GET");
        assert!(!r.reusable);
        assert!(
            response(b"HTTP/1.1 200 OK\r\n", &get("GET"))
                .unwrap()
                .is_none()
        );
        assert!(response(b"SSH-2.0-OpenSSH\r\n\r\n", &get("GET")).is_err());
    }

    #[test]
    fn response_lengths_are_kept_single_and_dropped_for_chunks() {
        let resp =
            |raw: &str, method: &str| response(raw.as_bytes(), &get(method)).unwrap().unwrap();
        let r = resp(
            "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n",
            "GET",
        );
        assert_eq!(
            text(&r.outgoing),
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
        );
        // Both: relayed chunked, without the length, and the connection is not reused.
        let r = resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET",
        );
        assert_eq!((r.body, r.reusable), (Framing::Chunked, false));
        assert!(!text(&r.outgoing).contains("Content-Length"));
        // A HEAD answer keeps the length of what GET would send.
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 615\r\n\r\n", "HEAD");
        assert_eq!(r.body, Framing::None);
        assert!(text(&r.outgoing).contains("Content-Length: 615\r\n"));
        // Methods are case-sensitive: `head` is not HEAD.
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "head");
        assert_eq!(r.body, Framing::Length(5));
    }

    #[test]
    fn switching_protocols_keeps_the_upgrade_headers() {
        let r = response(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: x\r\n\r\n",
            &get("GET"),
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.status, r.body, r.reusable), (101, Framing::None, false));
        assert_eq!(
            text(&r.outgoing),
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\n\
             Connection: upgrade\r\nUpgrade: websocket\r\n"
        );
    }
}
