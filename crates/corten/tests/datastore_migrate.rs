//! `corten datastore`: export / import between the embedded store and etcd and back (kubectl
//! sees the same objects), and snapshots of the embedded store (save while running, restore
//! brings the old state back).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Cluster;
use common::etcd::Etcd;

fn corten(args: &[&str], data_dir: &Path, extra: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corten"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .output()
        .expect("run corten")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "corten failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a user sees of the test namespace: kind/name, uid and content of each object.
fn objects(c: &Cluster) -> Vec<serde_json::Value> {
    let list = c.get_json(&["-n", "mig", "get", "configmaps,secrets,services"]);
    let mut items: Vec<serde_json::Value> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        // Controllers publish kube-root-ca.crt in every namespace, whenever they get to it.
        .filter(|o| o["metadata"]["name"] != "kube-root-ca.crt")
        .map(|o| {
            serde_json::json!({
                "kind": o["kind"], "name": o["metadata"]["name"], "uid": o["metadata"]["uid"],
                "labels": o["metadata"]["labels"], "data": o["data"], "spec": o["spec"],
            })
        })
        .collect();
    items.sort_by_key(|o| format!("{}/{}", o["kind"], o["name"]));
    items
}

fn key_lines(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).expect("export file");
    let mut lines = text.lines();
    let header: serde_json::Value =
        serde_json::from_str(lines.next().expect("header")).expect("json");
    assert_eq!(header["format"], "corten-datastore-export/v1");
    let lines: Vec<String> = lines.map(str::to_string).collect();
    assert_eq!(header["count"].as_u64(), Some(lines.len() as u64));
    lines
}

#[test]
fn export_import_round_trip_embedded_to_etcd_and_back() {
    let mut c = Cluster::start();
    c.kubectl(&["create", "namespace", "mig"]);
    for i in 0..30 {
        c.kubectl(&[
            "-n",
            "mig",
            "create",
            "configmap",
            &format!("cm{i}"),
            &format!("--from-literal=i={i}"),
        ]);
    }
    c.kubectl(&["-n", "mig", "label", "configmap", "cm3", "tier=gold"]);
    c.kubectl(&[
        "-n",
        "mig",
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=password=hunter2",
    ]);
    c.kubectl(&[
        "-n",
        "mig",
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:8080",
    ]);
    let before = objects(&c);
    assert_eq!(before.len(), 30 + 1 + 1, "{before:?}");
    let data = c.dir.path().to_path_buf();

    // The embedded store cannot be exported while the server has it open.
    let out = corten(&["datastore", "export"], &data, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{out:?}"
    );

    assert!(c.stop());
    let first = data.join("export-1.jsonl");
    let msg = ok(corten(
        &["datastore", "export", "-o", first.to_str().unwrap()],
        &data,
        &[],
    ));
    assert!(msg.contains("exported"), "{msg}");

    // Into etcd; the same data dir (certificates) with the etcd flags.
    let etcd = Etcd::start();
    ok(corten(
        &["datastore", "import", first.to_str().unwrap()],
        &data,
        &etcd.flags(),
    ));
    // An import into a store that already has objects is refused.
    let out = corten(
        &["datastore", "import", first.to_str().unwrap()],
        &data,
        &etcd.flags(),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs an empty one"),
        "{out:?}"
    );
    let flags = etcd.flags();
    c.set_extra(
        &["--disable-agent"]
            .into_iter()
            .chain(flags.iter().map(String::as_str))
            .collect::<Vec<_>>(),
    );
    c.start_again();
    assert_eq!(objects(&c), before);
    assert!(c.stop());

    // And back into a fresh embedded store, exported to stdout.
    let out = corten(&["datastore", "export"], &data, &etcd.flags());
    let second = data.join("export-2.jsonl");
    std::fs::write(&second, &out.stdout).expect("write export");
    ok(out);
    // The server on etcd added one object: its leader election Lease.
    let lease = "/registry/coordination.k8s.io/leases/kube-system/corten-control-plane";
    let (leases, second_lines): (Vec<String>, Vec<String>) = key_lines(&second)
        .into_iter()
        .partition(|l| l.contains(&format!("\"key\":\"{lease}\"")));
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(
        second_lines,
        key_lines(&first),
        "the objects are byte for byte the same"
    );
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }
    ok(corten(
        &["datastore", "import", second.to_str().unwrap()],
        &data,
        &[],
    ));
    c.set_extra(&["--disable-agent"]);
    c.start_again();
    assert_eq!(objects(&c), before);
    // The cluster works on: the service's address stays taken.
    let out = c.try_kubectl(&[
        "-n",
        "mig",
        "get",
        "service",
        "web",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let ip = String::from_utf8_lossy(&out.stdout).to_string();
    let taken = c.kubectl_stdin(
        &["create", "-f", "-"],
        &format!(r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"clash","namespace":"mig"}},"spec":{{"clusterIP":"{ip}","ports":[{{"port":80}}]}}}}"#),
    );
    assert!(
        !taken.status.success(),
        "clusterIP {ip} was handed out twice"
    );
}

#[test]
fn snapshot_save_change_restore() {
    let mut c = Cluster::start();
    let data = c.dir.path().to_path_buf();
    c.kubectl(&["create", "configmap", "keep", "--from-literal=v=1"]);
    c.kubectl(&["create", "configmap", "doomed", "--from-literal=v=1"]);
    let rv_keep = c.kubectl(&[
        "get",
        "configmap",
        "keep",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let snap = data.join("backup.db");
    // Saved while the server runs.
    let msg = ok(corten(
        &["datastore", "snapshot", "save", snap.to_str().unwrap()],
        &data,
        &[],
    ));
    assert!(msg.contains("saved"), "{msg}");
    // A second save to the same file is refused rather than overwriting it.
    let out = corten(
        &["datastore", "snapshot", "save", snap.to_str().unwrap()],
        &data,
        &[],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists"),
        "{out:?}"
    );

    c.kubectl(&["patch", "configmap", "keep", "-p", r#"{"data":{"v":"2"}}"#]);
    c.kubectl(&["delete", "configmap", "doomed"]);
    c.kubectl(&["create", "configmap", "later"]);
    // Restoring under a running server is refused.
    let out = corten(
        &["datastore", "snapshot", "restore", snap.to_str().unwrap()],
        &data,
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{out:?}"
    );

    assert!(c.stop());
    ok(corten(
        &["datastore", "snapshot", "restore", snap.to_str().unwrap()],
        &data,
        &[],
    ));
    c.start_again();
    assert_eq!(
        c.kubectl(&["get", "configmap", "keep", "-o", "jsonpath={.data.v}"]),
        "1"
    );
    assert_eq!(
        c.kubectl(&[
            "get",
            "configmap",
            "keep",
            "-o",
            "jsonpath={.metadata.resourceVersion}"
        ]),
        rv_keep
    );
    assert_eq!(
        c.kubectl(&["get", "configmap", "doomed", "-o", "jsonpath={.data.v}"]),
        "1"
    );
    assert!(
        !c.try_kubectl(&["get", "configmap", "later"])
            .status
            .success()
    );

    // A file that is not a snapshot is refused and the store is left alone.
    assert!(c.stop());
    let junk = data.join("junk.db");
    std::fs::write(&junk, b"not a database").expect("junk");
    let out = corten(
        &["datastore", "snapshot", "restore", junk.to_str().unwrap()],
        &data,
        &[],
    );
    assert!(!out.status.success(), "{out:?}");
    c.start_again();
    assert_eq!(
        c.kubectl(&["get", "configmap", "keep", "-o", "jsonpath={.data.v}"]),
        "1"
    );
}
