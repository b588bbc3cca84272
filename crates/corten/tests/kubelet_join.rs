//! A second node joins with the join token, from a second "host": a network namespace linked
//! to this one by a veth pair on a private /30. `corten agent` runs inside it (through
//! `nsenter --net`: `ip netns exec` would also remount /sys, hiding the cgroup mounts runc
//! needs), obtains its certificates from the server, registers Node `second`, runs a pod pinned
//! to it, and serves `kubectl logs` / `exec` through the API server. Wrong tokens are refused.
//! The namespace, the veth pair, the agent and its containers are removed even when the test
//! fails (Drop guards, dropped in reverse order of creation). Also: the agent's credentials on
//! disk, and its endpoint serving only the API server.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Cluster;
use common::hosts::{Agent, Host};
use common::pods::{BUSYBOX, wait_for};

/// Runs `corten agent` in `host` with `token` and returns its output (it must exit by itself).
fn refused_agent(host: &Host, c: &Cluster, dir: &Path, token: &str) -> Output {
    host.command("timeout")
        .args(["60", env!("CARGO_BIN_EXE_corten"), "agent", "--server"])
        .arg(format!("https://{}:{}", host.host_ip, c.port))
        .args([
            "--token",
            token,
            "--node-name",
            "intruder",
            "--node-ip",
            &host.ns_ip,
        ])
        .arg("--data-dir")
        .arg(dir)
        .env("CORTEN_LOG", "warn")
        .output()
        .expect("corten agent")
}

