//! `corten images`: offline import of image tarballs into the node's containerd, and the list
//! of images the node's runtime has.

use std::path::PathBuf;

use clap::Subcommand;

/// `corten images ...`
#[derive(Subcommand)]
pub enum ImagesCommand {
    /// Imports OCI-layout or docker-archive tarballs into the node's containerd (whether or not
    /// the server is running).
    Import(ImagesImportArgs),
    /// Lists the images the node's runtime has.
    Ls(ImagesLsArgs),
}

/// Arguments of `corten images import`.
#[derive(clap::Args)]
pub struct ImagesImportArgs {
    /// The tarballs.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The data directory of the node.
    #[arg(long, default_value = "/var/lib/corten")]
    data_dir: PathBuf,
}

/// Arguments of `corten images ls`.
#[derive(clap::Args)]
pub struct ImagesLsArgs {
    /// The data directory of the node.
    #[arg(long, default_value = "/var/lib/corten")]
    data_dir: PathBuf,
}

/// Runs a `corten images` command.
pub async fn run(cmd: ImagesCommand) -> anyhow::Result<()> {
    {
        match cmd {
            ImagesCommand::Import(args) => {
                let layout =
                    kubelet::runtime::containerd::Layout::new(&args.data_dir.join("agent"));
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                // Use the running node's containerd, or start it for the import.
                let started = if tokio::net::UnixStream::connect(&layout.socket)
                    .await
                    .is_ok()
                {
                    None
                } else {
                    Some(kubelet::runtime::containerd::supervise(layout.clone(), stop_rx).await?)
                };
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
            ImagesCommand::Ls(args) => {
                let layout =
                    kubelet::runtime::containerd::Layout::new(&args.data_dir.join("agent"));
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                let started = if tokio::net::UnixStream::connect(&layout.socket)
                    .await
                    .is_ok()
                {
                    None
                } else {
                    Some(kubelet::runtime::containerd::supervise(layout.clone(), stop_rx).await?)
                };
                let cri = kubelet::runtime::Cri::connect(layout.socket.clone())?;
                let list = kubelet::images::list(&cri).await;
                if started.is_some() {
                    let _ = stop_tx.send(true);
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                println!("{:<50} {:<20} {:>10}", "IMAGE", "IMAGE ID", "SIZE");
                for (tags, id, size) in list? {
                    let short = id
                        .trim_start_matches("sha256:")
                        .chars()
                        .take(13)
                        .collect::<String>();
                    for tag in if tags.is_empty() {
                        vec!["<none>".to_string()]
                    } else {
                        tags
                    } {
                        println!("{tag:<50} {short:<20} {:>9.1}MB", size as f64 / 1e6);
                    }
                }
                Ok(())
            }
        }
    }
}
