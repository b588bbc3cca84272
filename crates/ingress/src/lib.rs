//! corten's built-in ingress controller (the role Traefik plays in k3s), an API client like
//! every other component.
//!
//! It serves the Ingresses of its IngressClass (`corten`, created at start and marked the
//! cluster's default, so Ingresses that name no class are served too) on the node's HTTP and
//! HTTPS ports:
//!
//! - [`watch`]: kube-rs reflectors on Ingresses, IngressClasses, Services, EndpointSlices and
//!   `kubernetes.io/tls` Secrets; every burst of changes rebuilds the routing table and the
//!   certificate set and swaps them in, and fills in the Ingresses' `status.loadBalancer`
//!   (the same on every node, see [`nodes`]);
//! - [`nodes`]: this node's `ingress.corten.io/serving` mark, and the status addresses: the
//!   Ready marked nodes' InternalIPs;
//! - [`routes`]: the routing table (host and path rules → a backend's ready endpoints), pure;
//! - [`tls`]: certificates by SNI from the Secrets, a self-signed default otherwise;
//! - [`proxy`]: one HTTP/2 request (through hyper): route, forward with retries on connection
//!   failure, `X-Forwarded-*`, 404/502/503 with a clear body; the access-log line (target
//!   `ingress::access`) both paths write;
//! - [`http1`]: the HTTP/1.x data path: one task per client connection parses, routes and
//!   relays each exchange itself over pooled backend connections ([`http1::backends`]);
//!   HTTP/2 connections are handed to hyper;
//! - [`pool`]: keep-alive connections to the endpoints for the HTTP/2 path.
//!
//! Requests go straight to endpoint addresses (not through the Service's ClusterIP), so a pod
//! that turns unready stops getting requests as soon as its EndpointSlice says so.

pub mod http1;
pub mod nodes;
pub mod pool;
pub mod proxy;
pub mod routes;
pub mod tls;
pub mod watch;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::Client;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch as signal;

/// The IngressClass corten serves by default.
pub const CLASS: &str = "corten";
/// The `spec.controller` of that IngressClass.
pub const CONTROLLER: &str = "corten.io/ingress-controller";

/// How the ingress controller runs on a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where plain HTTP is served (`0.0.0.0:80` by default); `None`: not at all.
    pub http: Option<SocketAddr>,
    /// Where HTTPS is served (`0.0.0.0:443` by default); `None`: not at all.
    pub https: Option<SocketAddr>,
    /// The IngressClass whose Ingresses are served.
    pub class: String,
    /// This node's name: its Node is marked as serving ingress ([`nodes::SERVING_LABEL`]),
    /// and the Ingresses' status lists the InternalIPs of the Ready marked nodes.
    pub node_name: String,
    /// How long to wait after a watch event for more before rebuilding.
    pub debounce: Duration,
}

impl Config {
    /// Ports 80 and 443 on every address, class [`CLASS`], on node `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Config {
            http: Some(SocketAddr::from(([0, 0, 0, 0], 80))),
            https: Some(SocketAddr::from(([0, 0, 0, 0], 443))),
            class: CLASS.into(),
            node_name: node_name.into(),
            debounce: Duration::from_millis(10),
        }
    }
}

/// Runs the ingress controller until `shutdown` turns true.
pub async fn run(client: Client, config: Config, shutdown: signal::Receiver<bool>) -> Result<()> {
    let shared = proxy::Shared {
        table: Arc::new(RwLock::new(Arc::new(routes::Table::default()))),
        pool: pool::Pool::default(),
        backends: http1::backends::Backends::default(),
        timeouts: http1::Timeouts::default(),
    };
    let resolver = Arc::new(tls::Resolver {
        certs: Arc::new(RwLock::new(Arc::new(tls::Certs::default()))),
        default: Arc::new(tls::default_certificate().context("ingress: default certificate")?),
    });
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = config.http {
        let listener = bind(addr).await?;
        tracing::info!(%addr, "ingress: serving HTTP");
        let info = proxy::Listener {
            scheme: "http",
            port: listener.local_addr()?.port(),
        };
        tasks.spawn(serve(
            listener,
            None,
            shared.clone(),
            info,
            shutdown.clone(),
        ));
    }
    if let Some(addr) = config.https {
        let listener = bind(addr).await?;
        tracing::info!(%addr, "ingress: serving HTTPS");
        let acceptor =
            tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(resolver.clone())?));
        let info = proxy::Listener {
            scheme: "https",
            port: listener.local_addr()?.port(),
        };
        tasks.spawn(serve(
            listener,
            Some(acceptor),
            shared.clone(),
            info,
            shutdown.clone(),
        ));
    }
    watch::ensure_class(&client, &config.class).await;
    let watches = watch::run(client, config, shared, resolver.certs.clone());
    let mut stop = shutdown.clone();
    tokio::select! {
        _ = watches => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    tasks.abort_all();
    tracing::info!("ingress: stopped");
    Ok(())
}

/// Binds `addr`; an address in use is retried for 30 s (a previous `corten` on this node
/// may still be going away).
async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(%addr, "ingress: address in use, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("ingress: binding {addr}"))),
        }
    }
}

/// Accepts connections until shutdown; each is served on its own task: HTTP/1.x by the fast
/// path ([`http1`]), HTTP/2 (by preface, after ALPN or not) by hyper ([`serve_hyper`]).
async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: proxy::Shared,
    info: proxy::Listener,
    mut shutdown: signal::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("ingress: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (shared, tls) = (shared.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => http1::serve(stream, shared, info, peer).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => http1::serve(stream, shared, info, peer).await,
                    Err(e) => tracing::debug!(%peer, "ingress: TLS handshake failed: {e}"),
                },
            }
        });
    }
}

/// Serves a connection with hyper (HTTP/1.1 with upgrades, or HTTP/2): what the fast path
/// ([`http1`]) hands over when a client speaks HTTP/2.
pub(crate) async fn serve_hyper<I>(
    io: I,
    shared: proxy::Shared,
    info: proxy::Listener,
    peer: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| proxy::handle(shared.clone(), info, peer, req));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%peer, "ingress: connection ended: {e}");
    }
}
