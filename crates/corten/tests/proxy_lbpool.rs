//! LoadBalancer addresses from a pool (`corten server --lb-pool`): the built-in service load
//! balancer gives each LoadBalancer Service one address of the pool, the node binds it on
//! `corten-lb0` and announces it with gratuitous ARP, and the service proxy answers on it; a
//! deleted Service's address is unbound and handed out again.

mod common;

use std::process::Command;

use common::Cluster;
use common::pods::{BUSYBOX, wait_for};

const POOL: &str = "10.249.7.0/29";

fn manifest(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {BUSYBOX}
    command: [sh, -c, 'mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 8080 -h /www']
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  type: LoadBalancer
  selector: {{app: {name}}}
  ports: [{{port: 8081, targetPort: 8080}}]
"
    )
}

fn bound() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "corten-lb0"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn get(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "3", url])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn load_balancers_get_pool_addresses_bound_and_served() {
    let c = Cluster::start_with_agent(&["--lb-pool", POOL]);
    c.apply(&(manifest("lb-one") + "---\n" + &manifest("lb-two")));
    let ingress = |svc: &str| {
        c.kubectl(&[
            "get",
            "svc",
            svc,
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ])
    };
    wait_for("both services have an address", 30, || {
        !ingress("lb-one").is_empty() && !ingress("lb-two").is_empty()
    });
    let (one, two) = (ingress("lb-one"), ingress("lb-two"));
    let mut got = [one.clone(), two.clone()];
    got.sort();
    assert_eq!(
        got,
        ["10.249.7.1", "10.249.7.2"],
        "lowest free pool addresses"
    );
    // kubectl shows it as the EXTERNAL-IP.
    let table = c.kubectl(&["get", "svc", "lb-one"]);
    assert!(table.contains(&one), "{table}");
    for pod in ["lb-one", "lb-two"] {
        let out = c.try_kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=120s",
        ]);
        assert!(out.status.success(), "{pod} not Ready: {}", c.log());
    }
    // Bound on this (the only) node, and served by the proxy.
    wait_for("addresses bound", 15, || {
        let b = bound();
        b.contains(&format!("{one}/32")) && b.contains(&format!("{two}/32"))
    });
    // Each newly bound address is announced with gratuitous ARP (here on the default route's
    // interface: the pool is on no subnet of this machine).
    // (No pool address is a prefix of another: the log's fields may carry colour codes.)
    wait_for("gratuitous ARP for both addresses", 10, || {
        let log = c.log();
        [&one, &two].iter().all(|a| {
            log.lines()
                .any(|l| l.contains("gratuitous ARP sent") && l.contains(a.as_str()))
        })
    });
    wait_for("lb-one answers on its pool address", 15, || {
        get(&format!("http://{one}:8081/")) == "lb-one"
    });
    assert_eq!(get(&format!("http://{two}:8081/")), "lb-two");

    // Deleted: unbound, and the address goes to the next Service.
    c.kubectl(&["delete", "svc", "lb-one"]);
    wait_for("address unbound", 15, || {
        !bound().contains(&format!("{one}/32"))
    });
    c.apply(&manifest("lb-three"));
    wait_for("the freed address is reused", 30, || {
        ingress("lb-three") == one
    });

    let mut c = c;
    assert!(c.stop(), "clean stop");
    assert!(bound().is_empty(), "corten-lb0 removed on shutdown");
}
