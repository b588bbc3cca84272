//! Several `corten server`s on one etcd form one control plane: they share the cluster's
//! identity (CA, admin token, join token) through the datastore, elect one leader through the
//! `kube-system/corten-control-plane` Lease, and survive `kill -9` of any one of them. Driven
//! with kubectl against the survivors; pods run on simulated nodes that reach the servers
//! through `corten sim-nodes --server URL,URL,URL` (the agents' load balancer).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::{Cluster, SimNodes};

/// A first server on `etcd`, then `n - 1` more given its join token (and, for their serving
/// certificates, the extra name `ha.corten.test`).
fn servers(etcd: &Etcd, n: usize) -> Vec<Cluster> {
    let flags = etcd.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let first = Cluster::start_with(&flags);
    let token = std::fs::read_to_string(first.data_dir().join("token")).expect("join token");
    let mut with_token = flags.clone();
    with_token.extend(["--token", token.trim(), "--tls-san", "ha.corten.test"]);
    let mut all = vec![first];
    for _ in 1..n {
        all.push(Cluster::start_with(&with_token));
    }
    all
}

/// The Lease's holder, read through `via`.
fn holder(via: &Cluster) -> Option<String> {
    let out = via.try_kubectl(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "corten-control-plane",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    let h = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !h.is_empty()).then_some(h)
}

