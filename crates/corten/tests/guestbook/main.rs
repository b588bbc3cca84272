//! The guestbook (examples/guestbook) end to end, as a user runs it: `corten server` with its
//! node agent on a real containerd, the images from `scripts/images.sh`, the manifests applied
//! with kubectl, and HTTP from the host to the gateway's LoadBalancer address and to the
//! Ingress (the built-in ingress controller on the node's address). Then the failures the seed
//! talks about, each under a steady loop of writes and reads through both: a backend pod
//! deleted, the database pod deleted, a rolling update to v2, the whole server restarted, the
//! frontend scaled up and down. Acknowledged writes must never be lost, and the backend's
//! pod deletion and rollout must not fail a single request.

#[path = "../common/mod.rs"]
mod common;
mod traffic;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Cluster;
use common::pods::wait_for;
use serde_json::json;
use traffic::{Stats, Traffic, entries, http, post};

const NS: &str = "guestbook";

/// The images the guestbook needs beyond the standard test images.
const IMAGES: &[&str] = &["redis", "guestbook-backend-v1", "guestbook-backend-v2"];

fn ns_kubectl(c: &Cluster, args: &[&str]) -> String {
    let mut all = vec!["-n", NS];
    all.extend_from_slice(args);
    c.kubectl(&all)
}

fn jsonpath(c: &Cluster, args: &[&str], path: &str) -> String {
    let p = format!("jsonpath={path}");
    let mut all = vec!["-n", NS];
    all.extend_from_slice(args);
    all.extend(["-o", &p]);
    String::from_utf8_lossy(&c.try_kubectl(&all).stdout).into_owned()
}

/// Waits for every rollout of the guestbook, printing kubectl's progress.
fn wait_rollouts(c: &Cluster) {
    for w in [
        "statefulset/redis",
        "deployment/backend",
        "deployment/frontend",
        "deployment/gateway",
    ] {
        let out = c.try_kubectl(&["-n", NS, "rollout", "status", w, "--timeout=180s"]);
        assert!(
            out.status.success(),
            "rollout of {w}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            diagnose(c)
        );
    }
}

