//! The agent's identity, obtained from its server with the join token, as a k3s agent does:
//!
//! 1. The token has k3s's shape, `K10<sha256 of the cluster CA>::node:<secret>`. The agent
//!    fetches `/cacerts` without verifying the server (the one insecure call), checks that the
//!    CA it got hashes to the token's prefix, and from then on trusts that CA only.
//! 2. It makes two keys and CSRs: a client one (CN `system:node:NAME`, O `system:nodes`) and a
//!    serving one (SANs: the node name and its addresses), and trades them, with the token as
//!    the bearer token, for certificates at `POST /corten/v1/node-credentials`.
//! 3. Certificates, keys and the CA are kept under `DATA_DIR/agent/` (mode 0600), with a
//!    kubeconfig (`DATA_DIR/agent/kubeconfig.yaml`) that authenticates with the client
//!    certificate. A restarted agent reuses them; it asks again only when one is missing,
//!    unreadable, expires within [`RENEW_BEFORE`], no longer names the node or its addresses, or
//!    was issued under a CA other than the token's.
//!
//! A server that refuses the token, or a CA that does not match it, is a [`Refused`] error (the
//! agent stops); an unreachable server is retried by the caller.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use serde::Deserialize;

/// The client certificate (CN `system:node:NAME`).
pub const CLIENT_CERT: &str = "client-kubelet.crt";
/// Its key.
pub const CLIENT_KEY: &str = "client-kubelet.key";
/// The serving certificate of the agent's HTTPS endpoint.
pub const SERVING_CERT: &str = "serving-kubelet.crt";
/// Its key.
pub const SERVING_KEY: &str = "serving-kubelet.key";
/// The cluster CA, as checked against the join token.
pub const SERVER_CA: &str = "server-ca.crt";
/// The agent's kubeconfig.
pub const KUBECONFIG: &str = "kubeconfig.yaml";

/// Certificates that expire sooner than this are requested again.
pub const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 3600);

/// The server's node-credentials endpoint.
const CREDENTIALS_PATH: &str = "/corten/v1/node-credentials";

/// How an agent reaches and joins its server.
#[derive(Clone)]
pub struct Join {
    /// The API server's URL, `https://HOST:PORT`.
    pub server: String,
    /// The join token.
    pub token: String,
}

impl std::fmt::Debug for Join {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Join")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The server refused to let this agent join (bad token, CA mismatch, bad request): retrying
/// will not help.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// What the agent holds once joined.
#[derive(Clone)]
pub struct Credentials {
    /// The kubeconfig with the client certificate.
    pub kubeconfig: PathBuf,
    /// PEM of the cluster CA (verifies the API server, and the API server's client certificate
    /// on the agent's endpoint).
    pub ca_pem: String,
    /// PEM of the serving certificate.
    pub serving_cert_pem: String,
    /// PEM of its key.
    pub serving_key_pem: String,
}

/// The CA hash a join token pins (`K10<sha256>::...`), lower-case; `None` for a token without
/// the prefix (an operator-chosen one, which pins nothing).
pub fn pinned_ca_hash(token: &str) -> Result<Option<String>, Refused> {
    let Some(rest) = token.strip_prefix("K10") else {
        return Ok(None);
    };
    let bad = || {
        Refused(
            "invalid join token: after K10 come the 64 hex digits of the cluster CA's SHA-256, \
             then '::' and the credentials"
                .into(),
        )
    };
    let (hash, creds) = rest.split_once("::").ok_or_else(bad)?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) || creds.is_empty() {
        return Err(bad());
    }
    Ok(Some(hash.to_ascii_lowercase()))
}

