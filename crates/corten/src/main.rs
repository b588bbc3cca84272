//! The `corten` binary: `corten server` runs a whole single-node control plane in one process;
//! by default with a node agent for this machine; `corten agent` runs a node agent that joins a
//! server with its join token; `corten images` imports images offline; `corten datastore`
//! exports / imports objects and snapshots the embedded store; `corten sim-nodes`
//! registers simulated nodes (pods on them are reported Running without containers, as kwok
//! does) against any cluster.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the API server allocates and frees a JSON tree or two
/// per request, and glibc's malloc/free/consolidate took ~18 % of the server's CPU under the
/// scheduler benchmark (docs/benchmarks.md, issue 4).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agent;
mod datastore;
mod images;
mod leader;
mod logging;
mod server;

/// corten: a Kubernetes-compatible container orchestrator in one binary.
#[derive(Parser)]
#[command(name = "corten", version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the control plane (API server on the embedded datastore or etcd).
    Server(Box<server::ServerArgs>),
    /// Runs a node agent that joins a server with the server's join token (DATA_DIR/token).
    Agent(agent::AgentArgs),
    /// Runs simulated nodes: pods bound to them are reported Running without containers.
    SimNodes(SimNodesArgs),
    /// Manages the node's container images (offline import).
    #[command(subcommand)]
    Images(images::ImagesCommand),
    /// Moves a cluster's objects between datastores (export / import) and snapshots the
    /// embedded store.
    #[command(subcommand)]
    Datastore(datastore::DatastoreCommand),
    /// Stops every pod container of a node, its containerd, and unmounts what is left, and
    /// removes the cluster DNS interface (for uninstalling; running pods are killed).
    Killall(KillallArgs),
}

#[derive(clap::Args)]
struct KillallArgs {
    /// The data directory of the node.
    #[arg(long, default_value = "/var/lib/corten")]
    data_dir: PathBuf,
}

#[derive(clap::Args)]
struct SimNodesArgs {
    /// How many nodes to simulate.
    #[arg(long)]
    count: usize,
    /// Node names are `PREFIX-0`, `PREFIX-1`, ...
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// The kubeconfig to reach the API server with.
    #[arg(long, default_value = "/var/lib/corten/kubeconfig.yaml")]
    kubeconfig: PathBuf,
    /// Reach these servers (`https://HOST:PORT`, comma-separated) instead of the kubeconfig's,
    /// through a local load balancer, with the kubeconfig's credentials.
    #[arg(long)]
    server: Option<String>,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, env = "CORTEN_LOG", default_value = "info")]
    log: String,
}

/// Cluster DNS flags (shared by any command that runs a node).
#[derive(clap::Args)]
struct DnsArgs {
    /// Do not serve cluster DNS on this node.
    #[arg(long)]
    disable_dns: bool,
    /// Where cluster DNS answers, UDP and TCP (repeatable; default: the cluster DNS address,
    /// 10.43.0.10:53, when the node agent runs). Given, DNS runs even without the agent.
    #[arg(long = "dns-listen", value_name = "ADDR:PORT")]
    dns_listen: Vec<std::net::SocketAddr>,
    /// Upstream resolvers for names outside the cluster (repeatable; default: the nameservers
    /// of /etc/resolv.conf).
    #[arg(long = "dns-upstream", value_name = "ADDR:PORT")]
    dns_upstream: Vec<std::net::SocketAddr>,
}

/// Ingress controller flags (shared by any command that runs a node).
#[derive(clap::Args)]
struct IngressArgs {
    /// Do not run the built-in ingress controller on this node (it runs with the node agent).
    #[arg(long)]
    disable_ingress: bool,
    /// The port the ingress controller serves HTTP on, on every address (0: none).
    #[arg(long, default_value_t = 80)]
    ingress_http_port: u16,
    /// The port the ingress controller serves HTTPS on, on every address (0: none).
    #[arg(long, default_value_t = 443)]
    ingress_https_port: u16,
}

/// What a node does about ingress: run the controller (which marks the Node as serving), or,
/// disabled, remove a mark a previous run left on its Node.
enum NodeIngress {
    Serve(ingress::Config),
    Unmark(String),
}

impl NodeIngress {
    /// From the flags, for node `node_name`: the given ports on every address.
    fn new(args: &IngressArgs, node_name: &str) -> Self {
        if args.disable_ingress {
            return NodeIngress::Unmark(node_name.to_string());
        }
        let mut config = ingress::Config::new(node_name);
        let any = |port: u16| (port != 0).then(|| std::net::SocketAddr::from(([0, 0, 0, 0], port)));
        config.http = any(args.ingress_http_port);
        config.https = any(args.ingress_https_port);
        NodeIngress::Serve(config)
    }