fn node_field(c: &Cluster, node: &str, path: &str) -> String {
    let out = c.try_kubectl(&["get", "node", node, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_second_node_joins_with_the_token_and_serves_logs_and_exec() {
    // The host side exists before the server starts, so that its certificate names it.
    let host = Host::create();
    let c = Cluster::start_with_agent(&["--bind-address", "0.0.0.0"]);
    let token = c.join_token();
    let server = format!("https://{}:{}", host.host_ip, c.port);
    let dirs = tempfile::tempdir().expect("tempdir");

    // Wrong tokens are refused before anything is stored.
    let (pinned, _) = token.split_once("::").expect("K10 token");
    let bad_dir = dirs.path().join("intruder");
    let out = refused_agent(
        &host,
        &c,
        &bad_dir,
        &format!("{pinned}::node:not-the-secret"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("the server refused the join token"), "{err}");
    let out = refused_agent(
        &host,
        &c,
        &bad_dir,
        &format!("K10{}::node:x", "0".repeat(64)),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("refusing to join"), "{err}");
    assert!(!bad_dir.join("agent/client-kubelet.crt").exists());
    assert!(!c.try_kubectl(&["get", "node", "intruder"]).status.success());

    // The second node joins (token from a file, as an operator would pass it).
    let token_file = dirs.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");
    let data_dir = dirs.path().join("second");
    let mut agent = Agent::start(
        &host,
        &data_dir,
        &[
            "--server".into(),
            server,
            "--token-file".into(),
            token_file.display().to_string(),
            "--node-name".into(),
            "second".into(),
            "--node-ip".into(),
            host.ns_ip.clone(),
        ],
    );
    wait_for("node second Ready", 90, || {
        node_field(
            &c,
            "second",
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
            || agent
                .child
                .as_mut()
                .is_some_and(|ch| ch.try_wait().ok().flatten().is_some())
    });
    assert_eq!(
        node_field(
            &c,
            "second",
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "True",
        "agent log: {}",
        agent.log()
    );
    assert_eq!(
        node_field(
            &c,
            "second",
            "{.status.addresses[?(@.type==\"InternalIP\")].address}"
        ),
        host.ns_ip
    );
    assert_eq!(
        node_field(
            &c,
            "second",
            "{.status.daemonEndpoints.kubeletEndpoint.Port}"
        ),
        "10250"
    );

    // A pod pinned to it runs there.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: remote}}
spec:
  nodeSelector: {{kubernetes.io/hostname: second}}
  containers:
  - name: c
    image: {BUSYBOX}
    command: ["sh", "-c", "echo hello from $(hostname); exec sleep 3600"]
"#
    ));
    let pod = |path: &str| {
        let out = c.try_kubectl(&["get", "pod", "remote", "-o", &format!("jsonpath={path}")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for("pod remote Running", 90, || {
        pod("{.status.phase}") == "Running"
    });
    assert_eq!(pod("{.spec.nodeName}"), "second");
    let cidr = node_field(&c, "second", "{.spec.podCIDR}");
    let prefix = cidr.rsplit_once('.').map(|(p, _)| p).unwrap_or("?");
    assert!(pod("{.status.podIP}").starts_with(prefix), "{cidr}");

    // logs and exec go through the API server to the second agent.
    wait_for("the remote pod's log", 20, || {
        c.try_kubectl(&["logs", "remote"]).stdout == b"hello from remote\n"
    });
    let out = c.try_kubectl(&[
        "exec",
        "remote",
        "--",
        "sh",
        "-c",
        "cat /etc/hostname; exit 7",
    ]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "remote\n");
    let out = c.kubectl_stdin(
        &["exec", "-i", "remote", "--", "tr", "a-z", "A-Z"],
        "piped\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED\n");

    // A restarted agent reuses its certificates; its pod keeps running and is reachable.
    let cert = std::fs::read(data_dir.join("agent/client-kubelet.crt")).expect("cert");
    agent.stop();
    agent.spawn();
    wait_for("the agent's endpoint again", 60, || {
        c.try_kubectl(&["exec", "remote", "--", "true"])
            .status
            .success()
    });
    assert!(
        agent.log().contains("reusing the node's certificates"),
        "{}",
        agent.log()
    );
    assert_eq!(
        std::fs::read(data_dir.join("agent/client-kubelet.crt")).expect("cert"),
        cert
    );
    assert_eq!(pod("{.status.containerStatuses[0].restartCount}"), "0");
    assert_eq!(
        String::from_utf8_lossy(&c.try_kubectl(&["logs", "remote"]).stdout),
        "hello from remote\n"
    );
}

/// The agent's endpoint serves only the API server's kubelet-client certificate.
#[test]
fn the_agent_endpoint_serves_only_the_api_server() {
    let c = Cluster::start_with_agent(&[]);
    let ip = String::from_utf8_lossy(
        &c.try_kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
        ])
        .stdout,
    )
    .into_owned();
    let port = String::from_utf8_lossy(
        &c.try_kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.daemonEndpoints.kubeletEndpoint.Port}",
        ])
        .stdout,
    )
    .into_owned();
    assert_eq!(port, c.agent_port.to_string());
    let url = format!("https://{ip}:{port}/containerLogs/kube-system/x/y");
    let tls = c.data_dir().join("tls");
    let agent = c.data_dir().join("agent");
    let curl = |extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "-m", "10", "-o", "-", "-w", "\n%{http_code}"])
            .args(["--cacert", tls.join("ca.crt").to_str().unwrap()])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // No certificate: 401.
    let (_, out) = curl(&[]);
    assert!(
        out.ends_with("\n401") && out.contains("Unauthorized"),
        "{out}"
    );
    // The node's own client certificate: 403.
    let node_cert = agent.join("client-kubelet.crt");
    let node_key = agent.join("client-kubelet.key");
    let (_, out) = curl(&[
        "--cert",
        node_cert.to_str().unwrap(),
        "--key",
        node_key.to_str().unwrap(),
    ]);
    assert!(
        out.ends_with("\n403") && out.contains("system:node:"),
        "{out}"
    );
    // A certificate of another CA with the right name: the handshake fails.
    let foreign = dir_with_foreign_client_cert();
    let (code, out) = curl(&[
        "--cert",
        foreign.path().join("c.crt").to_str().unwrap(),
        "--key",
        foreign.path().join("c.key").to_str().unwrap(),
    ]);
    assert!(code != 0 && !out.contains("\n200"), "{code} {out}");
    // The API server's certificate: served (the pod does not exist here).
    let (_, out) = curl(&[
        "--cert",
        tls.join("apiserver-kubelet-client.crt").to_str().unwrap(),
        "--key",
        tls.join("apiserver-kubelet-client.key").to_str().unwrap(),
    ]);
    assert!(
        out.ends_with("\n404") && out.contains(r#"pod \"x\" does not exist"#),
        "{out}"
    );

    // The agent's credentials: private files, reused across a restart.
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "client-kubelet.key",
        "client-kubelet.crt",
        "serving-kubelet.key",
        "serving-kubelet.crt",
        "server-ca.crt",
        "kubeconfig.yaml",
    ] {
        let mode = std::fs::metadata(agent.join(f))
            .expect(f)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let before = std::fs::read(&node_cert).expect("cert");
    let mut c = c;
    c.restart();
    c.wait_node_ready();
    assert_eq!(std::fs::read(&node_cert).expect("cert"), before);
    assert!(
        c.log().contains("reusing the node's certificates"),
        "{}",
        c.log()
    );
}

/// A directory with a client certificate named `kube-apiserver-kubelet-client` from a CA the
/// cluster does not know.
fn dir_with_foreign_client_cert() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("sign");
    std::fs::write(dir.path().join("c.crt"), cert.pem()).expect("crt");
    std::fs::write(dir.path().join("c.key"), key.serialize_pem()).expect("key");
    dir
}
