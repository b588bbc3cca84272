//! The ingress's HTTP/1.x fast path: one task per client connection reads each request,
//! routes it, sends it over a pooled backend connection it holds for the exchange, and
//! relays the response, with no other task in between (the way nginx's workers do it).
//!
//! Why not hyper's server and client, as the HTTP/2 path uses: there every request crossed
//! tasks three times (the client connection's task, the request's future, the backend
//! connection's task, a task that returns the connection to the pool), and on two cores each
//! crossing could wake the other worker thread; the ingress spent ~1.2× nginx's CPU per
//! request on it (docs/benchmarks.md, "Findings of 2026-12-07 evening"). Here a request costs
//! the socket reads and writes and two head parses.
//!
//! A connection whose first bytes are HTTP/2's preface goes to hyper ([`crate::serve_hyper`]).
//! Behaviour is the hyper path's: routing ([`crate::routes`]), a random ready endpoint first
//! and the next ones when connecting fails (a pooled connection the backend closed
//! meanwhile is replaced without counting as an attempt), `X-Forwarded-*`, WebSocket (any
//! `Upgrade`) splicing, 404 / 502 / 503 with a plain body that says why, an access-log line.
//! Heads are parsed and rewritten in [`head`], bodies delimited in [`body`]; this file has the
//! client's side of an exchange, `response` the backend's.

pub mod backends;
pub mod body;
pub mod head;
mod prefixed;
mod response;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::{ATTEMPTS, Listener, Shared};
use body::{Chunked, Framing};
use head::Request;

pub use prefixed::Prefixed;

/// Largest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Bodies up to this size (with a `Content-Length`) are read whole before they are passed
/// on, so that head and body go out in one write.
const COALESCE: usize = 64 * 1024;
/// Bytes read at a time.
const READ_SIZE: usize = 16 * 1024;
/// How long a connection closed with request bytes unread keeps draining them.
const LINGER: Duration = Duration::from_secs(2);
/// How much it drains at most.
const LINGER_BYTES: usize = 1 << 20;
/// What an HTTP/2 connection starts with (enough of it to tell).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Serves the connection `client` (plain or TLS) from `peer` until either side closes it.
pub async fn serve<C>(mut client: C, shared: Shared, listener: Listener, peer: SocketAddr)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut cbuf = BytesMut::with_capacity(READ_SIZE);
    while cbuf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&cbuf) {
        match client.read_buf(&mut cbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    if cbuf.starts_with(H2_PREFACE) {
        let io = Prefixed::new(cbuf.freeze(), client);
        return crate::serve_hyper(io, shared, listener, peer).await;
    }
    let mut conn = Conn {
        client,
        cbuf,
        rbuf: BytesMut::with_capacity(READ_SIZE),
        shared,
        listener,
        peer,
    };
    conn.run().await;
}

/// How long the fast path waits on either side (nginx's defaults: `client_header_timeout`,
/// `proxy_read_timeout`, `send_timeout`, 60 s each).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a client's next request head (an idle keep-alive connection included), each
    /// read of a request body, each write to the client.
    pub client: Duration,
    /// For a backend's response head (then 504), each read of its body, each write to it.
    pub backend: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client: Duration::from_secs(60),
            backend: Duration::from_secs(60),
        }
    }
}

/// `io` within `limit`, else a `TimedOut` error.
async fn within<T>(limit: Duration, io: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(limit, io)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")))
}

/// Whether `bytes` (the newly read ones, with the 3 before) may end a message head: only
/// then is the head parsed again, so a head sent a byte at a time is not parsed per byte.
fn ends_head(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

/// One client connection.
struct Conn<C> {
    client: C,
    /// Bytes read from the client and not yet used (a pipelined request may wait here).
    cbuf: BytesMut,
    /// Bytes read from the current backend and not yet relayed.
    rbuf: BytesMut,
    shared: Shared,
    listener: Listener,
    peer: SocketAddr,
}

/// How an exchange ended.
struct Outcome {
    status: u16,
    upstream: Upstream,
    /// Whether the client connection takes another request.
    keep: bool,
    /// After a `101 Switching Protocols`: the backend connection to splice with the client.
    splice: Option<TcpStream>,
}

/// Who answered, for the access log.
enum Upstream {
    Ingress,
    Service(Arc<str>),
    Endpoint(SocketAddr),
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Ingress => f.write_str("-"),
            Upstream::Service(name) => f.write_str(name),
            Upstream::Endpoint(addr) => addr.fmt(f),
        }
    }
}

/// Why no response head came from a backend.
enum HeadError {
    /// The connection closed (or was reset) before a single byte: a pooled connection the
    /// backend had given up on; the request can go again on a new one.
    Empty,
    /// No answer within the backend timeout: the answer is 504.
    TimedOut,
    /// Anything else: the answer is 502.
    Failed(String),
}

