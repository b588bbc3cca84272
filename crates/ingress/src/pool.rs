//! Keep-alive HTTP/1.1 connections to backend endpoints.
//!
//! A connection goes back to its endpoint's idle list once its response has been read to the
//! end (hyper's `SendRequest::ready`). A request that a pooled connection could not take (the
//! backend closed it meanwhile) comes back unsent and is tried on another connection, so only
//! a failure after the request went out is reported as such. A failed connect is reported with
//! the request still in hand, so that the caller can try the next endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 64;
/// How long a backend may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a request got no response.
pub enum SendError {
    /// No connection could be made; the request was not sent and is handed back.
    Connect(std::io::Error, Box<Request<Incoming>>),
    /// The request went out, then the exchange failed.
    Exchange(hyper::Error),
}

/// Connections to backends, pooled by endpoint address.
#[derive(Clone, Default)]
pub struct Pool {
    idle: Arc<Mutex<HashMap<SocketAddr, Vec<http1::SendRequest<Incoming>>>>>,
}

impl Pool {
    /// Sends `req` to `addr` on a pooled connection or a new one. Upgrade requests always get
    /// a connection of their own, which never returns to the pool.
    pub async fn send(
        &self,
        addr: SocketAddr,
        mut req: Request<Incoming>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, SendError> {
        if !upgrade {
            while let Some(mut conn) = self.take(addr) {
                match conn.try_send_request(req).await {
                    Ok(resp) => {
                        self.recycle(addr, conn);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent, // the connection had gone; try another
                        None => return Err(SendError::Exchange(e.into_error())),
                    },
                }
            }
        }
        let mut conn = match connect(addr).await {
            Ok(c) => c,
            Err(e) => return Err(SendError::Connect(e, Box::new(req))),
        };
        match conn.send_request(req).await {
            Ok(resp) => {
                if !upgrade {
                    self.recycle(addr, conn);
                }
                Ok(resp)
            }
            Err(e) => Err(SendError::Exchange(e)),
        }
    }

    fn take(&self, addr: SocketAddr) -> Option<http1::SendRequest<Incoming>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&addr)?;
        while let Some(conn) = list.pop() {
            if conn.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    /// Returns `conn` to the idle list once its current response has been read.
    fn recycle(&self, addr: SocketAddr, mut conn: http1::SendRequest<Incoming>) {
        let pool = self.clone();
        tokio::spawn(async move {
            if conn.ready().await.is_err() {
                return;
            }
            if let Ok(mut idle) = pool.idle.lock() {
                let list = idle.entry(addr).or_default();
                if list.len() < MAX_IDLE {
                    list.push(conn);
                }
            }
        });
    }

    /// Drops the idle connections of endpoints not in `keep`.
    pub fn retain(&self, keep: &std::collections::HashSet<SocketAddr>) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|addr, _| keep.contains(addr));
        }
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<http1::SendRequest<Incoming>> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, "backend connection: {e}");
        }
    });
    Ok(sender)
}
