//! The scheduler's cluster-wide constraints end to end, on three simulated nodes driven with
//! kubectl: pod affinity and anti-affinity, topology spread, volume topology and preemption,
//! each proven by where pods land and by the FailedScheduling message when none fits.

mod common;

use common::pods::{apply, jsonpath, wait_for};
use common::{Cluster, SimNodes};

/// Three sim nodes: sim-0 and sim-1 in zone a, sim-2 in zone b.
fn zoned() -> (Cluster, SimNodes) {
    let c = Cluster::start();
    let sim = SimNodes::start(&c, 3);
    for (node, zone) in [("sim-0", "a"), ("sim-1", "a"), ("sim-2", "b")] {
        c.kubectl(&[
            "label",
            "node",
            node,
            &format!("topology.kubernetes.io/zone={zone}"),
        ]);
    }
    (c, sim)
}

fn node_of(c: &Cluster, pod: &str) -> String {
    wait_for(&format!("{pod} Running"), 30, || {
        jsonpath(c, pod, "{.status.phase}") == "Running"
    });
    jsonpath(c, pod, "{.spec.nodeName}")
}

/// Waits for the pod's PodScheduled=False message and returns it.
fn unschedulable(c: &Cluster, pod: &str) -> String {
    let path = "{.status.conditions[?(@.type==\"PodScheduled\")].message}";
    wait_for(&format!("{pod} unschedulable"), 30, || {
        !jsonpath(c, pod, path).is_empty()
    });
    assert_eq!(jsonpath(c, pod, "{.spec.nodeName}"), "");
    jsonpath(c, pod, path)
}

/// A FailedScheduling event for `pod` carries `message`.
fn has_event(c: &Cluster, pod: &str, reason: &str, message: &str) -> bool {
    let events = c.get_json(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
    ]);
    events["items"].as_array().into_iter().flatten().any(|e| {
        e["reason"] == reason && e["message"].as_str().is_some_and(|m| m.contains(message))
    })
}

fn pod(name: &str, labels: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n{spec}  containers:\n  - name: c\n    image: nginx\n"
    )
}

fn term(kind: &str, selector: &str, key: &str) -> String {
    format!(
        "  affinity:\n    {kind}:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector:\n          matchLabels: {{{selector}}}\n        topologyKey: {key}\n"
    )
}

#[test]
fn pod_affinity_and_anti_affinity() {
    let (c, _sim) = zoned();
    // Affinity: web goes where db is.
    apply(&c, &pod("db", "app: db", ""));
    let db = node_of(&c, "db");
    apply(
        &c,
        &pod(
            "web",
            "app: web",
            &term("podAffinity", "app: db", "kubernetes.io/hostname"),
        ),
    );
    assert_eq!(node_of(&c, "web"), db);
    // Affinity to pods that do not exist (and that the pod does not match itself) waits.
    apply(
        &c,
        &pod(
            "orphan",
            "app: orphan",
            &term("podAffinity", "app: nothing", "kubernetes.io/hostname"),
        ),
    );
    assert_eq!(
        unschedulable(&c, "orphan"),
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );

    // Anti-affinity per host: three replicas on three nodes, a fourth fits nowhere.
    let anti = term("podAntiAffinity", "app: spread", "kubernetes.io/hostname");
    let mut seen = vec![];
    for i in 0..3 {
        apply(&c, &pod(&format!("spread-{i}"), "app: spread", &anti));
        seen.push(node_of(&c, &format!("spread-{i}")));
    }
    seen.sort();
    assert_eq!(seen, ["sim-0", "sim-1", "sim-2"]);
    apply(&c, &pod("spread-3", "app: spread", &anti));
    let want = "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
                preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    assert_eq!(unschedulable(&c, "spread-3"), want);
    wait_for("FailedScheduling event", 30, || {
        has_event(&c, "spread-3", "FailedScheduling", want)
    });
    // Deleting one makes room on its node.
    let freed = jsonpath(&c, "spread-0", "{.spec.nodeName}");
    c.kubectl(&["delete", "pod", "spread-0", "--timeout=30s"]);
    assert_eq!(node_of(&c, "spread-3"), freed);
}

