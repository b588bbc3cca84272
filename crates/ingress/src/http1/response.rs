//! The backend's side of an exchange on the fast path: its response head read (interim 1xx
//! answers relayed), the response relayed to the client as framed (small Content-Length
//! bodies whole, in one write), the backend stream put back in the pool when it was read to
//! its end, and upgraded connections spliced.

use std::io;
use std::net::SocketAddr;

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::{Chunked, Framing};
use super::head::{self, Request};
use super::{COALESCE, Conn, HeadError, MAX_HEAD, Outcome, READ_SIZE, Upstream, ends_head, within};

impl<C: AsyncRead + AsyncWrite + Unpin> Conn<C> {
    /// Reads the backend's final response head, relaying interim (1xx) ones to the client.
    pub(super) async fn read_response_head(
        &mut self,
        backend: &mut TcpStream,
        req: &Request,
    ) -> Result<head::Response, HeadError> {
        self.rbuf.clear();
        let mut interim_seen = false;
        let mut parse = false;
        loop {
            if parse {
                match head::response(&self.rbuf, req) {
                    Ok(Some(resp)) if resp.status < 200 && resp.status != 101 => {
                        self.rbuf.advance(resp.len);
                        interim_seen = true;
                        if req.http11 {
                            let mut interim = resp.outgoing;
                            interim.extend_from_slice(b"\r\n");
                            if let Err(e) = self.send(&interim).await {
                                return Err(HeadError::Failed(format!("client: {e}")));
                            }
                        }
                        parse = !self.rbuf.is_empty();
                        continue;
                    }
                    Ok(Some(resp)) => return Ok(resp),
                    Ok(None) if self.rbuf.len() >= MAX_HEAD => {
                        return Err(HeadError::Failed("response head too large".into()));
                    }
                    Ok(None) => {}
                    Err(why) => return Err(HeadError::Failed(why)),
                }
            }
            let before = self.rbuf.len();
            self.rbuf.reserve(READ_SIZE);
            match within(
                self.shared.timeouts.backend,
                backend.read_buf(&mut self.rbuf),
            )
            .await
            {
                Ok(0) if self.rbuf.is_empty() && !interim_seen => return Err(HeadError::Empty),
                Ok(0) => {
                    return Err(HeadError::Failed(
                        "the backend closed the connection mid-head".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(HeadError::TimedOut),
                Err(e)
                    if self.rbuf.is_empty()
                        && !interim_seen
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                        ) =>
                {
                    return Err(HeadError::Empty);
                }
                Err(e) => return Err(HeadError::Failed(e.to_string())),
            }
            parse = before == 0 || ends_head(&self.rbuf[before.saturating_sub(3)..]);
        }
    }

    /// Relays the response `resp` (head parsed, body to come from `backend`) to the client;
    /// the backend connection goes back to the pool when its response was read to its end.
    pub(super) async fn relay(
        &mut self,
        req: &Request,
        resp: head::Response,
        mut backend: TcpStream,
        addr: SocketAddr,
    ) -> Outcome {
        self.rbuf.advance(resp.len);
        let mut out = resp.outgoing;
        let upstream = Upstream::Endpoint(addr);
        if resp.status == 101 {
            if req.upgrade.is_none() {
                return self.bad_gateway(req, addr, "unasked 101", true).await;
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&self.rbuf);
            self.rbuf.clear();
            let ok = self.send(&out).await.is_ok();
            return Outcome {
                status: 101,
                upstream,
                keep: false,
                splice: ok.then_some(backend),
            };
        }
        // An HTTP/1.0 client cannot take chunks: it gets the data, delimited by the close.
        let decode = resp.body == Framing::Chunked && !req.http11;
        let keep = req.keep_alive && resp.body != Framing::Close && !decode;
        if resp.body == Framing::Chunked && !decode {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        if !keep {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if !req.http11 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let complete = self.relay_body(resp.body, decode, out, &mut backend).await;
        if complete && resp.reusable && self.rbuf.is_empty() {
            self.shared.backends.put(addr, backend);
        }
        Outcome {
            status: resp.status,
            upstream,
            keep: keep && complete,
            splice: None,
        }
    }

    /// Writes `out` (the head) and the body to the client; whether all of it went through.
    pub(super) async fn relay_body(
        &mut self,
        framing: Framing,
        decode: bool,
        mut out: Vec<u8>,
        backend: &mut TcpStream,
    ) -> bool {
        let mut chunked = Chunked::default();
        let mut ranges = Vec::new();
        // A small body is read whole first, so that the client gets head and body in one
        // segment (a backend's head and body often come in two), as nginx's
        // `postpone_output` does: an extra segment costs the client a wakeup.
        if let Framing::Length(n) = framing
            && n <= COALESCE as u64
        {
            while (self.rbuf.len() as u64) < n {
                self.rbuf.reserve(READ_SIZE);
                match within(
                    self.shared.timeouts.backend,
                    backend.read_buf(&mut self.rbuf),
                )
                .await
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let mut left = match framing {
            Framing::None => 0,
            Framing::Length(n) => n,
            Framing::Chunked | Framing::Close => u64::MAX,
        };
        loop {
            // Take what this body has of the bytes read so far.
            let n = match framing {
                Framing::Chunked => {
                    ranges.clear();
                    let n = match chunked.scan(&self.rbuf, decode.then_some(&mut ranges)) {
                        Ok(n) => n,
                        Err(why) => {
                            tracing::debug!("ingress: bad chunked body from the backend: {why}");
                            return false;
                        }
                    };
                    if decode {
                        for r in &ranges {
                            out.extend_from_slice(&self.rbuf[r.clone()]);
                        }
                    } else {
                        out.extend_from_slice(&self.rbuf[..n]);
                    }
                    n
                }
                _ => {
                    let n = (self.rbuf.len() as u64).min(left) as usize;
                    out.extend_from_slice(&self.rbuf[..n]);
                    left -= n as u64;
                    n
                }
            };
            self.rbuf.advance(n);
            if !out.is_empty() {
                if self.send(&out).await.is_err() {
                    return false;
                }
                out.clear();
            }
            let done = match framing {
                Framing::Chunked => chunked.done(),
                _ => left == 0,
            };
            if done {
                return true;
            }
            self.rbuf.reserve(READ_SIZE);
            match within(
                self.shared.timeouts.backend,
                backend.read_buf(&mut self.rbuf),
            )
            .await
            {
                Ok(0) => return framing == Framing::Close,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    /// Passes bytes both ways between the client and an upgraded backend connection.
    pub(super) async fn splice(&mut self, mut backend: TcpStream) {
        if !self.cbuf.is_empty() {
            if backend.write_all(&self.cbuf).await.is_err() {
                return;
            }
            self.cbuf.clear();
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut self.client, &mut backend).await {
            tracing::debug!(peer = %self.peer, "ingress: upgraded connection ended: {e}");
        }
    }
}
