//! The official Kubernetes Python client (installed by scripts/deps.sh) against corten.

mod common;

use common::Cluster;

#[test]
fn official_python_client_works_unchanged() {
    let c = Cluster::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_smoke.py");
    let python = std::env::var("CORTEN_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(c.kubeconfig())
        .output()
        .expect("run python (scripts/deps.sh installs the kubernetes client)");
    assert!(
        out.status.success(),
        "python client failed (run scripts/deps.sh if the kubernetes module is missing):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client OK"));
}