/// Whether the server's log says it leads now (it became the leader and has not stopped since).
fn leads(c: &Cluster) -> bool {
    let log = c.log();
    match (log.rfind("became the leader"), log.rfind("stopped leading")) {
        (Some(became), Some(stopped)) => became > stopped,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Waits until exactly one of the live servers leads and the Lease names it; returns its index.
/// Checks, while waiting, that never two lead at once.
fn the_leader(all: &[Cluster], live: &[usize], via: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let leading: Vec<usize> = live.iter().copied().filter(|&i| leads(&all[i])).collect();
        assert!(
            leading.len() <= 1,
            "two leaders at once: servers {leading:?}"
        );
        if let (&[i], Some(h)) = (leading.as_slice(), holder(&all[via]))
            && all[i].log().contains(&h)
        {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "no single leader among {live:?}: {leading:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The ports of the `kubernetes` Endpoints (one per live server here: all listen on loopback).
fn api_ports(via: &Cluster) -> Vec<u16> {
    let out = via.kubectl(&[
        "get",
        "endpoints",
        "kubernetes",
        "-o",
        "jsonpath={.subsets[*].ports[*].port}",
    ]);
    let mut ports: Vec<u16> = out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    ports.sort();
    ports
}

/// Waits until the `kubernetes` Endpoints name exactly the servers `live`.
fn wait_api_endpoints(all: &[Cluster], live: &[usize], via: usize) {
    let mut want: Vec<u16> = live.iter().map(|&i| all[i].port).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let ports = api_ports(&all[via]);
        if ports == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kubernetes endpoints {ports:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn three_servers_share_identity_and_keep_serving_while_killed_one_at_a_time() {
    let etcd = Etcd::start();
    let mut all = servers(&etcd, 3);
    // One cluster identity, each server with its own serving certificate.
    let read = |c: &Cluster, f: &str| std::fs::read_to_string(c.data_dir().join(f)).unwrap();
    for c in &all[1..] {
        assert_eq!(read(c, "tls/ca.crt"), read(&all[0], "tls/ca.crt"));
        assert_eq!(c.token(), all[0].token());
        assert_eq!(read(c, "token"), read(&all[0], "token"));
        assert_ne!(read(c, "tls/serving.crt"), read(&all[0], "tls/serving.crt"));
    }
    // One server's kubeconfig works against another (same CA, same admin token).
    let other = all[1].url();
    let out = all[0].kubectl(&[
        "--server",
        &other,
        "get",
        "namespace",
        "default",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "namespace/default");
    // `--tls-san` names are in the joined servers' certificates, not in the first's.
    let by_name = |c: &Cluster| {
        c.try_kubectl(&[
            "--tls-server-name",
            "ha.corten.test",
            "get",
            "namespace",
            "default",
        ])
    };
    let out = by_name(&all[1]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = by_name(&all[0]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ha.corten.test"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A wrong token is refused before the server starts, and says why.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corten"));
    cmd.args(["server", "--disable-agent", "--data-dir"])
        .arg(dir.path())
        .args(["--https-listen-port", &common::free_port().to_string()])
        .args(["--bind-address", "127.0.0.1"])
        .args(etcd.flags())
        .args(["--token", "not-the-token"]);
    let out = cmd.output().expect("run corten server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token does not match"), "{err}");
    // Without a token, a fresh server is told the datastore holds a cluster already.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_corten"))
        .args(["server", "--disable-agent", "--data-dir"])
        .arg(dir.path())
        .args(["--https-listen-port", &common::free_port().to_string()])
        .args(["--bind-address", "127.0.0.1"])
        .args(etcd.flags())
        .output()
        .expect("run corten server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token"), "{err}");

    // Exactly one leader; the `kubernetes` Endpoints name every server.
    the_leader(&all, &[0, 1, 2], 0);
    wait_api_endpoints(&all, &[0, 1, 2], 0);

    // An object written through one server is seen by a watch on another.
    let mut watch = all[2]
        .kubectl_cmd(&["get", "configmaps", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl watch");
    let (tx, rx) = mpsc::channel();
    let stdout = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    all[0].kubectl(&["create", "configmap", "from-0", "--from-literal=k=v"]);
    let seen = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the watch on server 2 saw nothing");
    assert_eq!(seen, "configmap/from-0");
    let _ = watch.kill();
    let _ = watch.wait();

    // Kill each server in turn; the others keep serving kubectl, and every write acknowledged
    // by any server (the killed one included) is there afterwards.
    let mut written = vec!["from-0".to_string()];
    for victim in 0..3 {
        // Writes through the victim until it dies: each one it acknowledged must survive.
        let kubeconfig = all[victim].kubeconfig();
        let writer = std::thread::spawn(move || {
            let mut acknowledged = vec![];
            for n in 0.. {
                let name = format!("during-kill-{victim}-{n}");
                let out = Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["create", "configmap", &name, "--from-literal=k=v"])
                    .args(["--request-timeout", "5s"])
                    .output()
                    .expect("kubectl");
                if !out.status.success() {
                    return acknowledged;
                }
                acknowledged.push(name);
            }
            acknowledged
        });
        std::thread::sleep(Duration::from_millis(1500));
        all[victim].kill9();
        let acknowledged = writer.join().expect("writer");
        assert!(!acknowledged.is_empty(), "no write went through");
        written.extend(acknowledged);
        for (i, c) in all.iter().enumerate().filter(|(i, _)| *i != victim) {
            let name = format!("after-kill-{victim}-via-{i}");
            c.kubectl(&["create", "configmap", &name, "--from-literal=k=v"]);
            written.push(name);
            let names = c.kubectl(&["get", "configmaps", "-o", "name"]);
            for w in &written {
                assert!(
                    names.lines().any(|l| l == format!("configmap/{w}")),
                    "{w} missing via server {i}: {names}"
                );
            }
        }
        let live: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
        let via = live[0];
        let leader = the_leader(&all, &live, via);
        assert_ne!(leader, victim);
        if victim == 0 {
            // The dead server leaves the `kubernetes` Endpoints once its record expires.
            wait_api_endpoints(&all, &live, via);
        }
        all[victim].start_again();
    }
    // Everything, through each server after the restarts.
    for c in &all {
        let names = c.kubectl(&["get", "configmaps", "-o", "name"]);
        for w in &written {
            assert!(
                names.lines().any(|l| l == format!("configmap/{w}")),
                "{w} missing: {names}"
            );
        }
    }
    the_leader(&all, &[0, 1, 2], 0);
    wait_api_endpoints(&all, &[0, 1, 2], 0);
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 6
  minReadySeconds: 2
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1
"#;

#[test]
fn the_leader_killed_mid_rollout_and_the_rollout_completes_under_the_next() {
    let etcd = Etcd::start();
    let mut all = servers(&etcd, 3);
    let urls: Vec<String> = all.iter().map(Cluster::url).collect();
    let urls = urls.join(",");
    // Simulated nodes that reach all three servers through the agents' load balancer.
    let _nodes = SimNodes::start_prefixed_with(&all[0], "ha", 3, &["--server", &urls]);
    let leader = the_leader(&all, &[0, 1, 2], 0);
    // The other servers run no controllers and no scheduler.
    for (i, c) in all.iter().enumerate().filter(|(i, _)| *i != leader) {
        let log = c.log();
        let runs = log.contains("controller started") || log.contains("scheduler caches synced");
        assert!(
            !runs,
            "server {i} is not the leader ({leader}) but runs them: {log}"
        );
    }
    let via = (leader + 1) % 3;
    all[via].apply(DEPLOYMENT);
    let status = |c: &Cluster| {
        c.kubectl_cmd(&["rollout", "status", "deployment/web", "--timeout=120s"])
            .output()
            .expect("kubectl rollout status")
    };
    let out = status(&all[via]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A new template: six pods replaced one at a time, each ready for 2 s: the rollout takes
    // well over 12 s, and the leader is killed in its middle.
    all[via].kubectl(&["set", "image", "deployment/web", "web=nginx:2"]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        let rs = all[via].kubectl(&["get", "rs", "-l", "app=web", "--no-headers"]);
        if rs.lines().count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no new ReplicaSet: {rs}");
        std::thread::sleep(Duration::from_millis(100));
    }
    all[leader].kill9();
    let killed = Instant::now();
    let live: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let next = the_leader(&all, &live, via);
    eprintln!("new leader after {:?}", killed.elapsed());
    let out = status(&all[via]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = all[via].get_json(&["get", "deployment", "web"]);
    assert_eq!(d["status"]["updatedReplicas"], 6, "{d}");
    assert_eq!(d["status"]["availableReplicas"], 6, "{d}");
    assert_eq!(d["status"]["replicas"], 6, "{d}");
    let images = all[via].kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert_eq!(
        images
            .split_whitespace()
            .filter(|i| *i == "nginx:2")
            .count(),
        6,
        "{images}"
    );
    assert!(
        !images.contains("nginx:1"),
        "old pods left after the rollout: {images}"
    );
    // The new leader's controllers did it; the simulated nodes, attached through the load
    // balancer, stayed Ready throughout (their pods were reported Running).
    assert!(all[next].log().contains("controller started"));
    let nodes = all[via].kubectl(&["get", "nodes", "--no-headers"]);
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" Ready ")).count(),
        3,
        "{nodes}"
    );
}

/// A leader frozen (SIGSTOP) past its lease: another server takes over; when the old one wakes
/// up it finds it has not renewed within the renew deadline and stops leading at once, so that
/// there is again exactly one leader.
#[test]
fn a_frozen_leader_steps_down_when_it_wakes() {
    let etcd = Etcd::start();
    let all = servers(&etcd, 2);
    let leader = the_leader(&all, &[0, 1], 0);
    let other = 1 - leader;
    let pid = all[leader].pid().expect("running").to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let taken = holder(&all[other]).is_some_and(|h| all[other].log().contains(&h));
        if taken && leads(&all[other]) {
            break;
        }
        if Instant::now() >= deadline {
            signal("-CONT");
            panic!("no takeover from a frozen leader: {}", all[other].log());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(20);
    while leads(&all[leader]) {
        assert!(
            Instant::now() < deadline,
            "the woken leader did not step down: {}",
            all[leader].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = all[leader].log();
    assert!(
        log.contains("renew deadline") || log.contains("taken by another server"),
        "{log}"
    );
    assert_eq!(the_leader(&all, &[0, 1], other), other);
}
