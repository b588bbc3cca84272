//! Idle keep-alive connections to backend endpoints, for the fast path: plain TCP streams,
//! taken by a client connection's task for one exchange and put back once the response has
//! been read to its end, so no other task is involved in a request.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 128;
/// How long a connection may sit idle before it is closed (nginx's upstream
/// `keepalive_timeout`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a backend may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// An endpoint's idle connections with when they went idle, oldest first.
type IdleList = Vec<(Instant, TcpStream)>;

/// Idle backend connections by endpoint address.
#[derive(Clone, Default)]
pub struct Backends {
    idle: Arc<Mutex<HashMap<SocketAddr, IdleList>>>,
}

impl Backends {
    /// An idle connection to `addr` that the backend has not closed, if there is one.
    pub fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&addr)?;
        expire(list);
        while let Some((_, conn)) = list.pop() {
            // An idle connection has nothing to read: readable means closed (or garbage).
            // tokio answers from the readiness it already has, without a syscall.
            if let Err(e) = conn.try_read(&mut [0u8; 1])
                && e.kind() == std::io::ErrorKind::WouldBlock
            {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` (whose last response was read to its end) for the next request to `addr`.
    pub fn put(&self, addr: SocketAddr, conn: TcpStream) {
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(addr).or_default();
            expire(list);
            if list.len() < MAX_IDLE {
                list.push((Instant::now(), conn));
            }
        }
    }

    /// Drops the idle connections of endpoints not in `keep`.
    pub fn retain(&self, keep: &HashSet<SocketAddr>) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|addr, _| keep.contains(addr));
        }
    }
}

/// Drops the connections idle for longer than [`IDLE_TIMEOUT`] (the oldest come first).
fn expire(list: &mut IdleList) {
    let fresh = list
        .iter()
        .position(|(since, _)| since.elapsed() < IDLE_TIMEOUT)
        .unwrap_or(list.len());
    list.drain(..fresh);
}

/// A new connection to `addr` (no Nagle delay), within [`CONNECT_TIMEOUT`].
pub async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn closed_connections_are_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Backends::default();
        let open = connect(addr).await.unwrap();
        let (_kept, _) = listener.accept().await.unwrap();
        let closed = connect(addr).await.unwrap();
        let (mut gone, _) = listener.accept().await.unwrap();
        gone.shutdown().await.unwrap();
        drop(gone);
        let local_open = open.local_addr().unwrap();
        pool.put(addr, open);
        pool.put(addr, closed);
        // Let the reactor see the FIN.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = pool.take(addr).expect("the open connection");
        assert_eq!(got.local_addr().unwrap(), local_open);
        assert!(pool.take(addr).is_none());
        pool.put(addr, got);
        pool.retain(&HashSet::new());
        assert!(pool.take(addr).is_none());
    }
}
