//! Test harness: starts the real `corten server` binary on a free port with a temp data dir,
//! drives the installed kubectl against it, and kills the server when dropped (even when the
//! test fails).

#![allow(dead_code)]

pub mod etcd;
pub mod hosts;
pub mod nodes;
pub mod pods;
pub mod watch;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `corten server`.
pub struct Cluster {
    /// The data directory (kept across restarts).
    pub dir: tempfile::TempDir,
    /// The HTTPS port.
    pub port: u16,
    child: Option<Child>,
    extra: Vec<String>,
    agent: bool,
    /// The node agent's HTTPS port (a free one, so that agents of parallel runs do not meet).
    pub agent_port: u16,
    /// The ingress controller's HTTP port (free, rather than the node's port 80).
    pub ingress_http_port: u16,
    /// The ingress controller's HTTPS port (free, rather than the node's port 443).
    pub ingress_https_port: u16,
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Cluster {
    /// Starts a server in a fresh data dir and waits until kubectl can reach it.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server (control plane only: no node agent) with extra command-line flags.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut flags = vec!["--disable-agent"];
        flags.extend_from_slice(extra);
        Self::launch(&flags, None)
    }

    /// Starts a server with its node agent (real containerd; the test images imported) and
    /// waits until the node is Ready. Dropping it kills every pod container it started.
    pub fn start_with_agent(extra: &[&str]) -> Self {
        Self::start_with_agent_images(extra, &[])
    }

    /// Like [`Cluster::start_with_agent`], with more of `scripts/images.sh`'s tarballs (by file
    /// name without `.tar`, e.g. `redis`) imported by the agent at start.
    pub fn start_with_agent_images(extra: &[&str], images: &[&str]) -> Self {
        let c = Self::launch(extra, Some(images));
        c.wait_node_ready();
        c
    }

