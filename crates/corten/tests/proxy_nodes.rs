//! Pod networking across two nodes: the server's node and a second node (`corten agent` in a
//! network namespace, a host of its own on a shared /30). Each agent routes the other node's
//! pod CIDR through the other node's address (host-gw); each node runs its own service proxy
//! and cluster DNS. Pods reach each other by pod IP and by service name in both directions.

mod common;

use common::Cluster;
use common::hosts::{Agent, Host};
use common::pods::{BUSYBOX, NGINX, wait_for};

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: on-server, labels: {app: on-server}}
spec:
  nodeName: SERVER_NODE
  containers:
  - {name: nginx, image: NGINX}
---
apiVersion: v1
kind: Pod
metadata: {name: on-second, labels: {app: on-second}}
spec:
  nodeName: second
  containers:
  - name: httpd
    image: BUSYBOX
    command: ["sh", "-c", "mkdir -p /www && echo 'hello from second' > /www/index.html && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Service
metadata: {name: on-server}
spec:
  selector: {app: on-server}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: on-second}
spec:
  selector: {app: on-second}
  ports: [{port: 80, targetPort: 8080}]
"#;

/// `wget -qO-` of `url` from inside `pod`: its output, or "" on failure.
fn fetch(c: &Cluster, pod: &str, url: &str) -> String {
    let out = c.try_kubectl(&["exec", pod, "--", "timeout", "5", "wget", "-qO-", url]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pods_reach_pods_and_services_on_the_other_node() {
    // The host side exists before the server starts, so that its certificate names it; the
    // server's node address is on the shared link, so that the second node can route to it.
    let host = Host::create();
    let c = Cluster::start_with_agent(&["--bind-address", "0.0.0.0", "--node-ip", &host.host_ip]);
    let dirs = tempfile::tempdir().expect("tempdir");
    let token_file = dirs.path().join("token");
    std::fs::write(&token_file, c.join_token()).expect("token file");
    let agent = Agent::start(
        &host,
        &dirs.path().join("second"),
        &[
            "--server".into(),
            format!("https://{}:{}", host.host_ip, c.port),
            "--token-file".into(),
            token_file.display().to_string(),
            "--node-name".into(),
            "second".into(),
            "--node-ip".into(),
            host.ns_ip.clone(),
        ],
    );
    wait_for("node second Ready", 90, || {
        c.kubectl(&["get", "nodes", "--no-headers"])
            .lines()
            .filter(|l| l.contains(" Ready "))
            .count()
            == 2
    });
    let server_node = c
        .kubectl(&["get", "nodes", "-o", "name"])
        .lines()
        .map(|l| l.trim_start_matches("node/").to_string())
        .find(|n| n != "second")
        .expect("the server's node");
    c.apply(
        &PODS
            .replace("SERVER_NODE", &server_node)
            .replace("BUSYBOX", BUSYBOX)
            .replace("NGINX", NGINX),
    );
    for pod in ["on-server", "on-second"] {
        let out = c.try_kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=120s",
        ]);
        assert!(
            out.status.success(),
            "{pod} not Ready; agent log: {}",
            agent.log()
        );
    }
    let ip_of = |pod: &str| c.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"]);
    let (server_ip, second_ip) = (ip_of("on-server"), ip_of("on-second"));
    assert_ne!(
        server_ip.rsplit_once('.').unwrap().0,
        second_ip.rsplit_once('.').unwrap().0,
        "one /24 per node"
    );

    // Each node routes the other's pod CIDR through it.
    let cidr_of = |node: &str| c.kubectl(&["get", "node", node, "-o", "jsonpath={.spec.podCIDR}"]);
    let here = std::process::Command::new("ip")
        .args(["route", "show", &cidr_of("second")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&here.stdout).contains(&format!("via {}", host.ns_ip)));
    let there = host
        .command("ip")
        .args(["route", "show", &cidr_of(&server_node)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&there.stdout).contains(&format!("via {}", host.host_ip)));

    // Pod to pod, both ways.
    wait_for("server pod → second pod", 30, || {
        fetch(&c, "on-server", &format!("http://{second_ip}:8080/")) == "hello from second\n"
    });
    wait_for("second pod → server pod", 30, || {
        fetch(&c, "on-second", &format!("http://{server_ip}/")).contains("Welcome to nginx")
    });
    // Pod to service on the other node, by name (each node's DNS and proxy).
    wait_for("server pod → service on second", 30, || {
        fetch(&c, "on-server", "http://on-second/") == "hello from second\n"
    });
    wait_for("second pod → service on server", 30, || {
        fetch(
            &c,
            "on-second",
            "http://on-server.default.svc.cluster.local/",
        )
        .contains("Welcome to nginx")
    });
    drop(agent);
}
