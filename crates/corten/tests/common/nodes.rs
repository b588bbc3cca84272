//! Node credentials for tests, obtained the way a node agent obtains them: CSRs made with rcgen,
//! traded for certificates at `POST /corten/v1/node-credentials` with the join token; and a
//! kubeconfig that authenticates with the node's client certificate.

use std::path::PathBuf;

use base64::Engine;
use rcgen::{CertificateParams, KeyPair, SanType};

use super::{Cluster, Http};

/// What an agent holds after joining.
pub struct NodeCredentials {
    /// The node's name.
    pub node: String,
    /// PEM client certificate (`system:node:<node>`).
    pub client_cert_pem: String,
    /// PEM key of the client certificate.
    pub client_key_pem: String,
    /// PEM serving certificate.
    pub serving_cert_pem: String,
    /// PEM key of the serving certificate.
    pub serving_key_pem: String,
    /// PEM of the cluster CA.
    pub ca_pem: String,
}

/// A key and a PEM CSR for it, asking for `ips` as SANs.
pub fn csr(ips: &[&str]) -> (KeyPair, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = ips
        .iter()
        .map(|ip| SanType::IpAddress(ip.parse().expect("ip")))
        .collect();
    let pem = params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("csr pem");
    (key, pem)
}

impl Cluster {
    /// The join token (`DATA_DIR/token`).
    pub fn join_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("token"))
            .expect("join token")
            .trim()
            .to_string()
    }

    /// The cluster CA (PEM).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("tls/ca.crt")).expect("ca.crt")
    }

    /// POSTs a node-credentials request body with `token` as the bearer token.
    pub fn request_node_credentials(&self, token: Option<&str>, body: &serde_json::Value) -> Http {
        let bytes = serde_json::to_vec(body).expect("json");
        self.curl_with_token(
            "POST",
            "/corten/v1/node-credentials",
            "application/json",
            Some(&bytes),
            token,
        )
    }

    /// Joins as `node` with the join token, asking for `ips` in the serving certificate.
    pub fn node_credentials(&self, node: &str, ips: &[&str]) -> NodeCredentials {
        let (client_key, client_csr) = csr(&[]);
        let (serving_key, serving_csr) = csr(ips);
        let body =
            serde_json::json!({"nodeName": node, "csr": client_csr, "servingCsr": serving_csr});
        let resp = self.request_node_credentials(Some(&self.join_token()), &body);
        assert_eq!(resp.code, 200, "node-credentials: {}", resp.body);
        let v = resp.json();
        let field = |k: &str| v[k].as_str().expect(k).to_string();
        NodeCredentials {
            node: node.to_string(),
            client_cert_pem: field("clientCertificate"),
            client_key_pem: client_key.serialize_pem(),
            serving_cert_pem: field("servingCertificate"),
            serving_key_pem: serving_key.serialize_pem(),
            ca_pem: field("caCertificate"),
        }
    }

    /// Writes a kubeconfig that authenticates with the node's client certificate.
    pub fn node_kubeconfig(&self, creds: &NodeCredentials) -> PathBuf {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: corten\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: node\n  context:\n    cluster: corten\n    user: node\ncurrent-context: node\nusers:\n- name: node\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            self.url(),
            b64(&creds.ca_pem),
            b64(&creds.client_cert_pem),
            b64(&creds.client_key_pem),
        );
        let path = self
            .data_dir()
            .join(format!("kubeconfig-node-{}.yaml", creds.node));
        std::fs::write(&path, config).expect("write node kubeconfig");
        path
    }
}
