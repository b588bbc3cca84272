//! LimitRange items of type `Pod` (a pod's containers summed) and `PersistentVolumeClaim`
//! (storage requests) end to end through kubectl: creates outside them refused with 403 and
//! upstream's messages, creates inside them admitted, and the type-specific validation.

mod common;

use common::Cluster;

const SETUP: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: lr
---
apiVersion: v1
kind: LimitRange
metadata:
  name: sizes
  namespace: lr
spec:
  limits:
  - type: Pod
    max:
      cpu: \"1\"
  - type: PersistentVolumeClaim
    min:
      storage: 1Gi
    max:
      storage: 2Gi
";

/// A pod whose two containers are limited to `a` and `b` cpu.
fn pod(name: &str, a: &str, b: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: lr
spec:
  containers:
  - name: a
    image: nginx
    resources:
      limits:
        cpu: {a}
  - name: b
    image: nginx
    resources:
      limits:
        cpu: {b}
"
    )
}

fn claim(name: &str, size: &str) -> String {
    format!(
        "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {name}
  namespace: lr
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: {size}
"
    )
}

/// `kubectl create`: Ok, or Err with stderr.
fn create(c: &Cluster, manifest: &str) -> Result<(), String> {
    let out = c.kubectl_stdin(&["create", "-f", "-"], manifest);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn pod_and_claim_limits_are_enforced() {
    let c = Cluster::start_with(&[]);
    c.apply(SETUP);

    let err = create(&c, &pod("big", "700m", "500m")).expect_err("over the pod max");
    assert!(
        err.contains(r#"Error from server (Forbidden): error when creating "STDIN": pods "big" is forbidden: maximum cpu usage per Pod is 1, but limit is 1200m"#),
        "{err}"
    );
    create(&c, &pod("fits", "500m", "500m")).expect("two halves fit");
    let got = c.kubectl(&["get", "pod", "fits", "-n", "lr", "-o", "name"]);
    assert_eq!(got.trim(), "pod/fits");

    let err = create(&c, &claim("huge", "5Gi")).expect_err("over the claim max");
    assert!(
        err.contains(r#"(Forbidden): error when creating "STDIN": persistentvolumeclaims "huge" is forbidden: maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"#),
        "{err}"
    );
    let err = create(&c, &claim("tiny", "512Mi")).expect_err("under the claim min");
    assert!(
        err.contains(r#"persistentvolumeclaims "tiny" is forbidden: minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 512Mi"#),
        "{err}"
    );
    create(&c, &claim("right", "1Gi")).expect("within the range");
    let out = c.kubectl(&["get", "pvc", "-n", "lr", "-o", "name"]);
    assert_eq!(out.trim(), "persistentvolumeclaim/right");
}

#[test]
fn type_specific_validation() {
    let c = Cluster::start_with(&[]);
    let bad = "apiVersion: v1
kind: LimitRange
metadata:
  name: bad
spec:
  limits:
  - type: Pod
    default:
      cpu: 500m
  - type: PersistentVolumeClaim
    max:
      cpu: \"1\"
";
    let err = create(&c, bad).expect_err("invalid");
    for expected in [
        r#"The LimitRange "bad" is invalid"#,
        "spec.limits[0].default: Forbidden: may not be specified when `type` is 'Pod'",
        "spec.limits[1].limits: Required value: either minimum or maximum storage value is required, but neither was provided",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }
}
