//! ResourceQuota and LimitRange admission on updates, and quotas scoped by
//! VolumeAttributesClass, end to end through kubectl: a claim resized past its quota is
//! refused with upstream's 403 "exceeded quota" and one within it admitted (and charged, also
//! per StorageClass); a service turned NodePort is charged its node ports; a resize past a
//! LimitRange maximum is refused; a quota with a `VolumeAttributesClass` scope selector
//! counts only the claims of its classes, also a claim that moves into one.

mod common;

use common::Cluster;
use common::pods::wait_for;

const SETUP: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: qu
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: q
  namespace: qu
spec:
  hard:
    requests.storage: 3Gi
    manual.storageclass.storage.k8s.io/requests.storage: 10Gi
    services.nodeports: \"1\"
---
apiVersion: v1
kind: LimitRange
metadata:
  name: sizes
  namespace: qu
spec:
  limits:
  - type: PersistentVolumeClaim
    max:
      storage: 5Gi
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: disk
spec:
  storageClassName: manual
  capacity:
    storage: 10Gi
  accessModes: [ReadWriteOnce]
  hostPath:
    path: /tmp/corten-quota-updates-disk
";

const CLAIM: &str = "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: qu
spec:
  storageClassName: manual
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
";

fn used(c: &Cluster, ns: &str, quota: &str, key: &str) -> String {
    let q = c.get_json(&["get", "quota", quota, "-n", ns]);
    q["status"]["used"][key].as_str().unwrap_or("").to_string()
}