    /// Starts the server; with `images` (the test images beyond pause, busybox and nginx) it
    /// runs its node agent.
    fn launch(extra: &[&str], images: Option<&[&str]>) -> Self {
        let agent = images.is_some();
        let mut c = Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            agent,
            agent_port: free_port(),
            ingress_http_port: free_port(),
            ingress_https_port: free_port(),
        };
        if let Some(more) = images {
            let images = c.dir.path().join("agent/images");
            std::fs::create_dir_all(&images).expect("images dir");
            for name in ["pause", "busybox", "nginx"].iter().chain(more) {
                let src = test_images_dir().join(format!("{name}.tar"));
                assert!(
                    src.exists(),
                    "{} missing: run scripts/images.sh first",
                    src.display()
                );
                std::fs::copy(&src, images.join(format!("{name}.tar"))).expect("copy image");
            }
        }
        c.spawn();
        c
    }

    /// Waits until the agent's node reports Ready.
    pub fn wait_node_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.try_kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            if String::from_utf8_lossy(&out.stdout).contains("True") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node not Ready in 90s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_corten"))
            .args(["server", "--data-dir"])
            .arg(self.dir.path())
            .args([
                "--https-listen-port",
                &self.port.to_string(),
                "--bind-address",
                "127.0.0.1",
            ])
            .args(["--agent-port", &self.agent_port.to_string()])
            .args(["--ingress-http-port", &self.ingress_http_port.to_string()])
            .args(["--ingress-https-port", &self.ingress_https_port.to_string()])
            .args(&self.extra)
            .env("CORTEN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start corten server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.kubeconfig().exists()
                && self
                    .try_kubectl(&["get", "--raw", "/readyz"])
                    .status
                    .success()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("corten server exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server not ready in 30s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The API server's base URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The admin bearer token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tls/admin.token"))
            .expect("token")
            .trim()
            .to_string()
    }

    /// A kubectl command against this cluster.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", self.kubeconfig())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(args);
        cmd
    }

    /// Runs kubectl and returns its output, successful or not.
    pub fn try_kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("run kubectl")
    }

    /// Runs kubectl, panicking with its stderr if it fails; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.try_kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl with `stdin` as input (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// Like [`Cluster::kubectl_stdin`], panicking on failure; returns stdout.
    pub fn apply(&self, manifest: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl get ... -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).expect("kubectl json")
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL (no cleanup, as a crash).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Restarts the server on the same data dir and port.
    pub fn restart(&mut self) {
        assert!(self.stop(), "server did not stop cleanly: {}", self.log());
        self.spawn();
    }

    /// Replaces the extra flags used by the next start.
    pub fn set_extra(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Starts the server again after a kill.
    pub fn start_again(&mut self) {
        self.spawn();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill9();
        if self.agent {
            // Containers outlive the server by design: remove them, their network and mounts.
            let _ = Command::new(env!("CARGO_BIN_EXE_corten"))
                .args(["killall", "--data-dir"])
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Where `scripts/images.sh` leaves the test images (`CORTEN_TEST_IMAGES` overrides).
pub fn test_images_dir() -> PathBuf {
    std::env::var_os("CORTEN_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/images"))
}

/// An HTTP answer from [`Cluster::curl`].
pub struct Http {
    /// Status code.
    pub code: u16,
    /// Body.
    pub body: String,
}

impl Http {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl Cluster {
    /// A raw HTTPS request with curl (`auth`: send the admin token). `body` is sent as-is.
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
        auth: bool,
    ) -> Http {
        let token = auth.then(|| self.token());
        self.curl_with_token(method, path, content_type, body, token.as_deref())
    }

    /// A raw HTTPS request with curl, with `token` (if any) as the bearer token.
    pub fn curl_with_token(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
        token: Option<&str>,
    ) -> Http {
        use std::io::Write;
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-k", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .args(["-H", &format!("Content-Type: {content_type}")]);
        if let Some(token) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if body.is_some() {
            cmd.args(["--data-binary", "@-"]);
        }
        cmd.arg(format!("{}{path}", self.url()));
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl");
        if let Some(b) = body {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b)
                .expect("write body");
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().expect("curl output");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        Http {
            code: code.trim().parse().unwrap_or(0),
            body: body.to_string(),
        }
    }
}

/// A running `corten sim-nodes`, killed on drop.
pub struct SimNodes {
    child: Child,
}

impl SimNodes {
    /// Starts `count` simulated nodes against `c` and waits until kubectl lists them Ready.
    pub fn start(c: &Cluster, count: usize) -> Self {
        Self::start_prefixed(c, "sim", count)
    }

    /// Starts `count` simulated nodes named `{prefix}-{i}` and waits until kubectl lists
    /// them Ready.
    pub fn start_prefixed(c: &Cluster, prefix: &str, count: usize) -> Self {
        Self::start_prefixed_with(c, prefix, count, &[])
    }

    /// Like [`SimNodes::start_prefixed`], with extra `corten sim-nodes` flags (e.g.
    /// `--server URL,URL`).
    pub fn start_prefixed_with(c: &Cluster, prefix: &str, count: usize, extra: &[&str]) -> Self {
        let log = std::fs::File::create(c.data_dir().join(format!("sim-nodes-{prefix}.log")))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_corten"))
            .args(["sim-nodes", "--prefix", prefix])
            .args(["--count", &count.to_string(), "--kubeconfig"])
            .arg(c.kubeconfig())
            .args(extra)
            .env("CORTEN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start corten sim-nodes");
        let sim = SimNodes { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = c.try_kubectl(&["get", "nodes", "--no-headers"]);
            let text = String::from_utf8_lossy(&out.stdout);
            let ready = text
                .lines()
                .filter(|l| l.starts_with(&format!("{prefix}-")) && l.contains(" Ready "))
                .count();
            if ready == count {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sim nodes not Ready: {text}\nsim-nodes log: {}\nserver log: {}",
                std::fs::read_to_string(c.data_dir().join(format!("sim-nodes-{prefix}.log")))
                    .unwrap_or_default(),
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        sim
    }

    /// Stops it with SIGTERM; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for SimNodes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The annotation that makes a simulated node's pod end about a second after it starts, with
/// its value as exit code (Succeeded for 0, Failed otherwise).
pub const SIM_EXIT: &str = "corten.dev/sim-exit-code";

/// A Job manifest for simulated nodes: `spec` is extra spec YAML (indented two spaces), `exit`
/// the pods' exit code (None: they run until deleted), `restart` their restartPolicy.
pub fn sim_job(name: &str, spec: &str, exit: Option<i32>, restart: &str) -> String {
    let annotations = exit.map_or(String::new(), |code| {
        format!("      annotations:\n        {SIM_EXIT}: \"{code}\"\n")
    });
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{spec}
  template:
    metadata:
{annotations}      labels:
        app: {name}
    spec:
      restartPolicy: {restart}
      containers:
      - name: work
        image: busybox
"
    )
}
