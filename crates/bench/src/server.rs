//! Child processes the benchmark starts (`corten server`, etcd): free ports, temp data dirs,
//! readiness, memory readings, and killing them when dropped (also on errors).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Resident memory of a process, from `/proc/PID/status`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Current resident set (VmRSS).
    pub rss_kib: u64,
    /// Peak resident set so far (VmHWM).
    pub peak_kib: u64,
}

/// Reads VmRSS and VmHWM of `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("parsing {line:?}"))?;
        Ok(kib)
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// A child process that is killed (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    name: &'static str,
    child: Option<Child>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout discarded and stderr to `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Result<Proc> {
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Proc {
            name,
            child: Some(child),
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Fails with the tail of its log if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!(
                "{} exited with {status}; log tail:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `corten server` on a free port in a temp data dir.
pub struct Corten {
    /// The process (declared before `dir` so it is stopped before the dir is removed).
    pub proc: Proc,
    /// The data directory.
    pub dir: tempfile::TempDir,
}

impl Corten {
    /// Starts `bin server` (the API server alone) and waits until `/readyz` answers through
    /// the admin kubeconfig.
    pub async fn start(bin: &Path, work_dir: &Path) -> Result<(Corten, kube::Config)> {
        // The API server on its own: the in-process controllers and scheduler are API
        // clients with caches of their own, measured by their own benchmarks.
        Self::start_with(
            bin,
            work_dir,
            &[
                "--disable-controller-manager",
                "--disable-scheduler",
                "--disable-agent",
            ],
        )
        .await
    }

    /// Starts `bin server` with `flags` and waits until it is ready.
    pub async fn start_with(
        bin: &Path,
        work_dir: &Path,
        flags: &[&str],
    ) -> Result<(Corten, kube::Config)> {
        let dir = tempfile::Builder::new()
            .prefix("corten-bench-server-")
            .tempdir_in(work_dir)
            .context("creating the server's data dir")?;
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.args(["server", "--data-dir"])
            .arg(dir.path())
            .args([
                "--https-listen-port",
                &port.to_string(),
                "--bind-address",
                "127.0.0.1",
            ])
            .args(flags)
            .env("CORTEN_LOG", "warn");
        let log = dir.path().join("server.log");
        let proc = Proc::spawn("corten server", cmd, log)?;
        let mut server = Corten { proc, dir };
        let config = server.wait_ready().await?;
        Ok((server, config))
    }

    async fn wait_ready(&mut self) -> Result<kube::Config> {
        let kubeconfig = self.dir.path().join("kubeconfig.yaml");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last_error = String::from("kubeconfig not written yet");
        loop {
            self.proc.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "corten server not ready in 60 s ({last_error}); log tail:\n{}",
                    self.proc.log_tail()
                );
            }
            if kubeconfig.exists() {
                match self.try_ready(&kubeconfig).await {
                    Ok(config) => return Ok(config),
                    Err(e) => last_error = format!("{e:#}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_ready(&self, kubeconfig: &Path) -> Result<kube::Config> {
        let config = admin_config(kubeconfig).await?;
        let client = kube::Client::try_from(config.clone())?;
        let request = http::Request::get("/readyz").body(Vec::new())?;
        client.request_text(request).await?;
        Ok(config)
    }

    /// The server's memory now.
    pub fn memory(&self) -> Result<Memory> {
        memory(self.proc.pid())
    }
}

/// The kube client configuration from an admin kubeconfig file.
pub async fn admin_config(path: &Path) -> Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("kubeconfig to client config")?;
    // Lists of 100,000 objects and long watches must not hit the default timeouts.
    config.read_timeout = Some(Duration::from_secs(600));
    Ok(config)
}

/// A running single-member etcd on loopback ports with a temp data dir and its default
/// durability (the WAL is fsynced before a write is acknowledged).
pub struct Etcd {
    /// The process (stopped before `dir` is removed).
    pub proc: Proc,
    /// The data directory, removed when this is dropped.
    _dir: tempfile::TempDir,
    /// The client URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Etcd {
    /// Starts `bin` and waits until a client can connect and read.
    pub async fn start(bin: &Path, work_dir: &Path) -> Result<(Etcd, etcd_client::Client)> {
        let dir = tempfile::Builder::new()
            .prefix("corten-bench-etcd-")
            .tempdir_in(work_dir)
            .context("creating etcd's data dir")?;
        let client_url = format!("http://127.0.0.1:{}", free_port()?);
        let peer_url = format!("http://127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(bin);
        cmd.args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args(["--log-level", "warn"]);
        let log = dir.path().join("etcd.log");
        let proc = Proc::spawn("etcd", cmd, log)?;
        let mut etcd = Etcd {
            proc,
            _dir: dir,
            endpoint: client_url,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            etcd.proc.check_alive()?;
            let attempt = async {
                let mut client =
                    etcd_client::Client::connect([etcd.endpoint.as_str()], None).await?;
                client.get("bench-ready", None).await?;
                Ok::<_, etcd_client::Error>(client)
            };
            match attempt.await {
                Ok(client) => return Ok((etcd, client)),
                Err(e) if Instant::now() > deadline => {
                    bail!(
                        "etcd not ready in 30 s ({e}); log tail:\n{}",
                        etcd.proc.log_tail()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// etcd's version line (`etcd --version`).
    pub fn version(bin: &Path) -> String {
        Command::new(bin)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| {
                s.lines()
                    .next()
                    .map(|l| l.trim_start_matches("etcd Version:").trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into())
    }
}