impl<C: AsyncRead + AsyncWrite + Unpin> Conn<C> {
    async fn run(&mut self) {
        loop {
            let mut req = match self.read_request().await {
                Ok(Some(req)) => req,
                Ok(None) => return,
                Err(refusal) => {
                    let reply = plain(refusal.status, &format!("{}\n", refusal.why), false, false);
                    let _ = self.send(&reply).await;
                    tracing::info!(target: "ingress::access", "{} \"-\" {} - 0.0ms", self.peer.ip(), refusal.status);
                    self.close().await;
                    return;
                }
            };
            let start = Instant::now();
            let outcome = self.exchange(&mut req).await;
            crate::proxy::log_access(
                self.peer.ip(),
                &req.method,
                &req.host,
                req.path(),
                format_args!("{}", req.version()),
                outcome.status,
                &outcome.upstream,
                start,
            );
            if let Some(backend) = outcome.splice {
                self.splice(backend).await;
                return;
            }
            if !outcome.keep {
                self.close().await;
                return;
            }
        }
    }

    /// Writes `bytes` to the client within the client timeout.
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        within(self.shared.timeouts.client, self.client.write_all(bytes)).await
    }

    /// Reads more from the client into `cbuf` within the client timeout; `Ok(0)`: it closed.
    async fn receive(&mut self) -> io::Result<usize> {
        self.cbuf.reserve(READ_SIZE);
        within(
            self.shared.timeouts.client,
            self.client.read_buf(&mut self.cbuf),
        )
        .await
    }

    /// Closes the connection: our side first, then what the client still sends (a request
    /// body left unread) is drained for a while (nginx's lingering close), so that the
    /// kernel does not answer it with a reset that could destroy the response in flight.
    async fn close(&mut self) {
        if within(self.shared.timeouts.client, self.client.shutdown())
            .await
            .is_err()
        {
            return;
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut drained = 0;
        while drained < LINGER_BYTES {
            self.cbuf.clear();
            self.cbuf.reserve(READ_SIZE);
            match tokio::time::timeout_at(deadline, self.client.read_buf(&mut self.cbuf)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => return,
            }
        }
    }

    /// The next request head: `Ok(None)` when the client closed the connection.
    async fn read_request(&mut self) -> Result<Option<Request>, head::Refusal> {
        let mut parse = !self.cbuf.is_empty();
        loop {
            if parse && let Some(req) = head::request(&self.cbuf, self.peer, self.listener)? {
                self.cbuf.advance(req.len);
                return Ok(Some(req));
            }
            if self.cbuf.len() >= MAX_HEAD {
                return Err(head::Refusal {
                    status: 431,
                    why: "request head too large".into(),
                });
            }
            let before = self.cbuf.len();
            match self.receive().await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
            // The first bytes are parsed at once (garbage is refused without waiting).
            parse = before == 0 || ends_head(&self.cbuf[before.saturating_sub(3)..]);
        }
    }

    /// Routes `req` and answers it.
    async fn exchange(&mut self, req: &mut Request) -> Outcome {
        let table = self.shared.table.read().map(|t| t.clone()).ok();
        let backend = table.as_ref().and_then(|t| t.route(&req.host, req.path()));
        match backend.map(|b| (&b.name, &b.endpoints)) {
            None => {
                self.answer(req, 404, crate::proxy::NOT_FOUND, Upstream::Ingress)
                    .await
            }
            Some((name, Err(why))) => {
                let body = crate::proxy::unavailable(why);
                self.answer(req, 503, &body, Upstream::Service(name.as_str().into()))
                    .await
            }
            Some((_, Ok(endpoints))) => self.forward(req, endpoints).await,
        }
    }

    /// The ingress's own answer; the connection stays open unless a request body was left
    /// unread.
    async fn answer(&mut self, req: &Request, status: u16, body: &str, up: Upstream) -> Outcome {
        let keep = req.keep_alive && !req.has_body();
        let head_only = req.method == "HEAD";
        let reply = plain(status, body, keep, head_only);
        let sent = self.send(&reply).await.is_ok();
        let keep = keep && sent;
        Outcome {
            status,
            upstream: up,
            keep,
            splice: None,
        }
    }

    /// Sends `req` to the endpoints, a random one first, and relays the response.
    async fn forward(&mut self, req: &mut Request, endpoints: &[SocketAddr]) -> Outcome {
        if endpoints.is_empty() {
            let body = crate::proxy::unavailable("no ready endpoints");
            return self.answer(req, 503, &body, Upstream::Ingress).await;
        }
        if req.expect_continue
            && req.http11
            && req.has_body()
            && self.send(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err()
        {
            return gone(Upstream::Ingress);
        }
        // A small body is waited for, to go out with the head in one segment.
        if let Framing::Length(n) = req.body
            && n <= COALESCE as u64
        {
            while (self.cbuf.len() as u64) < n {
                match self.receive().await {
                    Ok(0) | Err(_) => return gone(Upstream::Ingress),
                    Ok(_) => {}
                }
            }
        }
        // A request whose body is here whole can be sent again; a longer one is streamed
        // once.
        let mut wire = std::mem::take(&mut req.outgoing);
        let whole = match req.body {
            Framing::Length(n) if n <= self.cbuf.len() as u64 => {
                wire.extend_from_slice(&self.cbuf[..n as usize]);
                self.cbuf.advance(n as usize);
                true
            }
            _ => false,
        };
        let first = rand::rng().random_range(0..endpoints.len());
        let mut last_error = String::new();
        for i in 0..endpoints.len().min(ATTEMPTS) {
            let addr = endpoints[(first + i) % endpoints.len()];
            // Upgrades get a connection of their own; so does a streamed body, which could not
            // go again if a pooled connection turned out closed.
            let mut fresh = req.upgrade.is_some() || !whole;
            loop {
                let pooled = if fresh {
                    None
                } else {
                    self.shared.backends.take(addr)
                };
                let reused = pooled.is_some();
                let mut backend = match pooled {
                    Some(b) => b,
                    None => match backends::connect(addr).await {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::debug!(%addr, "ingress: connecting to the backend failed: {e}");
                            last_error = format!("{addr}: {e}");
                            break;
                        }
                    },
                };
                let limit = self.shared.timeouts.backend;
                if let Err(e) = within(limit, backend.write_all(&wire)).await {
                    if reused {
                        fresh = true;
                        continue;
                    }
                    return self.bad_gateway(req, addr, &e.to_string(), !whole).await;
                }
                if !whole {
                    match self.stream_request_body(req.body, &mut backend).await {
                        Ok(()) => {}
                        Err(BodyError::Client(why)) => {
                            let body = format!("400 Bad Request: {why}\n");
                            let mut out = self.answer(req, 400, &body, Upstream::Ingress).await;
                            out.keep = false;
                            return out;
                        }
                        Err(BodyError::Backend(why)) => {
                            return self.bad_gateway(req, addr, &why, true).await;
                        }
                    }
                }
                match self.read_response_head(&mut backend, req).await {
                    Ok(resp) => return self.relay(req, resp, backend, addr).await,
                    // The backend had closed the idle connection; what it may have read of the
                    // request it dropped unanswered. Only idempotent requests go again
                    // (RFC 9110 §9.2.2), as nginx does.
                    Err(HeadError::Empty) if reused && whole && idempotent(&req.method) => {
                        fresh = true;
                    }
                    Err(HeadError::Empty) => {
                        let why = "the backend closed the connection without answering";
                        return self.bad_gateway(req, addr, why, !whole).await;
                    }
                    Err(HeadError::TimedOut) => {
                        let body = format!("504 Gateway Timeout: {addr} did not answer in time\n");
                        let mut out = self.answer(req, 504, &body, Upstream::Endpoint(addr)).await;
                        out.keep &= whole;
                        return out;
                    }
                    Err(HeadError::Failed(why)) => {
                        return self.bad_gateway(req, addr, &why, !whole).await;
                    }
                }
            }
        }
        let why = format!("502 Bad Gateway: no backend answered (last: {last_error})\n");
        let mut out = self.answer(req, 502, &why, Upstream::Ingress).await;
        out.keep &= whole;
        out
    }

    async fn bad_gateway(
        &mut self,
        req: &Request,
        addr: SocketAddr,
        why: &str,
        close: bool,
    ) -> Outcome {
        let body = format!("502 Bad Gateway: {addr}: {why}\n");
        let mut out = self.answer(req, 502, &body, Upstream::Endpoint(addr)).await;
        out.keep &= !close;
        out
    }

    /// Copies a request body that had not fully arrived with its head to the backend.
    async fn stream_request_body(
        &mut self,
        framing: Framing,
        backend: &mut TcpStream,
    ) -> Result<(), BodyError> {
        let mut chunked = Chunked::default();
        let mut left = match framing {
            Framing::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            let n = match framing {
                Framing::Chunked => chunked.scan(&self.cbuf, None).map_err(BodyError::Client)?,
                _ => (self.cbuf.len() as u64).min(left) as usize,
            };
            within(
                self.shared.timeouts.backend,
                backend.write_all(&self.cbuf[..n]),
            )
            .await
            .map_err(|e| BodyError::Backend(format!("sending the request body: {e}")))?;
            self.cbuf.advance(n);
            if framing == Framing::Chunked {
                if chunked.done() {
                    return Ok(());
                }
            } else {
                left -= n as u64;
                if left == 0 {
                    return Ok(());
                }
            }
            match self.receive().await {
                Ok(0) => {
                    return Err(BodyError::Client(
                        "the client closed the connection mid-body".into(),
                    ));
                }
                Err(e) => return Err(BodyError::Client(format!("reading the request body: {e}"))),
                Ok(_) => {}
            }
        }
    }
}

/// Why a request body could not be passed on.
enum BodyError {
    /// The client's side: it went away, or its chunked body is malformed (400).
    Client(String),
    /// The backend's side (502).
    Backend(String),
}

/// Whether a request with `method` may be sent again (RFC 9110 §9.2.2).
fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// The outcome when the client went away.
fn gone(upstream: Upstream) -> Outcome {
    Outcome {
        status: 499,
        upstream,
        keep: false,
        splice: None,
    }
}

/// A plain-text response of the ingress itself.
fn plain(status: u16, body: &str, keep: bool, head_only: bool) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n{}\r\n",
        body.len(),
        if keep { "" } else { "Connection: close\r\n" },
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}
