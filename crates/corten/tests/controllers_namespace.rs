//! The namespace and service account controllers, through kubectl.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn deleting_a_namespace_deletes_its_contents_then_itself() {
    let c = Cluster::start();
    c.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: doomed\n");
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: doomed\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: doomed\n");
    let out = c
        .kubectl_cmd(&["delete", "namespace", "doomed", "--wait=false"])
        .output()
        .unwrap();
    assert!(out.status.success());
    // Terminating meanwhile, no new content accepted... (it may already be gone)
    let created = c.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: late\n  namespace: doomed\n",
    );
    if !created.status.success() {
        let err = String::from_utf8_lossy(&created.stderr);
        assert!(
            err.contains("being terminated") || err.contains("not found"),
            "{err}"
        );
    }
    let out = c.kubectl(&[
        "delete",
        "namespace",
        "doomed",
        "--ignore-not-found",
        "--wait",
        "--timeout=30s",
    ]);
    let _ = out;
    eventually("namespace gone", || {
        !c.try_kubectl(&["get", "namespace", "doomed"])
            .status
            .success()
    });
    let leftovers = c.kubectl(&[
        "get",
        "configmaps,secrets",
        "-A",
        "-o",
        "name",
        "--field-selector",
        "metadata.namespace=doomed",
    ]);
    assert!(leftovers.trim().is_empty(), "left behind: {leftovers}");
}

#[test]
fn every_namespace_gets_a_default_service_account() {
    let c = Cluster::start();
    c.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n");
    eventually("default service account", || {
        c.try_kubectl(&["-n", "team", "get", "serviceaccount", "default"])
            .status
            .success()
    });
    c.kubectl(&["-n", "team", "delete", "serviceaccount", "default"]);
    eventually("default service account recreated", || {
        c.try_kubectl(&["-n", "team", "get", "serviceaccount", "default"])
            .status
            .success()
    });
}
