//! corten's node agent (the kubelet's counterpart): it registers its Node, keeps its Lease and
//! conditions current, and runs the pods bound to it as containers on containerd through CRI.
//!
//! - [`credentials`]: the agent's identity, obtained from the server with the join token.
//! - [`runtime`]: the CRI client and the agent's own supervised containerd.
//! - [`loadbalancer`]: the local endpoint that spreads an agent's connections over several
//!   API servers (`--server URL,URL`).
//! - [`images`]: offline image import (`corten images import`, `DATA_DIR/agent/images/`).
//! - [`node`]: registration, capacity, conditions, Lease.
//! - [`network`]: the pod network (CNI bridge on the node's pod CIDR).
//! - [`routes`]: routes to the other nodes' pod CIDRs (host-gw).
//! - [`pods`]: the pod workers (sandbox, containers, volumes, probes, status).
//! - [`events`]: the events the agent writes.
//! - [`server`]: the agent's HTTPS endpoint (kubelet's port 10250): container logs, exec,
//!   attach and port-forward, for the API server only.
//! - [`sim`]: the simulated node agent: nodes whose pods are reported Running without any
//!   container being started, as kwok does.
//!
//! The agent is an API client like every other component: it never reads the store.

pub mod credentials;
pub mod events;
pub mod images;
pub mod loadbalancer;
pub mod network;
pub mod node;
pub mod pods;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod sim;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;

pub use sim::run_simulated_nodes;

use runtime::Cri;
use runtime::containerd::{Layout, RuntimeHealth};

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name (the host name by default).
    pub node_name: String,
    /// The node's address.
    pub node_ip: IpAddr,
    /// The data directory; the agent keeps its files under `DATA_DIR/agent`.
    pub data_dir: PathBuf,
    /// An existing CRI runtime's endpoint (`unix:///run/containerd/containerd.sock`); `None`
    /// starts and supervises the agent's own containerd.
    pub runtime_endpoint: Option<String>,
    /// The cluster DNS service address given to ClusterFirst pods.
    pub cluster_dns: String,
    /// The cluster domain.
    pub cluster_domain: String,
    /// The cluster CIDR (recorded in the CNI config; pods get the node's /24 of it).
    pub cluster_cidr: String,
    /// The port of the agent's HTTPS endpoint, as published in the Node.
    pub agent_port: u16,
    /// Extra Node labels.
    pub labels: BTreeMap<String, String>,
}

impl AgentConfig {
    /// `DATA_DIR/agent`.
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }
}

