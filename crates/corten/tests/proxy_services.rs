//! The service proxy end to end: `corten server` with its node agent on a real containerd,
//! busybox pods that serve their own name over HTTP, Services from kubectl, and traffic from
//! the host (curl, sockets) and from pods through the nftables rules the proxy writes.
//! Only addresses on this machine are used (ClusterIPs are DNATed to local pods before
//! anything leaves; the node address is this machine's).

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Cluster;
use common::pods::{BUSYBOX, output, wait_for};

const TABLE: &str = "corten-proxy";

/// A pod serving its own name on port 8080 (busybox httpd), Ready while
/// `READY_DIR/<name>` exists. `extra` is appended to its shell command.
fn web_pod(name: &str, app: &str, ready_dir: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {BUSYBOX}
    command: [sh, -c, 'mkdir -p /www && echo $POD_NAME > /www/index.html && httpd -p 8080 -h /www && {extra} sleep 100000']
    env:
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe:
      exec: {{command: [sh, -c, 'test -f /ready/$POD_NAME']}}
      periodSeconds: 1
      failureThreshold: 1
    volumeMounts: [{{name: ready, mountPath: /ready}}]
  volumes:
  - name: ready
    hostPath: {{path: {ready_dir}}}
"
    )
}

fn service(name: &str, app: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {app}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
{spec}
"
    )
}

fn jsonpath(c: &Cluster, args: &[&str], path: &str) -> String {
    let mut all = args.to_vec();
    let p = format!("jsonpath={path}");
    all.extend(["-o", &p]);
    String::from_utf8_lossy(&c.try_kubectl(&all).stdout).into_owned()
}

fn cluster_ip(c: &Cluster, svc: &str) -> String {
    jsonpath(c, &["get", "service", svc], "{.spec.clusterIP}")
}

fn node_ip(c: &Cluster) -> String {
    jsonpath(
        c,
        &["get", "nodes"],
        "{.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    )
}

/// `curl` with a 3 s limit: (exit code, body, seconds taken).
fn curl(url: &str) -> (i32, String, f64) {
    let t = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "3", url])
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        t.elapsed().as_secs_f64(),
    )
}

/// The pod names that answer `n` requests to `url`.
fn answers(url: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| curl(url).1).collect()
}

/// What helps explain a failure: the pods, addresses of pods of other clusters on this
/// machine (developers' test clusters share the bridge and pod CIDR), and the table.
fn diagnose(c: &Cluster) -> String {
    let mut foreign = String::new();
    let netns = Command::new("ip").args(["netns", "list"]).output().ok();
    for ns in String::from_utf8_lossy(&netns.map(|o| o.stdout).unwrap_or_default()).lines() {
        let ns = ns.split_whitespace().next().unwrap_or("");
        if let Ok(out) = Command::new("ip")
            .args([
                "netns", "exec", ns, "ip", "-4", "-o", "addr", "show", "eth0",
            ])
            .output()
        {
            foreign.push_str(&String::from_utf8_lossy(&out.stdout));
        }
    }
    format!(
        "pods:\n{}\npod network namespaces on this machine:\n{foreign}\ntable:\n{}",
        c.kubectl(&["get", "pods", "-o", "wide"]),
        nft_table().unwrap_or_default()
    )
}

