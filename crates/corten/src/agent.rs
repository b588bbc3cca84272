//! `corten agent`: a node agent (with the node's service proxy, NetworkPolicy controller,
//! cluster DNS and ingress controller) that joins a cluster with its join token, through a
//! local load balancer when given several servers.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::{
    AGENT_PORT, CLUSTER_DNS, DnsArgs, IngressArgs, NodeIngress, default_node_ip, dns_config,
    host_name, init_logging, runtime, shutdown_on_signal,
};

/// Arguments of `corten agent`.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// The server to join: `https://HOST:PORT`, or several servers of one cluster,
    /// comma-separated (the agent then reaches them through its local load balancer).
    #[arg(long, env = "CORTEN_URL")]
    server: String,
    /// The port of the agent's local API server load balancer on 127.0.0.1, used when --server
    /// names several servers.
    #[arg(long, default_value_t = kubelet::loadbalancer::DEFAULT_PORT)]
    lb_server_port: u16,
    /// The join token (the server's DATA_DIR/token).
    #[arg(long, env = "CORTEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the join token (wins over --token).
    #[arg(long, env = "CORTEN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Where the agent keeps its state (under DATA_DIR/agent).
    #[arg(long, default_value = "/var/lib/corten")]
    data_dir: PathBuf,
    /// The node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's address (default: the source address of the default route).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// Use an existing CRI runtime (`unix:///run/containerd/containerd.sock`) instead of the
    /// agent's own containerd.
    #[arg(long)]
    container_runtime_endpoint: Option<String>,
    /// The port of the agent's HTTPS endpoint (kubelet's 10250).
    #[arg(long, default_value_t = AGENT_PORT)]
    agent_port: u16,
    /// Extra Node labels, `KEY=VALUE` (repeatable).
    #[arg(long = "node-label")]
    node_labels: Vec<String>,
    /// Do not run the service proxy on this node.
    #[arg(long)]
    disable_proxy: bool,
    /// Do not enforce NetworkPolicies on this node.
    #[arg(long)]
    disable_network_policy: bool,
    #[command(flatten)]
    dns: DnsArgs,
    #[command(flatten)]
    ingress: IngressArgs,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, env = "CORTEN_LOG", default_value = "info")]
    log: String,
}

/// A node agent joining a server with the join token.
pub fn agent(args: AgentArgs) -> ExitCode {
    let _log = init_logging(&args.log);
    let token = match (&args.token_file, &args.token) {
        (Some(path), _) => match std::fs::read_to_string(path) {
            Ok(t) => t.trim().to_string(),
            Err(e) => {
                eprintln!("corten: cannot read the token file {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        (None, Some(t)) => t.trim().to_string(),
        (None, None) => {
            eprintln!("corten: a join token is needed: --token, --token-file or CORTEN_TOKEN");
            return ExitCode::FAILURE;
        }
    };
    let mut labels = std::collections::BTreeMap::new();
    for l in &args.node_labels {
        match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                labels.insert(k.to_string(), v.to_string());
            }
            _ => {
                eprintln!("corten: --node-label {l:?}: expected KEY=VALUE");
                return ExitCode::FAILURE;
            }
        }
    }
    let config = kubelet::AgentConfig {
        node_name: args.node_name.unwrap_or_else(host_name),
        node_ip: args.node_ip.unwrap_or_else(default_node_ip),
        data_dir: args.data_dir,
        runtime_endpoint: args.container_runtime_endpoint,
        cluster_dns: CLUSTER_DNS.into(),
        cluster_domain: "cluster.local".into(),
        cluster_cidr: controllers::nodeipam::DEFAULT_CLUSTER_CIDR.into(),
        agent_port: args.agent_port,
        labels,
    };
    // Several servers: through the local load balancer. One: as given, as before.
    let several = args.server.contains(',');
    let servers = match several.then(|| kubelet::loadbalancer::parse_servers(&args.server)) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            eprintln!("corten: {e:#}");
            return ExitCode::FAILURE;
        }
        None => vec![],
    };
    let lb_port = args.lb_server_port;
    let mut join = kubelet::credentials::Join {
        server: args.server.clone(),
        token,
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let dns = dns_config(&args.dns, true);
    let proxy = (!args.disable_proxy).then(|| proxy::Config::new(&config.node_name));
    let netpol = (!args.disable_network_policy).then(|| netpol::Config::new(&config.node_name));
    let ingress = NodeIngress::new(&args.ingress, &config.node_name);
    let result = runtime.block_on(async move {
        let shutdown = shutdown_on_signal();
        if let [only] = servers.as_slice() {
            join.server = format!("https://{only}");
        } else if servers.len() > 1 {
            let listen = ([127, 0, 0, 1], lb_port).into();
            let lb = kubelet::loadbalancer::start(listen, servers, shutdown.clone()).await?;
            join.server = format!("https://{lb}");
        }
        let (creds, client) = kubelet::connect(&config, &join, shutdown.clone()).await?;
        // The node's service proxy, NetworkPolicy controller, cluster DNS and ingress
        // controller, as API clients with the node's identity.
        let mut components = tokio::task::JoinSet::new();
        if let Some(proxy) = proxy {
            let (client, shutdown) = (client.clone(), shutdown.clone());
            components.spawn(async move {
                if let Err(e) = proxy::run(client, proxy, shutdown).await {
                    tracing::error!("service proxy: {e:#}");
                }
            });
        }
        if let Some(netpol) = netpol {
            let (client, shutdown) = (client.clone(), shutdown.clone());
            components.spawn(async move {
                if let Err(e) = netpol::run(client, netpol, shutdown).await {
                    tracing::error!("network policy: {e:#}");
                }
            });
        }
        if let Some(dns) = dns {
            let (client, shutdown) = (client.clone(), shutdown.clone());
            components.spawn(async move {
                if let Err(e) = dns::run(client, dns, shutdown).await {
                    tracing::error!("cluster DNS: {e:#}");
                }
            });
        }
        components.spawn(ingress.run(client.clone(), shutdown.clone()));
        let result = kubelet::run_joined(config, creds, client, shutdown).await;
        // Let them clean up (the proxy's and netpol's tables, the DNS interface; the ingress
        // controller's listeners close).
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(10), components.join_all()).await;
        result
    });
    // Let the supervised containerd stop (containers keep running).
    runtime.shutdown_timeout(std::time::Duration::from_secs(12));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corten: {e:#}");
            ExitCode::FAILURE
        }
    }
}