/// `kubectl patch` with a merge patch: Ok, or Err with stderr.
fn patch(c: &Cluster, ns: &str, what: &str, body: &str) -> Result<(), String> {
    let out = c.try_kubectl(&["patch", what, "-n", ns, "--type=merge", "-p", body]);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn resize(c: &Cluster, size: &str) -> Result<(), String> {
    patch(
        c,
        "qu",
        "pvc/data",
        &format!(r#"{{"spec":{{"resources":{{"requests":{{"storage":"{size}"}}}}}}}}"#),
    )
}

fn requested(c: &Cluster, ns: &str, pvc: &str) -> String {
    let p = c.get_json(&["get", "pvc", pvc, "-n", ns]);
    p["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn updates_are_charged_and_checked() {
    let c = Cluster::start_with(&[]);
    c.apply(SETUP);
    // The quota must have a status before the claim can be admitted.
    wait_for("quota status", 20, || {
        used(&c, "qu", "q", "requests.storage") == "0"
    });
    c.apply(CLAIM);
    wait_for("the claim bound", 30, || {
        c.get_json(&["get", "pvc", "data", "-n", "qu"])["status"]["phase"] == "Bound"
    });
    assert_eq!(used(&c, "qu", "q", "requests.storage"), "1Gi");

    // Growing by 3Gi on top of 1Gi goes past 3Gi.
    let err = resize(&c, "4Gi").expect_err("over the quota");
    assert!(
        err.contains(r#"Error from server (Forbidden): persistentvolumeclaims "data" is forbidden: exceeded quota: q, requested: requests.storage=3Gi, used: requests.storage=1Gi, limited: requests.storage=3Gi"#),
        "{err}"
    );
    assert_eq!(
        requested(&c, "qu", "data"),
        "1Gi",
        "the refused resize left it"
    );
    assert_eq!(
        used(&c, "qu", "q", "requests.storage"),
        "1Gi",
        "nothing charged"
    );

    // Growing by 1Gi fits, and is charged at once, per StorageClass too.
    resize(&c, "2Gi").expect("within the quota");
    assert_eq!(requested(&c, "qu", "data"), "2Gi");
    assert_eq!(used(&c, "qu", "q", "requests.storage"), "2Gi");
    assert_eq!(
        used(
            &c,
            "qu",
            "q",
            "manual.storageclass.storage.k8s.io/requests.storage"
        ),
        "2Gi"
    );
    // An update that does not grow it (a label) is not charged again.
    c.kubectl(&["label", "pvc", "data", "-n", "qu", "tier=db"]);
    assert_eq!(used(&c, "qu", "q", "requests.storage"), "2Gi");

    // The LimitRange maximum applies to a resize as to a create (checked before the quota).
    let err = resize(&c, "6Gi").expect_err("over the LimitRange");
    assert!(
        err.contains(r#"Error from server (Forbidden): persistentvolumeclaims "data" is forbidden: maximum storage usage per PersistentVolumeClaim is 5Gi, but request is 6Gi"#),
        "{err}"
    );
    assert_eq!(requested(&c, "qu", "data"), "2Gi");

    // A service turned NodePort is charged its node ports.
    c.kubectl(&[
        "create",
        "service",
        "clusterip",
        "two",
        "-n",
        "qu",
        "--tcp=80:80",
        "--tcp=443:443",
    ]);
    let err = patch(&c, "qu", "service/two", r#"{"spec":{"type":"NodePort"}}"#)
        .expect_err("two node ports, one allowed");
    assert!(
        err.contains(r#"services "two" is forbidden: exceeded quota: q, requested: services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1"#),
        "{err}"
    );
    let svc = c.get_json(&["get", "service", "two", "-n", "qu"]);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    c.kubectl(&[
        "create",
        "service",
        "clusterip",
        "one",
        "-n",
        "qu",
        "--tcp=80:80",
    ]);
    patch(&c, "qu", "service/one", r#"{"spec":{"type":"NodePort"}}"#).expect("one node port");
    assert_eq!(used(&c, "qu", "q", "services.nodeports"), "1");

    // The controller's own count agrees with what admission charged.
    std::thread::sleep(std::time::Duration::from_secs(11));
    assert_eq!(used(&c, "qu", "q", "requests.storage"), "2Gi");
    assert_eq!(used(&c, "qu", "q", "services.nodeports"), "1");
}

fn claim(name: &str, class: Option<&str>) -> String {
    let class = class.map_or(String::new(), |c| {
        format!("  volumeAttributesClassName: {c}\n")
    });
    format!(
        "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {name}
  namespace: vac
spec:
{class}  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
"
    )
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
fn volume_attributes_class_scope() {
    let c = Cluster::start_with(&[]);
    c.apply(
        "apiVersion: v1
kind: Namespace
metadata:
  name: vac
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: gold
  namespace: vac
spec:
  hard:
    persistentvolumeclaims: \"1\"
    requests.storage: 2Gi
  scopeSelector:
    matchExpressions:
    - scopeName: VolumeAttributesClass
      operator: In
      values: [gold]
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: any-class
  namespace: vac
spec:
  hard:
    persistentvolumeclaims: \"10\"
  scopeSelector:
    matchExpressions:
    - scopeName: VolumeAttributesClass
      operator: Exists
---
apiVersion: v1
kind: ResourceQuota
metadata:
  name: classless
  namespace: vac
spec:
  hard:
    persistentvolumeclaims: \"10\"
  scopeSelector:
    matchExpressions:
    - scopeName: VolumeAttributesClass
      operator: DoesNotExist
",
    );
    wait_for("quota status", 20, || {
        ["gold", "any-class", "classless"]
            .iter()
            .all(|q| used(&c, "vac", q, "persistentvolumeclaims") == "0")
    });

    // The scope only fits claim resources.
    let err = create(
        &c,
        "apiVersion: v1
kind: ResourceQuota
metadata:
  name: wrong
  namespace: vac
spec:
  hard:
    pods: \"1\"
  scopeSelector:
    matchExpressions:
    - scopeName: VolumeAttributesClass
      operator: Exists
",
    )
    .expect_err("pods are not claims");
    assert!(
        err.contains("unsupported scope applied to resource"),
        "{err}"
    );

    create(&c, &claim("a", Some("gold"))).expect("the first gold claim");
    let err = create(&c, &claim("b", Some("gold"))).expect_err("a second gold claim");
    assert!(
        err.contains(r#"persistentvolumeclaims "b" is forbidden: exceeded quota: gold, requested: persistentvolumeclaims=1, used: persistentvolumeclaims=1, limited: persistentvolumeclaims=1"#),
        "{err}"
    );
    create(&c, &claim("s", Some("silver"))).expect("silver is not gold");
    create(&c, &claim("plain", None)).expect("no class");
    assert_eq!(used(&c, "vac", "gold", "persistentvolumeclaims"), "1");
    assert_eq!(used(&c, "vac", "gold", "requests.storage"), "1Gi");

    // Moving into gold charges the whole claim: refused while gold is full.
    let err = patch(
        &c,
        "vac",
        "pvc/s",
        r#"{"spec":{"volumeAttributesClassName":"gold"}}"#,
    )
    .expect_err("gold is full");
    assert!(
        err.contains(r#"persistentvolumeclaims "s" is forbidden: exceeded quota: gold, requested: persistentvolumeclaims=1, used: persistentvolumeclaims=1, limited: persistentvolumeclaims=1"#),
        "{err}"
    );

    // The controller counts each quota's claims by their classes.
    wait_for("the controller's counts", 25, || {
        used(&c, "vac", "any-class", "persistentvolumeclaims") == "2"
            && used(&c, "vac", "classless", "persistentvolumeclaims") == "1"
    });
    c.kubectl(&["delete", "pvc", "a", "-n", "vac"]);
    wait_for("gold given back", 25, || {
        used(&c, "vac", "gold", "persistentvolumeclaims") == "0"
    });
    patch(
        &c,
        "vac",
        "pvc/s",
        r#"{"spec":{"volumeAttributesClassName":"gold"}}"#,
    )
    .expect("gold has room now");
    assert_eq!(used(&c, "vac", "gold", "persistentvolumeclaims"), "1");
    assert_eq!(used(&c, "vac", "gold", "requests.storage"), "1Gi");
}
