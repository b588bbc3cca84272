//! End to end: the stock kubectl against `corten server` (manifests, output formats, label,
//! annotate, scale, the three patch types, apply with removals, delete, watch, discovery,
//! explain, metrics, restart).

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::Cluster;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  DB_HOST: db.shop.svc.cluster.local
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: shop
stringData:
  password: hunter2
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web, team: blue}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 80
        - containerPort: 8080
        env:
        - name: MODE
          value: prod
        - name: DEBUG
          value: "0"
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: shop
spec:
  rules:
  - http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port:
              number: 80
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  namespace: shop
spec:
  serviceName: db
  replicas: 1
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
      - name: db
        image: postgres:15
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
"#;

#[test]
fn kubectl_drives_a_whole_manifest() {
    let mut c = Cluster::start();
    let out = c.apply(MANIFEST);
    for line in [
        "namespace/shop created",
        "configmap/settings created",
        "secret/creds created",
        "deployment.apps/web created",
        "service/web created",
        "ingress.networking.k8s.io/web created",
        "statefulset.apps/db created",
    ] {
        assert!(out.contains(line), "missing {line:?} in {out}");
    }

    // Defaults and allocations as upstream applies them.
    let d = c.get_json(&["-n", "shop", "get", "deployment", "web"]);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(d["metadata"]["generation"], 1);
    let svc = c.get_json(&["-n", "shop", "get", "svc", "web"]);
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.43."), "clusterIP {ip}");
    let secret = c.get_json(&["-n", "shop", "get", "secret", "creds"]);
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
    assert_eq!(secret["type"], "Opaque");

    // Output formats.
    let table = c.kubectl(&["-n", "shop", "get", "deploy"]);
    assert!(
        table.starts_with("NAME") && table.contains("READY") && table.contains("UP-TO-DATE"),
        "{table}"
    );
    let wide = c.kubectl(&["-n", "shop", "get", "svc", "-o", "wide"]);
    assert!(
        wide.contains("CLUSTER-IP") && wide.contains("SELECTOR") && wide.contains("80/TCP"),
        "{wide}"
    );
    let yaml = c.kubectl(&["-n", "shop", "get", "cm", "settings", "-o", "yaml"]);
    assert!(
        yaml.contains("DB_HOST: db.shop.svc.cluster.local"),
        "{yaml}"
    );
    let names = c.kubectl(&["-n", "shop", "get", "deploy,svc,sts", "-o", "name"]);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["deployment.apps/web", "service/web", "statefulset.apps/db"]
    );
    let jp = c.kubectl(&[
        "-n",
        "shop",
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(jp, "nginx:1.25");
    let cc = c.kubectl(&[
        "-n",
        "shop",
        "get",
        "deploy",
        "-o",
        "custom-columns=N:.metadata.name,R:.spec.replicas",
    ]);
    assert_eq!(
        cc.split_whitespace().collect::<Vec<_>>(),
        ["N", "R", "web", "2"]
    );
    let described = c.kubectl(&["-n", "shop", "describe", "deployment", "web"]);
    assert!(
        described.contains("Replicas:") && described.contains("nginx:1.25"),
        "{described}"
    );

    // label, annotate, scale.
    c.kubectl(&["-n", "shop", "label", "deploy", "web", "tier=frontend"]);
    c.kubectl(&["-n", "shop", "annotate", "deploy", "web", "owner=alice"]);
    c.kubectl(&["-n", "shop", "scale", "deploy", "web", "--replicas=3"]);
    let d = c.get_json(&["-n", "shop", "get", "deployment", "web"]);
    assert_eq!(d["metadata"]["labels"]["tier"], "frontend");
    assert_eq!(d["metadata"]["annotations"]["owner"], "alice");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["generation"], 2);

    // The three patch types.
    c.kubectl(&[
        "-n",
        "shop",
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    ]);
    c.kubectl(&[
        "-n",
        "shop",
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"patched":"merge"}}}"#,
    ]);
    c.kubectl(&["-n", "shop", "patch", "deploy", "web", "--type=strategic", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"EXTRA","value":"1"}]}]}}}}"#]);
    let d = c.get_json(&["-n", "shop", "get", "deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(d["metadata"]["labels"]["patched"], "merge");
    let env: Vec<&str> = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        ["EXTRA", "MODE", "DEBUG"],
        "strategic merge keeps the other env vars"
    );

    // Apply again with an env var, a container port and a label removed.
    let edited = MANIFEST
        .replace(
            "  labels: {app: web, team: blue}\n",
            "  labels: {app: web}\n",
        )
        .replace("        - containerPort: 8080\n", "")
        .replace("        - name: DEBUG\n          value: \"0\"\n", "");
    c.apply(&edited);
    let d = c.get_json(&["-n", "shop", "get", "deployment", "web"]);
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(!env.contains(&"DEBUG"), "DEBUG removed: {env:?}");
    assert!(env.contains(&"MODE"));
    let ports: Vec<i64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [80]);
    assert!(
        d["metadata"]["labels"].get("team").is_none(),
        "label removed: {}",
        d["metadata"]["labels"]
    );
    assert_eq!(
        d["spec"]["replicas"], 2,
        "apply restores the manifest's replicas"
    );

    // delete --wait.
    c.kubectl(&["-n", "shop", "delete", "ingress", "web", "--wait"]);
    let gone = c.try_kubectl(&["-n", "shop", "get", "ingress", "web"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));

    // Restart: every object is still there with the same resourceVersion.
    let before = c.get_json(&["get", "deploy,svc,cm,secret,sts,ns", "-A"]);
    c.restart();
    let after = c.get_json(&["get", "deploy,svc,cm,secret,sts,ns", "-A"]);
    let versions = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["metadata"]["name"].as_str().unwrap().to_string(),
                    i["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect()
    };
    assert_eq!(versions(&before), versions(&after));
    assert!(versions(&after).len() >= 10);
}

