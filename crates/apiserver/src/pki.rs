//! The cluster's certificates and credentials, created on first start under `DATA_DIR/tls/`:
//! a cluster CA, a serving certificate for the API server (SANs: localhost, 127.0.0.1, the
//! host's addresses, the `kubernetes` service IP and its DNS names), the client certificate the
//! API server presents to node agents (`apiserver-kubelet-client.crt`, CN
//! [`KUBELET_CLIENT_CN`]), the admin bearer token and the admin kubeconfig at
//! `DATA_DIR/kubeconfig.yaml`; and the join token at `DATA_DIR/token` with which agents obtain
//! their credentials (see [`crate::nodeauth`]).
//!
//! The join token has k3s's shape, `K10<sha256 of the CA certificate PEM>::node:<secret>`, so
//! that an agent holding only the token can check the CA it downloads from `/cacerts` before it
//! trusts it. All files are 0600 and reused on restart; a new CA replaces everything signed by
//! the old one, the join token included.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The credentials the API server serves with and checks against.
pub struct Pki {
    /// PEM of the cluster CA certificate.
    pub ca_pem: String,
    /// PEM of the serving certificate chain.
    pub serving_cert_pem: String,
    /// PEM of the serving key.
    pub serving_key_pem: String,
    /// PEM of the cluster CA's private key (signs node credentials).
    pub ca_key_pem: String,
    /// The admin bearer token.
    pub admin_token: String,
    /// The join token agents present to obtain node credentials.
    pub join_token: String,
    /// PEM of the client certificate the API server presents to node agents.
    pub kubelet_client_cert_pem: String,
    /// PEM of that certificate's key.
    pub kubelet_client_key_pem: String,
}

/// The common name of the client certificate the API server presents to node agents (upstream's
/// `kube-apiserver-kubelet-client`); agents accept only this name, signed by the cluster CA.
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// The organisation (group) of that certificate.
pub const KUBELET_CLIENT_GROUP: &str = "system:masters";

/// SHA-256 of `bytes`, in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The join-token prefix that pins the CA: `K10<sha256 of the CA PEM>::`.
pub fn join_token_prefix(ca_pem: &str) -> String {
    format!("K10{}::", sha256_hex(ca_pem.as_bytes()))
}

/// A fresh join token for the CA.
fn new_join_token(ca_pem: &str) -> String {
    let mut secret = [0u8; 16];
    rand::fill(&mut secret);
    format!("{}node:{}", join_token_prefix(ca_pem), hex(&secret))
}

/// Writes `contents` to `path` atomically, mode 0600.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The host's own IP addresses (from `getifaddrs` via /proc), best effort.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = vec![];
    // /proc/net/fib_trie lists local addresses as "/32 host LOCAL" entries.
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let lines: Vec<&str> = trie.lines().collect();
        for w in lines.windows(2) {
            if w[1].contains("/32 host LOCAL")
                && let Ok(ip) = w[0].trim().trim_start_matches("|-- ").parse::<IpAddr>()
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
    }
    out
}

impl Pki {
    /// Loads the credentials under `data_dir`, creating what is missing.
    /// `service_ip` is the `kubernetes` service address (10.43.0.1).
    pub fn load_or_create(data_dir: &Path, service_ip: IpAddr) -> Result<Self> {
        Self::load_or_create_with_sans(data_dir, service_ip, &[])
    }

    /// [`Pki::load_or_create`], with extra names and addresses (`--tls-san`) in the serving
    /// certificate; a serving certificate that lacks one of them is made again.
    pub fn load_or_create_with_sans(
        data_dir: &Path,
        service_ip: IpAddr,
        extra_sans: &[String],
    ) -> Result<Self> {
        let dir = data_dir.join("tls");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let p = |name: &str| -> PathBuf { dir.join(name) };

        if !p("ca.crt").exists() || !p("ca.key").exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(
                DnType::CommonName,
                format!("corten-ca@{}", jiff::Timestamp::now().as_second()),
            );
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_after = rcgen::date_time_ymd(2036, 1, 1);
            let cert = params.self_signed(&key)?;
            write_private(&p("ca.key"), &key.serialize_pem())?;
            write_private(&p("ca.crt"), &cert.pem())?;
            // A new CA invalidates everything signed by the old one (the join token: below).
            let _ = std::fs::remove_file(p("serving.crt"));
            let _ = std::fs::remove_file(p("apiserver-kubelet-client.crt"));
        }
        let ca_pem = read(&p("ca.crt"))?;
        let ca_key_pem = read(&p("ca.key"))?;

