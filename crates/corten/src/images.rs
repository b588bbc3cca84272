//! `corten images`: the node's container images, offline. Works whether or not the node is
//! running: the node's containerd is used when its socket answers, else started for the
//! command and stopped again (running containers are not affected either way).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use kubelet::runtime::containerd::Layout;

/// `corten images ...`.
#[derive(Subcommand)]
pub enum ImagesCommand {
    /// Imports OCI-layout or docker-archive tarballs into the node's containerd (whether or not
    /// the server is running).
    Import(ImagesImportArgs),
    /// Lists the images the node's runtime has.
    Ls(ImagesLsArgs),
}

/// `corten images import`.
#[derive(clap::Args)]
pub struct ImagesImportArgs {
    /// The tarballs.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The data directory of the node.
    #[arg(long, default_value = "/var/lib/corten")]
    data_dir: PathBuf,
}

/// `corten images ls`.
#[derive(clap::Args)]
pub struct ImagesLsArgs {
    /// The data directory of the node.
    #[arg(long, default_value = "/var/lib/corten")]
    data_dir: PathBuf,
}

/// Runs an `images` subcommand.
pub fn run(cmd: ImagesCommand) -> ExitCode {
    crate::block_on("warn", async move {
        match cmd {
            ImagesCommand::Import(args) => {
                with_containerd(&args.data_dir, |layout| async move {
                    let mut result = Ok(());
                    for file in &args.files {
                        let t = std::time::Instant::now();
                        match kubelet::images::import(&layout.socket, file).await {
                            Ok(()) => println!(
                                "imported {} in {:.2}s",
                                file.display(),
                                t.elapsed().as_secs_f64()
                            ),
                            Err(e) => {
                                eprintln!("corten: {e:#}");
                                result = Err(anyhow::anyhow!("some imports failed"));
                            }
                        }
                    }
                    result
                })
                .await
            }
            ImagesCommand::Ls(args) => {
                let list = with_containerd(&args.data_dir, |layout| async move {
                    let cri = kubelet::runtime::Cri::connect(layout.socket.clone())?;
                    kubelet::images::list(&cri).await
                })
                .await?;
                println!("{:<50} {:<20} {:>10}", "IMAGE", "IMAGE ID", "SIZE");
                for (tags, id, size) in list {
                    let short = id
                        .trim_start_matches("sha256:")
                        .chars()
                        .take(13)
                        .collect::<String>();
                    let tags = if tags.is_empty() {
                        vec!["<none>".to_string()]
                    } else {
                        tags
                    };
                    for tag in tags {
                        println!("{tag:<50} {short:<20} {:>9.1}MB", size as f64 / 1e6);
                    }
                }
                Ok(())
            }
        }
    })
}

/// Runs `f` with the node's containerd: the running one, or one started for `f` and stopped
/// (and waited for) afterwards.
async fn with_containerd<T, F, Fut>(data_dir: &Path, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Layout) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let layout = Layout::new(&data_dir.join("agent"));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = if tokio::net::UnixStream::connect(&layout.socket)
        .await
        .is_ok()
    {
        None
    } else {
        Some(kubelet::runtime::containerd::supervise(layout.clone(), stop_rx).await?)
    };
    let result = f(layout.clone()).await;
    if started.is_some() {
        let _ = stop_tx.send(true);
        let pid = layout.dir.join("containerd.pid");
        for _ in 0..300 {
            if !pid.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    result
}