/// SHA-256 of `bytes` in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The agent's credentials under `agent_dir`: reused when still good, else obtained from the
/// server with the join token. Writes the kubeconfig either way.
pub async fn obtain(
    agent_dir: &Path,
    node_name: &str,
    node_ips: &[IpAddr],
    join: &Join,
) -> Result<Credentials> {
    let server: http::Uri = join
        .server
        .parse()
        .map_err(|e| Refused(format!("invalid server URL {:?}: {e}", join.server)))?;
    if server.scheme_str() != Some("https") || server.host().is_none() {
        return Err(Refused(format!(
            "invalid server URL {:?}: expected https://HOST:PORT",
            join.server
        ))
        .into());
    }
    let pinned = pinned_ca_hash(join.token.trim())?;
    std::fs::create_dir_all(agent_dir)
        .with_context(|| format!("cannot create {}", agent_dir.display()))?;
    let agent_dir = agent_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", agent_dir.display()))?;
    let path = |name: &str| agent_dir.join(name);
    let mut creds = match reusable(&agent_dir, node_name, node_ips, pinned.as_deref()) {
        Some(c) => {
            tracing::info!(node = node_name, "reusing the node's certificates");
            c
        }
        None => {
            let c = request(&server, node_name, node_ips, join, pinned.as_deref()).await?;
            write_private(&path(SERVER_CA), &c.ca_pem)?;
            write_private(&path(CLIENT_KEY), &c.client_key_pem)?;
            write_private(&path(CLIENT_CERT), &c.client_cert_pem)?;
            write_private(&path(SERVING_KEY), &c.serving_key_pem)?;
            write_private(&path(SERVING_CERT), &c.serving_cert_pem)?;
            tracing::info!(node = node_name, server = %join.server, "obtained the node's certificates");
            Credentials {
                kubeconfig: PathBuf::new(),
                ca_pem: c.ca_pem,
                serving_cert_pem: c.serving_cert_pem,
                serving_key_pem: c.serving_key_pem,
            }
        }
    };
    creds.kubeconfig = path(KUBECONFIG);
    write_private(
        &creds.kubeconfig,
        &kubeconfig(&join.server, &agent_dir, node_name),
    )?;
    Ok(creds)
}

/// A kube client that authenticates with the node's client certificate.
pub async fn client(creds: &Credentials) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&creds.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// The agent's kubeconfig (files by path, so that renewed certificates are picked up).
fn kubeconfig(server: &str, dir: &Path, node: &str) -> String {
    let p = |name: &str| dir.join(name).display().to_string();
    format!(
        "# Written by the corten node agent; rewritten on every start.\n\
         apiVersion: v1\nkind: Config\nclusters:\n- name: corten\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca}\ncontexts:\n- name: default\n  context:\n    cluster: corten\n    \
         user: system:node:{node}\ncurrent-context: default\nusers:\n- name: system:node:{node}\n  user:\n    \
         client-certificate: {cert}\n    client-key: {key}\n",
        ca = p(SERVER_CA),
        cert = p(CLIENT_CERT),
        key = p(CLIENT_KEY),
    )
}

/// The stored credentials, if every file is there and still good for this node.
fn reusable(dir: &Path, node: &str, ips: &[IpAddr], pinned: Option<&str>) -> Option<Credentials> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let ca_pem = read(SERVER_CA)?;
    if pinned.is_some_and(|h| sha256_hex(ca_pem.as_bytes()) != h) {
        return None;
    }
    let client = CertInfo::parse(&read(CLIENT_CERT)?)?;
    let serving_cert_pem = read(SERVING_CERT)?;
    let serving = CertInfo::parse(&serving_cert_pem)?;
    let serving_key_pem = read(SERVING_KEY)?;
    read(CLIENT_KEY).filter(|k| k.contains("PRIVATE KEY"))?;
    let fresh = |c: &CertInfo| {
        c.not_after > jiff::Timestamp::now().as_second() + RENEW_BEFORE.as_secs() as i64
    };
    let names_node = client.common_name == format!("system:node:{node}")
        && serving.dns_names.iter().any(|n| n == node)
        && ips.iter().all(|ip| serving.ips.contains(ip));
    (fresh(&client) && fresh(&serving) && names_node).then_some(Credentials {
        kubeconfig: PathBuf::new(),
        ca_pem,
        serving_cert_pem,
        serving_key_pem,
    })
}

/// What the stored-credentials check needs from a certificate.
struct CertInfo {
    not_after: i64,
    common_name: String,
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
}

impl CertInfo {
    fn parse(pem: &str) -> Option<Self> {
        use x509_parser::extensions::GeneralName;
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
        let cert = pem.parse_x509().ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        let (mut dns_names, mut ips) = (vec![], vec![]);
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => dns_names.push(n.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?)),
                        16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?)),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Some(Self {
            not_after: cert.validity().not_after.timestamp(),
            common_name,
            dns_names,
            ips,
        })
    }
}

