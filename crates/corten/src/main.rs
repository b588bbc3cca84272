//! The `corten` binary: `corten server` runs a whole single-node control plane in one process.

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
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `apiserver=debug`.
    #[arg(long, env = "CORTEN_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server(args),
    }
}

fn server(args: ServerArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("corten: cannot start the runtime: {e}");
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
    };
    let result = runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = tx.send(true);
        });
        run_server(config, rx).await
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
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let running = apiserver::start(config, shutdown.clone()).await?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&running.kubeconfig)?;
    let client_config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(client_config)?;
    let controllers = tokio::spawn(controllers::run(client, shutdown));
    running.serving.await?;
    controllers.abort();
    Ok(())
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
