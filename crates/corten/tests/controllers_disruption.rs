//! PodDisruptionBudgets end to end, through kubectl, on simulated nodes: the disruption
//! controller's status, the eviction API's 429 when a budget has no disruptions left, and
//! `kubectl drain` refused (retrying) by a budget, then succeeding once the budget allows it;
//! cordon and uncordon.

mod common;

use common::pods::{apply, wait_for};
use common::watch::{is_active, is_ready};
use common::{Cluster, SimNodes};
use serde_json::{Value, json};

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: app
        image: nginx
"
    )
}

fn pdb(name: &str, app: &str, rule: &str) -> String {
    format!(
        "apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {name}
spec:
  {rule}
  selector:
    matchLabels:
      app: {app}
"
    )
}

fn pods(c: &Cluster, app: &str) -> Vec<Value> {
    c.get_json(&["get", "pods", "-l", &format!("app={app}")])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ready_on(c: &Cluster, app: &str, node: &str) -> usize {
    pods(c, app)
        .iter()
        .filter(|p| is_active(p) && is_ready(p) && p["spec"]["nodeName"] == node)
        .count()
}

/// The budget's (expectedPods, desiredHealthy, currentHealthy, disruptionsAllowed).
fn counts(c: &Cluster, name: &str) -> (i64, i64, i64, i64) {
    let s = &c.get_json(&["get", "pdb", name])["status"];
    let n = |k: &str| s[k].as_i64().unwrap_or(-1);
    (
        n("expectedPods"),
        n("desiredHealthy"),
        n("currentHealthy"),
        n("disruptionsAllowed"),
    )
}

/// Waits until the budget's counts are `want`, showing its status if they never are.
fn wait_counts(c: &Cluster, name: &str, want: (i64, i64, i64, i64)) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while counts(c, name) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "budget {name}: want {want:?}, status {}",
            c.get_json(&["get", "pdb", name])["status"]
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

#[test]
fn budgets_refuse_evictions_and_drain_waits_for_them() {
    let c = Cluster::start_with(&[]);
    let _a = SimNodes::start_prefixed(&c, "a", 1);
    apply(&c, &deployment("web", 2));
    apply(&c, &deployment("db", 4));
    wait_for("pods ready on a-0", 60, || {
        ready_on(&c, "web", "a-0") == 2 && ready_on(&c, "db", "a-0") == 4
    });

    // maxUnavailable as a percentage of the Deployment's scale, rounded up.
    apply(&c, &pdb("db", "db", "maxUnavailable: 50%"));
    wait_counts(&c, "db", (4, 2, 4, 2));

    apply(&c, &pdb("web", "web", "minAvailable: 2"));
    wait_counts(&c, "web", (2, 2, 2, 0));
    let status = &c.get_json(&["get", "pdb", "web"])["status"];
    assert_eq!(status["observedGeneration"], 1);
    let cond = &status["conditions"][0];
    assert_eq!(cond["type"], "DisruptionAllowed");
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "InsufficientPods");
    let table = c.kubectl(&["get", "pdb", "web", "--no-headers"]);
    assert!(
        table.split_whitespace().collect::<Vec<_>>()[..4] == ["web", "2", "N/A", "0"],
        "{table}"
    );

    // The eviction API refuses, as upstream words it.
    let victim = pods(&c, "web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": victim, "namespace": "default"}});
    let resp = c.curl(
        "POST",
        &format!("/api/v1/namespaces/default/pods/{victim}/eviction"),
        "application/json",
        Some(eviction.to_string().as_bytes()),
        true,
    );
    assert_eq!(resp.code, 429, "{}", resp.body);
    let st = resp.json();
    assert_eq!(st["reason"], "TooManyRequests");
    assert_eq!(
        st["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(st["details"]["causes"][0]["reason"], "DisruptionBudget");
    assert_eq!(
        st["details"]["causes"][0]["message"],
        "The disruption budget web needs 2 healthy pods and has 2 currently"
    );

    let _b = SimNodes::start_prefixed(&c, "b", 1);
    // drain cordons the node, then keeps retrying the refused evictions until its timeout.
    let out = c.try_kubectl(&["drain", "a-0", "--pod-selector=app=web", "--timeout=8s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "drain should time out: {stderr}");
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget.")
            && stderr.contains("will retry after 5s"),
        "{stderr}"
    );
    assert_eq!(ready_on(&c, "web", "a-0"), 2, "no pod was evicted");
    let node = c.get_json(&["get", "node", "a-0"]);
    assert_eq!(node["spec"]["unschedulable"], true);
    let nodes = c.kubectl(&["get", "node", "a-0", "--no-headers"]);
    assert!(nodes.contains("Ready,SchedulingDisabled"), "{nodes}");
    wait_for("the unschedulable taint", 10, || {
        c.get_json(&["get", "node", "a-0"])["spec"]["taints"]
            .as_array()
            .is_some_and(|t| {
                t.iter().any(|t| {
                    t["key"] == "node.kubernetes.io/unschedulable" && t["effect"] == "NoSchedule"
                })
            })
    });

    // One disruption at a time: drain evicts a pod, waits for its replacement on b-0 to be
    // ready (the budget allows one again), then evicts the other.
    c.kubectl(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":1}}"#,
    ]);
    wait_for("web budget allows one", 20, || counts(&c, "web").3 == 1);
    let out = c.kubectl(&["drain", "a-0", "--pod-selector=app=web", "--timeout=60s"]);
    assert!(out.contains("node/a-0 drained"), "{out}");
    wait_for("web pods on b-0", 30, || ready_on(&c, "web", "b-0") == 2);
    assert_eq!(
        ready_on(&c, "db", "a-0"),
        4,
        "only the selected pods were drained"
    );

    c.kubectl(&["uncordon", "a-0"]);
    wait_for("a-0 schedulable and untainted", 10, || {
        let node = c.get_json(&["get", "node", "a-0"]);
        node["spec"]["unschedulable"] != true
            && node["spec"]["taints"]
                .as_array()
                .is_none_or(|t| t.is_empty())
    });
}
