//! NetworkPolicy end to end: `corten server` with its node agent on a real containerd, busybox
//! pods in two namespaces, policies from kubectl, and connections from pods (wget through
//! `kubectl exec`) and from the node itself (sockets), filtered by the nftables table the
//! node's policy controller writes. Pod-to-pod traffic here crosses the corten0 bridge.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Cluster;
use common::pods::{BUSYBOX, wait_for};

/// A busybox pod serving its name on 8080 (named `http`) and on 9090; `labels` in YAML.
fn web(ns: &str, name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {labels}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {BUSYBOX}
    command: [sh, -c, 'mkdir -p /www && echo {name} > /www/index.html && httpd -p 9090 -h /www && exec httpd -f -p 8080 -h /www']
    ports: [{{name: http, containerPort: 8080}}]
---
"
    )
}

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: np-a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: np-b, labels: {team: b}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: np-a}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
"#;

const DENY_ALL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: np-a}
spec:
  podSelector: {}
"#;

const ALLOW_LABELLED: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-labelled, namespace: np-a}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {access: "true"}}}]
    ports: [{port: http}]
"#;

const ALLOW_TEAM_B: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-team-b, namespace: np-a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: b}}}]
    ports: [{protocol: TCP, port: 8000, endPort: 8100}]
"#;

/// Whether `pod` (namespace `ns`) gets `expect` from `url` (wget, 3 s).
fn reaches(c: &Cluster, ns: &str, pod: &str, url: &str, expect: &str) -> bool {
    let out = c.try_kubectl(&[
        "exec", "-n", ns, pod, "--", "timeout", "3", "wget", "-qO-", url,
    ]);
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == expect
}

/// An HTTP GET from this process (the node itself) to `ip:port`; the body's first line.
fn from_node(ip: &str, port: u16) -> Option<String> {
    let addr = format!("{ip}:{port}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split("\r\n\r\n").nth(1).map(|b| b.trim().to_string())
}

#[test]
fn policies_isolate_allow_and_reopen() {
    let c = Cluster::start_with_agent(&[]);
    let mut manifest = SETUP.to_string();
    manifest += &web("np-a", "web", "{app: web}");
    manifest += &web("np-a", "allowed", "{access: \"true\"}");
    manifest += &web("np-a", "denied", "{}");
    manifest += &web("np-b", "client-b", "{}");
    manifest += &web("np-b", "web-b", "{app: web}");
    c.apply(&manifest);
    for (ns, pod) in [
        ("np-a", "web"),
        ("np-a", "allowed"),
        ("np-a", "denied"),
        ("np-b", "client-b"),
        ("np-b", "web-b"),
    ] {
        let out = c.try_kubectl(&[
            "wait",
            "-n",
            ns,
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=120s",
        ]);
        assert!(out.status.success(), "{ns}/{pod} not Ready: {}", c.log());
    }
    let ip = |ns: &str, pod: &str| {
        c.kubectl(&[
            "get",
            "pod",
            "-n",
            ns,
            pod,
            "-o",
            "jsonpath={.status.podIP}",
        ])
    };
    let (web_ip, web_b_ip) = (ip("np-a", "web"), ip("np-b", "web-b"));
    let web_url = format!("http://{web_ip}:8080/");
    let web_9090 = format!("http://{web_ip}:9090/");
    let web_b_url = format!("http://{web_b_ip}:8080/");
    let svc_url = "http://web.np-a.svc.cluster.local/";

    // No policy: everyone reaches web.
    wait_for("denied → web before any policy", 30, || {
        reaches(&c, "np-a", "denied", &web_url, "web")
    });
    assert!(reaches(&c, "np-a", "denied", svc_url, "web"));

    // Deny all ingress in np-a.
    c.apply(DENY_ALL);
    wait_for("deny-all enforced", 15, || {
        !reaches(&c, "np-a", "denied", &web_url, "web")
    });
    assert!(!reaches(&c, "np-a", "allowed", &web_url, "web"));
    assert!(!reaches(&c, "np-b", "client-b", &web_url, "web"));
    assert!(
        !reaches(&c, "np-a", "denied", svc_url, "web"),
        "through the service too"
    );
    // The node itself still reaches its pods (probes); np-b is unaffected, also from np-a.
    assert_eq!(from_node(&web_ip, 8080).as_deref(), Some("web"));
    assert!(reaches(&c, "np-a", "denied", &web_b_url, "web-b"));
    assert!(reaches(&c, "np-b", "client-b", &web_b_url, "web-b"));
    let table = std::process::Command::new("nft")
        .args(["list", "table", "inet", "corten-netpol"])
        .output()
        .expect("nft");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(&format!("ingress-{web_ip}")), "{table}");

    // Allow the labelled pod, on the named port only.
    c.apply(ALLOW_LABELLED);
    wait_for("labelled pod allowed", 15, || {
        reaches(&c, "np-a", "allowed", &web_url, "web")
    });
    assert!(
        reaches(&c, "np-a", "allowed", svc_url, "web"),
        "through the service too"
    );
    assert!(!reaches(&c, "np-a", "denied", &web_url, "web"));
    assert!(
        !reaches(&c, "np-a", "allowed", &web_9090, "web"),
        "port 9090 not allowed"
    );

    // A namespaceSelector with a port range: np-b may use 8000-8100 (so 8080), not 9090.
    c.apply(ALLOW_TEAM_B);
    wait_for("namespace team=b allowed", 15, || {
        reaches(&c, "np-b", "client-b", &web_url, "web")
    });
    assert!(!reaches(&c, "np-b", "client-b", &web_9090, "web"));
    assert!(!reaches(&c, "np-a", "denied", &web_url, "web"));

    // Removing the policies reopens.
    c.kubectl(&[
        "delete",
        "networkpolicy",
        "-n",
        "np-a",
        "deny-all",
        "allow-labelled",
        "allow-team-b",
    ]);
    wait_for("reopened", 15, || {
        reaches(&c, "np-a", "denied", &web_url, "web")
    });
    assert!(reaches(&c, "np-a", "denied", &web_9090, "web"));

    // Egress: the labelled pod may reach the pod network except web's address.
    c.apply(&format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: egress-block, namespace: np-a}}
spec:
  podSelector: {{matchLabels: {{access: \"true\"}}}}
  policyTypes: [Egress]
  egress:
  - to: [{{ipBlock: {{cidr: 10.42.0.0/16, except: [{web_ip}/32]}}}}]
"
    ));
    wait_for("egress except enforced", 15, || {
        !reaches(&c, "np-a", "allowed", &web_url, "web")
    });
    assert!(reaches(&c, "np-a", "allowed", &web_b_url, "web-b"));
    assert!(
        reaches(&c, "np-a", "denied", &web_url, "web"),
        "other pods keep egress"
    );
    // Traffic to its own node stays allowed: the node-local cluster DNS answers.
    let lookup = c.try_kubectl(&[
        "exec",
        "-n",
        "np-a",
        "allowed",
        "--",
        "nslookup",
        "web.np-a.svc.cluster.local",
    ]);
    assert!(
        lookup.status.success(),
        "DNS under an egress policy: {lookup:?}"
    );
    // Egress isolation does not stop the node from reaching the pod, nor the replies.
    let allowed_ip = ip("np-a", "allowed");
    assert_eq!(from_node(&allowed_ip, 8080).as_deref(), Some("allowed"));

    // A clean shutdown removes the table.
    let mut c = c;
    assert!(c.stop());
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains("corten-netpol"),
        "table left after shutdown"
    );
}
