//! Cluster DNS from inside real pods: `corten server` with its node agent serves 10.43.0.10:53
//! on a dummy interface; a busybox pod (dnsPolicy ClusterFirst: nameserver 10.43.0.10, the
//! search domains, ndots:5) runs `nslookup` in a loop and the test reads what it printed from
//! the CRI log files. Names outside the cluster go to a tiny upstream on loopback.

mod common;
mod dnsutil;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Cluster;
use common::pods::{BUSYBOX, NGINX, output, wait_for};
use dnsutil::{Upstream, answers, query};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

fn jsonpath(c: &Cluster, kind: &str, name: &str, path: &str) -> String {
    let out = c.try_kubectl(&["get", kind, name, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ready(c: &Cluster, pod: &str) -> bool {
    jsonpath(
        c,
        "pod",
        pod,
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    ) == "True"
}

fn interface_address() -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "addr", "show", "dev", "corten-dns0"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pods_resolve_services_headless_hosts_srv_external_names_and_outside_names() {
    let upstream = Upstream::start(&[
        ("outside.example.", "192.0.2.44".parse().unwrap()),
        ("ext-target.example.", "192.0.2.45".parse().unwrap()),
    ]);
    let mut c = Cluster::start_with_agent(&["--dns-upstream", &upstream.addr.to_string()]);
    let dns: SocketAddr = "10.43.0.10:53".parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !interface_address().contains("10.43.0.10/32") {
        assert!(
            Instant::now() < deadline,
            "no corten-dns0 with 10.43.0.10: {}\n{}",
            interface_address(),
            c.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let svc = c.kubectl(&["get", "svc", "-n", "kube-system"]);
    assert!(
        svc.contains("kube-dns") && svc.contains("10.43.0.10"),
        "{svc}"
    );

    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  containers:
  - name: nginx
    image: {NGINX}
    ports: [{{name: http, containerPort: 80}}]
    readinessProbe: {{httpGet: {{path: /, port: 80}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: db-0, labels: {{app: db}}}}
spec:
  hostname: db-0
  subdomain: db
  containers:
  - {{name: main, image: {BUSYBOX}, command: [sleep, "3600"]}}
---
apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: tcp, port: 5432}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ext}}
spec:
  type: ExternalName
  externalName: ext-target.example
"#
    ));
    wait_for("web and db-0 Ready", 60, || {
        ready(&c, "web") && ready(&c, "db-0")
    });
    let web_ip = jsonpath(&c, "svc", "web", "{.spec.clusterIP}");
    let db_ip = jsonpath(&c, "pod", "db-0", "{.status.podIP}");

    // The host reaches the node-local address too.
    dnsutil::wait_answer(
        dns,
        "db-0.db.default.svc.cluster.local.",
        Duration::from_secs(10),
        |m| answers(m) == [db_ip.as_str()],
    );
    let web = query(dns, "web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(answers(&web), [web_ip.as_str()]);

    // A client pod asks, over and over, through its resolv.conf.
    let script = format!(
        "cat /etc/resolv.conf | sed 's/^/R /'; while true; do \
         for q in web web.default.svc.cluster.local db.default.svc.cluster.local \
         db-0.db.default.svc.cluster.local outside.example ext.default.svc.cluster.local \
         {web_ip} {db_ip}; do nslookup $q 2>&1 | sed \"s/^/A $q /\"; done; \
         nslookup -type=SRV _http._tcp.web.default.svc.cluster.local 2>&1 | sed 's/^/A srv /'; \
         nslookup -type=SRV _tcp._tcp.db.default.svc.cluster.local 2>&1 | sed 's/^/A dbsrv /'; \
         echo ROUND; sleep 1; done"
    );
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  containers:
  - name: main
    image: {BUSYBOX}
    command: [sh, -c, {script:?}]
"#
    ));
    wait_for("two rounds of lookups", 60, || {
        output(&c, "client", "main").matches("ROUND").count() >= 2
    });
    let out = output(&c, "client", "main");
    let has = |prefix: &str, needle: &str| {
        out.lines()
            .any(|l| l.starts_with(&format!("A {prefix} ")) && l.contains(needle))
    };
    let check = |prefix: &str, needle: &str| {
        assert!(
            has(prefix, needle),
            "no `{needle}` for {prefix}:\n{out}\nserver log:\n{}",
            c.log()
        );
    };
    assert!(out.contains("R nameserver 10.43.0.10"), "{out}");
    assert!(out.contains("R search default.svc.cluster.local"), "{out}");
    check("web.default.svc.cluster.local", &web_ip);
    check("web", &web_ip);
    check("db.default.svc.cluster.local", &db_ip);
    check("db-0.db.default.svc.cluster.local", &db_ip);
    check("outside.example", "192.0.2.44");
    check("ext.default.svc.cluster.local", "ext-target.example");
    check("ext.default.svc.cluster.local", "192.0.2.45");
    check(&web_ip, "web.default.svc.cluster.local");
    check(&db_ip, "db-0.db.default.svc.cluster.local");
    check("srv", "0 100 80 web.default.svc.cluster.local");
    check("dbsrv", "0 100 5432 db-0.db.default.svc.cluster.local");

    // A new service resolves within a second through 10.43.0.10; deleted, it is gone.
    c.kubectl(&["create", "service", "clusterip", "late", "--tcp=80:80"]);
    let took = dnsutil::wait_answer(
        dns,
        "late.default.svc.cluster.local.",
        Duration::from_secs(1),
        |m| !m.answers.is_empty(),
    );
    eprintln!("new service resolved {took:?} after kubectl returned");
    c.kubectl(&["delete", "service", "late"]);
    dnsutil::wait_answer(
        dns,
        "late.default.svc.cluster.local.",
        Duration::from_secs(1),
        |m| m.metadata.response_code == ResponseCode::NXDomain,
    );

    // A clean stop removes the dummy interface.
    assert!(c.stop(), "server did not stop cleanly: {}", c.log());
    assert_eq!(interface_address(), "", "corten-dns0 left behind");
}
