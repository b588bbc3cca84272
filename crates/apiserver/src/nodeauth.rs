//! Node credentials: `POST /corten/v1/node-credentials`, where a node agent trades the join
//! token (or the admin token) and two PKCS#10 CSRs for certificates signed by the cluster CA:
//! - a client certificate for the API server, CN `system:node:<nodeName>`, O `system:nodes`
//!   (upstream's node identity), client-auth EKU;
//! - a serving certificate for the agent's HTTPS endpoint (kubelet's port 10250): SANs the
//!   node name plus the DNS names and IP addresses the CSR asks for, server-auth EKU.
//!
//! Both are valid for a year. Only the CSRs' public keys and SANs are used; subjects, usages
//! and validity are the server's. A node that already holds its client certificate may renew
//! with it instead of a token (for its own name only).
//!
//! Request: `{"nodeName": "...", "csr": "<PEM>", "servingCsr": "<PEM>"}`; response:
//! `{"clientCertificate": PEM, "servingCertificate": PEM, "caCertificate": PEM}`. A bad token
//! is a 401, a malformed request a 400, both as `Status`.

use std::net::IpAddr;

use api::ApiError;
use api::resources::validation::is_dns1123_subdomain;
use http::HeaderMap;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};

use crate::alloc::KUBERNETES_SERVICE_IP;
use crate::auth::{self, ClientCertUser};
use crate::pki::Pki;
use crate::state::ApiState;

/// The endpoint's path.
pub const PATH: &str = "/corten/v1/node-credentials";

/// Node users are `system:node:<nodeName>`.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The group of every node.
pub const NODES_GROUP: &str = "system:nodes";

/// How long issued certificates are valid.
const VALIDITY: time::Duration = time::Duration::days(365);

/// At most this many SANs in a serving CSR.
const MAX_SANS: usize = 64;

/// DNS names that belong to the API server and that no node may claim.
const RESERVED_NAMES: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// The request body.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRequest {
    /// The Node's name.
    #[serde(default)]
    pub node_name: String,
    /// PEM PKCS#10 CSR for the client certificate.
    #[serde(default)]
    pub csr: String,
    /// PEM PKCS#10 CSR for the serving certificate.
    #[serde(default)]
    pub serving_csr: String,
}

/// The response body.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// PEM client certificate (`system:node:<nodeName>`).
    pub client_certificate: String,
    /// PEM serving certificate.
    pub serving_certificate: String,
    /// PEM of the cluster CA (trust it for the API server; it also signs the API server's
    /// client certificate that the agent must accept).
    pub ca_certificate: String,
}

