//! The agent's client load balancer (k3s's `127.0.0.1:6444`): a local TCP endpoint that
//! forwards each connection to one of several API servers, so that an agent given
//! `--server URL,URL,...` keeps working while any one of them is down.
//!
//! Connections are passed through byte for byte (TLS ends at the API server, whose serving
//! certificate names `127.0.0.1`, so clients verify it as usual). Each new connection goes to
//! the server the last one reached; when that server refuses or does not answer within
//! [`DIAL_TIMEOUT`], the next in the list is tried, and so on. A server that dies breaks the
//! connections it had; the clients' watches and requests reconnect, and land on a live server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a dial to one server may take before the next one is tried.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// The port k3s's agent load balancer listens on (`--lb-server-port`).
pub const DEFAULT_PORT: u16 = 6444;

/// `host:port` of every `https://HOST:PORT[/...]` URL in a comma-separated list.
pub fn parse_servers(urls: &str) -> Result<Vec<String>> {
    let mut out = vec![];
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let Some(rest) = url.strip_prefix("https://") else {
            bail!("--server {url:?}: expected https://HOST:PORT");
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let has_port = match authority.rsplit_once(':') {
            Some((host, port)) => {
                !host.is_empty() && !port.is_empty() && port.parse::<u16>().is_ok()
            }
            None => false,
        };
        if !has_port || authority.ends_with(']') {
            bail!("--server {url:?}: expected https://HOST:PORT (the port is needed)");
        }
        out.push(authority.to_string());
    }
    if out.is_empty() {
        bail!("--server: no server URL given");
    }
    Ok(out)
}

struct Balancer {
    servers: Vec<String>,
    current: AtomicUsize,
}

impl Balancer {
    /// A connection to the first server that answers, starting from the current one.
    async fn dial(&self) -> Option<TcpStream> {
        let start = self.current.load(Ordering::Relaxed);
        for i in 0..self.servers.len() {
            let idx = (start + i) % self.servers.len();
            let server = &self.servers[idx];
            match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(server.as_str())).await {
                Ok(Ok(stream)) => {
                    if idx != start {
                        tracing::info!(%server, "load balancer: switched server");
                        self.current.store(idx, Ordering::Relaxed);
                    }
                    let _ = stream.set_nodelay(true);
                    return Some(stream);
                }
                Ok(Err(e)) => tracing::debug!(%server, error = %e, "load balancer: dial failed"),
                Err(_) => tracing::debug!(%server, "load balancer: dial timed out"),
            }
        }
        None
    }
}

/// Listens on `listen` and forwards every connection to one of `servers` (`host:port`) until
/// `shutdown`; returns the bound address (port 0 picks a free one).
pub async fn start(
    listen: SocketAddr,
    servers: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr> {
    if servers.is_empty() {
        bail!("the load balancer needs at least one server");
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("the agent's load balancer cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, servers = ?servers, "API server load balancer listening");
    let balancer = Arc::new(Balancer {
        servers,
        current: AtomicUsize::new(0),
    });
    tokio::spawn(async move {
        loop {
            let (mut client, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "load balancer: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = async { shutdown.wait_for(|s| *s).await.is_ok() } => break,
            };
            let balancer = balancer.clone();
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                match balancer.dial().await {
                    Some(mut server) => {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                    None => tracing::warn!("load balancer: no API server answers"),
                }
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every connection with its name.
    async fn named_server(name: &'static str) -> (String, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        (addr, task)
    }

    async fn ask(lb: SocketAddr) -> String {
        let mut s = TcpStream::connect(lb).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn connections_move_to_the_next_server_when_one_is_gone() {
        let (a, task_a) = named_server("a").await;
        let (b, _task_b) = named_server("b").await;
        let (_tx, rx) = watch::channel(false);
        let lb = start("127.0.0.1:0".parse().unwrap(), vec![a, b], rx)
            .await
            .unwrap();
        assert_eq!(ask(lb).await, "a");
        assert_eq!(ask(lb).await, "a");
        task_a.abort();
        let _ = task_a.await; // the listener is closed: connections are refused
        assert_eq!(ask(lb).await, "b");
        assert_eq!(ask(lb).await, "b");
    }

    #[test]
    fn server_lists_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_servers("https://10.0.0.1:6443, https://b.example:6443/").unwrap(),
            vec!["10.0.0.1:6443".to_string(), "b.example:6443".to_string()]
        );
        assert_eq!(
            parse_servers("https://[::1]:6443").unwrap(),
            vec!["[::1]:6443".to_string()]
        );
        assert!(parse_servers("http://a:6443").is_err());
        assert!(parse_servers("https://a").is_err());
        assert!(parse_servers("https://a:port").is_err());
        assert!(parse_servers(",").is_err());
    }
}
