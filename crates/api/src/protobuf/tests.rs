//! Fixtures under testdata/: `configmap`, `secret`, `deployment`, `namespace`, `resourcequota`,
//! `poddisruptionbudget` and `tokenrequest` are request bodies captured from kubectl v1.33.1
//! (`kubectl create ...` against a recording HTTP listener); `deployment-full` and `eviction` were
//! encoded by `encode.py` with Google's protobuf runtime and the message descriptors registered in
//! kubectl's binary (`extract.py`), since no kubectl command sends them as protobuf.

use serde_json::json;

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/src/protobuf/testdata/{name}.pb",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn decoded(name: &str) -> Value {
    decode(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

#[test]
fn configmap_from_kubectl() {
    // kubectl create configmap cm1 --from-literal=greeting=hello --from-file=blob=<binary file>
    assert_eq!(
        decoded("configmap"),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": "cm1", "namespace": "default", "creationTimestamp": null },
            "data": { "greeting": "hello" },
            "binaryData": { "blob": "AAEC//5iaW5hcnk=" },
        })
    );
}

#[test]
fn secret_from_kubectl() {
    // kubectl create secret generic s1 --from-literal=username=admin --from-literal=password=p@ss
    assert_eq!(
        decoded("secret"),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": "s1", "namespace": "default", "creationTimestamp": null },
            "data": { "username": "YWRtaW4=", "password": "cEBzcw==" },
        })
    );
}

#[test]
fn deployment_from_kubectl() {
    // kubectl create deployment web --image=nginx:1.27 --port=8080 --replicas=3
    assert_eq!(
        decoded("deployment"),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "default", "creationTimestamp": null,
                "labels": { "app": "web" },
            },
            "spec": {
                "replicas": 3,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "creationTimestamp": null, "labels": { "app": "web" } },
                    "spec": {
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "ports": [{ "containerPort": 8080 }],
                            "resources": {},
                        }],
                    },
                },
                "strategy": {},
            },
            "status": {},
        })
    );
}

#[test]
fn deployment_with_env_resources_probe_and_strategy() {
    assert_eq!(
        decoded("deployment-full"),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "prod",
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "labels": { "app": "web" },
                "annotations": { "note": "x" },
            },
            "spec": {
                "replicas": 3,
                "revisionHistoryLimit": 10,
                "selector": { "matchLabels": { "app": "web" } },
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": 1 },
                },
                "template": {
                    "metadata": { "labels": { "app": "web" } },
                    "spec": {
                        "containers": [{
                            "name": "app",
                            "image": "nginx:1.27",
                            "command": ["nginx", "-g", "daemon off;"],
                            "env": [
                                { "name": "MODE", "value": "prod" },
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.name" } },
                                },
                            ],
                            "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }],
                            "resources": {
                                "limits": { "memory": "128Mi" },
                                "requests": { "cpu": "250m", "memory": "64Mi" },
                            },
                            // ProbeHandler is a Go embedded struct: its fields are inlined.
                            "readinessProbe": { "httpGet": { "path": "/healthz", "port": "http" }, "periodSeconds": 5 },
                        }],
                        "restartPolicy": "Always",
                        "terminationGracePeriodSeconds": 30,
                    },
                },
            },
        })
    );
}

#[test]
fn eviction_with_delete_options() {
    assert_eq!(
        decoded("eviction"),
        json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": { "name": "web-1", "namespace": "default" },
            "deleteOptions": {
                "gracePeriodSeconds": 30,
                "propagationPolicy": "Foreground",
                "dryRun": ["All"],
                "preconditions": { "uid": "6f1c4a52-0000-4000-8000-000000000001" },
            },
        })
    );
}

#[test]
fn namespace_from_kubectl() {
    assert_eq!(
        decoded("namespace"),
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": "team-a", "creationTimestamp": null },
            "spec": {},
            "status": {},
        })
    );
}

#[test]
fn resourcequota_quantities() {
    // kubectl create quota q1 --hard=cpu=2,memory=1Gi,pods=10
    assert_eq!(
        decoded("resourcequota"),
        json!({
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": { "name": "q1", "namespace": "default", "creationTimestamp": null },
            "spec": { "hard": { "cpu": "2", "memory": "1Gi", "pods": "10" } },
            "status": {},
        })
    );
}

#[test]
fn pdb_int_or_string_and_required_zeros() {
    // kubectl create poddisruptionbudget pdb1 --selector=app=web --min-available=50%
    // The status counters are required (no omitempty): Go's JSON keeps their zeros.
    assert_eq!(
        decoded("poddisruptionbudget"),
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": { "name": "pdb1", "namespace": "default", "creationTimestamp": null },
            "spec": { "minAvailable": "50%", "selector": { "matchLabels": { "app": "web" } } },
            "status": { "currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0 },
        })
    );
}

#[test]
fn token_request_from_kubectl() {
    // kubectl create token default --duration=1h --audience=x
    assert_eq!(
        decoded("tokenrequest"),
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": { "creationTimestamp": null },
            "spec": { "audiences": ["x"], "expirationSeconds": 3600 },
            "status": { "token": "", "expirationTimestamp": null },
        })
    );
}

// --- hand-made bodies for the special types --------------------------------------------------

fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn field(tag: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(tag) << 3 | 2, &mut out);
    varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

fn int_field(tag: u32, n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(tag) << 3, &mut out);
    varint(n, &mut out);
    out
}

