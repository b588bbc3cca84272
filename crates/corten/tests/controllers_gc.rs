//! The garbage collector and deletion propagation, through kubectl: objects whose
//! ownerReferences are set by hand, deleted with background (kubectl's default), orphan and
//! foreground cascading.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::Value;

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn exists(c: &Cluster, kind: &str, name: &str) -> bool {
    c.try_kubectl(&["get", kind, name]).status.success()
}

fn uid(c: &Cluster, kind: &str, name: &str) -> String {
    c.get_json(&["get", kind, name])["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string()
}

/// An ownerReferences block (YAML, under `metadata:`).
fn owner_ref(api_version: &str, kind: &str, name: &str, uid: &str, block: bool) -> String {
    format!(
        "  ownerReferences:\n  - apiVersion: {api_version}\n    kind: {kind}\n    name: {name}\n    uid: {uid}\n    blockOwnerDeletion: {block}\n"
    )
}

/// A ConfigMap `owner` and two dependents (a Secret and a ConfigMap); returns the owner's uid.
fn owner_with_dependents(c: &Cluster, block: bool, extra_meta: &str) -> String {
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owner\n");
    let uid = uid(c, "configmap", "owner");
    let refs = owner_ref("v1", "ConfigMap", "owner", &uid, block);
    c.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: dep-secret\n{refs}{extra_meta}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dep-cm\n{refs}"
    ));
    uid
}

#[test]
fn background_deletion_removes_dependents() {
    let c = Cluster::start();
    owner_with_dependents(&c, false, "");
    c.kubectl(&["delete", "configmap", "owner"]);
    eventually("dependents collected", || {
        !exists(&c, "secret", "dep-secret") && !exists(&c, "configmap", "dep-cm")
    });
}

#[test]
fn orphan_deletion_keeps_dependents_without_references() {
    let c = Cluster::start();
    owner_with_dependents(&c, true, "");
    c.kubectl(&[
        "delete",
        "configmap",
        "owner",
        "--cascade=orphan",
        "--timeout=30s",
    ]);
    assert!(!exists(&c, "configmap", "owner"));
    for (kind, name) in [("secret", "dep-secret"), ("configmap", "dep-cm")] {
        let obj = c.get_json(&["get", kind, name]);
        let refs = &obj["metadata"]["ownerReferences"];
        assert!(
            refs.as_array().is_none_or(|r| r.is_empty()),
            "{kind}/{name} still owned: {refs}"
        );
    }
    assert!(exists(&c, "secret", "dep-secret") && exists(&c, "configmap", "dep-cm"));
}

#[test]
fn foreground_deletion_waits_for_blocking_dependents() {
    let c = Cluster::start();
    // The Secret holds itself with a finalizer of its own.
    owner_with_dependents(&c, true, "  finalizers:\n  - example.com/hold\n");
    c.kubectl(&[
        "delete",
        "configmap",
        "owner",
        "--cascade=foreground",
        "--wait=false",
    ]);
    eventually("the unheld dependent deleted", || {
        !exists(&c, "configmap", "dep-cm")
    });
    eventually("the held dependent marked for deletion", || {
        c.get_json(&["get", "secret", "dep-secret"])["metadata"]["deletionTimestamp"].is_string()
    });
    let owner = c.get_json(&["get", "configmap", "owner"]);
    assert!(
        owner["metadata"]["deletionTimestamp"].is_string(),
        "{owner}"
    );
    assert_eq!(
        owner["metadata"]["finalizers"],
        serde_json::json!(["foregroundDeletion"]),
        "{owner}"
    );
    c.kubectl(&[
        "patch",
        "secret",
        "dep-secret",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually("everything gone", || {
        !exists(&c, "secret", "dep-secret") && !exists(&c, "configmap", "owner")
    });
}

#[test]
fn dependents_of_owners_that_never_existed_are_collected() {
    let c = Cluster::start();
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owner\n");
    let ghost = owner_ref(
        "v1",
        "ConfigMap",
        "nobody",
        "6d3f0c4e-0000-4000-8000-000000000001",
        false,
    );
    // Same name as a live object, another uid: the owner is gone too.
    let impostor = owner_ref(
        "v1",
        "ConfigMap",
        "owner",
        "6d3f0c4e-0000-4000-8000-000000000002",
        false,
    );
    c.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stray\n{ghost}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stray2\n{impostor}"
    ));
    eventually("strays collected", || {
        !exists(&c, "configmap", "stray") && !exists(&c, "configmap", "stray2")
    });
    assert!(exists(&c, "configmap", "owner"));
}

