//! Preemption that respects PodDisruptionBudgets, end to end on three simulated nodes with
//! kubectl: a high-priority pod evicts the pod whose loss breaks no budget, even though a
//! budget-protected pod of lower priority would otherwise be the cheaper victim; when only
//! protected pods can make room, one is still preempted (budgets are a preference in
//! preemption, as upstream).

mod common;

use common::pods::{apply, jsonpath, wait_for};
use common::{Cluster, SimNodes};

fn priority_class(name: &str, value: i32) -> String {
    format!(
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: {name}\nvalue: {value}\n"
    )
}

/// A pod of `class` asking for `cpu`, labelled `app`, optionally pinned to `node`.
fn pod(name: &str, class: &str, cpu: &str, app: &str, node: Option<&str>) -> String {
    let pin = node.map_or(String::new(), |n| {
        format!("  nodeSelector:\n    kubernetes.io/hostname: {n}\n")
    });
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: {app}\nspec:\n  priorityClassName: {class}\n{pin}  containers:\n  - name: c\n    image: nginx\n    resources:\n      requests:\n        cpu: \"{cpu}\"\n"
    )
}

fn node_of(c: &Cluster, pod: &str) -> String {
    wait_for(&format!("{pod} Running"), 30, || {
        jsonpath(c, pod, "{.status.phase}") == "Running"
    });
    jsonpath(c, pod, "{.spec.nodeName}")
}

fn exists(c: &Cluster, pod: &str) -> bool {
    c.try_kubectl(&["get", "pod", pod]).status.success()
}

#[test]
fn preemption_prefers_victims_outside_budgets() {
    let c = Cluster::start();
    let _sim = SimNodes::start(&c, 3);
    apply(&c, &priority_class("low", 10));
    apply(&c, &priority_class("mid", 20));
    apply(&c, &priority_class("high", 1000));
    // Each 8-cpu node is mostly taken: two guarded low-priority pods, one free mid-priority.
    apply(&c, &pod("guarded-0", "low", "6", "guarded", Some("sim-0")));
    apply(&c, &pod("guarded-1", "low", "6", "guarded", Some("sim-1")));
    apply(&c, &pod("free", "mid", "6", "free", Some("sim-2")));
    for p in ["guarded-0", "guarded-1", "free"] {
        node_of(&c, p);
    }
    apply(
        &c,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: guard\nspec:\n  minAvailable: 2\n  selector:\n    matchLabels:\n      app: guarded\n",
    );
    wait_for("the budget's status", 30, || {
        let pdb = c.get_json(&["get", "pdb", "guard"]);
        pdb["status"]["currentHealthy"] == 2 && pdb["status"]["disruptionsAllowed"] == 0
    });

    // The free pod goes, though its priority is higher than the guarded ones'.
    apply(&c, &pod("urgent", "high", "4", "urgent", None));
    assert_eq!(node_of(&c, "urgent"), "sim-2");
    assert_eq!(
        jsonpath(&c, "urgent", "{.status.nominatedNodeName}"),
        "sim-2"
    );
    wait_for("the free pod preempted", 30, || !exists(&c, "free"));
    assert!(exists(&c, "guarded-0") && exists(&c, "guarded-1"));
    let pdb = c.get_json(&["get", "pdb", "guard"]);
    assert_eq!(pdb["status"]["currentHealthy"], 2);

    // Only a guarded pod can make room for 5 cpu now: one is preempted anyway.
    apply(&c, &pod("urgent-2", "high", "5", "urgent", None));
    let node = node_of(&c, "urgent-2");
    assert!(node == "sim-0" || node == "sim-1", "{node}");
    let victim = format!("guarded-{}", node.trim_start_matches("sim-"));
    wait_for("the guarded pod preempted", 30, || !exists(&c, &victim));
    let other = if victim == "guarded-0" {
        "guarded-1"
    } else {
        "guarded-0"
    };
    assert!(exists(&c, other), "only one guarded pod goes");
    assert!(exists(&c, "urgent"));
}
