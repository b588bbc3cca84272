//! A second "host" on this machine for multi-node tests: a network namespace linked to this
//! one by a veth pair on a private /30, and `corten agent` running inside it (through
//! `nsenter --net`: `ip netns exec` would also remount /sys, hiding the cgroup mounts runc
//! needs). Both are removed on drop, even when the test fails (drop the agent first).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `ip ARGS`, failing the test if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A second host: a network namespace with a veth pair to this one.
pub struct Host {
    /// The network namespace.
    pub netns: String,
    /// The host side of the veth pair.
    pub veth: String,
    /// The address of this machine on the pair.
    pub host_ip: String,
    /// The address of the second host.
    pub ns_ip: String,
}

impl Host {
    /// Creates the namespace and the veth pair.
    pub fn create() -> Self {
        let r: u32 = rand_u32();
        let tag = format!("{:06x}", r & 0xff_ffff);
        // A /30 in 10.250.0.0/16 picked at random (parallel runs on one machine do not meet).
        let (b, c) = ((r >> 8) & 0xff, (r & 0x3f) * 4);
        let host = Host {
            netns: format!("corten-join-{tag}"),
            veth: format!("cj{tag}h"),
            host_ip: format!("10.250.{b}.{}", c + 1),
            ns_ip: format!("10.250.{b}.{}", c + 2),
        };
        let peer = format!("cj{tag}n");
        ip(&["netns", "add", &host.netns]);
        ip(&[
            "link", "add", &host.veth, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &host.netns]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", host.host_ip),
            "dev",
            &host.veth,
        ]);
        ip(&["link", "set", &host.veth, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", host.netns.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/30", host.ns_ip), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        inside(&["route", "add", "default", "via", &host.host_ip]);
        host
    }

    /// `program` run inside the namespace (network only).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg(program);
        cmd
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .stderr(Stdio::null())
            .status();
    }
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

/// `corten agent` running inside a [`Host`]; stopped, and its pods removed, on drop.
pub struct Agent<'h> {
    host: &'h Host,
    data_dir: PathBuf,
    /// The agent process, while it runs.
    pub child: Option<Child>,
    args: Vec<String>,
}

impl<'h> Agent<'h> {
    /// Starts `corten agent ARGS` in `host` with `data_dir`, the test images imported.
    pub fn start(host: &'h Host, data_dir: &Path, args: &[String]) -> Self {
        let images = data_dir.join("agent/images");
        std::fs::create_dir_all(&images).expect("images dir");
        for name in ["pause", "busybox"] {
            std::fs::copy(
                super::test_images_dir().join(format!("{name}.tar")),
                images.join(format!("{name}.tar")),
            )
            .expect("copy image (run scripts/images.sh)");
        }
        let mut a = Agent {
            host,
            data_dir: data_dir.to_path_buf(),
            child: None,
            args: args.to_vec(),
        };
        a.spawn();
        a
    }

    /// Starts the agent process (again).
    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path()).expect("agent log");
        let child = self
            .host
            .command(env!("CARGO_BIN_EXE_corten"))
            .arg("agent")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env("CORTEN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start corten agent");
        self.child = Some(child);
    }

    /// The agent's log file.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("agent.log")
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGTERM, then waits (the agent stops its containerd; containers keep running).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        self.stop();
        let _ = self
            .host
            .command(env!("CARGO_BIN_EXE_corten"))
            .args(["killall", "--data-dir"])
            .arg(&self.data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
