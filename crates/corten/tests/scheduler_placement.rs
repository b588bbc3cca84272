//! The scheduler and simulated nodes, end to end: `corten server` runs the scheduler, a
//! `corten sim-nodes --count 3` child process registers sim-0..sim-2, and kubectl drives it.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, SimNodes};

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn field(c: &Cluster, pod: &str, path: &str) -> String {
    let out = c.try_kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={{{path}}}")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_running(c: &Cluster, pod: &str) -> String {
    eventually(&format!("{pod} Running"), || {
        field(c, pod, ".status.phase") == "Running"
    });
    field(c, pod, ".spec.nodeName")
}

fn pod_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{extra_spec}  containers:\n  - name: c\n    image: nginx\n"
    )
}

#[test]
fn pods_run_on_simulated_nodes() {
    let c = Cluster::start();
    let mut sim = SimNodes::start(&c, 3);
    let nodes = c.kubectl(&["get", "nodes", "-o", "wide", "--show-labels"]);
    assert!(nodes.contains("v1.33.0-corten-sim"), "{nodes}");
    assert!(nodes.contains("corten.dev/simulated=true"), "{nodes}");
    eventually("node leases", || {
        c.kubectl(&["get", "leases", "-n", "kube-node-lease", "-o", "name"])
            .lines()
            .count()
            == 3
    });

    c.kubectl(&["run", "web", "--image=nginx", "--restart=Always"]);
    let node = wait_running(&c, "web");
    assert!(node.starts_with("sim-"), "{node}");
    let wide = c.kubectl(&["get", "pod", "web", "-o", "wide"]);
    assert!(wide.contains(&node) && wide.contains("Running"), "{wide}");
    assert!(field(&c, "web", ".status.podIP").starts_with("10."));
    assert_eq!(
        field(&c, "web", ".status.containerStatuses[0].ready"),
        "true"
    );
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(events.contains("Scheduled"), "{events}");

    // An exiting pod ends Succeeded or Failed.
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: job\n  annotations:\n    corten.dev/sim-exit-code: \"0\"\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: crash\n  annotations:\n    corten.dev/sim-exit-code: \"3\"\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox\n",
    );
    eventually("job Succeeded", || {
        field(&c, "job", ".status.phase") == "Succeeded"
    });
    eventually("crash Failed", || {
        field(&c, "crash", ".status.phase") == "Failed"
    });

    // Deleting a pod on a sim node removes it for real (the node confirms termination).
    c.kubectl(&["delete", "pod", "web", "--timeout=20s"]);
    assert!(!c.try_kubectl(&["get", "pod", "web"]).status.success());

    // A clean shutdown deletes the nodes.
    assert!(sim.stop(), "sim-nodes did not exit cleanly");
    let left = c.kubectl(&["get", "nodes", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
}

#[test]
fn selectors_taints_and_cordons_steer_pods() {
    let c = Cluster::start();
    let _sim = SimNodes::start(&c, 3);
    c.kubectl(&["label", "node", "sim-1", "disk=ssd"]);
    c.apply(&pod_yaml("ssd", "  nodeSelector:\n    disk: ssd\n"));
    assert_eq!(wait_running(&c, "ssd"), "sim-1");

    // sim-0 tainted, sim-1 cordoned: plain pods all land on sim-2.
    c.kubectl(&["taint", "node", "sim-0", "dedicated=infra:NoSchedule"]);
    c.kubectl(&["cordon", "sim-1"]);
    for i in 0..4 {
        c.apply(&pod_yaml(&format!("plain-{i}"), ""));
    }
    for i in 0..4 {
        assert_eq!(wait_running(&c, &format!("plain-{i}")), "sim-2");
    }
    // A pod tolerating the taint may use sim-0.
    c.apply(&pod_yaml(
        "tolerant",
        "  nodeSelector:\n    kubernetes.io/hostname: sim-0\n  tolerations:\n  - key: dedicated\n    operator: Equal\n    value: infra\n    effect: NoSchedule\n",
    ));
    assert_eq!(wait_running(&c, "tolerant"), "sim-0");

    // A pod that wants the cordoned node waits, then goes there once it is uncordoned.
    c.apply(&pod_yaml("waiting", "  nodeSelector:\n    disk: ssd\n"));
    eventually("waiting reported unschedulable", || {
        field(&c, "waiting", ".status.conditions[0].reason") == "Unschedulable"
    });
    let msg = field(&c, "waiting", ".status.conditions[0].message");
    assert!(
        msg.starts_with("0/3 nodes are available: ")
            && msg.contains("1 node(s) were unschedulable")
            && msg.contains("1 node(s) had untolerated taint {dedicated: infra}"),
        "{msg}"
    );
    assert_eq!(field(&c, "waiting", ".spec.nodeName"), "");
    c.kubectl(&["uncordon", "sim-1"]);
    assert_eq!(wait_running(&c, "waiting"), "sim-1");
}

#[test]
fn a_pod_that_fits_nowhere_stays_pending_with_the_reason() {
    let c = Cluster::start();
    let _sim = SimNodes::start(&c, 3);
    c.kubectl(&["taint", "node", "sim-2", "key=value:NoSchedule"]);
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  containers:\n  - name: c\n    image: nginx\n    resources:\n      requests:\n        cpu: \"100\"\n",
    );
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint {key: value}, 2 Insufficient cpu. \
                preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
                2 No preemption victims found for incoming pod.";
    eventually("FailedScheduling event", || {
        c.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling",
        ])
        .contains("0/3 nodes are available")
    });
    let describe = c.kubectl(&["describe", "pod", "huge"]);
    assert!(describe.contains("FailedScheduling"), "{describe}");
    assert!(describe.contains("default-scheduler"), "{describe}");
    assert!(describe.contains("Pending"), "{describe}");
    let events = c.get_json(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=huge",
    ]);
    let found = events["items"].as_array().into_iter().flatten().any(|e| {
        e["reason"] == "FailedScheduling" && e["message"] == want && e["type"] == "Warning"
    });
    assert!(found, "{events:#}");
    assert_eq!(field(&c, "huge", ".status.conditions[0].message"), want);

    // A pod that fits still runs beside it (kubectl create sends protobuf bodies).
    c.kubectl(&[
        "create",
        "deployment",
        "unused",
        "--image=nginx",
        "--replicas=0",
    ]);
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: small\nspec:\n  containers:\n  - name: c\n    image: nginx\n    resources:\n      requests:\n        cpu: \"1\"\n",
    );
    let node = wait_running(&c, "small");
    assert!(node == "sim-0" || node == "sim-1", "{node}");
    assert_eq!(field(&c, "huge", ".status.phase"), "Pending");
}