/// Connects to (or starts) the runtime. Returns the client and the runtime's health.
pub async fn start_runtime(
    config: &AgentConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(Cri, watch::Receiver<RuntimeHealth>, Layout)> {
    let layout = Layout::new(&config.agent_dir());
    match &config.runtime_endpoint {
        Some(endpoint) => {
            let socket = runtime::socket_path(endpoint);
            let cri = Cri::connect(socket.clone())?;
            let (_tx, rx) = watch::channel(RuntimeHealth::Up);
            std::mem::forget(_tx);
            Ok((cri, rx, Layout { socket, ..layout }))
        }
        None => {
            let health = runtime::containerd::supervise(layout.clone(), shutdown).await?;
            let cri = Cri::connect(layout.socket.clone())?;
            cri.wait_ready(std::time::Duration::from_secs(30)).await?;
            Ok((cri, health, layout))
        }
    }
}

/// Joins the cluster (see [`credentials`]): the stored credentials when still good, else new
/// ones from the server. An unreachable server is retried every 2 s until `shutdown`; a
/// refusal ([`credentials::Refused`]) is returned at once.
pub async fn join(
    config: &AgentConfig,
    join: &credentials::Join,
    mut shutdown: watch::Receiver<bool>,
) -> Result<credentials::Credentials> {
    let mut logged = false;
    loop {
        match credentials::obtain(
            &config.agent_dir(),
            &config.node_name,
            &[config.node_ip],
            join,
        )
        .await
        {
            Ok(c) => return Ok(c),
            Err(e) if e.downcast_ref::<credentials::Refused>().is_some() => return Err(e),
            Err(e) => {
                if !logged {
                    tracing::warn!("cannot join {} yet (retrying): {e:#}", join.server);
                    logged = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                anyhow::bail!("shut down before joining")
            }
        }
    }
}

/// Runs the agent until `shutdown` turns true: joins the cluster with `join`, starts the
/// runtime and the agent's endpoint, registers the Node and runs its pods. Containers keep
/// running after it returns.
pub async fn run(
    config: AgentConfig,
    join: credentials::Join,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let (creds, client) = connect(&config, &join, shutdown.clone()).await?;
    run_joined(config, creds, client, shutdown).await
}

/// Joins the cluster with `join` (or reuses the credentials kept from an earlier join) and
/// returns them with an API client that authenticates as the node.
pub async fn connect(
    config: &AgentConfig,
    join: &credentials::Join,
    shutdown: watch::Receiver<bool>,
) -> Result<(credentials::Credentials, kube::Client)> {
    let agent_dir = config.agent_dir();
    std::fs::create_dir_all(&agent_dir)
        .with_context(|| format!("cannot create {}", agent_dir.display()))?;
    let creds = self::join(config, join, shutdown).await?;
    let client = credentials::client(&creds).await?;
    Ok((creds, client))
}

/// [`run`] after [`connect`]: the runtime, the endpoint, the Node, pod routes and the pods.
pub async fn run_joined(
    config: AgentConfig,
    creds: credentials::Credentials,
    client: kube::Client,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let agent_dir = config.agent_dir();
    let listener = server::bind(config.agent_port).await?;
    let tls = server::tls_config(&creds)?;
    let (cri, health, layout) = start_runtime(&config, shutdown.clone()).await?;
    std::fs::create_dir_all(node::local_path_root(&config.data_dir))?;
    tokio::spawn(server::serve(
        listener,
        tls,
        Arc::new(server::Ctx {
            cri: cri.clone(),
            client: client.clone(),
        }),
        shutdown.clone(),
    ));
    tracing::info!(port = config.agent_port, "agent endpoint listening");
    let images_dir = agent_dir.join("images");
    std::fs::create_dir_all(&images_dir)?;
    images::import_dir(&layout.socket, &images_dir).await;
    let runtime_version = cri.version().await?;
    let id = node::NodeIdentity {
        name: config.node_name.clone(),
        ip: config.node_ip,
        agent_port: config.agent_port,
        data_dir: config.data_dir.clone(),
        labels: config.labels.clone(),
    };
    let registered = node::register(&client, &id, &runtime_version).await?;
    let ipam_dir = agent_dir.join("cni").join("ipam");
    // A node that has its pod CIDR already (an agent restart) has its network at once, so its
    // first heartbeat does not report it NotReady (which would take its LoadBalancer
    // addresses away for a heartbeat period).
    let known_cidr = registered.spec.as_ref().and_then(|s| s.pod_cidr.clone());
    if let Some(cidr) = &known_cidr {
        network::install(&layout.cni_conf_dir, cidr, &config.cluster_cidr, &ipam_dir)?;
    }
    let (net_tx, net_rx) = watch::channel(known_cidr.is_some());
    tokio::spawn(node::heartbeat(
        client.clone(),
        id.clone(),
        runtime_version,
        health,
        net_rx,
        shutdown.clone(),
    ));
    let pod_cidr = node::wait_for_pod_cidr(&client, &config.node_name).await?;
    if known_cidr.as_ref() != Some(&pod_cidr) {
        network::install(
            &layout.cni_conf_dir,
            &pod_cidr,
            &config.cluster_cidr,
            &ipam_dir,
        )?;
    }
    if let Err(e) = network::install_masquerade(&pod_cidr, &config.cluster_cidr).await {
        tracing::error!("pods cannot reach beyond the cluster: {e:#}");
    }
    let _ = net_tx.send(true);
    let routes = tokio::spawn(routes::run(client.clone(), config.node_name.clone()));
    tracing::info!(node = %config.node_name, %pod_cidr, "node agent ready");
    let machine = node::Machine::read(&config.data_dir);
    let shared = Arc::new(pods::Shared {
        client: client.clone(),
        cri,
        node_name: config.node_name.clone(),
        node_ip: config.node_ip.to_string(),
        pods_dir: agent_dir.join("pods"),
        logs_dir: agent_dir.join("logs"),
        dns: pods::sandbox::ClusterDns {
            server: config.cluster_dns.clone(),
            domain: config.cluster_domain.clone(),
        },
        events: events::Recorder::new(client, &config.node_name),
        allocatable: (machine.cpus as f64, machine.memory_bytes as f64),
    });
    pods::run(shared, shutdown).await;
    routes.abort();
    Ok(())
}

/// Stops and removes every pod sandbox of the agent at `data_dir` (the CNI teardown releases
/// their addresses and network namespaces), stops its containerd and unmounts what is left
/// under the data dir: k3s's killall script, for tests and for uninstalling.
pub async fn killall(data_dir: &std::path::Path) -> Result<()> {
    let config = AgentConfig {
        node_name: String::new(),
        node_ip: IpAddr::from([127, 0, 0, 1]),
        data_dir: data_dir.to_path_buf(),
        runtime_endpoint: None,
        cluster_dns: String::new(),
        cluster_domain: String::new(),
        cluster_cidr: String::new(),
        agent_port: 0,
        labels: BTreeMap::new(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (cri, _health, _layout) = start_runtime(&config, stop_rx).await?;
    let mut rt = cri.runtime.clone();
    let sandboxes = rt
        .list_pod_sandbox(runtime::cri::ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items;
    for s in sandboxes {
        let _ = rt
            .stop_pod_sandbox(runtime::cri::StopPodSandboxRequest {
                pod_sandbox_id: s.id.clone(),
            })
            .await;
        let _ = rt
            .remove_pod_sandbox(runtime::cri::RemovePodSandboxRequest {
                pod_sandbox_id: s.id,
            })
            .await;
    }
    let _ = stop_tx.send(true);
    // The supervisor stops containerd; wait for its pid file to go.
    let pid_file = config.agent_dir().join("containerd").join("containerd.pid");
    for _ in 0..300 {
        if !pid_file.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    unmount_under(data_dir);
    if let Err(e) = network::remove_masquerade().await {
        tracing::warn!("removing the pod masquerading table: {e:#}");
    }
    Ok(())
}

/// Unmounts every mount point under `dir`, deepest first.
pub fn unmount_under(dir: &std::path::Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&*prefix))
        .map(String::from)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = rustix::mount::unmount(p.as_str(), rustix::mount::UnmountFlags::DETACH);
    }
}
