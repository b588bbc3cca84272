//! TLS for the HTTPS listener: certificates from the `kubernetes.io/tls` Secrets that the
//! Ingresses' `spec.tls` entries name, chosen by SNI, swapped whenever a Secret or Ingress
//! changes (the resolver reads the current set on every handshake). A handshake for a name no
//! Ingress covers gets a self-signed default certificate, as ingress-nginx's "fake
//! certificate".

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificates to serve, by host name.
#[derive(Debug, Default)]
pub struct Certs {
    by_host: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` as `.example.com`.
    wildcards: Vec<(String, Arc<CertifiedKey>)>,
    /// From a `spec.tls` entry without hosts (the oldest), for names nothing else covers.
    fallback: Option<Arc<CertifiedKey>>,
}

impl Certs {
    /// The certificate for SNI name `host` (lowercase), if an Ingress names one.
    pub fn get(&self, host: &str) -> Option<&Arc<CertifiedKey>> {
        self.by_host
            .get(host)
            .or_else(|| {
                let suffix = &host[host.find('.')?..];
                self.wildcards
                    .iter()
                    .find(|(s, _)| s == suffix)
                    .map(|(_, c)| c)
            })
            .or(self.fallback.as_ref())
    }

    /// How many host names have a certificate.
    pub fn len(&self) -> usize {
        self.by_host.len() + self.wildcards.len()
    }

    /// Whether no host name has a certificate.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.fallback.is_none()
    }
}

/// Builds the certificate set from `ingresses` (of the class, oldest first) and the TLS
/// Secrets. A Secret that is missing or does not parse is logged (once per build) and skipped.
pub fn build<'a>(ingresses: &[&Ingress], secrets: impl IntoIterator<Item = &'a Secret>) -> Certs {
    let secrets: HashMap<(String, String), &Secret> = secrets
        .into_iter()
        .map(|s| ((s.namespace().unwrap_or_default(), s.name_any()), s))
        .collect();
    let mut parsed: HashMap<(String, String), Option<Arc<CertifiedKey>>> = HashMap::new();
    let mut certs = Certs::default();
    for ingress in ingresses {
        let ns = ingress.namespace().unwrap_or_default();
        for tls in ingress.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
            let Some(secret_name) = &tls.secret_name else {
                continue;
            };
            let key = (ns.clone(), secret_name.clone());
            let cert = parsed
                .entry(key.clone())
                .or_insert_with(|| match secrets.get(&key) {
                    None => {
                        tracing::warn!(ingress = %ingress.name_any(), secret = %format!("{ns}/{secret_name}"), "ingress TLS secret not found");
                        None
                    }
                    Some(s) => match certified_key(s) {
                        Ok(c) => Some(Arc::new(c)),
                        Err(e) => {
                            tracing::warn!(secret = %format!("{ns}/{secret_name}"), "ingress TLS secret unusable: {e:#}");
                            None
                        }
                    },
                })
                .clone();
            let Some(cert) = cert else { continue };
            let hosts = tls.hosts.clone().unwrap_or_default();
            if hosts.is_empty() && certs.fallback.is_none() {
                certs.fallback = Some(cert.clone());
            }
            for host in hosts {
                let host = host.to_ascii_lowercase();
                if let Some(suffix) = host.strip_prefix('*') {
                    if !certs.wildcards.iter().any(|(s, _)| s == suffix) {
                        certs.wildcards.push((suffix.to_string(), cert.clone()));
                    }
                } else {
                    certs.by_host.entry(host).or_insert_with(|| cert.clone());
                }
            }
        }
    }
    certs
}

/// The certificate chain and key of a `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`, PEM).
pub fn certified_key(secret: &Secret) -> Result<CertifiedKey> {
    let data = secret.data.as_ref().ok_or_else(|| anyhow!("no data"))?;
    let crt = data.get("tls.crt").ok_or_else(|| anyhow!("no tls.crt"))?;
    let key = data.get("tls.key").ok_or_else(|| anyhow!("no tls.key"))?;
    certified_key_from_pem(&crt.0, &key.0)
}

/// A certified key from a PEM certificate chain and a PEM private key.
pub fn certified_key_from_pem(crt: &[u8], key: &[u8]) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<Vec<_>, _>>()
        .context("tls.crt is not a PEM certificate chain")?;
    if chain.is_empty() {
        return Err(anyhow!("tls.crt holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key).context("tls.key is not a PEM private key")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow!("tls.key: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| anyhow!("tls.key does not match tls.crt: {e}"))?;
    Ok(certified)
}

/// A self-signed certificate for names no Ingress covers.
pub fn default_certificate() -> Result<CertifiedKey> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_string()])?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "corten ingress default certificate",
    );
    let cert = params.self_signed(&key)?;
    certified_key_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
}

/// rustls's certificate choice: the current [`Certs`] by SNI, else the default certificate.
#[derive(Debug)]
pub struct Resolver {
    /// The current set, replaced by the watch loop.
    pub certs: Arc<RwLock<Arc<Certs>>>,
    /// For names no Ingress covers, and clients that send no SNI.
    pub default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.read().map(|c| c.clone()).ok();
        let found = hello.server_name().and_then(|name| {
            let name = name.to_ascii_lowercase();
            certs.as_ref().and_then(|c| c.get(&name).cloned())
        });
        Some(found.unwrap_or_else(|| self.default.clone()))
    }
}

/// The HTTPS listener's server configuration (HTTP/2 and HTTP/1.1 by ALPN).
pub fn server_config(resolver: Arc<Resolver>) -> Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    fn tls_secret(name: &str, host: &str) -> Secret {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![host.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(
                [
                    ("tls.crt".to_string(), ByteString(cert.pem().into_bytes())),
                    (
                        "tls.key".to_string(),
                        ByteString(key.serialize_pem().into_bytes()),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn certificates_by_host_wildcard_and_fallback() {
        let ingress: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "i", "namespace": "default"},
            "spec": {"tls": [
                {"hosts": ["a.example.com"], "secretName": "a"},
                {"hosts": ["*.wild.test"], "secretName": "w"},
                {"hosts": ["broken.test"], "secretName": "broken"},
                {"hosts": ["missing.test"], "secretName": "missing"},
            ]}
        }))
        .unwrap();
        let mut broken = tls_secret("broken", "broken.test");
        broken
            .data
            .as_mut()
            .unwrap()
            .insert("tls.key".into(), ByteString(b"not a key".to_vec()));
        let secrets = [
            tls_secret("a", "a.example.com"),
            tls_secret("w", "x.wild.test"),
            broken,
        ];
        let certs = build(&[&ingress], &secrets);
        assert_eq!(certs.len(), 2);
        let a = certs.get("a.example.com").unwrap();
        let w = certs.get("x.wild.test").unwrap();
        assert!(!Arc::ptr_eq(a, w));
        assert!(certs.get("y.x.wild.test").is_none());
        assert!(certs.get("broken.test").is_none());
        assert!(certs.get("missing.test").is_none());
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_refused() {
        let a = tls_secret("a", "a.test");
        let b = tls_secret("b", "b.test");
        let crt = &a.data.as_ref().unwrap()["tls.crt"].0;
        let key = &b.data.as_ref().unwrap()["tls.key"].0;
        let err = certified_key_from_pem(crt, key).unwrap_err();
        assert!(format!("{err:#}").contains("does not match"), "{err:#}");
        assert!(default_certificate().is_ok());
    }
}