fn nft_table() -> Option<String> {
    let out = Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until the proxy has a DNAT path for `ip:port` (so that no test traffic to a
/// service address can leave the machine before the rules exist).
fn wait_rule(what: &str, needle: &str) {
    wait_for(what, 30, || nft_table().is_some_and(|t| t.contains(needle)));
}

/// Deletes the proxy's table when dropped: declared before the cluster, it runs after the
/// server is killed, so a failing test leaves no rules behind.
struct TableGuard;

impl Drop for TableGuard {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", TABLE])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn ready(c: &Cluster, pod: &str) -> bool {
    jsonpath(
        c,
        &["get", "pod", pod],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    ) == "True"
}

#[test]
fn cluster_ip_node_port_load_balancer_and_readiness() {
    let _guard = TableGuard;
    let mut c = Cluster::start_with_agent(&[]);
    let ready_dir = c.data_dir().join("ready");
    std::fs::create_dir_all(&ready_dir).unwrap();
    let dir = ready_dir.to_string_lossy().into_owned();
    let pods = ["web-0", "web-1", "web-2"];
    for p in pods {
        std::fs::write(ready_dir.join(p), "").unwrap();
        c.apply(&web_pod(p, "web", &dir, ""));
    }
    c.apply(&service("web", "web", "  type: NodePort"));
    c.apply(&service("lb", "web", "  type: LoadBalancer"));
    let ip = cluster_ip(&c, "web");
    for p in pods {
        wait_for(&format!("{p} Ready"), 90, || ready(&c, p));
    }
    // The EndpointSlice controller's slice, as kube-proxy reads it.
    wait_for("three ready endpoints in the slice", 30, || {
        jsonpath(
            &c,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
            ],
            "{.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}",
        )
        .split_whitespace()
        .count()
            == 3
    });
    let slice = c.get_json(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ]);
    let slice = &slice["items"][0];
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(slice["ports"][0]["port"], 8080);
    assert_eq!(slice["ports"][0]["name"], "http");
    wait_rule(
        "ClusterIP rule",
        &format!("{ip} . tcp . 80 : goto service-"),
    );
    wait_for("three endpoints in the rules", 30, || {
        nft_table().is_some_and(|t| t.contains("numgen random mod 3"))
    });

    // ClusterIP from the host, spread over the three pods.
    let got = answers(&format!("http://{ip}/"), 30);
    for p in pods {
        assert!(
            got.iter().any(|g| g == p),
            "{p} never answered: {got:?}\n{}",
            diagnose(&c)
        );
    }

    // From another pod.
    c.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sh, -c, 'while true; do echo got:$(timeout 5 wget -qO- http://{ip}/); sleep 0.3; done']
"
    ));
    wait_for("the client pod to reach all three", 60, || {
        let out = output(&c, "client", "c");
        pods.iter().all(|p| out.contains(&format!("got:{p}")))
    });

    // NodePort on the node address and on 127.0.0.1.
    let node_port = jsonpath(&c, &["get", "service", "web"], "{.spec.ports[0].nodePort}");
    let node = node_ip(&c);
    for host in [node.as_str(), "127.0.0.1"] {
        let (code, body, _) = curl(&format!("http://{host}:{node_port}/"));
        assert_eq!(code, 0, "NodePort on {host}: {body}");
        assert!(body.starts_with("web-"), "NodePort on {host}: {body}");
    }

    // LoadBalancer: ServiceLB publishes the node address; the proxy answers on it.
    wait_for("load balancer ingress", 30, || {
        jsonpath(
            &c,
            &["get", "service", "lb"],
            "{.status.loadBalancer.ingress[0].ip}",
        ) == node
    });
    let lb_ip = jsonpath(
        &c,
        &["get", "service", "lb"],
        "{.status.loadBalancer.ingress[0].ip}",
    );
    wait_rule(
        "LoadBalancer rule",
        &format!("{lb_ip} . tcp . 80 : goto external-"),
    );
    let (code, body, _) = curl(&format!("http://{lb_ip}/"));
    assert!(
        code == 0 && body.starts_with("web-"),
        "LoadBalancer: {code} {body}"
    );

    // web-1 turns unready: it gets no more requests.
    std::fs::remove_file(ready_dir.join("web-1")).unwrap();
    wait_for("web-1 unready", 30, || !ready(&c, "web-1"));
    wait_for("two endpoints in the rules", 30, || {
        nft_table().is_some_and(|t| t.contains("numgen random mod 2"))
    });
    let got = answers(&format!("http://{ip}/"), 30);
    assert!(
        !got.iter().any(|g| g == "web-1"),
        "web-1 still answers: {got:?}"
    );
    assert!(got.iter().all(|g| g == "web-0" || g == "web-2"), "{got:?}");

    // A clean stop removes the table.
    assert!(nft_table().is_some());
    assert!(c.stop(), "server did not stop cleanly: {}", c.log());
    assert!(nft_table().is_none(), "table left after a clean stop");
}