/// Signs node credentials with the cluster CA; holds the join token.
pub struct NodeSigner {
    join_token: String,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl NodeSigner {
    /// A signer over the cluster's PKI.
    pub fn new(pki: &Pki) -> anyhow::Result<Self> {
        Ok(Self {
            join_token: pki.join_token.clone(),
            ca_pem: pki.ca_pem.clone(),
            issuer: pki.issuer()?,
        })
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Validates the request and issues both certificates.
    pub fn issue(&self, req: &CredentialRequest) -> Result<Credentials, ApiError> {
        validate_node_name(&req.node_name)?;
        let client_csr = parse_csr("csr", &req.csr)?;
        let serving_csr = parse_csr("servingCsr", &req.serving_csr)?;

        let mut client = leaf_params(&req.node_name);
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_certificate = self.sign(client, client_csr)?;

        let mut serving = leaf_params(&req.node_name);
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving.subject_alt_names =
            serving_sans(&req.node_name, &serving_csr.params.subject_alt_names)?;
        let serving_certificate = self.sign(serving, serving_csr)?;

        Ok(Credentials {
            client_certificate,
            serving_certificate,
            ca_certificate: self.ca_pem.clone(),
        })
    }

    fn sign(
        &self,
        params: CertificateParams,
        csr: CertificateSigningRequestParams,
    ) -> Result<String, ApiError> {
        let csr = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        csr.signed_by(&self.issuer)
            .map(|c| c.pem())
            .map_err(|e| ApiError::internal(format!("cannot sign the certificate: {e}")))
    }
}

/// Handles the endpoint: authorizes, decodes the body and issues the credentials.
pub fn serve(
    state: &ApiState,
    headers: &HeaderMap,
    cert_user: Option<&ClientCertUser>,
    body: &[u8],
) -> Result<Credentials, ApiError> {
    let signer = state.node_signer.as_ref().ok_or_else(|| {
        ApiError::new(503, "ServiceUnavailable", "node credentials are not served")
    })?;
    let token_ok = auth::bearer_token(headers).is_some_and(|t| {
        auth::secret_matches(t, &signer.join_token) || auth::secret_matches(t, &state.admin_token)
    });
    if !token_ok && cert_user.is_none() {
        return Err(ApiError::unauthorized());
    }
    let req: CredentialRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("invalid node credentials request body: {e}"))
    })?;
    if !token_ok && let Some(ClientCertUser(user)) = cert_user {
        // Renewal: a node may ask for its own credentials only.
        if user.name != format!("{NODE_USER_PREFIX}{}", req.node_name) {
            return Err(ApiError::forbidden(format!(
                "user \"{}\" cannot request credentials for node \"{}\"",
                user.name, req.node_name
            )));
        }
    }
    let creds = signer.issue(&req)?;
    tracing::info!(node = %req.node_name, "issued node credentials");
    Ok(creds)
}

fn validate_node_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request("nodeName is required"));
    }
    if !is_dns1123_subdomain(name) {
        return Err(ApiError::bad_request(format!(
            "invalid nodeName {name:?}: a lowercase RFC 1123 subdomain must consist of lower case \
             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
             character (at most 253 characters)"
        )));
    }
    Ok(())
}

fn parse_csr(field: &str, pem: &str) -> Result<CertificateSigningRequestParams, ApiError> {
    if pem.trim().is_empty() {
        return Err(ApiError::bad_request(format!(
            "{field} is required: a PEM-encoded PKCS#10 certificate signing request"
        )));
    }
    CertificateSigningRequestParams::from_pem(pem).map_err(|e| {
        ApiError::bad_request(format!(
            "{field} is not a valid PEM-encoded PKCS#10 certificate signing request: {e}"
        ))
    })
}

/// Subject, validity, serial and key usages shared by both certificates.
fn leaf_params(node: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, NODES_GROUP);
    dn.push(DnType::CommonName, format!("{NODE_USER_PREFIX}{node}"));
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that lag the server's.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + VALIDITY;
    let mut serial = [0u8; 16];
    rand::fill(&mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x01; // positive and of full length
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    params
}

/// The serving certificate's SANs: the node name, then the CSR's DNS names and IP addresses,
/// each checked (no names or addresses of the API server, no wildcards, no unroutable IPs).
fn serving_sans(node: &str, requested: &[SanType]) -> Result<Vec<SanType>, ApiError> {
    if requested.len() > MAX_SANS {
        return Err(ApiError::bad_request(format!(
            "servingCsr asks for {} subject alternative names; at most {MAX_SANS} are allowed",
            requested.len()
        )));
    }
    let dns = |name: &str| {
        name.to_string()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|_| {
                ApiError::bad_request(format!("servingCsr: {name:?} is not a valid DNS name"))
            })
    };
    let mut out = vec![dns(node)?];
    for san in requested {
        match san {
            SanType::DnsName(name) => {
                let name = name.as_str();
                if !is_dns1123_subdomain(name) {
                    return Err(ApiError::bad_request(format!(
                        "servingCsr: DNS name {name:?} is not a lowercase RFC 1123 subdomain"
                    )));
                }
                if RESERVED_NAMES.contains(&name) {
                    return Err(ApiError::bad_request(format!(
                        "servingCsr: DNS name {name:?} is reserved for the API server"
                    )));
                }
                out.push(dns(name)?);
            }
            SanType::IpAddress(ip) => {
                check_ip(*ip)?;
                out.push(SanType::IpAddress(*ip));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "servingCsr: only DNS names and IP addresses may be requested, not {other:?}"
                )));
            }
        }
    }
    let mut seen = Vec::with_capacity(out.len());
    out.retain(|s| {
        let new = !seen.contains(s);
        seen.push(s.clone());
        new
    });
    Ok(out)
}