#[test]
fn placed_pods_anti_affinity_keeps_others_out_of_their_zone() {
    let (c, _sim) = zoned();
    apply(
        &c,
        &pod(
            "loner",
            "app: loner",
            &format!(
                "  nodeSelector:\n    kubernetes.io/hostname: sim-2\n{}",
                term(
                    "podAntiAffinity",
                    "app: noisy",
                    "topology.kubernetes.io/zone"
                )
            ),
        ),
    );
    assert_eq!(node_of(&c, "loner"), "sim-2");
    for i in 0..3 {
        apply(&c, &pod(&format!("noisy-{i}"), "app: noisy", ""));
        let n = node_of(&c, &format!("noisy-{i}"));
        assert!(n == "sim-0" || n == "sim-1", "noisy-{i} on {n}");
    }
    apply(
        &c,
        &pod(
            "noisy-b",
            "app: noisy",
            "  nodeSelector:\n    topology.kubernetes.io/zone: b\n",
        ),
    );
    assert_eq!(
        unschedulable(&c, "noisy-b"),
        "0/3 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules, \
         2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: \
         1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
    );
}

fn spread(key: &str, extra: &str) -> String {
    format!(
        "  topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: {key}\n    whenUnsatisfiable: DoNotSchedule\n    labelSelector:\n      matchLabels: {{app: spread}}\n{extra}"
    )
}

#[test]
fn topology_spread_balances_zones_and_refuses_skew() {
    let (c, _sim) = zoned();
    let zone = spread("topology.kubernetes.io/zone", "");
    let mut b = 0;
    for i in 0..4 {
        apply(&c, &pod(&format!("z-{i}"), "app: spread", &zone));
        if node_of(&c, &format!("z-{i}")) == "sim-2" {
            b += 1;
        }
    }
    // Zone a has two nodes, zone b one: still two pods per zone.
    assert_eq!(b, 2);

    // Per host, but only zone b allowed (and nodeAffinityPolicy Ignore keeps the zone-a hosts
    // as domains): sim-2 already has two, the empty hosts count 0, so the skew would be 3.
    c.kubectl(&["delete", "pods", "--all", "--timeout=30s"]);
    let host = spread(
        "kubernetes.io/hostname",
        "    nodeAffinityPolicy: Ignore\n  nodeSelector:\n    topology.kubernetes.io/zone: b\n",
    );
    apply(&c, &pod("h-0", "app: spread", &host));
    assert_eq!(node_of(&c, "h-0"), "sim-2");
    apply(&c, &pod("h-1", "app: spread", &host));
    let want = "0/3 nodes are available: 1 node(s) didn't match pod topology spread constraints, \
                2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are \
                available: 1 No preemption victims found for incoming pod, 2 Preemption is not \
                helpful for scheduling.";
    assert_eq!(unschedulable(&c, "h-1"), want);
    wait_for("FailedScheduling event", 30, || {
        has_event(&c, "h-1", "FailedScheduling", want)
    });
}

#[test]
fn volumes_pin_pods_to_their_nodes() {
    let (c, _sim) = zoned();
    apply(
        &c,
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: manual\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\n---\napiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: pv-sim-1\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  storageClassName: manual\n  hostPath: {path: /tmp/pv-sim-1}\n  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        - {key: kubernetes.io/hostname, operator: In, values: [sim-1]}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\nspec:\n  storageClassName: manual\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n",
    );
    let uses = |name: &str, claim: &str| {
        pod(
            name,
            "app: db",
            &format!(
                "  volumes:\n  - name: d\n    persistentVolumeClaim: {{claimName: {claim}}}\n"
            ),
        )
    };
    apply(&c, &uses("db-0", "data"));
    assert_eq!(node_of(&c, "db-0"), "sim-1");
    wait_for("claim bound", 30, || {
        c.kubectl(&["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]) == "Bound"
    });

    // The volume's node cordoned: the next pod of the claim fits nowhere.
    c.kubectl(&["cordon", "sim-1"]);
    apply(&c, &uses("db-1", "data"));
    assert_eq!(
        unschedulable(&c, "db-1"),
        "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) had volume node \
         affinity conflict. preemption: 0/3 nodes are available: 3 Preemption is not helpful \
         for scheduling."
    );
    c.kubectl(&["uncordon", "sim-1"]);
    assert_eq!(node_of(&c, "db-1"), "sim-1");

    // A claim no volume can serve, in a class that cannot provision, waits.
    apply(
        &c,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: big\nspec:\n  storageClassName: manual\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 5Gi}}\n",
    );
    apply(&c, &uses("db-big", "big"));
    assert!(
        unschedulable(&c, "db-big").starts_with(
            "0/3 nodes are available: 3 node(s) didn't find available persistent volumes to bind."
        ),
        "{}",
        jsonpath(&c, "db-big", "{.status.conditions}")
    );
}

