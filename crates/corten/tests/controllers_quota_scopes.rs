//! ResourceQuota scopes end to end through kubectl, on a simulated node: quotas scoped to
//! BestEffort pods, to Terminating pods (activeDeadlineSeconds) and, through a scope
//! selector, to a PriorityClass each count and refuse only the pods they select, in the
//! admission check and in the controller's `status.used`; scope validation errors.

mod common;

use common::pods::wait_for;
use common::{Cluster, SimNodes};

const SETUP: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: s
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: high
value: 1000
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: besteffort
  namespace: s
spec:
  hard:
    pods: \"1\"
  scopes: [BestEffort]
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: terminating
  namespace: s
spec:
  hard:
    pods: \"1\"
    requests.cpu: \"1\"
  scopes: [Terminating, NotBestEffort]
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: high
  namespace: s
spec:
  hard:
    pods: \"1\"
  scopeSelector:
    matchExpressions:
    - scopeName: PriorityClass
      operator: In
      values: [high]
";

/// A pod in namespace `s`: `extra` is extra spec YAML (indented two spaces); `cpu` a request.
fn pod(name: &str, extra: &str, cpu: Option<&str>) -> String {
    let resources = cpu.map_or(String::new(), |c| {
        format!("    resources:\n      requests:\n        cpu: {c}\n")
    });
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: s
spec:
{extra}
  containers:
  - name: app
    image: nginx
{resources}"
    )
}

fn used(c: &Cluster, quota: &str, key: &str) -> String {
    let q = c.get_json(&["get", "quota", quota, "-n", "s"]);
    q["status"]["used"][key].as_str().unwrap_or("").to_string()
}

fn create(c: &Cluster, manifest: &str) -> Result<(), String> {
    let out = c.kubectl_stdin(&["create", "-f", "-"], manifest);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn scoped_quotas_count_and_refuse_only_their_pods() {
    let c = Cluster::start_with(&[]);
    let _sim = SimNodes::start(&c, 1);
    c.apply(SETUP);
    wait_for("quota statuses", 20, || {
        ["besteffort", "terminating", "high"]
            .iter()
            .all(|q| used(&c, q, "pods") == "0")
    });

    // A BestEffort pod counts against the BestEffort quota only.
    create(&c, &pod("be1", "  restartPolicy: Always", None)).expect("be1");
    assert_eq!(used(&c, "besteffort", "pods"), "1");
    assert_eq!(used(&c, "terminating", "pods"), "0");
    assert_eq!(used(&c, "high", "pods"), "0");
    let err = create(&c, &pod("be2", "  restartPolicy: Always", None)).expect_err("be2");
    assert!(
        err.contains(r#"pods "be2" is forbidden: exceeded quota: besteffort, requested: pods=1, used: pods=1, limited: pods=1"#),
        "{err}"
    );
    // A pod with a request is not BestEffort: the full BestEffort quota does not apply.
    create(&c, &pod("sized", "  restartPolicy: Always", Some("100m"))).expect("sized");

    // Terminating (activeDeadlineSeconds) and not BestEffort.
    let batch = |name: &str| pod(name, "  activeDeadlineSeconds: 600", Some("200m"));
    create(&c, &batch("batch1")).expect("batch1");
    assert_eq!(used(&c, "terminating", "pods"), "1");
    assert_eq!(used(&c, "terminating", "requests.cpu"), "200m");
    let err = create(&c, &batch("batch2")).expect_err("batch2");
    assert!(
        err.contains(r#"pods "batch2" is forbidden: exceeded quota: terminating, requested: pods=1, used: pods=1, limited: pods=1"#),
        "{err}"
    );

    // The PriorityClass scope selector.
    let vip = |name: &str| pod(name, "  priorityClassName: high", Some("100m"));
    create(&c, &vip("vip1")).expect("vip1");
    assert_eq!(used(&c, "high", "pods"), "1");
    let err = create(&c, &vip("vip2")).expect_err("vip2");
    assert!(
        err.contains(r#"pods "vip2" is forbidden: exceeded quota: high, requested: pods=1, used: pods=1, limited: pods=1"#),
        "{err}"
    );

    // The controller's recount agrees (after a resync), and gives back what deleted pods used.
    c.kubectl(&["delete", "pod", "be1", "batch1", "-n", "s", "--wait=true"]);
    wait_for("usage given back", 40, || {
        used(&c, "besteffort", "pods") == "0"
            && used(&c, "terminating", "pods") == "0"
            && used(&c, "terminating", "requests.cpu") == "0"
    });
    assert_eq!(used(&c, "high", "pods"), "1");
    let table = c.kubectl(&["get", "quota", "high", "-n", "s", "--no-headers"]);
    assert!(table.contains("pods: 1/1"), "{table}");
    create(&c, &pod("be3", "  restartPolicy: Always", None)).expect("be3 fits again");
}

#[test]
fn scopes_must_fit_the_resources() {
    let c = Cluster::start_with(&[]);
    let bad = "apiVersion: v1
kind: ResourceQuota
metadata:
  name: bad
spec:
  hard:
    requests.cpu: \"1\"
  scopes: [BestEffort]
";
    let err = c.kubectl_stdin(&["create", "-f", "-"], bad).stderr.clone();
    let err = String::from_utf8_lossy(&err);
    assert!(
        err.contains(r#"spec.scopes: Invalid value: []core.ResourceQuotaScope{"BestEffort"}: unsupported scope applied to resource"#),
        "{err}"
    );
    let conflict = bad
        .replace("requests.cpu", "pods")
        .replace("[BestEffort]", "[Terminating, NotTerminating]");
    let err = c
        .kubectl_stdin(&["create", "-f", "-"], &conflict)
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&err);
    assert!(err.contains("conflicting scopes"), "{err}");
}
