//! corten's API server: the Kubernetes REST API over HTTPS, backed by a [`store::Store`].
//!
//! A tour, in request order:
//! - [`serve`]: TLS (rustls) and HTTP/1.1 + HTTP/2 (hyper) in front of one axum handler;
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
//! - [`pki`]: the cluster CA, serving certificate, the API server's client certificate for
//!   agents, admin token, join token and kubeconfig.
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
pub mod instrumented;
pub mod limitranger;
pub mod list;
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
    /// The admin kubeconfig (what in-process components connect with, as any client would).
    pub kubeconfig: PathBuf,
    /// Finishes when the server has stopped serving.
    pub serving: tokio::task::JoinHandle<()>,
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
        Some(etcd) => Arc::new(
            store::etcd::EtcdStore::connect(etcd)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
    };
    store::spawn_compactor(
        store.clone(),
        config.compaction_interval,
        config.compaction_keep,
    );

    let pki = pki::Pki::load_or_create(&config.data_dir, IpAddr::V4(alloc::KUBERNETES_SERVICE_IP))?;
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

    let app = axum::Router::new()
        .fallback(handler::handle)
        .with_state(state);
    let tls = serve::tls_config(&pki.serving_cert_pem, &pki.serving_key_pem, &pki.ca_pem)?;
    tracing::info!(%addr, kubeconfig = %kubeconfig.display(), join_token = %config.data_dir.join("token").display(), "API server listening");
    let serving = tokio::spawn(async move {
        serve::serve(listener, tls, app, shutdown).await;
        tracing::info!("API server stopped");
    });
    Ok(Running {
        url,
        kubeconfig,
        serving,
    })
}