/// The pods' state and the end of the server's log, to explain a failure.
fn diagnose(c: &Cluster) -> String {
    let pods = c.try_kubectl(&["get", "pods", "-A", "-o", "wide"]);
    let events = c.try_kubectl(&["-n", NS, "get", "events"]);
    let gateway = c.try_kubectl(&[
        "-n",
        NS,
        "logs",
        "-l",
        "app.kubernetes.io/name=gateway",
        "--timestamps",
        "--tail=-1",
    ]);
    let gateway = String::from_utf8_lossy(&gateway.stdout);
    let errors: Vec<&str> = gateway.lines().filter(|l| l.contains("[error]")).collect();
    let slices = c.try_kubectl(&["-n", NS, "get", "endpointslices", "-o", "wide"]);
    let table = std::process::Command::new("nft")
        .args(["list", "table", "ip", "corten-proxy"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let log = c.log();
    let tail: Vec<&str> = log.lines().rev().take(80).collect();
    format!(
        "pods:\n{}\nevents:\n{}\nendpoint slices:\n{}\ngateway errors:\n{}\n\
         proxy table:\n{table}\nserver log (end):\n{}",
        String::from_utf8_lossy(&pods.stdout),
        String::from_utf8_lossy(&events.stdout),
        String::from_utf8_lossy(&slices.stdout),
        errors.join("\n"),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// The ready pods of `app`, by name.
fn ready_pods(c: &Cluster, app: &str) -> BTreeSet<String> {
    let v = c.get_json(&[
        "-n",
        NS,
        "get",
        "pods",
        "-l",
        &format!("app.kubernetes.io/name={app}"),
    ]);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect()
}

/// Every pod of the guestbook: name -> uid.
fn all_pods(c: &Cluster) -> BTreeMap<String, String> {
    let v = c.get_json(&["-n", NS, "get", "pods"]);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Asserts that every acknowledged write is stored, and nothing twice.
fn assert_no_lost_writes(addr: SocketAddr, acked: &[i64]) -> Vec<(i64, String)> {
    let all = entries(addr).expect("list entries");
    let ids: BTreeSet<i64> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), all.len(), "an entry is stored twice");
    let lost: Vec<_> = acked.iter().filter(|id| !ids.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    all
}

/// Deletes one ready backend pod (`kubectl delete pod NAME FLAGS`) under a [`Traffic`] loop
/// and waits for the Deployment's replacement; returns what the loop saw.
fn lose_backend_pod(c: &Cluster, addrs: &[SocketAddr], name: &str, flags: &[&str]) -> Stats {
    let before = ready_pods(c, "backend");
    assert_eq!(before.len(), 2, "{before:?}");
    let victim = before.iter().next().expect("a backend pod").clone();
    let traffic = Traffic::start(addrs, name, 4);
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    eprintln!("{} deleting {victim} {flags:?}", jiff::Timestamp::now());
    let mut args = vec!["delete", "pod", &victim];
    args.extend_from_slice(flags);
    ns_kubectl(c, &args);
    wait_for("a replacement backend pod", 90, || {
        let now = ready_pods(c, "backend");
        now.len() == 2 && !now.contains(&victim)
    });
    eprintln!(
        "backend pod {victim} ({name}) replaced in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    let stats = traffic.finish();
    assert!(stats.acked.len() > 20, "{stats:?}");
    stats
}

fn manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/guestbook")
}

#[test]
fn guestbook_survives_pod_loss_rollout_and_restart() {
    let t0 = Instant::now();
    let mut c = Cluster::start_with_agent_images(&[], IMAGES);
    let dir = manifests();
    let out = c.kubectl(&["apply", "-f", &dir.to_string_lossy()]);
    for kind in [
        "namespace/guestbook",
        "configmap/backend-config",
        "secret/redis-credentials",
        "statefulset.apps/redis",
        "deployment.apps/backend",
        "deployment.apps/frontend",
        "deployment.apps/gateway",
        "service/gateway",
        "ingress.networking.k8s.io/guestbook",
    ] {
        assert!(out.contains(&format!("{kind} created")), "{out}");
    }
    wait_rollouts(&c);
    eprintln!("deployed in {:.1}s", t0.elapsed().as_secs_f64());

    // The database's claim came from the default StorageClass and is bound.
    let claim = jsonpath(
        &c,
        &["get", "pvc", "data-redis-0"],
        "{.spec.storageClassName} {.status.phase}",
    );
    assert_eq!(claim, "local-path Bound");

    // ServiceLB gives the gateway the node's address; the proxy answers on it.
    wait_for("the gateway's load balancer address", 60, || {
        !jsonpath(
            &c,
            &["get", "service", "gateway"],
            "{.status.loadBalancer.ingress[0].ip}",
        )
        .is_empty()
    });
    let ip = jsonpath(
        &c,
        &["get", "service", "gateway"],
        "{.status.loadBalancer.ingress[0].ip}",
    );
    let lb: SocketAddr = format!("{ip}:8080").parse().expect("address");
    wait_for("the guestbook through the load balancer", 60, || {
        http(lb, "GET", "/api/entries", None).is_ok_and(|r| r.code == 200)
    });

    // The frontend's page, and the API behind the same address.
    let page = http(lb, "GET", "/", None).expect("GET /");
    assert_eq!(page.code, 200);
    assert!(
        page.body.contains("<title>Guestbook</title>"),
        "{}",
        page.body
    );
    assert_eq!(
        http(lb, "GET", "/apiary", None).expect("GET /apiary").code,
        404
    );
    let mut first: Vec<i64> = ["hello", "from", "corten"]
        .iter()
        .map(|t| post(lb, t).expect("post"))
        .collect();
    let got = entries(lb).expect("entries");
    assert_eq!(
        got.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
        ["hello", "from", "corten"]
    );
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), first);
    let bad = http(lb, "POST", "/api/entries", Some(&json!({"text": ""}))).expect("post");
    assert_eq!(bad.code, 400, "{}", bad.body);
    let r = http(lb, "GET", "/api/entries", None).expect("get");
    assert_eq!(
        r.headers.get("x-guestbook-version").map(String::as_str),
        Some("v1")
    );

    // The Ingress: the same routes through the ingress controller, on the node's address.
    let ing: SocketAddr = format!("{ip}:{}", c.ingress_http_port)
        .parse()
        .expect("address");
    wait_for("the guestbook through the Ingress", 60, || {
        http(ing, "GET", "/api/entries", None).is_ok_and(|r| r.code == 200)
    });
    let page = http(ing, "GET", "/", None).expect("GET / through the Ingress");
    assert!(
        page.code == 200 && page.body.contains("<title>Guestbook</title>"),
        "{} {}",
        page.code,
        page.body
    );
    assert_eq!(
        http(ing, "GET", "/apiary", None).expect("GET /apiary").code,
        404,
        "/api is a path prefix: /apiary is the frontend's"
    );
    let via_ingress = post(ing, "through the ingress").expect("post through the Ingress");
    assert!(
        entries(lb)
            .expect("entries")
            .contains(&(via_ingress, "through the ingress".into())),
        "an entry posted through the Ingress is not read back through the load balancer"
    );
    let via_lb = post(lb, "through the load balancer").expect("post");
    assert_eq!(
        entries(ing).expect("entries"),
        entries(lb).expect("entries")
    );
    assert!(
        entries(ing)
            .expect("entries")
            .iter()
            .any(|(id, _)| *id == via_lb)
    );
    first.extend([via_ingress, via_lb]);
    wait_for("the Ingress's address", 30, || {
        jsonpath(
            &c,
            &["get", "ingress", "guestbook"],
            "{.status.loadBalancer.ingress[*].ip}",
        )
        .split_whitespace()
        .any(|a| a == ip)
    });
    let both = [lb, ing];

    // A backend pod is deleted under load: no request fails, no write is lost, and the
    // Deployment replaces it.
    let stats = lose_backend_pod(&c, &both, "delete", &[]);
    assert!(
        stats.failures.is_empty(),
        "requests failed while a backend pod went: {:?}\n{}",
        stats.failures,
        diagnose(&c)
    );
    let mut acked = first.clone();
    acked.extend(&stats.acked);
    assert_no_lost_writes(lb, &acked);

    // A backend pod is killed outright (force deletion, no grace): the requests it was
    // serving may fail, but a write that was acknowledged is never lost.
    let stats = lose_backend_pod(&c, &both, "kill", &["--grace-period=0", "--force"]);
    acked.extend(&stats.acked);
    assert_no_lost_writes(lb, &acked);

    // Every write is on the claim's volume, fsynced before it was acknowledged.
    let fsync = ns_kubectl(
        &c,
        &[
            "exec",
            "redis-0",
            "--",
            "sh",
            "-c",
            "redis-cli --no-auth-warning -a \"$REDIS_PASSWORD\" config get appendfsync",
        ],
    );
    assert_eq!(
        fsync.split_whitespace().collect::<Vec<_>>(),
        ["appendfsync", "always"]
    );
    let volume = jsonpath(&c, &["get", "pvc", "data-redis-0"], "{.spec.volumeName}");
    let path = String::from_utf8_lossy(
        &c.try_kubectl(&[
            "get",
            "pv",
            &volume,
            "-o",
            "jsonpath={.spec.hostPath.path}{.spec.local.path}",
        ])
        .stdout,
    )
    .into_owned();
    assert!(
        std::path::Path::new(&path).join("appendonlydir").is_dir(),
        "no append-only file in the volume's directory {path:?}"
    );

    // The database pod is deleted: the StatefulSet brings it back on the same claim, with
    // every entry.
    let stored = entries(lb).expect("entries");
    let uid = jsonpath(&c, &["get", "pod", "redis-0"], "{.metadata.uid}");
    let t = Instant::now();
    ns_kubectl(&c, &["delete", "pod", "redis-0"]);
    wait_for("redis-0 back", 90, || {
        let now = jsonpath(&c, &["get", "pod", "redis-0"], "{.metadata.uid}");
        !now.is_empty() && now != uid && ready_pods(&c, "redis").contains("redis-0")
    });
    wait_for("the guestbook answering again", 30, || entries(lb).is_ok());
    eprintln!("database pod back in {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(
        entries(lb).expect("entries"),
        stored,
        "entries lost with the database pod"
    );
    acked.push(post(lb, "after the database came back").expect("post"));

    // A rolling update to v2 under load: zero failed requests, no lost writes, and v2 answers.
    let traffic = Traffic::start(&both, "rollout", 4);
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    ns_kubectl(
        &c,
        &[
            "set",
            "image",
            "deployment/backend",
            "backend=localhost/guestbook-backend:v2",
        ],
    );
    let out = ns_kubectl(
        &c,
        &["rollout", "status", "deployment/backend", "--timeout=180s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    eprintln!("rolled out v2 in {:.1}s", t.elapsed().as_secs_f64());
    wait_for("only v2 backend pods", 60, || {
        jsonpath(
            &c,
            &["get", "pods", "-l", "app.kubernetes.io/name=backend"],
            "{.items[*].spec.containers[0].image}",
        )
        .split_whitespace()
        .all(|i| i == "localhost/guestbook-backend:v2")
    });
    std::thread::sleep(Duration::from_secs(2));
    let stats = traffic.finish();
    assert!(
        stats.failures.is_empty(),
        "requests failed during the rollout: {:?}\n{}",
        stats.failures,
        diagnose(&c)
    );
    assert!(
        stats.versions.contains_key("v1") && stats.versions.contains_key("v2"),
        "{stats:?}"
    );
    acked.extend(&stats.acked);
    assert_no_lost_writes(lb, &acked);
    let r = http(lb, "GET", "/api/entries?limit=1", None).expect("get");
    assert_eq!(r.json()["version"], "v2");

    // The whole server restarts: the same pods come back (their containers kept running and
    // are adopted again), and so does every entry.
    let stored = entries(lb).expect("entries");
    let pods = all_pods(&c);
    let t = Instant::now();
    c.restart();
    c.wait_node_ready();
    wait_rollouts(&c);
    wait_for("the guestbook after the restart", 60, || {
        entries(lb).is_ok_and(|e| e == stored)
    });
    wait_for("the Ingress after the restart", 60, || {
        entries(ing).is_ok_and(|e| e == stored)
    });
    eprintln!(
        "server restarted, guestbook answering in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(all_pods(&c), pods, "the pods changed across the restart");
    acked.push(post(lb, "after the restart").expect("post"));
    assert_no_lost_writes(lb, &acked);

    // The frontend scales to five and back to two, still serving the page.
    ns_kubectl(&c, &["scale", "deployment/frontend", "--replicas=5"]);
    wait_for("five ready frontend pods", 90, || {
        ready_pods(&c, "frontend").len() == 5
    });
    for _ in 0..10 {
        for addr in both {
            match http(addr, "GET", "/", None) {
                Ok(page) if page.code == 200 => {}
                Ok(page) => panic!("GET / through {addr}: {} {}", page.code, page.body),
                Err(e) => panic!(
                    "{} GET / through {addr}: {e}\n{}",
                    jiff::Timestamp::now(),
                    diagnose(&c)
                ),
            }
        }
    }
    ns_kubectl(&c, &["scale", "deployment/frontend", "--replicas=2"]);
    wait_for("two frontend pods", 90, || {
        jsonpath(
            &c,
            &["get", "pods", "-l", "app.kubernetes.io/name=frontend"],
            "{.items[*].metadata.name}",
        )
        .split_whitespace()
        .count()
            == 2
    });
    assert_eq!(
        jsonpath(
            &c,
            &["get", "deployment", "frontend"],
            "{.status.readyReplicas}"
        ),
        "2"
    );
    for addr in both {
        assert_eq!(http(addr, "GET", "/", None).expect("GET /").code, 200);
    }
    eprintln!("guestbook test took {:.1}s", t0.elapsed().as_secs_f64());
}