    /// Runs it with `client` (the controller until `shutdown`).
    async fn run(self, client: kube::Client, shutdown: tokio::sync::watch::Receiver<bool>) {
        match self {
            NodeIngress::Serve(config) => {
                if let Err(e) = ingress::run(client, config, shutdown).await {
                    tracing::error!("ingress controller: {e:#}");
                }
            }
            NodeIngress::Unmark(node) => ingress::nodes::unmark(client, node).await,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server::server(*args),
        Command::Agent(args) => agent::agent(args),
        Command::SimNodes(args) => sim_nodes(args),
        Command::Images(cmd) => images::run(cmd),
        Command::Datastore(cmd) => block_on("warn", datastore::run(cmd)),
        Command::Killall(args) => block_on("info", async move {
            for iface in [dns::iface::INTERFACE, proxy::lb::INTERFACE] {
                if let Err(e) = proxy::iface::remove(iface) {
                    eprintln!("corten: {e:#}");
                }
            }
            // The node's nftables tables (a clean stop removes the proxy's; a crash leaves
            // both, and the next start would replace them).
            use proxy::nftables::types::NfFamily;
            for (family, table) in [
                (NfFamily::INet, netpol::TABLE),
                (NfFamily::IP, proxy::TABLE),
            ] {
                let remove = proxy::batch::remove_table(family, table);
                if let Err(e) = proxy::sync::apply(&remove).await {
                    eprintln!("corten: {e:#}");
                }
            }
            let stopped = kubelet::killall(&args.data_dir).await;
            // The pods' bridge, once no pod is left on it (as k3s-killall.sh removes cni0).
            if let Err(e) = proxy::iface::remove(kubelet::network::BRIDGE) {
                eprintln!("corten: {e:#}");
            }
            stopped
        }),
    }
}

fn init_logging(filter: &str) -> logging::Flush {
    logging::init(filter)
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("corten: cannot start the runtime: {e}");
            None
        }
    }
}

/// A shutdown channel that turns true on SIGTERM or SIGINT.
fn shutdown_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

/// A client from a kubeconfig file (its current context).
async fn client_from(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let client_config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(client_config)?)
}

fn sim_nodes(args: SimNodesArgs) -> ExitCode {
    let _log = init_logging(&args.log);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async move {
        let shutdown = shutdown_on_signal();
        let client = match &args.server {
            None => client_from(&args.kubeconfig).await?,
            Some(servers) => {
                let servers = kubelet::loadbalancer::parse_servers(servers)?;
                let lb = kubelet::loadbalancer::start(
                    ([127, 0, 0, 1], 0).into(),
                    servers,
                    shutdown.clone(),
                )
                .await?;
                let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
                let mut config =
                    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
                config.cluster_url = format!("https://{lb}").parse()?;
                kube::Client::try_from(config)?
            }
        };
        kubelet::run_simulated_nodes(client, &args.prefix, args.count, shutdown).await;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corten: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The cluster DNS service's address (ClusterFirst pods resolve through it).
const CLUSTER_DNS: &str = "10.43.0.10";

/// Cluster DNS runs with the node agent (it is served on every node) or where `--dns-listen`
/// asks for it, unless `--disable-dns`.
fn dns_config(args: &DnsArgs, agent: bool) -> Option<dns::Config> {
    if args.disable_dns || (!agent && args.dns_listen.is_empty()) {
        return None;
    }
    let mut config = dns::Config::new(CLUSTER_DNS.parse().ok()?);
    if !args.dns_listen.is_empty() {
        config.listen = args.dns_listen.clone();
    }
    if !args.dns_upstream.is_empty() {
        config.upstreams = Some(args.dns_upstream.clone());
    }
    Some(config)
}
/// The port of the node agent's HTTPS endpoint (kubelet's).
const AGENT_PORT: u16 = 10250;

/// The address this machine reaches others from: the source address of its default route (a
/// UDP socket's connect sends nothing), else its first non-loopback IPv4 address. Bridges the
/// agent made itself (corten0) are thereby not taken for the node's address.
fn default_node_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("198.51.100.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
        .unwrap_or_else(apiserver::primary_address)
}

/// This machine's host name, lowercased (a valid Node name).
fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .to_lowercase()
}

/// Runs `fut` on a fresh runtime with logging; prints its error.
fn block_on(log: &str, fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let _log = init_logging(log);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corten: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses a duration as upstream's flags write them: a number with `ms`, `s`, `m` or `h`
/// (a bare number is seconds).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 40s, 2m, 500ms"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("invalid duration unit {unit:?} in {text:?}")),
    };
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|e| format!("invalid duration {text:?}: {e}"))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
