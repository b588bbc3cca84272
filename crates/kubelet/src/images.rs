//! Offline images: `corten images import` loads OCI-layout or docker-archive tarballs into the
//! node's containerd (in the `k8s.io` namespace the CRI plugin uses), and the agent imports
//! every tarball in `DATA_DIR/agent/images/` when it starts, as k3s does. The import itself is
//! containerd's own `ctr images import` (shipped with containerd) against the agent's socket.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::runtime::containerd::which;
use crate::runtime::{Cri, cri};

/// Imports one tarball into the containerd at `socket`.
pub async fn import(socket: &Path, file: &Path) -> Result<()> {
    if !file.is_file() {
        bail!("{}: no such file", file.display());
    }
    let ctr = which("ctr").context("ctr (from the containerd package) is not installed")?;
    // A bounded ctr that dies with us: an import must not outlive a killed agent or its
    // containerd (an orphaned ctr waits on the dead socket indefinitely).
    let out = tokio::process::Command::new(ctr)
        .kill_on_drop(true)
        .args(["--timeout", "300s"])
        .arg("--address")
        .arg(socket)
        .args([
            "--namespace",
            "k8s.io",
            "images",
            "import",
            "--all-platforms",
        ])
        .arg(file)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "importing {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The tarballs in `dir` (`*.tar`, `*.tar.gz`, `*.tgz`), sorted.
pub fn tarballs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.to_string_lossy();
                    n.ends_with(".tar") || n.ends_with(".tar.gz") || n.ends_with(".tgz")
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Imports every tarball in `dir`; failures are logged, not fatal.
pub async fn import_dir(socket: &Path, dir: &Path) {
    for file in tarballs(dir) {
        let started = std::time::Instant::now();
        match import(socket, &file).await {
            Ok(()) => {
                tracing::info!(file = %file.display(), secs = started.elapsed().as_secs_f64(), "image imported")
            }
            Err(e) => tracing::warn!("{e:#}"),
        }
    }
}

/// The images the runtime has: (tags, id, size in bytes).
pub async fn list(cri: &Cri) -> Result<Vec<(Vec<String>, String, u64)>> {
    let images = cri
        .images
        .clone()
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .context("CRI ListImages")?
        .into_inner()
        .images;
    Ok(images
        .into_iter()
        .map(|i| (i.repo_tags, i.id, i.size))
        .collect())
}
