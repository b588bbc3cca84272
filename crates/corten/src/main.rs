//! The `corten` binary: `corten server` runs a whole single-node control plane in one process;
//! `corten sim-nodes` registers simulated nodes (pods on them are reported Running without
//! containers, as kwok does) against any cluster.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// corten: a Kubernetes-compatible container orchestrator in one binary.
#[derive(Parser)]
#[command(name = "corten", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the control plane (API server on the embedded datastore).
    Server(ServerArgs),
    /// Runs simulated nodes: pods bound to them are reported Running without containers.
    SimNodes(SimNodesArgs),
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
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, env = "CORTEN_LOG", default_value = "info")]
    log: String,
}

#[derive(clap::Args)]
struct ServerArgs {
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
    /// Do not run the controller manager (the API server's in-process controllers).
    #[arg(long)]
    disable_controller_manager: bool,
    /// Do not run the scheduler.
    #[arg(long)]
    disable_scheduler: bool,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `apiserver=debug`.
    #[arg(long, env = "CORTEN_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server(args),
        Command::SimNodes(args) => sim_nodes(args),
    }
}

fn init_logging(filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
    init_logging(&args.log);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async move {
        let shutdown = shutdown_on_signal();
        let client = client_from(&args.kubeconfig).await?;
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

fn server(args: ServerArgs) -> ExitCode {
    init_logging(&args.log);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let config = apiserver::Config {
        data_dir: args.data_dir,
        bind_address: args.bind_address,
        port: args.https_listen_port,
        compaction_interval: std::time::Duration::from_secs(
            args.compaction_interval_seconds.max(1),
        ),
        compaction_keep: args.compaction_retain_revisions.max(0),
    };
    let components = Components {
        controller_manager: !args.disable_controller_manager,
        scheduler: !args.disable_scheduler,
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
/// clients (they connect through the admin kubeconfig, as any client would).
async fn run_server(
    config: apiserver::Config,
    components: Components,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let running = apiserver::start(config, shutdown.clone()).await?;
    let client = client_from(&running.kubeconfig).await?;
    let mut tasks = tokio::task::JoinSet::new();
    if components.controller_manager {
        tasks.spawn(controllers::run(client.clone(), shutdown.clone()));
    }
    if components.scheduler {
        tasks.spawn(scheduler::run(client, shutdown));
    }
    running.serving.await?;
    tasks.abort_all();
    Ok(())
}

/// Which API clients `corten server` runs beside the API server.
struct Components {
    controller_manager: bool,
    scheduler: bool,
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
