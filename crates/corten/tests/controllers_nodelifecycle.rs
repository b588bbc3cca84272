//! Node lifecycle and NoExecute taint eviction end to end, through kubectl, on simulated
//! nodes: a node whose agent dies turns Unknown (NotReady) with the unreachable taints, its
//! Deployment's pods are evicted after their `tolerationSeconds` and replaced on another node,
//! and the taints go when it comes back; `kubectl taint ... :NoExecute` evicts the pods that do
//! not tolerate it at once; pods get the DefaultTolerationSeconds tolerations.

mod common;

use common::pods::{apply, wait_for};
use common::watch::{is_active, is_ready};
use common::{Cluster, SimNodes};
use serde_json::Value;

/// The grace period the tests run the controller with (leases are renewed every 10 s).
const GRACE: &str = "15s";

fn deployment(name: &str, replicas: u32, tolerations: &str) -> String {
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
{tolerations}      containers:
      - name: app
        image: nginx
"
    )
}

fn pods(c: &Cluster, app: &str) -> Vec<Value> {
    c.get_json(&["get", "pods", "-l", &format!("app={app}")])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Active, ready pods of `app` on `node`.
fn ready_on(c: &Cluster, app: &str, node: &str) -> usize {
    pods(c, app)
        .iter()
        .filter(|p| is_active(p) && is_ready(p) && p["spec"]["nodeName"] == node)
        .count()
}

fn condition<'a>(node: &'a Value, type_: &str) -> &'a Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

fn taints(node: &Value) -> Vec<(String, String)> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["key"].as_str().unwrap_or("").to_string(),
                t["effect"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn silent_node_turns_unknown_and_its_pods_move() {
    let c = Cluster::start_with(&["--node-monitor-grace-period", GRACE]);
    let a = SimNodes::start_prefixed(&c, "a", 1);
    let tolerations = "      tolerations:
      - key: node.kubernetes.io/unreachable
        operator: Exists
        effect: NoExecute
        tolerationSeconds: 3
";
    apply(&c, &deployment("web", 2, tolerations));
    wait_for("2 ready pods on a-0", 60, || {
        ready_on(&c, "web", "a-0") == 2
    });

    // DefaultTolerationSeconds: the pod's own unreachable toleration is kept, the not-ready
    // one is added for 300 s.
    let pod = &pods(&c, "web")[0];
    let tols = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(tols.len(), 2, "{tols:?}");
    assert_eq!(tols[0]["tolerationSeconds"], 3);
    assert_eq!(tols[1]["key"], "node.kubernetes.io/not-ready");
    assert_eq!(tols[1]["tolerationSeconds"], 300);

    let b = SimNodes::start_prefixed(&c, "b", 1);
    // The agent of a-0 dies without a word (SIGKILL): its lease is no longer renewed.
    drop(a);
    wait_for("a-0 NotReady with the unreachable taints", 60, || {
        let node = c.get_json(&["get", "node", "a-0"]);
        let t = taints(&node);
        condition(&node, "Ready")["status"] == "Unknown"
            && t.contains(&("node.kubernetes.io/unreachable".into(), "NoExecute".into()))
            && t.contains(&("node.kubernetes.io/unreachable".into(), "NoSchedule".into()))
    });
    let node = c.get_json(&["get", "node", "a-0"]);
    let ready = condition(&node, "Ready");
    assert_eq!(ready["reason"], "NodeStatusUnknown", "{ready}");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    // Simulated nodes post only Ready: the others are added, as upstream does.
    for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        let cond = condition(&node, type_);
        assert_eq!(cond["status"], "Unknown", "{type_}: {cond}");
        assert_eq!(cond["reason"], "NodeStatusNeverUpdated");
    }
    let listed = c.kubectl(&["get", "node", "a-0", "--no-headers"]);
    assert!(listed.contains("NotReady"), "{listed}");

    // After tolerationSeconds the pods are evicted and replaced on b-0.
    wait_for("2 ready pods on b-0", 60, || {
        ready_on(&c, "web", "b-0") == 2
    });
    let old: Vec<Value> = pods(&c, "web")
        .into_iter()
        .filter(|p| p["spec"]["nodeName"] == "a-0")
        .collect();
    assert_eq!(
        old.len(),
        2,
        "the old pods stay Terminating until a-0 is back"
    );
    for p in &old {
        assert!(!is_active(p), "{p}");
        assert!(
            !is_ready(p),
            "pods of an unreachable node are not ready: {p}"
        );
        let target = p["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(target["reason"], "DeletionByTaintManager", "{p}");
    }

    // The node controller and the taint eviction said so in events.
    let events = c.get_json(&["get", "events"]);
    let has = |kind: &str, name: &str, reason: &str| {
        events["items"].as_array().into_iter().flatten().any(|e| {
            e["involvedObject"]["kind"] == kind
                && e["involvedObject"]["name"] == name
                && e["reason"] == reason
        })
    };
    assert!(has("Node", "a-0", "NodeNotReady"), "{events}");
    for p in &old {
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        assert!(has("Pod", name, "TaintManagerEviction"), "{events}");
        assert!(has("Pod", name, "NodeNotReady"), "{events}");
    }

    // a-0 comes back: its taints go and its agent finishes the old pods.
    let _a = SimNodes::start_prefixed(&c, "a", 1);
    wait_for("a-0 untainted", 30, || {
        taints(&c.get_json(&["get", "node", "a-0"])).is_empty()
    });
    wait_for("old pods gone", 30, || {
        pods(&c, "web")
            .iter()
            .all(|p| p["spec"]["nodeName"] == "b-0")
    });
    drop(b);
}

#[test]
fn no_execute_taint_evicts_untolerating_pods_at_once() {
    let c = Cluster::start_with(&["--node-monitor-grace-period", GRACE]);
    let _sim = SimNodes::start(&c, 1);
    apply(&c, &deployment("plain", 1, ""));
    let forever = "      tolerations:
      - key: maintenance
        operator: Exists
        effect: NoExecute
";
    apply(&c, &deployment("tolerant", 1, forever));
    wait_for("both pods ready", 60, || {
        ready_on(&c, "plain", "sim-0") == 1 && ready_on(&c, "tolerant", "sim-0") == 1
    });
    let tolerant = pods(&c, "tolerant")[0]["metadata"]["name"].clone();
    let plain = pods(&c, "plain")[0]["metadata"]["name"].clone();

    c.kubectl(&["taint", "node", "sim-0", "maintenance=now:NoExecute"]);
    wait_for("the untolerating pod evicted", 20, || {
        pods(&c, "plain")
            .iter()
            .all(|p| p["metadata"]["name"] != plain || !is_active(p))
    });
    // Its replacement cannot be scheduled anywhere; the tolerating pod stays.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let now = pods(&c, "tolerant");
    assert_eq!(now.len(), 1);
    assert_eq!(now[0]["metadata"]["name"], tolerant);
    assert!(is_active(&now[0]));
    let pending = pods(&c, "plain")
        .into_iter()
        .filter(|p| p["status"]["phase"] == "Pending" && is_active(p))
        .count();
    assert_eq!(pending, 1);

    c.kubectl(&["taint", "node", "sim-0", "maintenance-"]);
    wait_for("the replacement running", 30, || {
        ready_on(&c, "plain", "sim-0") == 1
    });
}
