//! Helpers for tests that run pods on a real node agent: the test images' names, polling, and
//! what a container printed (read from the CRI log files the runtime writes, which is what
//! `kubectl logs` serves).

use std::time::{Duration, Instant};

use super::Cluster;

/// The busybox test image (built by `scripts/images.sh`).
pub const BUSYBOX: &str = "docker.io/library/busybox:1.35";
/// The nginx test image (built by `scripts/images.sh`).
pub const NGINX: &str = "docker.io/library/nginx:1.22";

/// Polls `f` every 250 ms until it holds; fails the test after `secs` seconds.
pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Everything container `container` of pod `pod` (namespace default) printed, all attempts in
/// order, without the CRI log prefixes.
pub fn output(c: &Cluster, pod: &str, container: &str) -> String {
    let logs = c.data_dir().join("agent/logs");
    let mut text = String::new();
    for dir in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        if !dir
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("default_{pod}_"))
        {
            continue;
        }
        let mut files: Vec<_> = std::fs::read_dir(dir.path().join(container))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
                text.push_str(line.splitn(4, ' ').nth(3).unwrap_or(""));
                text.push('\n');
            }
        }
    }
    text
}

/// A field of pod `pod` (namespace default) by kubectl jsonpath; empty when there is none.
pub fn jsonpath(c: &Cluster, pod: &str, path: &str) -> String {
    let out = c.try_kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl apply -f -` of `yaml`; fails the test with kubectl's message.
pub fn apply(c: &Cluster, yaml: &str) {
    let out = c.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether pod `pod` is in phase Running.
pub fn running(c: &Cluster, pod: &str) -> bool {
    jsonpath(c, pod, "{.status.phase}") == "Running"
}