fn body(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = [field(1, api_version.as_bytes()), field(2, kind.as_bytes())].concat();
    [MAGIC.to_vec(), field(1, &type_meta), field(2, raw)].concat()
}

#[test]
fn micro_time_duration_and_raw_extension() {
    // events.k8s.io/v1 Event: eventTime (2, MicroTime), series (3) {count 1, lastObservedTime 2}.
    let micro = [int_field(1, 1_767_323_045), int_field(2, 123_456_789)].concat();
    let series = [int_field(1, 2), field(2, &micro)].concat();
    let meta = field(1, b"ev");
    let raw = [field(1, &meta), field(2, &micro), field(3, &series)].concat();
    let v = decode(&body("events.k8s.io/v1", "Event", &raw)).unwrap();
    assert_eq!(v["eventTime"], json!("2026-01-02T03:04:05.123456Z"));
    assert_eq!(
        v["series"],
        json!({ "count": 2, "lastObservedTime": "2026-01-02T03:04:05.123456Z" })
    );

    // apps/v1 ControllerRevision: data (2, RawExtension {raw}) holds JSON; revision (3).
    let ext = field(1, br#"{"spec":{"replicas":2}}"#);
    let raw = [field(1, &field(1, b"rev")), field(2, &ext), int_field(3, 7)].concat();
    let v = decode(&body("apps/v1", "ControllerRevision", &raw)).unwrap();
    assert_eq!(v["data"], json!({ "spec": { "replicas": 2 } }));
    assert_eq!(v["revision"], json!(7));

    for (nanos, text) in [
        (0, "0s"),
        (1_500, "1.5µs"),
        (2_000_000, "2ms"),
        (90_000_000_000, "1m30s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-1_000_000_000, "-1s"),
    ] {
        assert_eq!(go_duration(nanos), text);
    }
}

#[test]
fn delete_options_in_any_group_version() {
    // meta/v1 kinds are registered in every group version: DeleteOptions {gracePeriodSeconds 1}.
    let v = decode(&body("v1", "DeleteOptions", &int_field(1, 5))).unwrap();
    assert_eq!(
        v,
        json!({ "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 5 })
    );
}

#[test]
fn bad_bodies_are_400() {
    let good = fixture("configmap");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", b"hello, this is not protobuf".to_vec()),
        ("json", br#"{"kind":"ConfigMap"}"#.to_vec()),
        ("wrong magic", [b"k9s\0".as_slice(), &good[4..]].concat()),
        ("magic only", MAGIC.to_vec()),
        ("unknown kind", body("v1", "NoSuchKind", &[])),
        ("bad kind name", body("v1", "Config.Map", &[])),
        ("raw garbage", body("v1", "ConfigMap", &[0xff, 0xff, 0xff])),
        (
            "bad utf8",
            body("v1", "ConfigMap", &field(1, &field(1, &[0xff, 0xfe]))),
        ),
        ("wrong wire type", body("v1", "ConfigMap", &int_field(1, 3))),
        (
            "bad embedded json",
            body(
                "apps/v1",
                "ControllerRevision",
                &field(2, &field(1, b"{nope")),
            ),
        ),
    ];
    for (what, bytes) in cases {
        let err = decode(&bytes).expect_err(what);
        assert_eq!(
            (err.code, err.reason),
            (400, "BadRequest"),
            "{what}: {err:?}"
        );
        assert!(
            err.message.starts_with("invalid protobuf body: "),
            "{what}: {}",
            err.message
        );
    }
    // Every truncation of a real body fails cleanly (or decodes a prefix), never panics.
    for n in 0..good.len() {
        if let Err(err) = decode(&good[..n]) {
            assert_eq!(err.code, 400);
        }
    }
    let full = fixture("deployment-full");
    assert!(decode(&full[..full.len() - 1]).is_err(), "truncated body");
}

#[test]
fn nesting_is_bounded() {
    // JSONSchemaProps nests through `not` (field 29 in apiextensions v1): 10,000 levels deep.
    let mut props = Vec::new();
    for _ in 0..10_000 {
        props = field(29, &props);
    }
    let spec = field(4, &field(4, &field(1, &props))); // spec.versions[].schema.openAPIV3Schema
    let raw = [field(1, &field(1, b"crd")), field(2, &spec)].concat();
    let err = decode(&body(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &raw,
    ))
    .unwrap_err();
    assert_eq!(err.code, 400, "{err:?}");

    // Nested `k8s\0` bodies inside a RawExtension are bounded too.
    let mut inner = body("v1", "Namespace", &[]);
    for _ in 0..200 {
        inner = body(
            "apps/v1",
            "ControllerRevision",
            &field(2, &field(1, &inner)),
        );
    }
    assert_eq!(decode(&inner).unwrap_err().code, 400);
}

#[test]
fn schema_covers_every_group_version() {
    for (api_version, kind) in [
        ("v1", "Pod"),
        ("apps/v1", "StatefulSet"),
        ("batch/v1", "CronJob"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("networking.k8s.io/v1", "Ingress"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("apiregistration.k8s.io/v1", "APIService"),
        ("internal.apiserver.k8s.io/v1alpha1", "StorageVersion"),
        ("flowcontrol.apiserver.k8s.io/v1", "FlowSchema"),
        ("resource.k8s.io/v1beta2", "ResourceClaim"),
        ("storage.k8s.io/v1", "CSIDriver"),
        ("autoscaling/v1", "Scale"),
    ] {
        assert!(
            object_message(api_version, kind).is_some(),
            "{api_version} {kind}"
        );
    }
}
