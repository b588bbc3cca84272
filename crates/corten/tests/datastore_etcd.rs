//! `corten server` on a real etcd (plain and TLS with client certificates), driven with
//! kubectl: objects live in etcd under the same keys, resourceVersion is etcd's mod revision,
//! watches see changes, restarts and `kill -9` keep every acknowledged write.

mod common;

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Cluster;
use common::etcd::Etcd;

fn start_on(etcd: &Etcd) -> Cluster {
    let flags = etcd.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Cluster::start_with(&flags)
}

fn rv(c: &Cluster, name: &str) -> i64 {
    c.kubectl(&[
        "get",
        "configmap",
        name,
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ])
    .parse()
    .expect("numeric resourceVersion")
}

#[test]
fn kubectl_on_etcd_crud_watch_restart_and_kill_9() {
    let etcd = Etcd::start();
    let mut c = start_on(&etcd);
    assert!(c.log().contains("etcd datastore connected"), "{}", c.log());
    c.kubectl(&["create", "configmap", "a", "--from-literal=k=1"]);
    c.kubectl(&["create", "configmap", "b", "--from-literal=k=2"]);
    // Stored in etcd under the embedded store's key layout; resourceVersion = mod revision.
    let rv_a = rv(&c, "a");
    assert_eq!(
        etcd.mod_revision("/registry/configmaps/default/a"),
        Some(rv_a)
    );
    assert!(rv(&c, "b") > rv_a);
    let names = c.kubectl(&["get", "configmaps", "-o", "name"]);
    assert!(
        names.contains("configmap/a") && names.contains("configmap/b"),
        "{names}"
    );
    assert_eq!(
        c.kubectl(&["get", "configmap", "b", "-o", "jsonpath={.data.k}"]),
        "2"
    );
    // Paginated list (limit/continue through etcd ranges).
    let page: serde_json::Value = serde_json::from_str(&c.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=1",
    ]))
    .expect("list json");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert!(
        page["metadata"]["continue"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{page}"
    );

    // A watch sees a create, an update and a delete.
    let mut watch = c
        .kubectl_cmd(&[
            "get",
            "configmaps",
            "--watch",
            "--output-watch-events",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for v in serde_json::Deserializer::from_reader(stdout).into_iter::<serde_json::Value>() {
            let Ok(v) = v else { break };
            let event = (
                v["type"].as_str().unwrap_or_default().to_string(),
                v["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            // Only this test's objects (controllers may touch others, e.g. kube-root-ca.crt).
            if !["b", "c"].contains(&event.1.as_str()) {
                continue;
            }
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    c.kubectl(&["create", "configmap", "c", "--from-literal=k=3"]);
    c.kubectl(&["patch", "configmap", "c", "-p", r#"{"data":{"k":"4"}}"#]);
    c.kubectl(&["delete", "configmap", "b"]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 4 && Instant::now() < deadline {
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(e);
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    // The list first (b exists), then the changes, from the list's revision: no gap.
    let want = [
        ("ADDED", "b"),
        ("ADDED", "c"),
        ("MODIFIED", "c"),
        ("DELETED", "b"),
    ]
    .map(|(t, n)| (t.to_string(), n.to_string()));
    assert_eq!(seen, want);
    assert_eq!(etcd.mod_revision("/registry/configmaps/default/b"), None);

    // A clean restart keeps the objects and their resourceVersions.
    let (rv_a, rv_c) = (rv(&c, "a"), rv(&c, "c"));
    c.restart();
    assert_eq!((rv(&c, "a"), rv(&c, "c")), (rv_a, rv_c));

    // kill -9 loses no acknowledged write.
    let mut acked = Vec::new();
    for i in 0..20 {
        let name = format!("k{i}");
        c.kubectl(&[
            "create",
            "configmap",
            &name,
            &format!("--from-literal=i={i}"),
        ]);
        acked.push((name.clone(), rv(&c, &name)));
    }
    c.kill9();
    c.start_again();
    for (name, want) in &acked {
        assert_eq!(rv(&c, name), *want, "{name}");
    }
    // Writes go on after the restart, with newer revisions.
    c.kubectl(&["create", "configmap", "after"]);
    assert!(rv(&c, "after") > acked.last().map(|a| a.1).unwrap_or_default());
}

#[test]
fn tls_etcd_with_client_certificates() {
    let etcd = Etcd::start_tls();
    let c = start_on(&etcd);
    c.kubectl(&["create", "namespace", "tls"]);
    c.kubectl(&[
        "-n",
        "tls",
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=x=y",
    ]);
    let rv: i64 = c
        .kubectl(&[
            "-n",
            "tls",
            "get",
            "secret",
            "s",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .expect("rv");
    assert_eq!(etcd.mod_revision("/registry/secrets/tls/s"), Some(rv));
    drop(c);

    // Without the client certificate etcd refuses the connection: a clear error, no server.
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = etcd.tls.as_ref().expect("tls");
    let out = Command::new(env!("CARGO_BIN_EXE_corten"))
        .args(["server", "--disable-agent", "--bind-address", "127.0.0.1"])
        .args(["--https-listen-port", &common::free_port().to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--datastore-endpoint", &etcd.endpoint()])
        .arg("--datastore-cafile")
        .arg(&tls.ca)
        .output()
        .expect("run corten");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("etcd at https://127.0.0.1"), "{err}");

    // Bad flags are refused before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_corten"))
        .args(["server", "--disable-agent", "--data-dir"])
        .arg(dir.path())
        .args(["--datastore-endpoint", "127.0.0.1:2379"])
        .output()
        .expect("run corten");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expected http://HOST:PORT or https://HOST:PORT"),
        "{err}"
    );
}

/// etcd itself is killed (-9) and restarted under a running server: acknowledged objects are
/// still there with their resourceVersions, and a kubectl watch opened before the outage goes
/// on delivering, without losing or repeating events.
#[test]
fn etcd_restart_under_a_running_server() {
    let mut etcd = Etcd::start();
    let c = start_on(&etcd);
    c.kubectl(&["create", "configmap", "before"]);
    let rv_before = rv(&c, "before");
    let mut watch = c
        .kubectl_cmd(&["get", "configmaps", "--watch", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("configmap/x") && tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    c.kubectl(&["create", "configmap", "x1"]);
    etcd.kill9();
    std::thread::sleep(Duration::from_secs(1));
    etcd.start_again();
    // The server's client reconnects by itself; retry while it does.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c
        .try_kubectl(&["create", "configmap", "x2"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "writes did not resume: {}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    c.kubectl(&["create", "configmap", "x3"]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        } else if seen.len() >= 3 {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(seen, ["configmap/x1", "configmap/x2", "configmap/x3"]);
    assert_eq!(rv(&c, "before"), rv_before);
}

/// etcd's count of its open watchers (`etcd_debugging_mvcc_watcher_total` on /metrics).
fn etcd_watchers(etcd: &Etcd) -> i64 {
    let out = Command::new("curl")
        .args(["-sf", &format!("{}/metrics", etcd.endpoint())])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
        .unwrap_or_else(|| panic!("no watcher gauge in etcd's metrics: {text}"))
}

#[test]
fn client_watches_share_the_servers_etcd_watch() {
    let etcd = Etcd::start();
    let c = start_on(&etcd);
    c.kubectl(&["create", "configmap", "first"]);
    let before = etcd_watchers(&etcd);
    // Sixteen clients watch two resources; each must see a change made afterwards.
    let mut watches = vec![];
    let (tx, rx) = mpsc::channel();
    for i in 0..16 {
        let kind = if i % 2 == 0 { "configmaps" } else { "secrets" };
        let mut child = c
            .kubectl_cmd(&["get", kind, "--watch-only", "-o", "name"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl watch");
        let stdout = child.stdout.take().expect("stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.ends_with("/marker") && tx.send(i).is_err() {
                    break;
                }
            }
        });
        watches.push(child);
    }
    std::thread::sleep(Duration::from_secs(2));
    c.kubectl(&["create", "configmap", "marker"]);
    c.kubectl(&["create", "secret", "generic", "marker"]);
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 16 && Instant::now() < deadline {
        if let Ok(i) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.insert(i);
        }
    }
    let during = etcd_watchers(&etcd);
    for mut w in watches {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert_eq!(seen.len(), 16, "every watcher saw the change: {seen:?}");
    // At most one new etcd watch per resource, however many clients watch it.
    assert!(
        during - before <= 2,
        "etcd watchers went from {before} to {during} for 16 client watches"
    );
}
