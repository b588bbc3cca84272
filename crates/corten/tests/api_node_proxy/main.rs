//! End to end: `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward` proxied by the
//! real `corten server` to a node's agent over mutually authenticated TLS. The agent is a
//! [`FakeAgent`](fake_agent::FakeAgent) standing in for corten's node agent until it lands; it
//! joins with the join token like the real one will.

#[path = "../common/mod.rs"]
mod common;
mod fake_agent;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, free_port};
use fake_agent::{FakeAgent, websocket_accept};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// A cluster with node `node-1` served by a fake agent, and pods bound to it: `web` (one
/// container, `app`), `multi` (containers `a`, `b` and `broken`) and `shell` (exec runs echo).
fn cluster_with_agent() -> (Cluster, FakeAgent) {
    let c = Cluster::start();
    let creds = c.node_credentials("node-1", &["127.0.0.1"]);
    let agent = FakeAgent::start(&creds);
    c.apply(&node("node-1", "InternalIP", "127.0.0.1", agent.port));
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  nodeName: node-1
  containers: [{name: app, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: multi, namespace: default}
spec:
  nodeName: node-1
  containers: [{name: a, image: busybox}, {name: b, image: busybox}, {name: broken, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: shell, namespace: default}
spec:
  nodeName: node-1
  containers: [{name: sh, image: busybox}]
"#,
    );
    (c, agent)
}

/// A Node whose agent listens at `address:port`.
fn node(name: &str, address_type: &str, address: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus:\n  addresses: [{{type: {address_type}, address: \"{address}\"}}]\n  daemonEndpoints: {{kubeletEndpoint: {{Port: {port}}}}}\n"
    )
}

fn stderr_of(c: &Cluster, args: &[&str]) -> String {
    let out = c.try_kubectl(args);
    assert!(!out.status.success(), "kubectl {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn kubectl_logs_come_from_the_agent() {
    let (c, agent) = cluster_with_agent();
    assert_eq!(
        c.kubectl(&["logs", "web"]),
        "line 1 of web/app\nline 2 of web/app\nline 3 of web/app\n"
    );
    assert_eq!(agent.last(), "/containerLogs/default/web/app");
    c.kubectl(&[
        "logs",
        "web",
        "--tail=2",
        "--timestamps",
        "--limit-bytes=100",
    ]);
    assert_eq!(
        agent.last(),
        "/containerLogs/default/web/app?limitBytes=100&tailLines=2&timestamps=true"
    );
    c.kubectl(&["logs", "web", "--since=1h"]);
    assert_eq!(
        agent.last(),
        "/containerLogs/default/web/app?sinceSeconds=3600"
    );

    // kubectl picks the first container itself; -c names another.
    assert!(
        c.kubectl(&["logs", "multi"])
            .starts_with("line 1 of multi/a\n")
    );
    assert!(
        c.kubectl(&["logs", "multi", "-c", "b"])
            .starts_with("line 1 of multi/b\n")
    );
    // The agent's own errors reach kubectl as upstream's do.
    let err = stderr_of(&c, &["logs", "multi", "-c", "broken"]);
    assert!(
        err.contains(
            "Error from server (BadRequest): container \"broken\" in pod \"multi\" is waiting to start: ContainerCreating"
        ),
        "{err}"
    );
    // Without a container, the server answers as upstream's does.
    let r = c.curl(
        "GET",
        "/api/v1/namespaces/default/pods/multi/log",
        "",
        None,
        true,
    );
    assert_eq!(r.code, 400, "{}", r.body);
    assert_eq!(
        r.json()["message"],
        "a container name must be specified for pod multi, choose one of: [a b broken]"
    );
    assert_eq!(agent.refused_peers(), 0);
}

#[test]
fn kubectl_logs_follow_streams_until_the_client_leaves() {
    let (c, agent) = cluster_with_agent();
    let mut child = c
        .kubectl_cmd(&["logs", "-f", "web"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = vec![];
    while !lines.iter().any(|l: &String| l == "tick 3") {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => lines.push(line),
            Err(e) => panic!("no more log lines ({e}) after {lines:?}"),
        }
    }
    assert_eq!(
        lines[..4],
        [
            "line 1 of web/app",
            "line 2 of web/app",
            "line 3 of web/app",
            "tick 1"
        ]
    );
    assert_eq!(agent.last(), "/containerLogs/default/web/app?follow=true");
    assert_eq!(agent.open_follows(), 1);

    // The client goes: the API server lets go of the agent's stream too.
    child.kill().expect("kill kubectl");
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.open_follows() > 0 {
        assert!(
            Instant::now() < deadline,
            "the agent's follow stream was not closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The answer to an upgrade request sent through the API server.
struct Upgrade {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
    io: Option<TokioIo<hyper::upgrade::Upgraded>>,
}

/// Sends `method path` with `headers` (plus the admin token) to the API server over HTTP/1.1
/// and, on 101, completes the upgrade.
async fn upgrade_through(
    c: &Cluster,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Upgrade {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(c.ca_pem().as_bytes()).expect("CA"))
        .expect("root");
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", c.port))
        .await
        .expect("connect");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .expect("TLS to the API server");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn.with_upgrades());
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{}", c.port))
        .header("authorization", format!("Bearer {}", c.token()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        return Upgrade {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            io: None,
        };
    }
    let io = hyper::upgrade::on(&mut resp).await.expect("upgrade");
    Upgrade {
        status,
        headers,
        body: String::new(),
        io: Some(TokioIo::new(io)),
    }
}

/// Reads the agent's description line, then checks that bytes echo through.
async fn described_and_echoed(io: TokioIo<hyper::upgrade::Upgraded>) -> serde_json::Value {
    let mut io = tokio::io::BufReader::new(io);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), io.read_line(&mut line))
        .await
        .expect("description in time")
        .expect("description");
    let description: serde_json::Value = serde_json::from_str(&line).expect("json line");
    for msg in ["ping\n", "a second message\n"] {
        io.write_all(msg.as_bytes()).await.expect("write");
        io.flush().await.expect("flush");
        let mut echo = String::new();
        tokio::time::timeout(Duration::from_secs(10), io.read_line(&mut echo))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(echo, msg);
    }
    io.shutdown().await.expect("close");
    description
}

#[test]
fn exec_attach_and_portforward_upgrades_reach_the_agent() {
    let (c, agent) = cluster_with_agent();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // WebSocket, as kubectl exec sends it.
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ws = [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", key),
            ("sec-websocket-protocol", "v5.channel.k8s.io, v4.channel.k8s.io"),
        ];
        let path = "/api/v1/namespaces/default/pods/web/exec?command=echo&command=hello%20world&stdin=true&stdout=true&tty=true";
        let up = upgrade_through(&c, "GET", path, &ws).await;
        assert_eq!(up.status, StatusCode::SWITCHING_PROTOCOLS, "{}", up.body);
        assert_eq!(up.headers["sec-websocket-accept"], websocket_accept(key));
        assert_eq!(up.headers["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(up.headers["sec-websocket-protocol"], "v5.channel.k8s.io");
        let d = described_and_echoed(up.io.expect("upgraded")).await;
        assert_eq!(
            d["pathAndQuery"],
            "/exec/default/web/app?command=echo&command=hello+world&error=1&input=1&output=1&tty=1"
        );
        assert_eq!(d["websocketProtocols"], serde_json::json!(["v5.channel.k8s.io", "v4.channel.k8s.io"]));
        assert_eq!(d["authorization"], false, "the client's token must not reach the agent");

        // Attach with POST and a named container.
        let path = "/api/v1/namespaces/default/pods/multi/attach?container=b&stdin=false";
        let up = upgrade_through(&c, "POST", path, &ws).await;
        assert_eq!(up.status, StatusCode::SWITCHING_PROTOCOLS, "{}", up.body);
        let d = described_and_echoed(up.io.expect("upgraded")).await;
        assert_eq!(d["pathAndQuery"], "/attach/default/multi/b?error=1&output=1");

        // Port-forward over plain SPDY, with repeated X-Stream-Protocol-Version headers.
        let spdy = [
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "portforward.k8s.io"),
            ("x-stream-protocol-version", "v2.portforward.k8s.io"),
        ];
        let path = "/api/v1/namespaces/default/pods/web/portforward?ports=8080";
        let up = upgrade_through(&c, "POST", path, &spdy).await;
        assert_eq!(up.status, StatusCode::SWITCHING_PROTOCOLS, "{}", up.body);
        assert_eq!(up.headers["upgrade"], "SPDY/3.1");
        assert_eq!(up.headers["x-stream-protocol-version"], "portforward.k8s.io");
        let d = described_and_echoed(up.io.expect("upgraded")).await;
        assert_eq!(d["pathAndQuery"], "/portForward/default/web?port=8080");
        assert_eq!(
            d["streamProtocols"],
            serde_json::json!(["portforward.k8s.io", "v2.portforward.k8s.io"])
        );

        // Without an upgrade there is nothing to proxy.
        let up = upgrade_through(&c, "GET", "/api/v1/namespaces/default/pods/web/exec?command=ls", &[]).await;
        assert_eq!(up.status, StatusCode::BAD_REQUEST);
        assert!(up.body.contains("Upgrade request required"), "{}", up.body);
    });
    // The agent saw each upgrade with its method, and never the request that was no upgrade.
    let methods: Vec<String> = agent.seen().into_iter().map(|s| s.method).collect();
    assert_eq!(methods, ["GET", "POST", "POST"]);
    assert_eq!(agent.refused_peers(), 0);
}

#[test]
fn kubectl_exec_runs_through_the_api_server() {
    let (c, agent) = cluster_with_agent();
    let out = c.kubectl(&["exec", "shell", "--", "echo", "hello", "from the agent"]);
    assert_eq!(out, "hello from the agent\n");
    assert_eq!(
        agent.last(),
        "/exec/default/shell/sh?command=echo&command=hello&command=from+the+agent&error=1&output=1"
    );
}

#[test]
fn streaming_errors_read_like_upstream() {
    let (c, agent) = cluster_with_agent();
    c.apply(&node("node-dead", "InternalIP", "127.0.0.1", free_port()));
    // Reached by a name its serving certificate does not carry.
    c.apply(&node("node-misnamed", "Hostname", "localhost", agent.port));
    c.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: pending}
spec:
  schedulerName: not-scheduled-here
  containers: [{name: app, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: ghost}
spec:
  nodeName: ghost
  containers: [{name: app, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: dead}
spec:
  nodeName: node-dead
  containers: [{name: app, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: misnamed}
spec:
  nodeName: node-misnamed
  containers: [{name: app, image: busybox}]
"#,
    );
    let cases: [(&[&str], &str); 6] = [
        (
            &["logs", "pending"],
            "Error from server (BadRequest): pod pending does not have a host assigned",
        ),
        // kubectl checks this one itself, in the server's words (below, the server's answer).
        (
            &["logs", "web", "-c", "nope"],
            "container nope is not valid for pod web",
        ),
        (
            &["logs", "ghost"],
            "Error from server (NotFound): nodes \"ghost\" not found",
        ),
        (&["logs", "nobody"], "(NotFound): pods \"nobody\" not found"),
        (
            &["logs", "dead"],
            "error dialing backend: dial tcp 127.0.0.1:",
        ),
        (
            &["logs", "misnamed"],
            "error dialing backend: TLS handshake with localhost:",
        ),
    ];
    for (args, message) in cases {
        let err = stderr_of(&c, args);
        assert!(
            err.contains(message),
            "kubectl {args:?}: {message:?} not in {err}"
        );
    }
    let r = c.curl(
        "GET",
        "/api/v1/namespaces/default/pods/web/log?tailLines=-1",
        "",
        None,
        true,
    );
    assert_eq!(r.code, 422, "{}", r.body);
    assert!(
        r.body.contains("tailLines: Invalid value: -1"),
        "{}",
        r.body
    );
    let r = c.curl(
        "DELETE",
        "/api/v1/namespaces/default/pods/web/log",
        "",
        None,
        true,
    );
    assert_eq!(r.code, 405, "{}", r.body);
    let r = c.curl(
        "GET",
        "/api/v1/namespaces/default/pods/web/log",
        "",
        None,
        false,
    );
    assert_eq!(r.code, 401, "{}", r.body);

    // Discovery lists the streaming subresources (kubectl checks for them).
    let resources = c.kubectl(&["get", "--raw", "/api/v1"]);
    let v: serde_json::Value = serde_json::from_str(&resources).expect("json");
    let names: Vec<&str> = v["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for sub in ["pods/log", "pods/exec", "pods/attach", "pods/portforward"] {
        assert!(names.contains(&sub), "{sub} not in {names:?}");
    }
}
