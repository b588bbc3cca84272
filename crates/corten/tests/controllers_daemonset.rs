//! The DaemonSet controller end to end, through kubectl, on simulated nodes: one pod per
//! eligible node (taints, nodeSelector), nodes coming and going, and rolling updates that a
//! recorded `kubectl get pods -w` proves stayed within maxUnavailable / maxSurge.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::pods::wait_for;
use common::watch::{PodWatch, is_active, is_ready};
use common::{Cluster, SimNodes};
use serde_json::Value;

fn daemonset(name: &str, image: &str, strategy: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {name}
spec:
  selector:
    matchLabels:
      app: {name}
  updateStrategy:
{strategy}
  template:
    metadata:
      labels:
        app: {name}
    spec:
{extra_spec}      containers:
      - name: agent
        image: {image}
"
    )
}

const MAX_UNAVAILABLE_1: &str =
    "    type: RollingUpdate\n    rollingUpdate:\n      maxUnavailable: 1";

/// The ds's pods: node name → pod, for pods not being deleted.
fn pods_by_node(c: &Cluster, app: &str) -> BTreeMap<String, Value> {
    let list = c.get_json(&["get", "pods", "-l", &format!("app={app}")]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| is_active(p))
        .map(|p| {
            (
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                p.clone(),
            )
        })
        .collect()
}