        if !p("serving.crt").exists()
            || !p("serving.key").exists()
            || !has_sans(&p("serving.crt"), extra_sans)
        {
            let issuer = issuer(&ca_pem, &ca_key_pem)?;
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(vec![
                "localhost".to_string(),
                "kubernetes".into(),
                "kubernetes.default".into(),
                "kubernetes.default.svc".into(),
                "kubernetes.default.svc.cluster.local".into(),
            ])?;
            if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname")
                && let Ok(name) = host.trim().to_string().try_into()
            {
                params.subject_alt_names.push(SanType::DnsName(name));
            }
            let mut ips: Vec<IpAddr> = vec!["127.0.0.1".parse()?, "::1".parse()?, service_ip];
            ips.extend(host_addresses());
            for san in extra_sans {
                match san.parse::<IpAddr>() {
                    Ok(ip) => ips.push(ip),
                    Err(_) => {
                        let valid = !san.is_empty()
                            && san.len() <= 253
                            && san.split('.').all(|label| {
                                !label.is_empty()
                                    && label.len() <= 63
                                    && label
                                        .chars()
                                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
                            });
                        if !valid {
                            anyhow::bail!(
                                "--tls-san {san:?} is neither an IP address nor a DNS name"
                            );
                        }
                        params.subject_alt_names.push(SanType::DnsName(
                            san.clone()
                                .try_into()
                                .with_context(|| format!("--tls-san {san:?} is not a DNS name"))?,
                        ));
                    }
                }
            }
            ips.dedup();
            for ip in ips {
                params.subject_alt_names.push(SanType::IpAddress(ip));
            }
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "kube-apiserver");
            params.distinguished_name = dn;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.not_after = rcgen::date_time_ymd(2036, 1, 1);
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&p("serving.key"), &key.serialize_pem())?;
            write_private(&p("serving.crt"), &cert.pem())?;
        }

        let (client_crt, client_key) = (
            p("apiserver-kubelet-client.crt"),
            p("apiserver-kubelet-client.key"),
        );
        if !client_crt.exists() || !client_key.exists() {
            let issuer = issuer(&ca_pem, &ca_key_pem)?;
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, KUBELET_CLIENT_GROUP);
            dn.push(DnType::CommonName, KUBELET_CLIENT_CN);
            params.distinguished_name = dn;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.not_after = rcgen::date_time_ymd(2036, 1, 1);
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&client_key, &key.serialize_pem())?;
            write_private(&client_crt, &cert.pem())?;
        }

        if !p("admin.token").exists() {
            let mut bytes = [0u8; 32];
            rand::fill(&mut bytes);
            write_private(&p("admin.token"), &hex(&bytes))?;
        }

        // The join token: kept as written (an operator may have chosen it), unless it pins a CA
        // other than this one.
        let token_path = data_dir.join("token");
        let existing = std::fs::read_to_string(&token_path)
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        let stale = existing.is_empty()
            || (existing.starts_with("K10") && !existing.starts_with(&join_token_prefix(&ca_pem)));
        if stale {
            write_private(&token_path, &format!("{}\n", new_join_token(&ca_pem)))?;
        }

        Ok(Self {
            ca_pem,
            ca_key_pem,
            serving_cert_pem: read(&p("serving.crt"))?,
            serving_key_pem: read(&p("serving.key"))?,
            admin_token: read(&p("admin.token"))?.trim().to_string(),
            join_token: read(&token_path)?.trim().to_string(),
            kubelet_client_cert_pem: read(&client_crt)?,
            kubelet_client_key_pem: read(&client_key)?,
        })
    }

    /// The cluster CA as an rcgen issuer, to sign certificates with.
    pub fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        issuer(&self.ca_pem, &self.ca_key_pem)
    }

    /// Writes the admin kubeconfig for a server reachable at `server_url`.
    pub fn write_kubeconfig(&self, path: &Path, server_url: &str) -> Result<()> {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: corten\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {ca}\ncontexts:\n- name: corten\n  context:\n    cluster: corten\n    user: admin\ncurrent-context: corten\npreferences: {{}}\nusers:\n- name: admin\n  user:\n    token: {}\n",
            self.admin_token
        );
        write_private(path, &config)
    }
}