#[test]
fn a_live_owner_keeps_its_dependent_and_dangling_references_are_dropped() {
    let c = Cluster::start();
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owner\n");
    let live = owner_ref(
        "v1",
        "ConfigMap",
        "owner",
        &uid(&c, "configmap", "owner"),
        false,
    );
    let dead = owner_ref(
        "v1",
        "ConfigMap",
        "nobody",
        "6d3f0c4e-0000-4000-8000-000000000003",
        false,
    );
    let dead_item = dead.trim_start_matches("  ownerReferences:\n");
    c.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n{live}{dead_item}"
    ));
    eventually("the dangling reference dropped", || {
        let refs =
            c.get_json(&["get", "configmap", "shared"])["metadata"]["ownerReferences"].clone();
        refs.as_array()
            .is_some_and(|r| r.len() == 1 && r[0]["name"] == "owner")
    });
}

#[test]
fn orphan_policy_in_delete_options_and_the_finalizer_is_removed() {
    let c = Cluster::start();
    owner_with_dependents(&c, false, "");
    c.kubectl(&[
        "patch",
        "configmap",
        "owner",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    let reply = c.curl(
        "DELETE",
        "/api/v1/namespaces/default/configmaps/owner",
        "application/json",
        Some(br#"{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Orphan"}"#),
        true,
    );
    assert_eq!(reply.code, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(
        body["metadata"]["finalizers"],
        serde_json::json!(["example.com/hold", "orphan"]),
        "{body}"
    );
    eventually("orphan finalizer removed by the collector", || {
        c.get_json(&["get", "configmap", "owner"])["metadata"]["finalizers"]
            == serde_json::json!(["example.com/hold"])
    });
    let dep = c.get_json(&["get", "secret", "dep-secret"]);
    assert!(dep["metadata"]["ownerReferences"].is_null(), "{dep}");
    let bad = c.curl(
        "DELETE",
        "/api/v1/namespaces/default/configmaps/owner?propagationPolicy=Sideways",
        "application/json",
        None,
        true,
    );
    assert_eq!(bad.code, 422, "{}", bad.body);
}

#[test]
fn deleting_a_deployment_cascades_through_replicasets_to_pods() {
    let c = Cluster::start();
    let labels = "    matchLabels:\n      app: x\n";
    let template = "  template:\n    metadata:\n      labels:\n        app: x\n    spec:\n      containers:\n      - name: c\n        image: busybox\n";
    c.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: 0\n  selector:\n{labels}{template}"
    ));
    let deploy = owner_ref(
        "apps/v1",
        "Deployment",
        "x",
        &uid(&c, "deployment", "x"),
        true,
    );
    c.apply(&format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: x-1\n{deploy}spec:\n  replicas: 0\n  selector:\n{labels}{template}"
    ));
    let rs = owner_ref(
        "apps/v1",
        "ReplicaSet",
        "x-1",
        &uid(&c, "replicaset", "x-1"),
        true,
    );
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x-1-abcde\n  labels:\n    app: x\n{rs}spec:\n  containers:\n  - name: c\n    image: busybox\n"
    ));
    c.kubectl(&["delete", "deployment", "x"]);
    eventually("replicaset and pod collected", || {
        !exists(&c, "replicaset", "x-1") && !exists(&c, "pod", "x-1-abcde")
    });
    let left: Value = c.get_json(&["get", "deployments,replicasets,pods"]);
    assert!(
        left["items"].as_array().is_some_and(|i| i.is_empty()),
        "{left}"
    );
}
