//! Forwarding names outside the cluster to the node's upstream resolvers.
//!
//! The upstreams are the `nameserver` lines of the node's /etc/resolv.conf (read at start),
//! without the cluster DNS address itself or the server's own listen addresses (that would be a
//! loop), or a list given on the command line. A query goes to them in order, over the
//! protocol the client used (UDP: one fresh socket per query, so the upstream's answer cannot be
//! confused with another; TCP: one connection per query), each with a 2 s timeout; the first
//! answer whose id and question match is relayed. No cache: upstream resolvers have theirs.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one upstream gets to answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The upstream resolvers and how to ask them.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
}

/// The `nameserver` addresses of a resolv.conf body (port 53), except `exclude`.
pub fn parse_resolv_conf(body: &str, exclude: &[IpAddr]) -> Vec<SocketAddr> {
    body.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // Drop an IPv6 zone (`fe80::1%eth0`): std cannot parse it.
            let addr = words.next()?.split('%').next()?;
            addr.parse::<IpAddr>().ok()
        })
        .filter(|ip| !exclude.contains(ip))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl Forwarder {
    /// Forwards to `upstreams`, in order.
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Forwarder { upstreams }
    }

    /// Forwards to the nameservers of `resolv_conf` (none if it cannot be read), except
    /// `exclude`.
    pub fn from_resolv_conf(resolv_conf: &Path, exclude: &[IpAddr]) -> Self {
        let body = std::fs::read_to_string(resolv_conf).unwrap_or_else(|e| {
            tracing::warn!(path = %resolv_conf.display(), error = %e, "cannot read resolv.conf: no upstream resolvers");
            String::new()
        });
        Self::new(parse_resolv_conf(&body, exclude))
    }

    /// The upstream resolvers.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Sends the raw query `request` (whose id is `id` and question `query`) to the upstreams
    /// until one answers; `tcp` picks the transport. None when none answered.
    pub async fn forward(
        &self,
        request: &[u8],
        id: u16,
        query: &Query,
        tcp: bool,
    ) -> Option<Message> {
        for upstream in &self.upstreams {
            let result = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
                if tcp {
                    exchange_tcp(*upstream, request).await
                } else {
                    exchange_udp(*upstream, request, id).await
                }
            })
            .await;
            let bytes = match result {
                Ok(Ok(bytes)) => bytes,
                Ok(Err(e)) => {
                    tracing::debug!(%upstream, error = %e, "upstream failed");
                    continue;
                }
                Err(_) => {
                    tracing::debug!(%upstream, "upstream timed out");
                    continue;
                }
            };
            match Message::from_vec(&bytes) {
                Ok(msg)
                    if msg.metadata.id == id
                        && msg.metadata.message_type == MessageType::Response
                        && msg.queries.first().is_none_or(|q| same_question(q, query)) =>
                {
                    return Some(msg);
                }
                Ok(_) => tracing::debug!(%upstream, "upstream answered another question"),
                Err(e) => tracing::debug!(%upstream, error = %e, "bad answer from upstream"),
            }
        }
        None
    }

    /// Asks the upstreams for `name`'s `qtype` records (to follow an ExternalName's CNAME).
    pub async fn resolve(&self, name: &Name, qtype: RecordType) -> Option<Message> {
        let query = Query::query(name.clone(), qtype);
        let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(query.clone());
        let bytes = msg.to_vec().ok()?;
        self.forward(&bytes, msg.metadata.id, &query, false).await
    }
}

fn same_question(a: &Query, b: &Query) -> bool {
    a.query_type() == b.query_type() && a.name() == b.name()
}

fn rand_id() -> u16 {
    rand::random()
}

async fn exchange_udp(upstream: SocketAddr, request: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    socket.send(request).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Ignore stray datagrams: only the answer to our id counts.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(upstream: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(upstream).await?;
    let len = u16::try_from(request.len())
        .map_err(|_| std::io::Error::other("query too long for TCP"))?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_without_the_cluster_dns() {
        let body = "# generated\nsearch example.org\nnameserver 10.43.0.10\nnameserver 192.0.2.53\n\
                    nameserver fe80::1%eth0\nnameserver bogus\noptions ndots:2\n";
        let got = parse_resolv_conf(body, &["10.43.0.10".parse().unwrap()]);
        assert_eq!(
            got,
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
