//! End to end: the join token, `POST /corten/v1/node-credentials` (what a node agent calls to
//! join), client-certificate authentication with kubectl, and the API server's own client
//! certificate for agents.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use common::Cluster;
use common::nodes::csr;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use serde_json::json;
use x509_parser::prelude::{FromDer, X509Certificate};

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM")
}

fn roots(ca_pem: &str) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(der(ca_pem)).expect("CA");
    Arc::new(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks that `pem` chains to the CA as a client certificate (client-auth EKU).
fn verify_client(ca_pem: &str, pem: &str) -> Result<(), rustls::Error> {
    WebPkiClientVerifier::builder_with_provider(roots(ca_pem), provider())
        .build()
        .expect("client verifier")
        .verify_client_cert(&der(pem), &[], UnixTime::now())
        .map(|_| ())
}

/// Checks that `pem` chains to the CA as a serving certificate for `name` (server-auth EKU).
fn verify_server(ca_pem: &str, pem: &str, name: &str) -> Result<(), rustls::Error> {
    WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider())
        .build()
        .expect("server verifier")
        .verify_server_cert(
            &der(pem),
            &[],
            &ServerName::try_from(name.to_string()).expect("server name"),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

/// The subject's CN and O values.
fn subject(pem: &str) -> (String, Vec<String>) {
    let der = der(pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("x509");
    let s = cert.subject();
    let cn = s
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let o = s
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    (cn, o)
}

#[test]
fn join_token_is_written_once_and_pins_the_ca() {
    let mut c = Cluster::start();
    let path = c.data_dir().join("token");
    let mode = std::fs::metadata(&path)
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "token file mode");
    let token = c.join_token();
    let ca = c.ca_pem();
    let digest = ring::digest::digest(&ring::digest::SHA256, ca.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert!(token.starts_with(&format!("K10{hex}::node:")), "{token}");
    // The CA is open at /cacerts, so that a joining agent can check it against the token.
    let cacerts = c.curl("GET", "/cacerts", "text/plain", None, false);
    assert_eq!((cacerts.code, cacerts.body.trim()), (200, ca.trim()));
    c.restart();
    assert_eq!(c.join_token(), token, "the join token survives a restart");
}

#[test]
fn node_credentials_need_a_valid_token() {
    let c = Cluster::start();
    let (_, client_csr) = csr(&[]);
    let (_, serving_csr) = csr(&["127.0.0.1"]);
    let body = json!({"nodeName": "node-1", "csr": client_csr, "servingCsr": serving_csr});
    for token in [None, Some("K10deadbeef::node:wrong"), Some("")] {
        let r = c.request_node_credentials(token, &body);
        assert_eq!(r.code, 401, "{token:?}: {}", r.body);
        assert_eq!(
            (r.json()["kind"].as_str(), r.json()["reason"].as_str()),
            (Some("Status"), Some("Unauthorized"))
        );
    }
    // The admin token is accepted too.
    let r = c.request_node_credentials(Some(&c.token()), &body);
    assert_eq!(r.code, 200, "{}", r.body);
}

#[test]
fn node_credentials_chain_to_the_ca_and_authenticate_kubectl() {
    let c = Cluster::start_with(&["--log", "info,apiserver=debug"]);
    let creds = c.node_credentials("node-1", &["127.0.0.1", "192.168.77.1"]);
    let ca = c.ca_pem();
    assert_eq!(creds.ca_pem, ca);

    // The client certificate: system:node:node-1 in system:nodes, for client auth only.
    assert_eq!(
        subject(&creds.client_cert_pem),
        (
            "system:node:node-1".to_string(),
            vec!["system:nodes".to_string()]
        )
    );
    verify_client(&ca, &creds.client_cert_pem).expect("client certificate chains to the CA");
    assert!(verify_server(&ca, &creds.client_cert_pem, "node-1").is_err());

    // The serving certificate: the node's name and addresses, for server auth.
    for name in ["node-1", "127.0.0.1", "192.168.77.1"] {
        verify_server(&ca, &creds.serving_cert_pem, name)
            .unwrap_or_else(|e| panic!("serving certificate for {name}: {e}"));
    }
    assert!(verify_server(&ca, &creds.serving_cert_pem, "10.9.9.9").is_err());
    assert!(verify_client(&ca, &creds.serving_cert_pem).is_err());

    // kubectl with the node's certificate is served, as system:node:node-1.
    let kubeconfig = c.node_kubeconfig(&creds);
    let out = c
        .kubectl_cmd(&["get", "nodes"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl get nodes with the node certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = c.log();
    assert!(
        log.lines().any(|l| l.contains("user=system:node:node-1")
            && l.contains("system:nodes")
            && l.contains("/api/v1/nodes")),
        "the server did not see system:node:node-1:\n{log}"
    );
    // The admin token still works and is the admin user.
    c.kubectl(&["get", "namespaces"]);
    assert!(c.log().contains("user=admin"));
}

#[test]
fn node_credentials_reject_bad_requests_with_400() {
    let c = Cluster::start();
    let token = c.join_token();
    let (_, good) = csr(&["127.0.0.1"]);
    let cases = [
        (
            json!({"nodeName": "node-1", "csr": "garbage", "servingCsr": good}),
            "csr is not a valid PEM-encoded PKCS#10 certificate signing request",
        ),
        (
            json!({"nodeName": "node-1", "csr": good, "servingCsr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}),
            "servingCsr is not a valid",
        ),
        (
            json!({"nodeName": "Node_1", "csr": good, "servingCsr": good}),
            "invalid nodeName \"Node_1\"",
        ),
        (
            json!({"csr": good, "servingCsr": good}),
            "nodeName is required",
        ),
        (
            json!({"nodeName": "node-1", "csr": good}),
            "servingCsr is required",
        ),
        (
            json!({"nodeName": "node-1", "csr": good, "servingCsr": csr(&["10.43.0.1"]).1}),
            "reserved for the API server",
        ),
    ];
    for (body, message) in cases {
        let r = c.request_node_credentials(Some(&token), &body);
        assert_eq!(r.code, 400, "{body}: {}", r.body);
        let status = r.json();
        assert_eq!(status["reason"], "BadRequest", "{}", r.body);
        assert!(
            status["message"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "{message:?} not in {}",
            r.body
        );
    }
    let r = c.curl_with_token(
        "POST",
        "/corten/v1/node-credentials",
        "application/json",
        Some(b"{not json"),
        Some(&token),
    );
    assert_eq!(r.code, 400, "{}", r.body);
    let r = c.curl_with_token(
        "GET",
        "/corten/v1/node-credentials",
        "application/json",
        None,
        Some(&token),
    );
    assert_eq!(r.code, 405, "{}", r.body);
}

#[test]
fn the_api_server_has_a_kubelet_client_certificate() {
    let c = Cluster::start();
    let tls = c.data_dir().join("tls");
    let cert = std::fs::read_to_string(tls.join("apiserver-kubelet-client.crt")).expect("cert");
    assert!(tls.join("apiserver-kubelet-client.key").exists());
    assert_eq!(
        subject(&cert),
        (
            "kube-apiserver-kubelet-client".to_string(),
            vec!["system:masters".to_string()]
        )
    );
    verify_client(&c.ca_pem(), &cert).expect("chains to the CA");
}

#[test]
fn a_node_renews_with_its_own_certificate_only() {
    let c = Cluster::start();
    let creds = c.node_credentials("node-1", &["127.0.0.1"]);
    let dir = c.data_dir();
    std::fs::write(dir.join("n1.crt"), &creds.client_cert_pem).expect("write");
    std::fs::write(dir.join("n1.key"), &creds.client_key_pem).expect("write");
    let renew = |node: &str| {
        let (_, a) = csr(&[]);
        let (_, b) = csr(&["127.0.0.1"]);
        let body = json!({"nodeName": node, "csr": a, "servingCsr": b}).to_string();
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
            .arg(dir.join("tls/ca.crt"))
            .arg("--cert")
            .arg(dir.join("n1.crt"))
            .arg("--key")
            .arg(dir.join("n1.key"))
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &body,
            ])
            .arg(format!("{}/corten/v1/node-credentials", c.url()))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse::<u16>().unwrap_or(0), body.to_string())
    };
    let (code, body) = renew("node-1");
    assert_eq!(code, 200, "{body}");
    let (code, body) = renew("node-2");
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("cannot request credentials for node"),
        "{body}"
    );
}
