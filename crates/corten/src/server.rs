//! `corten server`: the API server on the embedded datastore or etcd, with the components
//! that are its clients in the same process (controllers, scheduler, node agent, service
//! proxy, NetworkPolicy, cluster DNS, ingress).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::{
    AGENT_PORT, CLUSTER_DNS, DnsArgs, IngressArgs, NodeIngress, datastore, default_node_ip,
    dns_config, host_name, init_logging, leader, parse_duration, runtime, shutdown_on_signal,
};

/// Arguments of `corten server`.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// Where state, certificates and the admin kubeconfig are kept.
    #[arg(long, default_value = "/var/lib/corten")]
    data_dir: PathBuf,
    /// The HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    https_listen_port: u16,
    /// The address the API server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Seconds between compactions of old revisions.
    #[arg(long, default_value_t = 300)]
    compaction_interval_seconds: u64,
    /// How many revisions of history compaction keeps (watches and lists may resume from them).
    #[arg(long, default_value_t = 10_000)]
    compaction_retain_revisions: i64,
    #[command(flatten)]
    datastore: datastore::EtcdArgs,
    /// The join token. On etcd it also unlocks the cluster identity (CA, admin and join
    /// tokens) that the first server stored: servers of one cluster share it.
    #[arg(long, env = "CORTEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the join token (wins over --token).
    #[arg(long, env = "CORTEN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// An extra DNS name or IP address for the API server's certificate (repeatable), e.g. of
    /// a load balancer in front of several servers.
    #[arg(long = "tls-san", value_name = "NAME")]
    tls_sans: Vec<String>,
    #[command(flatten)]
    leader: leader::LeaderArgs,
    /// Do not run the controller manager (the API server's in-process controllers).
    #[arg(long)]
    disable_controller_manager: bool,
    /// How long a node may go without renewing its Lease or posting status before the node
    /// lifecycle controller marks it Unknown and taints it unreachable (`40s`, `2m`, `500ms`).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// Do not run the scheduler.
    #[arg(long)]
    disable_scheduler: bool,
    /// Do not run a node agent for this machine (the server is then a control plane only).
    #[arg(long)]
    disable_agent: bool,
    /// Do not run the service proxy (it runs with the node agent).
    #[arg(long)]
    disable_proxy: bool,
    /// Do not enforce NetworkPolicies (the controller runs with the node agent).
    #[arg(long)]
    disable_network_policy: bool,
    /// Give LoadBalancer Services addresses from this IPv4 CIDR (bound by one node each,
    /// MetalLB L2 style) instead of the nodes' addresses.
    #[arg(long, value_name = "CIDR")]
    lb_pool: Option<String>,
    #[command(flatten)]
    ingress: IngressArgs,
    /// Use an existing CRI runtime (`unix:///run/containerd/containerd.sock`) instead of the
    /// agent's own containerd.
    #[arg(long)]
    container_runtime_endpoint: Option<String>,
    #[command(flatten)]
    dns: DnsArgs,
    /// The node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's address (default: the source address of the default route).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// The port of the node agent's HTTPS endpoint (kubelet's 10250).
    #[arg(long, default_value_t = AGENT_PORT)]
    agent_port: u16,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `apiserver=debug`.
    #[arg(long, env = "CORTEN_LOG", default_value = "info")]
    log: String,
}

