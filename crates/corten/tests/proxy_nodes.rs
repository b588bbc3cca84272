//! Pod networking across two nodes: the server's node and a second node (`corten agent` in a
//! network namespace, a host of its own on a shared /30). Each agent routes the other node's
//! pod CIDR through the other node's address (host-gw); each node runs its own service proxy
//! and cluster DNS. Pods reach each other by pod IP and by service name in both directions,
//! under their own addresses (no masquerading inside the cluster CIDR); traffic leaving the
//! cluster is masqueraded to the node's address; a NetworkPolicy on the second node admits the
//! server node's pod by its address and refuses what it does not select.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

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
    command: ["sh", "-c", "mkdir -p /www/cgi-bin && echo 'hello from second' > /www/index.html && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && exec httpd -f -p 8080 -h /www"]
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

    // The second node's pod sees the server node's pod under its own address.
    // (busybox httpd writes an IPv4 peer as `[::ffff:A.B.C.D]`.)
    wait_for("source address kept across nodes", 30, || {
        let seen = fetch(
            &c,
            "on-server",
            &format!("http://{second_ip}:8080/cgi-bin/ip"),
        );
        let seen = seen
            .trim()
            .trim_start_matches("[::ffff:")
            .trim_end_matches(']');
        seen == server_ip
    });
    // Leaving the cluster CIDR (here: to the server host's address), a pod is masqueraded
    // to its node's address. A listener on this host answers with the peer it saw.
    let listener = TcpListener::bind((host.host_ip.as_str(), 0)).expect("listener");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let peer = conn
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = write!(conn, "HTTP/1.0 200 OK\r\n\r\n{peer}\n");
        }
    });
    wait_for("second pod → host, masqueraded", 30, || {
        fetch(&c, "on-second", &format!("http://{}:{port}/", host.host_ip)).trim() == host.ns_ip
    });

    // A NetworkPolicy on the second node's pod admits the server's pod by its address ...
    let policy = |from_app: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: only-from}}
spec:
  podSelector: {{matchLabels: {{app: on-second}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: {from_app}}}}}}}]
    ports: [{{port: 8080}}]
"
        )
    };
    let from_server_host = || {
        std::process::Command::new("timeout")
            .args([
                "3",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{second_ip}/8080"),
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    assert!(
        from_server_host(),
        "no policy yet: the server host connects"
    );
    c.apply(&policy("on-server"));
    wait_for("other node's host refused", 30, || !from_server_host());
    assert_eq!(
        fetch(&c, "on-server", &format!("http://{second_ip}:8080/")),
        "hello from second\n"
    );
    // ... and refuses it once the policy selects another app.
    c.apply(&policy("nobody"));
    wait_for("server pod refused", 30, || {
        fetch(&c, "on-server", &format!("http://{second_ip}:8080/")).is_empty()
    });
    c.kubectl(&["delete", "networkpolicy", "only-from"]);
    wait_for("reopened", 30, || {
        fetch(&c, "on-server", &format!("http://{second_ip}:8080/")) == "hello from second\n"
    });
    drop(agent);
}
