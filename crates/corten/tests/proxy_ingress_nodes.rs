//! The ingress controller on every node: `corten agent` runs it as `corten server` does, so an
//! Ingress answers on each node's address (k3s's behaviour). Each controller marks its Node
//! `ingress.corten.io/serving=true`, and every controller writes the same status: the
//! InternalIPs of the Ready marked nodes, sorted, only when it differs (so two controllers
//! converge instead of taking turns). An agent restarted with `--disable-ingress` drops its
//! mark, and with it its address from the status.
//!
//! The second node is `corten agent` in a network namespace (a host of its own on a /30), as
//! in `proxy_nodes.rs`.

mod common;

use std::process::Command;

use common::Cluster;
use common::hosts::{Agent, Host};
use common::pods::{BUSYBOX, wait_for};

const APP: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: second
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: BUSYBOX
    command: [sh, -c, 'mkdir -p /www && echo hello from second > /www/index.html && exec httpd -f -p 8080 -h /www']
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;

const LABEL: &str = "ingress.corten.io/serving";

/// `curl` of `url`: (exit code, body).
fn curl(url: &str) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "3", url])
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

#[test]
fn ingress_answers_on_every_node_and_status_lists_them() {
    let host = Host::create();
    let c = Cluster::start_with_agent(&["--bind-address", "0.0.0.0", "--node-ip", &host.host_ip]);
    let port = c.ingress_http_port.to_string();
    let dirs = tempfile::tempdir().expect("tempdir");
    let token_file = dirs.path().join("token");
    std::fs::write(&token_file, c.join_token()).expect("token file");
    let agent_args = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "--server",
            &format!("https://{}:{}", host.host_ip, c.port),
            "--token-file",
            &token_file.display().to_string(),
            "--node-name",
            "second",
            "--node-ip",
            &host.ns_ip,
            // The same port as the server's: the namespace has ports of its own.
            "--ingress-http-port",
            &port,
            "--ingress-https-port",
            "0",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let agent_dir = dirs.path().join("second");
    let agent = Agent::start(&host, &agent_dir, &agent_args(&[]));
    wait_for("node second Ready", 90, || {
        c.kubectl(&["get", "nodes", "--no-headers"])
            .lines()
            .filter(|l| l.contains(" Ready "))
            .count()
            == 2
    });
    // Both nodes carry the mark, each set by its own controller.
    let marked = || {
        let mut v: Vec<String> = c
            .kubectl(&["get", "nodes", "-l", &format!("{LABEL}=true"), "-o", "name"])
            .lines()
            .map(String::from)
            .collect();
        v.sort();
        v
    };
    wait_for("both nodes marked as serving ingress", 30, || {
        marked().len() == 2
    });

    c.apply(&APP.replace("BUSYBOX", BUSYBOX));
    let out = c.try_kubectl(&["wait", "--for=condition=Ready", "pod/web", "--timeout=120s"]);
    assert!(
        out.status.success(),
        "web not Ready; agent log: {}",
        agent.log()
    );

    // The Ingress answers on the second node's address (its own controller, to its own pod)
    // and on the server node's (across nodes to the pod).
    for ip in [&host.ns_ip, &host.host_ip] {
        wait_for(&format!("the ingress answers on {ip}"), 30, || {
            curl(&format!("http://{ip}:{port}/")) == (0, "hello from second".to_string())
        });
    }

    // The status lists both nodes, sorted (the server's address is the lower of the /30).
    let status = || {
        c.kubectl(&[
            "get",
            "ingress",
            "web",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ])
    };
    let both = format!("{} {}", host.host_ip, host.ns_ip);
    wait_for("the status lists both nodes", 30, || status() == both);
    // Two controllers write it, and agree: it is not rewritten across node heartbeats (10 s).
    let version = || {
        c.kubectl(&[
            "get",
            "ingress",
            "web",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
    };
    let before = version();
    std::thread::sleep(std::time::Duration::from_secs(12));
    assert_eq!(version(), before, "the status was rewritten: {}", status());
    assert_eq!(status(), both);

    // The second node restarted with ingress disabled: its mark goes, and so does its address
    // from the status; nothing answers there any more.
    drop(agent);
    let agent = Agent::start(&host, &agent_dir, &agent_args(&["--disable-ingress"]));
    wait_for("the second node's mark removed", 60, || {
        marked().len() == 1 && !marked()[0].ends_with("/second")
    });
    wait_for("the status lists the server node only", 30, || {
        status() == host.host_ip
    });
    let (code, _) = curl(&format!("http://{}:{port}/", host.ns_ip));
    assert_eq!(code, 7, "connection refused on the second node");
    drop(agent);
}