fn check_ip(ip: IpAddr) -> Result<(), ApiError> {
    let why = match ip {
        _ if ip.is_unspecified() => Some("is unspecified"),
        _ if ip.is_multicast() => Some("is a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("is the broadcast address"),
        IpAddr::V4(v4) if v4 == KUBERNETES_SERVICE_IP => {
            Some("is the kubernetes service address, reserved for the API server")
        }
        _ => None,
    };
    match why {
        Some(why) => Err(ApiError::bad_request(format!(
            "servingCsr: IP address {ip} {why}"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn signer() -> (tempfile::TempDir, NodeSigner) {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), "10.43.0.1".parse().unwrap()).unwrap();
        let signer = NodeSigner::new(&pki).unwrap();
        (dir, signer)
    }

    fn csr(sans: Vec<SanType>) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn request(node: &str, serving: Vec<SanType>) -> CredentialRequest {
        CredentialRequest {
            node_name: node.into(),
            csr: csr(vec![]),
            serving_csr: csr(serving),
        }
    }

    fn parsed(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn issues_node_client_and_serving_certificates() {
        let (_dir, signer) = signer();
        let ip: IpAddr = "192.168.1.7".parse().unwrap();
        let creds = signer
            .issue(&request("worker-1", vec![SanType::IpAddress(ip)]))
            .unwrap();
        let client = parsed(&creds.client_certificate);
        let user = auth::user_from_certificate(&client).unwrap();
        assert_eq!(user.name, "system:node:worker-1");
        assert_eq!(user.groups[0], NODES_GROUP);
        let (_, cert) = X509Certificate::from_der(&client).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 365);

        let serving = parsed(&creds.serving_certificate);
        let (_, cert) = X509Certificate::from_der(&serving).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let sans = format!(
            "{:?}",
            cert.subject_alternative_name().unwrap().unwrap().value
        );
        assert!(
            sans.contains("DNSName(\"worker-1\")") && sans.contains("IPAddress([192, 168, 1, 7])"),
            "{sans}"
        );
        assert_eq!(creds.ca_certificate, signer.ca_pem());
    }

    #[test]
    fn rejects_bad_input_with_clear_messages() {
        let (_dir, signer) = signer();
        let mut req = request("Bad_Name", vec![]);
        let e = signer.issue(&req).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message.contains("invalid nodeName \"Bad_Name\""),
            "{}",
            e.message
        );
        req.node_name = "w".into();
        req.csr = "not a csr".into();
        let e = signer.issue(&req).unwrap_err();
        assert!(
            e.message.starts_with("csr is not a valid PEM"),
            "{}",
            e.message
        );
        req.csr = String::new();
        assert!(
            signer
                .issue(&req)
                .unwrap_err()
                .message
                .contains("csr is required")
        );

        for (san, why) in [
            (
                SanType::DnsName("kubernetes.default".try_into().unwrap()),
                "reserved",
            ),
            (SanType::DnsName("*.evil".try_into().unwrap()), "RFC 1123"),
            (
                SanType::IpAddress("0.0.0.0".parse().unwrap()),
                "unspecified",
            ),
            (
                SanType::IpAddress("10.43.0.1".parse().unwrap()),
                "kubernetes service",
            ),
            (
                SanType::Rfc822Name("a@b.c".try_into().unwrap()),
                "only DNS names",
            ),
        ] {
            let e = signer.issue(&request("w", vec![san])).unwrap_err();
            assert_eq!(e.code, 400);
            assert!(e.message.contains(why), "{}", e.message);
        }
    }
}