#[test]
fn reject_hairpin_udp_affinity_and_crash_recovery() {
    let _guard = TableGuard;
    let mut c = Cluster::start_with_agent(&[]);
    let ready_dir = c.data_dir().join("ready");
    std::fs::create_dir_all(&ready_dir).unwrap();
    let dir = ready_dir.to_string_lossy().into_owned();

    // No endpoints: refused at once, not a hang (ClusterIP and NodePort).
    c.apply(&service("empty", "nothing", "  type: NodePort"));
    let empty = cluster_ip(&c, "empty");
    wait_rule(
        "reject rule",
        &format!("{empty} . tcp . 80 : goto reject-chain"),
    );
    let (code, _, secs) = curl(&format!("http://{empty}/"));
    assert_eq!(code, 7, "expected connection refused (curl exit 7)");
    assert!(secs < 1.0, "refusal took {secs}s");
    let np = jsonpath(
        &c,
        &["get", "service", "empty"],
        "{.spec.ports[0].nodePort}",
    );
    let (code, _, secs) = curl(&format!("http://127.0.0.1:{np}/"));
    assert!(
        code == 7 && secs < 1.0,
        "NodePort without endpoints: {code} in {secs}s"
    );

    // Session affinity: every request from the host lands on the same pod.
    for p in ["aff-0", "aff-1", "aff-2"] {
        std::fs::write(ready_dir.join(p), "").unwrap();
        c.apply(&web_pod(p, "aff", &dir, ""));
    }
    c.apply(&service(
        "aff",
        "aff",
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}",
    ));
    let aff = cluster_ip(&c, "aff");
    for p in ["aff-0", "aff-1", "aff-2"] {
        wait_for(&format!("{p} Ready"), 90, || ready(&c, p));
    }
    wait_for("three affinity endpoints", 90, || {
        nft_table().is_some_and(|t| {
            t.contains("affinity-default/aff/tcp/http__") && t.contains("numgen random mod 3")
        })
    });
    let got = answers(&format!("http://{aff}/"), 15);
    assert!(got[0].starts_with("aff-"), "{got:?}\n{}", diagnose(&c));
    assert!(got.iter().all(|g| *g == got[0]), "affinity broken: {got:?}");

    // Hairpin: a pod reaching itself through its own service.
    c.apply(&service("hairpin", "hairpin", ""));
    let hp = cluster_ip(&c, "hairpin");
    std::fs::write(ready_dir.join("hairpin"), "").unwrap();
    c.apply(&web_pod(
        "hairpin",
        "hairpin",
        &dir,
        &format!("while true; do echo got:$(timeout 5 wget -qO- http://{hp}/); sleep 0.5; done;"),
    ));
    wait_for("the pod to reach itself through its service", 90, || {
        output(&c, "hairpin", "web").contains("got:hairpin")
    });

    // UDP: a selectorless service whose endpoint is a socket of this test on the pod
    // bridge's address.
    let server = UdpSocket::bind("10.42.0.1:0").expect("bind on corten0's address");
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = server.recv_from(&mut buf) {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = server.send_to(&reply, peer);
        }
    });
    c.apply(&format!(
        "apiVersion: v1
kind: Service
metadata: {{name: udp}}
spec:
  ports: [{{name: dns, port: 53, protocol: UDP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: udp-1
  labels: {{kubernetes.io/service-name: udp}}
addressType: IPv4
ports: [{{name: dns, port: {port}, protocol: UDP}}]
endpoints: [{{addresses: [10.42.0.1], conditions: {{ready: true}}}}]
"
    ));
    let udp = cluster_ip(&c, "udp");
    wait_rule("UDP rule", &format!("{udp} . udp . 53 : goto service-"));
    let client = UdpSocket::bind("0.0.0.0:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    client.send_to(b"ping", format!("{udp}:53")).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = client
        .recv_from(&mut buf)
        .expect("UDP answer through the ClusterIP");
    assert_eq!(&buf[..n], b"echo:ping");

    // A crash leaves the table; the next start replaces it (stale rules included).
    c.kill9();
    assert!(nft_table().is_some());
    Command::new("nft")
        .args(["add", "chain", "ip", TABLE, "stale-from-a-crash"])
        .status()
        .unwrap();
    c.start_again();
    c.wait_node_ready();
    wait_for("the table replaced", 60, || {
        nft_table().is_some_and(|t| {
            !t.contains("stale-from-a-crash")
                && t.contains(&format!("{aff} . tcp . 80 : goto service-"))
        })
    });
    assert!(c.stop(), "server did not stop cleanly: {}", c.log());
    assert!(nft_table().is_none(), "table left after a clean stop");
}