fn nodes_of(c: &Cluster, app: &str) -> BTreeSet<String> {
    pods_by_node(c, app).into_keys().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// For every recorded state, how many nodes had a ready, active pod, and how many active pods
/// there were.
fn per_state(states: &[BTreeMap<String, Value>]) -> Vec<(usize, usize)> {
    states
        .iter()
        .map(|s| {
            let active: Vec<&Value> = s.values().filter(|p| is_active(p)).collect();
            let ready_nodes: BTreeSet<&str> = active
                .iter()
                .filter(|p| is_ready(p))
                .filter_map(|p| p["spec"]["nodeName"].as_str())
                .collect();
            (ready_nodes.len(), active.len())
        })
        .collect()
}

#[test]
fn one_pod_per_eligible_node_and_rolling_update() {
    let c = Cluster::start_with(&[]);
    let _sim = SimNodes::start(&c, 3);
    c.kubectl(&["taint", "nodes", "sim-2", "dedicated=db:NoSchedule"]);
    c.apply(&daemonset("agent", "busybox:1", MAX_UNAVAILABLE_1, ""));
    c.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert_eq!(nodes_of(&c, "agent"), set(&["sim-0", "sim-1"]));
    let out = c.kubectl(&["get", "ds", "agent", "--no-headers"]);
    let cols: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(&cols[1..6], ["2", "2", "2", "2", "2"], "{out}");

    // Pods are pinned to their node and tolerate what daemon pods tolerate.
    let pods = pods_by_node(&c, "agent");
    let p = &pods["sim-0"];
    let term = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchFields"][0];
    assert_eq!(term["key"], "metadata.name");
    assert_eq!(term["values"][0], "sim-0");
    let tolerations: BTreeSet<&str> = p["spec"]["tolerations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["key"].as_str())
        .collect();
    assert!(tolerations.contains("node.kubernetes.io/unschedulable"));
    assert!(tolerations.contains("node.kubernetes.io/not-ready"));
    let hash = p["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!hash.is_empty());
    let revs = c.kubectl(&["get", "controllerrevisions", "-o", "name"]);
    assert!(revs.contains(&format!("agent-{hash}")), "{revs}");

    // Removing the taint, and a new node, each get a pod; a node that goes takes its pod.
    c.kubectl(&["taint", "nodes", "sim-2", "dedicated-"]);
    wait_for("pod on sim-2", 30, || nodes_of(&c, "agent").len() == 3);
    let mut extra = SimNodes::start_prefixed(&c, "extra", 1);
    wait_for("pod on the new node", 30, || {
        nodes_of(&c, "agent").contains("extra-0")
    });
    assert!(extra.stop());
    wait_for("the gone node's pod deleted", 30, || {
        nodes_of(&c, "agent") == set(&["sim-0", "sim-1", "sim-2"])
    });
    c.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);

    // An image update rolls node by node: never more than one node without a ready pod.
    let watch = PodWatch::start(&c, "app=agent");
    c.kubectl(&["set", "image", "daemonset/agent", "agent=busybox:2"]);
    c.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=90s"]);
    // The first three events list the pods that were there.
    let states = watch.finish().split_off(3);
    assert!(
        states.len() > 6,
        "the watch saw the rollout: {}",
        states.len()
    );
    for (ready_nodes, active) in per_state(&states) {
        assert!(
            ready_nodes >= 2,
            "maxUnavailable 1 broken: {ready_nodes} nodes ready"
        );
        assert!(active <= 3, "no surge allowed: {active} pods");
    }
    let pods = pods_by_node(&c, "agent");
    assert_eq!(pods.len(), 3);
    for p in pods.values() {
        assert_eq!(p["spec"]["containers"][0]["image"], "busybox:2");
    }
    let history = c.kubectl(&["rollout", "history", "daemonset/agent"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");

    // Undo goes back to the first template, rolled out the same way.
    c.kubectl(&["rollout", "undo", "daemonset/agent"]);
    c.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=90s"]);
    wait_for("pods back on busybox:1", 30, || {
        let pods = pods_by_node(&c, "agent");
        pods.len() == 3
            && pods
                .values()
                .all(|p| p["spec"]["containers"][0]["image"] == "busybox:1")
    });
    let history = c.kubectl(&["rollout", "history", "daemonset/agent"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        revisions,
        ["2", "3"],
        "the first revision became the third: {history}"
    );
    let ds = c.get_json(&["get", "ds", "agent"]);
    assert_eq!(ds["status"]["updatedNumberScheduled"], 3);
    assert_eq!(ds["status"]["numberMisscheduled"], 0);
    assert_eq!(
        ds["status"]["observedGeneration"],
        ds["metadata"]["generation"]
    );
}

#[test]
fn node_selector_surge_and_on_delete() {
    let c = Cluster::start_with(&[]);
    let _sim = SimNodes::start(&c, 3);
    c.kubectl(&["label", "nodes", "sim-0", "sim-1", "disk=ssd"]);
    let surge =
        "    type: RollingUpdate\n    rollingUpdate:\n      maxUnavailable: 0\n      maxSurge: 1";
    c.apply(&daemonset(
        "ssd",
        "busybox:1",
        surge,
        "      nodeSelector:\n        disk: ssd\n",
    ));
    c.kubectl(&["rollout", "status", "daemonset/ssd", "--timeout=60s"]);
    assert_eq!(nodes_of(&c, "ssd"), set(&["sim-0", "sim-1"]));

    // With maxSurge 1 and maxUnavailable 0, every selected node keeps a ready pod throughout.
    let watch = PodWatch::start(&c, "app=ssd");
    c.kubectl(&["set", "image", "daemonset/ssd", "agent=busybox:2"]);
    c.kubectl(&["rollout", "status", "daemonset/ssd", "--timeout=90s"]);
    let states = watch.finish().split_off(2);
    let counts = per_state(&states);
    assert!(
        counts.iter().any(|(_, active)| *active == 3),
        "a surge pod was seen"
    );
    for (ready_nodes, active) in counts {
        assert_eq!(ready_nodes, 2, "a node lost its ready pod");
        assert!(active <= 3, "more than one surge pod: {active}");
    }

    // A node that stops matching the selector loses its pod (it is misscheduled meanwhile).
    c.kubectl(&["label", "nodes", "sim-1", "disk-"]);
    wait_for("pod removed from sim-1", 30, || {
        nodes_of(&c, "ssd") == set(&["sim-0"])
    });

    // OnDelete: a template change replaces a pod only once it is deleted.
    c.kubectl(&[
        "patch",
        "ds",
        "ssd",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#,
    ]);
    c.kubectl(&["set", "image", "daemonset/ssd", "agent=busybox:3"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let old = pods_by_node(&c, "ssd")["sim-0"].clone();
    assert_eq!(old["spec"]["containers"][0]["image"], "busybox:2");
    let name = old["metadata"]["name"].as_str().unwrap_or("").to_string();
    c.kubectl(&["delete", "pod", &name]);
    wait_for("replacement with the new image", 30, || {
        pods_by_node(&c, "ssd")
            .get("sim-0")
            .is_some_and(|p| p["spec"]["containers"][0]["image"] == "busybox:3")
    });
}
