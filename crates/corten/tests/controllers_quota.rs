//! ResourceQuota and LimitRange end to end through kubectl, on a simulated node: the quota
//! controller's status, creates over quota refused with upstream's 403 message, usage given
//! back when pods go, and LimitRange defaults and maximums applied to pods.

mod common;

use common::pods::wait_for;
use common::{Cluster, SimNodes};

const SETUP: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: q
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: compute
  namespace: q
spec:
  hard:
    pods: \"2\"
    requests.cpu: \"1\"
    limits.cpu: \"2\"
    services: \"1\"
---
apiVersion: v1
kind: LimitRange
metadata:
  name: defaults
  namespace: q
spec:
  limits:
  - type: Container
    default:
      cpu: 500m
    defaultRequest:
      cpu: 250m
    max:
      cpu: \"1\"
";

fn used(c: &Cluster, key: &str) -> String {
    let q = c.get_json(&["get", "quota", "compute", "-n", "q"]);
    q["status"]["used"][key].as_str().unwrap_or("").to_string()
}

fn run(c: &Cluster, name: &str) -> std::process::Output {
    c.try_kubectl(&["run", name, "-n", "q", "--image=nginx"])
}

#[test]
fn quota_refuses_creates_over_it_and_limit_range_defaults_pods() {
    let c = Cluster::start_with(&[]);
    let _sim = SimNodes::start(&c, 1);
    c.apply(SETUP);
    wait_for("quota status", 20, || {
        used(&c, "pods") == "0" && used(&c, "requests.cpu") == "0"
    });
    let q = c.get_json(&["get", "quota", "compute", "-n", "q"]);
    assert_eq!(q["status"]["hard"]["pods"], "2");

    // LimitRange defaults, and the annotation saying so.
    assert!(run(&c, "a").status.success());
    let pod = c.get_json(&["get", "pod", "a", "-n", "q"]);
    let res = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(res["requests"]["cpu"], "250m", "{pod}");
    assert_eq!(res["limits"]["cpu"], "500m");
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu request for container a; cpu limit for container a"
    );
    // Admission charged the quota at once.
    assert_eq!(used(&c, "pods"), "1");
    assert_eq!(used(&c, "requests.cpu"), "250m");

    assert!(run(&c, "b").status.success());
    let refused = run(&c, "c");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(
            "pods \"c\" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"
        ),
        "{stderr}"
    );

    // The LimitRange's maximum.
    let big = c.kubectl_stdin(
        &["apply", "-n", "q", "-f", "-"],
        "apiVersion: v1
kind: Pod
metadata:
  name: big
spec:
  containers:
  - name: app
    image: nginx
    resources:
      limits:
        cpu: \"2\"
",
    );
    let stderr = String::from_utf8_lossy(&big.stderr);
    assert!(
        stderr.contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{stderr}"
    );

    // Services count too.
    c.kubectl(&[
        "create",
        "service",
        "clusterip",
        "one",
        "-n",
        "q",
        "--tcp=80:80",
    ]);
    let second = c.try_kubectl(&[
        "create",
        "service",
        "clusterip",
        "two",
        "-n",
        "q",
        "--tcp=80:80",
    ]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("services \"two\" is forbidden: exceeded quota: compute, requested: services=1, used: services=1, limited: services=1"),
        "{stderr}"
    );

    // A deleted pod gives its share back.
    c.kubectl(&["delete", "pod", "a", "-n", "q"]);
    wait_for("usage given back", 30, || used(&c, "pods") == "1");
    assert_eq!(used(&c, "requests.cpu"), "250m");
    assert!(run(&c, "c").status.success());
    let table = c.kubectl(&["get", "quota", "compute", "-n", "q", "--no-headers"]);
    assert!(table.contains("pods: 2/2"), "{table}");

    // Without a LimitRange to default them, pods must state what a quota tracks.
    c.apply(
        "apiVersion: v1
kind: Namespace
metadata:
  name: q2
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: cpu
  namespace: q2
spec:
  hard:
    requests.cpu: \"1\"
",
    );
    wait_for("q2 quota status", 20, || {
        let q = c.get_json(&["get", "quota", "cpu", "-n", "q2"]);
        q["status"]["used"]["requests.cpu"] == "0"
    });
    let bare = c.try_kubectl(&["run", "bare", "-n", "q2", "--image=nginx"]);
    let stderr = String::from_utf8_lossy(&bare.stderr);
    assert!(
        stderr.contains(
            "pods \"bare\" is forbidden: failed quota: cpu: must specify requests.cpu for: bare"
        ),
        "{stderr}"
    );
}
