//! The ReplicationController (core/v1) end to end through kubectl on simulated nodes: it keeps
//! its pods as a ReplicaSet does (the same controller), reports status, scales with
//! `kubectl scale rc`, adopts matching orphans and replaces deleted pods.

mod common;

use common::pods::{apply, wait_for};
use common::watch::{is_active, is_ready};
use common::{Cluster, SimNodes};
use serde_json::Value;

const RC: &str = "apiVersion: v1
kind: ReplicationController
metadata:
  name: web
spec:
  replicas: 3
  template:
    metadata:
      labels:
        app: web-rc
    spec:
      containers:
      - name: app
        image: nginx
";

fn active(c: &Cluster) -> Vec<Value> {
    c.get_json(&["get", "pods", "-l", "app=web-rc"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| is_active(p))
        .cloned()
        .collect()
}

fn ready_count(c: &Cluster) -> usize {
    active(c).iter().filter(|p| is_ready(p)).count()
}

/// (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas, observedGeneration).
fn status(c: &Cluster) -> [i64; 5] {
    let s = &c.get_json(&["get", "rc", "web"])["status"];
    [
        "replicas",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
        "observedGeneration",
    ]
    .map(|k| s[k].as_i64().unwrap_or(0))
}

#[test]
fn replication_controller_keeps_scales_and_adopts() {
    let c = Cluster::start_with(&[]);
    let _sim = SimNodes::start(&c, 2);
    apply(&c, RC);
    wait_for("3 ready pods", 60, || ready_count(&c) == 3);
    for p in active(&c) {
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ReplicationController", "{p}");
        assert_eq!(owner["controller"], true);
        assert!(p["metadata"]["name"].as_str().unwrap().starts_with("web-"));
    }
    wait_for("status of 3", 20, || status(&c) == [3, 3, 3, 3, 1]);
    let table = c.kubectl(&["get", "rc", "web", "--no-headers"]);
    assert_eq!(
        table.split_whitespace().take(4).collect::<Vec<_>>(),
        ["web", "3", "3", "3"],
        "{table}"
    );

    let out = c.kubectl(&["scale", "rc", "web", "--replicas=1"]);
    assert!(out.contains("replicationcontroller/web scaled"), "{out}");
    wait_for("1 pod", 30, || active(&c).len() == 1);
    wait_for("status of 1", 20, || status(&c) == [1, 1, 1, 1, 2]);

    // A deleted pod is replaced.
    let pod = active(&c)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.kubectl(&["delete", "pod", &pod, "--wait=false"]);
    wait_for("a replacement", 30, || {
        let now = active(&c);
        now.len() == 1 && now[0]["metadata"]["name"] != pod.as_str() && ready_count(&c) == 1
    });

    // A matching orphan is adopted, and then one of the two is surplus.
    c.kubectl(&["run", "stray", "--image=nginx", "--labels=app=web-rc"]);
    wait_for("back to 1 pod", 30, || active(&c).len() == 1);

    c.kubectl(&["delete", "rc", "web"]);
    wait_for("pods gone with the rc", 30, || active(&c).is_empty());
}
