//! The cluster's certificates and credentials, created on first start under `DATA_DIR/tls/`:
//! a cluster CA, a serving certificate for the API server (SANs: localhost, 127.0.0.1, the
//! host's addresses, the `kubernetes` service IP and its DNS names), the admin bearer token and
//! the admin kubeconfig at `DATA_DIR/kubeconfig.yaml`.

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
    /// The admin bearer token.
    pub admin_token: String,
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
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
            // A new CA invalidates any older serving certificate.
            let _ = std::fs::remove_file(p("serving.crt"));
        }
        let ca_pem = read(&p("ca.crt"))?;

        if !p("serving.crt").exists() || !p("serving.key").exists() {
            let ca_key = KeyPair::from_pem(&read(&p("ca.key"))?).context("CA key is unreadable")?;
            let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
                .context("CA certificate is unreadable")?;
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

        if !p("admin.token").exists() {
            let mut bytes = [0u8; 32];
            rand::fill(&mut bytes);
            write_private(&p("admin.token"), &hex(&bytes))?;
        }

        Ok(Self {
            ca_pem,
            serving_cert_pem: read(&p("serving.crt"))?,
            serving_key_pem: read(&p("serving.key"))?,
            admin_token: read(&p("admin.token"))?.trim().to_string(),
        })
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
