//! corten's API server: the Kubernetes REST API over HTTPS, backed by a [`store::Store`].
//!
//! A tour, in request order:
//! - [`serve`]: TLS (rustls) and HTTP/1.1 + HTTP/2 (hyper) in front of one axum handler;
//!   [`loopback`]: the same handler in process, for the components of `corten server`;
//! - [`handler`]: open endpoints, authentication ([`auth`]: client certificates, the admin
//!   token), routing, body limits, errors as `Status`; [`request`] parses paths and query
//!   options, [`body`] decodes bodies;
//! - [`discovery`] and OpenAPI (from `api::openapi`), both derived from the registry;
//! - [`generic`]: create/update/patch/delete for every resource, with the resource's strategy;
//!   [`list`] and [`watch`] for reads; [`subresources`] for scale, binding and eviction;
//!   [`delete`] for DELETE, with [`propagation`] (orphan / foreground / background);
//!   [`alloc`] for service addresses; [`table`] for kubectl's tables;
//! - [`nodeproxy`]: pods/log, exec, attach and portforward, proxied to the node's agent;
//!   [`nodeauth`]: node credentials for agents that present the join token;
//! - [`bootstrap`]: the namespaces and `kubernetes` service every cluster has;
//!   [`masterleases`]: its Endpoints list every live server when several share etcd;
//! - [`pki`]: the cluster CA, serving certificate, the API server's client certificate for
//!   agents, admin token, join token and kubeconfig; [`identity`]: the same CA and tokens for
//!   every server on one etcd (stored encrypted with the join token).
//!
//! Invariant: this crate is the only one that opens the store; everything else is an API client.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub mod admission;
pub mod alloc;
pub mod auth;
pub mod body;
pub mod bootstrap;
pub mod datastore;
pub mod delete;
pub mod discovery;
pub mod eviction;
pub mod generic;
pub mod handler;
pub mod identity;
pub mod instrumented;
pub mod limitranger;
pub mod list;
pub mod loopback;
pub mod masterleases;
pub mod metrics;
pub mod nodeauth;
pub mod nodeproxy;
pub mod objects;
pub mod pki;
pub mod propagation;
pub mod quota;
pub mod request;
pub mod serve;
pub mod state;
pub mod subresources;
pub mod table;
pub mod watch;
pub mod watchcache;

pub use state::ApiState;

/// How to run the API server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the datastore, certificates and kubeconfig live.
    pub data_dir: PathBuf,
    /// The address to listen on.
    pub bind_address: IpAddr,
    /// The HTTPS port.
    pub port: u16,
    /// How often old revisions are compacted.
    pub compaction_interval: Duration,
    /// How many revisions compaction keeps.
    pub compaction_keep: i64,
    /// The datastore: None for the embedded SQLite store (`DATA_DIR/state.db`), or an etcd
    /// cluster. Certificates, tokens and the kubeconfig stay in `data_dir` either way.
    pub etcd: Option<store::etcd::EtcdConfig>,
    /// The join token (`--token`): on etcd, the key to the cluster identity that the first
    /// server stored (see [`identity`]); None: the one in `DATA_DIR/token`, or a new one.
    pub token: Option<String>,
    /// Extra DNS names and IP addresses for the serving certificate (`--tls-san`), e.g. a load
    /// balancer's in front of several servers.
    pub tls_sans: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/corten"),
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 6443,
            compaction_interval: Duration::from_secs(300),
            compaction_keep: 10_000,
            etcd: None,
            token: None,
            tls_sans: vec![],
        }
    }
}