/// Freshly issued credentials with their keys.
struct Issued {
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    serving_cert_pem: String,
    serving_key_pem: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IssuedResponse {
    client_certificate: String,
    serving_certificate: String,
    ca_certificate: String,
}

/// Fetches and checks the CA, then trades two fresh CSRs for certificates.
async fn request(
    server: &http::Uri,
    node: &str,
    ips: &[IpAddr],
    join: &Join,
    pinned: Option<&str>,
) -> Result<Issued> {
    let ca_pem = fetch_ca(server).await?;
    let hash = sha256_hex(ca_pem.as_bytes());
    match pinned {
        Some(p) if p != hash => {
            return Err(Refused(format!(
                "the server at {server} presents a CA whose SHA-256 is {hash}, but the join \
                 token pins {p}: refusing to join (wrong token or wrong server)"
            ))
            .into());
        }
        Some(_) => {}
        None => tracing::warn!(
            "the join token does not pin the cluster CA (no K10<sha256>:: prefix): trusting \
             the CA that {server} presents"
        ),
    }
    let (client_key, client_csr) = csr(node, &[])?;
    let (serving_key, serving_csr) = csr(node, ips)?;
    let body = serde_json::json!({"nodeName": node, "csr": client_csr, "servingCsr": serving_csr});
    let ca_der = pem_to_der(&ca_pem).context("the server's CA is not a PEM certificate")?;
    let mut config = kube::Config::new(server.clone());
    config.root_cert = Some(vec![ca_der]);
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    config.headers.push((
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {}", join.token.trim()))
            .map_err(|_| Refused("the join token has characters a header cannot carry".into()))?,
    ));
    let client = kube::Client::try_from(config)?;
    let req = http::Request::post(CREDENTIALS_PATH)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body)?)?;
    let resp: IssuedResponse = match client.request(req).await {
        Ok(r) => r,
        Err(kube::Error::Api(s)) if (400..500).contains(&s.code) => {
            let why = match s.code {
                401 => "the server refused the join token".to_string(),
                _ => format!(
                    "the server refused the node credentials request ({})",
                    s.code
                ),
            };
            return Err(Refused(format!("{why}: {}", s.message)).into());
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("POST {server}{CREDENTIALS_PATH}")));
        }
    };
    if sha256_hex(resp.ca_certificate.as_bytes()) != hash {
        bail!("the server signed the node's certificates with a CA other than the one it presents");
    }
    Ok(Issued {
        ca_pem,
        client_cert_pem: resp.client_certificate,
        client_key_pem: client_key,
        serving_cert_pem: resp.serving_certificate,
        serving_key_pem: serving_key,
    })
}

/// `GET /cacerts`, without verifying the server: the caller checks the answer.
async fn fetch_ca(server: &http::Uri) -> Result<String> {
    tracing::info!(%server, "fetching the cluster CA (unverified; checked against the join token)");
    let mut config = kube::Config::new(server.clone());
    config.accept_invalid_certs = true;
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    let client = kube::Client::try_from(config)?;
    let req = http::Request::get("/cacerts").body(vec![])?;
    client
        .request_text(req)
        .await
        .with_context(|| format!("GET {server}/cacerts"))
}

/// A fresh key and a PEM CSR for it (CN `system:node:NODE`, O `system:nodes`; SANs: the node
/// name and `ips` when `ips` is not empty, i.e. for the serving certificate).
fn csr(node: &str, ips: &[IpAddr]) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "system:nodes");
    dn.push(DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name = dn;
    if !ips.is_empty() {
        params.subject_alt_names = std::iter::once(
            node.to_string()
                .try_into()
                .map(SanType::DnsName)
                .context("node name")?,
        )
        .chain(ips.iter().map(|ip| SanType::IpAddress(*ip)))
        .collect();
    }
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr))
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(p.contents)
}

/// Writes `contents` to `path` with mode 0600, atomically.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_pin_the_ca() {
        let hash = "ab".repeat(32);
        assert_eq!(
            pinned_ca_hash(&format!("K10{hash}::node:secret")).unwrap(),
            Some(hash.clone())
        );
        assert_eq!(pinned_ca_hash("chosen-by-the-operator").unwrap(), None);
        for bad in [
            "K10abc::node:x".to_string(),
            format!("K10{hash}"),
            format!("K10{hash}::"),
            format!("K10{}::node:x", "zz".repeat(32)),
        ] {
            assert!(pinned_ca_hash(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csrs_name_the_node_and_its_addresses() {
        let ip: IpAddr = "10.9.8.7".parse().unwrap();
        let (key, pem) = csr("worker-1", &[ip]).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&pem).unwrap();
        let sans = format!("{:?}", parsed.params.subject_alt_names);
        assert!(
            sans.contains("worker-1") && sans.contains("10.9.8.7"),
            "{sans}"
        );
        let (_, client) = csr("worker-1", &[]).unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&client).unwrap();
        assert!(parsed.params.subject_alt_names.is_empty());
    }

    #[test]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        write_private(&p, "x").unwrap();
        write_private(&p, "y").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "y");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn missing_or_foreign_credentials_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(reusable(dir.path(), "n", &[], None).is_none());
        write_private(&dir.path().join(SERVER_CA), "not a cert").unwrap();
        assert!(reusable(dir.path(), "n", &[], Some(&"00".repeat(32))).is_none());
    }
}