/// `corten server`: runs the API server and its in-process clients until a signal.
pub fn server(args: ServerArgs) -> ExitCode {
    let _log = init_logging(&args.log);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let checked = args.datastore.config().and_then(|etcd| {
        let token = match &args.token_file {
            Some(path) => Some(leader::read_token(path)?),
            None => args.token.as_ref().map(|t| t.trim().to_string()),
        };
        let election = etcd
            .is_some()
            .then(|| leader::config(&args.leader))
            .transpose()?;
        anyhow::Ok((etcd, token, election))
    });
    let (etcd, token, election) = match checked {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corten: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let config = apiserver::Config {
        data_dir: args.data_dir,
        bind_address: args.bind_address,
        port: args.https_listen_port,
        compaction_interval: std::time::Duration::from_secs(
            args.compaction_interval_seconds.max(1),
        ),
        compaction_keep: args.compaction_retain_revisions.max(0),
        etcd,
        token,
        tls_sans: args.tls_sans.clone(),
    };
    let agent = (!args.disable_agent).then(|| kubelet::AgentConfig {
        node_name: args.node_name.clone().unwrap_or_else(host_name),
        node_ip: args.node_ip.unwrap_or_else(default_node_ip),
        data_dir: config.data_dir.clone(),
        runtime_endpoint: args.container_runtime_endpoint.clone(),
        cluster_dns: CLUSTER_DNS.into(),
        cluster_domain: "cluster.local".into(),
        cluster_cidr: controllers::nodeipam::DEFAULT_CLUSTER_CIDR.into(),
        agent_port: args.agent_port,
        labels: [
            (
                "node-role.kubernetes.io/control-plane".to_string(),
                "true".to_string(),
            ),
            (
                "node-role.kubernetes.io/master".to_string(),
                "true".to_string(),
            ),
        ]
        .into(),
    });
    let dns = dns_config(&args.dns, agent.is_some());
    let ingress = agent
        .as_ref()
        .map(|agent| NodeIngress::new(&args.ingress, &agent.node_name));
    let lb_pool = match args
        .lb_pool
        .as_deref()
        .map(|p| (p, controllers::nodeipam::Ipv4Net::parse(p)))
    {
        None => None,
        Some((_, Some(net))) => Some(net),
        Some((p, None)) => {
            eprintln!("corten: --lb-pool {p:?}: expected an IPv4 CIDR such as 192.168.1.240/28");
            return ExitCode::FAILURE;
        }
    };
    let components = Components {
        ingress,
        controller_manager: !args.disable_controller_manager,
        controllers: controllers::Config {
            node_lifecycle: controllers::nodelifecycle::Config {
                grace_period: args.node_monitor_grace_period,
                ..Default::default()
            },
            lb_pool,
        },
        scheduler: !args.disable_scheduler,
        election,
        proxy: !args.disable_proxy,
        network_policy: !args.disable_network_policy,
        agent,
        dns,
    };
    let result = runtime.block_on(async move {
        let rx = shutdown_on_signal();
        run_server(config, components, rx).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corten: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The whole single-node control plane: the API server, then the components that are its
/// clients (the controllers, scheduler, DNS, proxy and ingress through the API in process,
/// `apiserver::loopback`, as the admin user;
/// the node agent joins with the join token over HTTPS, as a remote agent does).
async fn run_server(
    config: apiserver::Config,
    components: Components,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let bind_address = config.bind_address;
    // The API server stops after the leader's parts, so that the leader can release its Lease.
    let (api_stop, api_shutdown) = tokio::sync::watch::channel(false);
    let running = apiserver::start(config, api_shutdown).await?;
    // The agent reaches its own server on loopback, unless the server listens elsewhere only.
    let own_url = match bind_address {
        a if a.is_unspecified() || a.is_loopback() => running.url.clone(),
        IpAddr::V6(a) => running.url.replacen("127.0.0.1", &format!("[{a}]"), 1),
        a => running.url.replacen("127.0.0.1", &a.to_string(), 1),
    };
    // In-process components are clients of the API in process (no TLS, no HTTP framing).
    let client = kube::Client::new(running.loopback.clone(), "default");
    let mut tasks = tokio::task::JoinSet::new();
    // Controllers, scheduler and compactor: on the elected server only, when shared.
    let leading = leader::Leading {
        controller_manager: components.controller_manager,
        controllers: components.controllers.clone(),
        scheduler: components.scheduler,
        compactor: running.compactor.clone(),
    };
    let election = components.election.filter(|_| running.shared_datastore);
    let leader = tokio::spawn(leader::run(
        client.clone(),
        leading,
        election,
        shutdown.clone(),
    ));
    let mut on_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let _ = on_shutdown.wait_for(|s| *s).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(8), leader).await;
        let _ = api_stop.send(true);
    });
    if let Some(config) = components.dns {
        let (client, shutdown) = (client.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) = dns::run(client, config, shutdown).await {
                tracing::error!("cluster DNS: {e:#}");
            }
        });
    }
    if let Some(agent) = components.agent.as_ref().filter(|_| components.proxy) {
        let (client, config) = (client.clone(), proxy::Config::new(&agent.node_name));
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = proxy::run(client, config, shutdown).await {
                tracing::error!("service proxy: {e:#}");
            }
        });
    }
    if let Some(agent) = components
        .agent
        .as_ref()
        .filter(|_| components.network_policy)
    {
        let (client, config) = (client.clone(), netpol::Config::new(&agent.node_name));
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = netpol::run(client, config, shutdown).await {
                tracing::error!("network policy: {e:#}");
            }
        });
    }
    if let Some(ingress) = components.ingress {
        tasks.spawn(ingress.run(client.clone(), shutdown.clone()));
    }
    if let Some(agent) = components.agent {
        let shutdown = shutdown.clone();
        let token_file = data_dir.join("token");
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("cannot read the join token {}", token_file.display()))?;
        let join = kubelet::credentials::Join {
            server: own_url,
            token: token.trim().to_string(),
        };
        tasks.spawn(async move {
            if let Err(e) = kubelet::run(agent, join, shutdown).await {
                tracing::error!("node agent: {e:#}");
            }
        });
    }
    running.serving.await?;
    // Give the agent a moment to stop its containerd (containers keep running).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(12), async {
        while let Some(r) = tasks.join_next().await {
            let _ = r;
        }
    })
    .await;
    tasks.abort_all();
    Ok(())
}

/// Which API clients `corten server` runs beside the API server.
struct Components {
    controller_manager: bool,
    controllers: controllers::Config,
    scheduler: bool,
    /// Leader election settings (a shared datastore).
    election: Option<controllers::leaderelection::Config>,
    proxy: bool,
    network_policy: bool,
    agent: Option<kubelet::AgentConfig>,
    dns: Option<dns::Config>,
    /// The ingress controller on the agent's node (or the removal of its mark).
    ingress: Option<NodeIngress>,
}
