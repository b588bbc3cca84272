//! The rendered table through the real `nft`: a full replace, incremental changes, and
//! removal, in a table of the test's own (nothing else on the machine is touched).

use std::process::Command;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy::{Config, Syncer, model};
use serde_json::json;

/// The test's table, removed on drop even when the test fails.
struct Table(String);

impl Drop for Table {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.0])
            .status();
    }
}

fn list(table: &str) -> String {
    let out = Command::new("nft")
        .args(["list", "table", "ip", table])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn service(name: &str, ip: &str, spec: serde_json::Value) -> Service {
    let mut s =
        json!({"clusterIP": ip, "ports": [{"name": "http", "port": 80, "nodePort": 30080}]});
    s.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "spec": s}))
        .unwrap()
}

fn slice(svc: &str, ips: &[&str]) -> EndpointSlice {
    let eps: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "nodeName": "me", "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": svc, "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .unwrap()
}

#[tokio::test]
async fn full_then_incremental_then_removed() {
    let name = format!("corten-test-{}", std::process::id());
    let _guard = Table(name.clone());
    let mut config = Config::new("me");
    config.table = name.clone();
    let mut syncer = Syncer::new(config.render_config().unwrap());

    // A stale table from a "crash": replaced whole by the first sync.
    let stale = format!("add table ip {name}\nadd chain ip {name} stale\n");
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stale.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());

    let web = service(
        "web",
        "10.43.7.7",
        json!({"type": "NodePort", "sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}),
    );
    let empty = service("empty", "10.43.7.8", json!({}));
    let s1 = slice("web", &["10.42.9.2", "10.42.9.3"]);
    let m = model::build([&web, &empty], [&s1], "me");
    let stats = syncer.sync(&m).await.expect("full sync");
    assert!(stats.full);
    let text = list(&name);
    assert!(!text.contains("chain stale"), "{text}");
    assert!(text.contains("numgen random mod 2"), "{text}");
    assert!(text.contains("dnat to 10.42.9.2:8080"), "{text}");
    assert!(
        text.contains("10.43.7.7 . tcp . 80 : goto service-default/web/tcp/http"),
        "{text}"
    );
    assert!(
        text.contains("10.43.7.8 . tcp . 80 : goto reject-chain"),
        "{text}"
    );
    assert!(
        text.contains("tcp . 30080 : goto external-default/web/tcp/http"),
        "{text}"
    );
    assert!(text.contains("timeout 30s"), "{text}");

    // An endpoint goes, another comes; the empty service gets one.
    let s2 = slice("web", &["10.42.9.3", "10.42.9.4"]);
    let s3 = slice("empty", &["10.42.9.5"]);
    let m = model::build([&web, &empty], [&s2, &s3], "me");
    let stats = syncer.sync(&m).await.expect("incremental sync");
    assert!(!stats.full && stats.commands > 0);
    let text = list(&name);
    assert!(!text.contains("10.42.9.2"), "{text}");
    assert!(text.contains("dnat to 10.42.9.4:8080"), "{text}");
    assert!(
        !text.contains("10.43.7.8 . tcp . 80 : goto reject-chain"),
        "{text}"
    );
    assert!(
        text.contains("10.43.7.8 . tcp . 80 : goto service-default/empty/tcp/http"),
        "{text}"
    );

    // Nothing changed: no transaction.
    let stats = syncer.sync(&m).await.unwrap();
    assert_eq!(stats.commands, 0);

    // A service goes away entirely.
    let m = model::build([&web], [&s2], "me");
    let stats = syncer.sync(&m).await.expect("removal sync");
    assert!(!stats.full, "a sync after a no-op must stay incremental");
    let text = list(&name);
    assert!(!text.contains("default/empty"), "{text}");

    syncer.remove().await.unwrap();
    assert!(list(&name).is_empty());
}
