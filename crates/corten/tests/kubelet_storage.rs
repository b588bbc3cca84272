//! StatefulSets with persistent volumes on a real node: stable names, one claim per ordinal
//! provisioned by the built-in local-path provisioner (the default StorageClass), data that
//! survives the pod, ordered scale-down, rolling updates from the highest ordinal, and volume
//! directories removed once their claims are deleted.

mod common;

use common::Cluster;
use common::pods::{BUSYBOX, wait_for};

fn get(c: &Cluster, args: &[&str]) -> String {
    String::from_utf8_lossy(&c.try_kubectl(args).stdout).into_owned()
}

fn statefulset(version: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{port: 80}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 2
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: {BUSYBOX}
        env: [{{name: VERSION, value: "{version}"}}]
        command: [sh, -c, "[ -f /data/id ] || hostname > /data/id; sleep 3600"]
        readinessProbe: {{exec: {{command: [cat, /data/id]}}, periodSeconds: 1}}
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 64Mi}}}}
"#
    )
}

#[test]
fn statefulset_pods_keep_their_names_and_volumes() {
    let c = Cluster::start_with_agent(&[]);
    let sc = c.kubectl(&["get", "storageclass"]);
    assert!(
        sc.contains("local-path (default)") && sc.contains("WaitForFirstConsumer"),
        "{sc}"
    );
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &statefulset("v1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("db 2/2 ready", 120, || {
        get(
            &c,
            &[
                "get",
                "statefulset",
                "db",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ],
        ) == "2"
    });
    let pods = get(
        &c,
        &[
            "get",
            "pods",
            "-l",
            "app=db",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    assert_eq!(pods, "db-0 db-1");
    let claims = c.kubectl(&["get", "pvc"]);
    assert!(
        claims.contains("data-db-0") && claims.contains("data-db-1"),
        "{claims}"
    );
    assert_eq!(claims.matches("Bound").count(), 2, "{claims}");
    assert!(claims.contains("local-path"), "{claims}");
    assert_eq!(
        get(
            &c,
            &[
                "get",
                "pod",
                "db-1",
                "-o",
                "jsonpath={.spec.hostname}.{.spec.subdomain}"
            ]
        ),
        "db-1.db"
    );
    let storage = c.data_dir().join("agent/storage");
    let id_of = |claim: &str| -> String {
        let dir = std::fs::read_dir(&storage)
            .unwrap()
            .flatten()
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with(&format!("_default_{claim}"))
            })
            .expect("the claim's directory")
            .path();
        std::fs::read_to_string(dir.join("id")).unwrap_or_default()
    };
    assert_eq!(id_of("data-db-0").trim(), "db-0");
    assert_eq!(id_of("data-db-1").trim(), "db-1");

    // A deleted pod comes back with the same name and the same data.
    let uid = get(
        &c,
        &["get", "pod", "db-0", "-o", "jsonpath={.metadata.uid}"],
    );
    c.kubectl(&["delete", "pod", "db-0", "--wait=true"]);
    wait_for("db-0 back and ready", 120, || {
        let new_uid = get(
            &c,
            &["get", "pod", "db-0", "-o", "jsonpath={.metadata.uid}"],
        );
        !new_uid.is_empty()
            && new_uid != uid
            && get(
                &c,
                &[
                    "get",
                    "pod",
                    "db-0",
                    "-o",
                    "jsonpath={.status.containerStatuses[0].ready}",
                ],
            ) == "true"
    });
    assert_eq!(id_of("data-db-0").trim(), "db-0");

    // A rolling update replaces the pods from the highest ordinal.
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &statefulset("v2"));
    assert!(out.status.success());
    wait_for("both pods on v2", 180, || {
        let st = get(
            &c,
            &[
                "get",
                "statefulset",
                "db",
                "-o",
                "jsonpath={.status.updatedReplicas}/{.status.readyReplicas}",
            ],
        );
        st == "2/2"
    });
    let revisions = c.kubectl(&["get", "controllerrevisions", "-o", "name"]);
    assert_eq!(revisions.lines().count(), 2, "{revisions}");

    // Scale down removes the highest ordinal and keeps its claim.
    c.kubectl(&["scale", "statefulset", "db", "--replicas=1"]);
    wait_for("db-1 gone", 60, || {
        get(&c, &["get", "pods", "-l", "app=db", "-o", "name"]).trim() == "pod/db-0"
    });
    assert!(c.kubectl(&["get", "pvc"]).contains("data-db-1"));

    // Deleting the claim deletes its volume (reclaim policy Delete) and the directory.
    c.kubectl(&["delete", "pvc", "data-db-1", "--wait=true"]);
    wait_for("the volume directory removed", 60, || {
        !std::fs::read_dir(&storage).unwrap().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with("_default_data-db-1")
        })
    });
    let volumes = c.kubectl(&["get", "pv"]);
    assert_eq!(
        volumes.lines().filter(|l| l.contains("pvc-")).count(),
        1,
        "{volumes}"
    );
}