/// Whether the certificate at `path` names every one of `sans` (DNS names or IP addresses).
fn has_sans(path: &Path, sans: &[String]) -> bool {
    if sans.is_empty() {
        return true;
    }
    use rustls::pki_types::pem::PemObject;
    let Ok(der) = rustls::pki_types::CertificateDer::from_pem_file(path) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let mut names: Vec<String> = vec![];
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    sans.iter().all(|san| {
        let want = san
            .parse::<IpAddr>()
            .map_or_else(|_| san.to_ascii_lowercase(), |ip| ip.to_string());
        names.iter().any(|n| n.eq_ignore_ascii_case(&want))
    })
}

fn issuer(ca_pem: &str, ca_key_pem: &str) -> Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::from_pem(ca_key_pem).context("CA key is unreadable")?;
    Issuer::from_ca_cert_pem(ca_pem, key).context("CA certificate is unreadable")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn creates_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "10.43.0.1".parse().unwrap();
        let a = Pki::load_or_create(dir.path(), ip).unwrap();
        let b = Pki::load_or_create(dir.path(), ip).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(a.admin_token, b.admin_token);
        assert_eq!(a.admin_token.len(), 64);
        assert!(a.serving_cert_pem.contains("BEGIN CERTIFICATE"));
        assert_eq!(a.kubelet_client_cert_pem, b.kubelet_client_cert_pem);
        assert_eq!(a.join_token, b.join_token);
        assert!(a.join_token.starts_with(&join_token_prefix(&a.ca_pem)));
        assert!(a.join_token.contains("::node:"));
        let token = dir.path().join("token");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn tls_sans_are_added_and_the_certificate_remade_only_when_one_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "10.43.0.1".parse().unwrap();
        let a = Pki::load_or_create(dir.path(), ip).unwrap();
        let cert = dir.path().join("tls/serving.crt");
        let sans = ["lb.example.com".to_string(), "192.0.2.10".to_string()];
        assert!(!has_sans(&cert, &sans));
        let b = Pki::load_or_create_with_sans(dir.path(), ip, &sans).unwrap();
        assert_ne!(a.serving_cert_pem, b.serving_cert_pem);
        assert!(has_sans(&cert, &sans));
        assert!(has_sans(&cert, &["LB.example.com".to_string()]));
        let c = Pki::load_or_create_with_sans(dir.path(), ip, &sans[..1]).unwrap();
        assert_eq!(b.serving_cert_pem, c.serving_cert_pem);
        assert_eq!(a.ca_pem, c.ca_pem);
        let bad = Pki::load_or_create_with_sans(dir.path(), ip, &["not a name".to_string()]);
        assert!(bad.is_err());
    }

    #[test]
    fn kubelet_client_certificate_names_the_api_server() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), "10.43.0.1".parse().unwrap()).unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(
            pki.kubelet_client_cert_pem.as_bytes(),
        )
        .unwrap();
        let user = crate::auth::user_from_certificate(&der).unwrap();
        assert_eq!(user.name, KUBELET_CLIENT_CN);
        assert!(user.groups.iter().any(|g| g == KUBELET_CLIENT_GROUP));
    }

    #[test]
    fn a_new_ca_replaces_a_pinned_join_token_but_keeps_a_chosen_one() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "10.43.0.1".parse().unwrap();
        let a = Pki::load_or_create(dir.path(), ip).unwrap();
        std::fs::remove_file(dir.path().join("tls/ca.crt")).unwrap();
        let b = Pki::load_or_create(dir.path(), ip).unwrap();
        assert_ne!(a.ca_pem, b.ca_pem);
        assert_ne!(a.join_token, b.join_token);
        assert!(b.join_token.starts_with(&join_token_prefix(&b.ca_pem)));
        std::fs::write(dir.path().join("token"), "chosen-by-the-operator\n").unwrap();
        let c = Pki::load_or_create(dir.path(), ip).unwrap();
        assert_eq!(c.join_token, "chosen-by-the-operator");
    }
}