#[test]
fn get_watch_sees_added_modified_deleted() {
    let c = Cluster::start();
    let mut watch = c
        .kubectl_cmd(&[
            "get",
            "configmaps",
            "-n",
            "default",
            "-w",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // Table rows: EVENT NAME DATA AGE (the header is skipped).
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.first() == Some(&"EVENT") || cols.len() < 2 {
                continue;
            }
            if tx
                .send(format!("{} configmap/{}", cols[0], cols[1]))
                .is_err()
            {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    c.kubectl(&["create", "configmap", "w1", "--from-literal=a=1"]);
    c.kubectl(&["label", "configmap", "w1", "x=y"]);
    c.kubectl(&["delete", "configmap", "w1"]);
    let mut seen = vec![];
    while seen.len() < 3 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        seen,
        [
            "ADDED configmap/w1",
            "MODIFIED configmap/w1",
            "DELETED configmap/w1"
        ]
    );
}

#[test]
fn discovery_explain_and_metrics() {
    let c = Cluster::start();
    let resources = c.kubectl(&["api-resources"]);
    for needle in [
        "deployments",
        "deploy",
        "apps/v1",
        "statefulsets",
        "ingresses",
        "networking.k8s.io/v1",
        "leases",
        "horizontalpodautoscalers",
    ] {
        assert!(
            resources.contains(needle),
            "api-resources lacks {needle}: {resources}"
        );
    }
    let versions = c.kubectl(&["api-versions"]);
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "rbac.authorization.k8s.io/v1",
        "policy/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == gv),
            "api-versions lacks {gv}: {versions}"
        );
    }
    let explain = c.kubectl(&["explain", "deployment.spec.replicas"]);
    assert!(
        explain.contains("KIND:") && explain.contains("Deployment") && explain.contains("replicas"),
        "{explain}"
    );
    c.kubectl(&["get", "ns"]);
    let metrics = c.kubectl(&["get", "--raw", "/metrics"]);
    assert!(
        metrics.contains(
            "apiserver_request_total{verb=\"LIST\",resource=\"namespaces\",code=\"200\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("apiserver_request_duration_seconds_bucket"));
    assert!(
        metrics.contains(
            "corten_store_request_duration_seconds_count{operation=\"range\",result=\"ok\"}"
        ),
        "{metrics}"
    );
}

#[test]
fn credentials_are_required() {
    let c = Cluster::start();
    for open in ["/healthz", "/livez", "/readyz", "/version"] {
        assert_eq!(
            c.curl("GET", open, "application/json", None, false).code,
            200,
            "{open}"
        );
    }
    let denied = c.curl("GET", "/api/v1/namespaces", "application/json", None, false);
    assert_eq!(denied.code, 401);
    assert_eq!(denied.json()["reason"], "Unauthorized");
    let out = c.try_kubectl(&["--token=wrong", "get", "ns"]);
    assert!(!out.status.success());
    // TLS verification is on in the generated kubeconfig (no insecure-skip-tls-verify).
    let config = std::fs::read_to_string(c.kubeconfig()).unwrap();
    assert!(config.contains("certificate-authority-data") && !config.contains("insecure"));
}