fn priority_class(name: &str, value: i32, policy: &str) -> String {
    format!(
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: {name}\nvalue: {value}\npreemptionPolicy: {policy}\n"
    )
}

fn cpu_pod(name: &str, class: &str, cpu: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  priorityClassName: {class}\n{extra}  containers:\n  - name: c\n    image: nginx\n    resources:\n      requests:\n        cpu: \"{cpu}\"\n"
    )
}

#[test]
fn higher_priority_pods_preempt_lower_ones() {
    let (c, _sim) = zoned();
    apply(&c, &priority_class("low", 10, "PreemptLowerPriority"));
    apply(&c, &priority_class("high", 1000, "PreemptLowerPriority"));
    apply(&c, &priority_class("polite", 1000, "Never"));
    // The Priority admission fills spec.priority and refuses unknown classes.
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &cpu_pod("bogus", "nope", "1", ""));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no PriorityClass with name nope was found"),
        "{err}"
    );

    // Each sim node (8 cpu) gets a 6-cpu low-priority pod.
    for i in 0..3 {
        apply(
            &c,
            &cpu_pod(
                &format!("low-{i}"),
                "low",
                "6",
                &format!("  nodeSelector:\n    kubernetes.io/hostname: sim-{i}\n"),
            ),
        );
        node_of(&c, &format!("low-{i}"));
    }
    assert_eq!(jsonpath(&c, "low-0", "{.spec.priority}"), "10");

    // preemptionPolicy Never: it waits.
    apply(&c, &cpu_pod("polite", "polite", "4", ""));
    assert_eq!(jsonpath(&c, "polite", "{.spec.preemptionPolicy}"), "Never");
    assert_eq!(
        unschedulable(&c, "polite"),
        "0/3 nodes are available: 3 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
    );
    c.kubectl(&["delete", "pod", "polite", "--timeout=30s"]);

    // A high-priority pod evicts one low pod and runs in its place.
    apply(&c, &cpu_pod("urgent", "high", "4", ""));
    assert_eq!(jsonpath(&c, "urgent", "{.spec.priority}"), "1000");
    let node = node_of(&c, "urgent");
    assert_eq!(jsonpath(&c, "urgent", "{.status.nominatedNodeName}"), node);
    let victim = format!("low-{}", node.trim_start_matches("sim-"));
    wait_for("the victim gone", 30, || {
        !c.try_kubectl(&["get", "pod", &victim]).status.success()
    });
    let left = c.kubectl(&["get", "pods", "-o", "name"]);
    assert_eq!(
        left.lines().filter(|l| l.contains("low-")).count(),
        2,
        "{left}"
    );
    assert!(
        has_event(&c, &victim, "Preempted", "Preempted by pod"),
        "{}",
        c.kubectl(&["get", "events"])
    );

    // Equal priority does not preempt.
    apply(
        &c,
        &cpu_pod(
            "urgent-2",
            "high",
            "7",
            &format!("  nodeSelector:\n    kubernetes.io/hostname: {node}\n"),
        ),
    );
    assert_eq!(
        unschedulable(&c, "urgent-2"),
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node \
         affinity/selector. preemption: 0/3 nodes are available: 1 No preemption victims found \
         for incoming pod, 2 Preemption is not helpful for scheduling."
    );
}
