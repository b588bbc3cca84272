//! Durability: every write the server acknowledged survives `kill -9`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Cluster;

#[test]
fn acknowledged_creates_survive_kill_9() {
    let mut c = Cluster::start();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let url = c.url();
    let token = c.token();
    let mut writers = vec![];
    for w in 0..4 {
        let (acked, stop, url, token) = (acked.clone(), stop.clone(), url.clone(), token.clone());
        writers.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{w}-{i}");
                let body = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"i":"{i}"}}}}"#);
                let out = std::process::Command::new("curl")
                    .args(["-sS", "-k", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Content-Type: application/json"])
                    .args(["-H", &format!("Authorization: Bearer {token}"), "--data", &body])
                    .arg(format!("{url}/api/v1/namespaces/default/configmaps"))
                    .output();
                if let Ok(o) = out
                    && String::from_utf8_lossy(&o.stdout) == "201" {
                        acked.lock().unwrap().push(name);
                    }
                i += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(3));
    c.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "only {} creates acknowledged",
        acked.len()
    );
    c.start_again();
    let list = c.get_json(&["get", "configmaps", "-n", "default"]);
    let present: std::collections::HashSet<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|n| !present.contains(n.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged creates lost after kill -9: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

#[test]
fn clear_errors_for_port_in_use_and_corrupt_database() {
    let c = Cluster::start();
    // A second server on the same port.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corten"))
        .args(["server", "--data-dir"])
        .arg(dir.path())
        .args([
            "--https-listen-port",
            &c.port.to_string(),
            "--bind-address",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use"), "{err}");
    // A corrupt database file.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.db"), vec![0x42u8; 8192]).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corten"))
        .args(["server", "--data-dir"])
        .arg(dir.path())
        .args([
            "--https-listen-port",
            &common::free_port().to_string(),
            "--bind-address",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt") || err.contains("not a database"),
        "{err}"
    );
    // An unwritable data dir.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corten"))
        .args(["server", "--data-dir", "/proc/corten-test"])
        .args(["--https-listen-port", &common::free_port().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("data directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