/// The address other machines and pods reach this host on (first non-loopback IPv4).
pub fn primary_address() -> IpAddr {
    pki::host_addresses()
        .into_iter()
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A started API server.
pub struct Running {
    /// The HTTPS URL on loopback, e.g. `https://127.0.0.1:6443`.
    pub url: String,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The API in process, as the admin user: what in-process components are clients of.
    pub loopback: loopback::Loopback,
    /// Finishes when the server has stopped serving.
    pub serving: tokio::task::JoinHandle<()>,
    /// Whether the datastore may be shared with other servers (etcd): then the compactor and
    /// the controllers must run on one elected server only.
    pub shared_datastore: bool,
    /// The datastore compactor, for the caller to run (on the leader only, when shared).
    pub compactor: Compactor,
}

/// Compacts the datastore on a schedule (see [`store::spawn_compactor`]).
#[derive(Clone)]
pub struct Compactor {
    store: store::SharedStore,
    interval: Duration,
    keep: i64,
}

impl Compactor {
    /// Starts compacting; abort the handle to stop.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        store::spawn_compactor(self.store.clone(), self.interval, self.keep)
    }
}

/// Starts the API server; it serves until `shutdown` turns true. Returns once it accepts
/// connections, so that in-process clients can connect.
pub async fn start(
    config: Config,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Running> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let probe = config.data_dir.join(".write-test");
    std::fs::write(&probe, b"").with_context(|| {
        format!(
            "data directory {} is not writable",
            config.data_dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);

    let addr = SocketAddr::new(config.bind_address, config.port);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            bail!(
                "cannot listen on {addr}: the port is already in use (choose another with --https-listen-port)"
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
    };

    let store: store::SharedStore = match &config.etcd {
        None => {
            let db = config.data_dir.join("state.db");
            Arc::new(store::sqlite::SqliteStore::open(&db).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
        // API watches share one store watch per resource (`watchcache`).
        Some(etcd) => Arc::new(
            store::etcd::EtcdStore::connect(etcd)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
    };
    let compactor = Compactor {
        store: store.clone(),
        interval: config.compaction_interval,
        keep: config.compaction_keep,
    };

    let service_ip = IpAddr::V4(alloc::KUBERNETES_SERVICE_IP);
    if config.etcd.is_some() {
        identity::sync(
            store.as_ref(),
            &config.data_dir,
            config.token.as_deref(),
            service_ip,
        )
        .await?;
    } else if let Some(token) = &config.token {
        pki::write_private(
            &config.data_dir.join("token"),
            &format!("{}\n", token.trim()),
        )?;
    }
    let pki = pki::Pki::load_or_create_with_sans(&config.data_dir, service_ip, &config.tls_sans)?;
    let host = primary_address();
    let port = listener.local_addr()?.port();
    let url = format!("https://127.0.0.1:{port}");
    let kubeconfig = config.data_dir.join("kubeconfig.yaml");
    pki.write_kubeconfig(&kubeconfig, &url)?;

    let agents = nodeproxy::AgentClient::new(
        &pki.ca_pem,
        &pki.kubelet_client_cert_pem,
        &pki.kubelet_client_key_pem,
    )?;
    let state = Arc::new(
        ApiState::new(store, pki.admin_token.clone(), format!("{host}:{port}"))
            .with_nodes(nodeauth::NodeSigner::new(&pki)?, agents),
    );
    bootstrap::run(&state, &host.to_string(), port)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap failed: {e}"))?;
    if config.etcd.is_some() {
        masterleases::spawn(state.clone(), host.to_string(), port, shutdown.clone());
    }

    let app = axum::Router::new()
        .fallback(handler::handle)
        .with_state(state);
    let loopback = loopback::Loopback::new(app.clone(), &pki.admin_token)?;
    let tls = serve::tls_config(&pki.serving_cert_pem, &pki.serving_key_pem, &pki.ca_pem)?;
    tracing::info!(%addr, kubeconfig = %kubeconfig.display(), join_token = %config.data_dir.join("token").display(), "API server listening");
    let serving = tokio::spawn(async move {
        serve::serve(listener, tls, app, shutdown).await;
        tracing::info!("API server stopped");
    });
    Ok(Running {
        url,
        kubeconfig,
        loopback,
        serving,
        shared_datastore: config.etcd.is_some(),
        compactor,
    })
}
