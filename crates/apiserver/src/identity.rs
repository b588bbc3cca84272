//! The cluster's identity shared by several servers on one datastore, as k3s's bootstrap data:
//! the cluster CA (certificate and key), the API server's client certificate for agents, the
//! admin token and the join token.
//!
//! The first server on an empty datastore stores these files under [`KEY`] (outside the API's
//! `/registry/` key space: no API request, watch or export sees it), encrypted with a key
//! derived from the join token; every later server given the same token (`--token`) loads them
//! into its `DATA_DIR` before [`crate::pki`] runs, so that it serves with the same CA, accepts
//! the same admin token and join token, and signs node credentials agents of any server trust.
//! Each server still makes its own serving certificate (its own SANs), signed by the shared CA.
//!
//! Encryption: PBKDF2-HMAC-SHA256 (100,000 rounds, random 16-byte salt) of the token's secret
//! (the token without its `K10<CA hash>::` prefix) gives an AES-256-GCM key; a random 12-byte
//! nonce; the whole is JSON `{"version":1,"salt","nonce","ciphertext"}` (base64). A wrong token
//! fails the GCM tag check, and the server refuses to start with a clear message.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

/// The datastore key of the encrypted bootstrap data.
pub const KEY: &str = "/corten/bootstrap/identity";

/// The files shared, relative to `DATA_DIR`.
pub const FILES: &[&str] = &[
    "tls/ca.crt",
    "tls/ca.key",
    "tls/apiserver-kubelet-client.crt",
    "tls/apiserver-kubelet-client.key",
    "tls/admin.token",
    "token",
];

const ROUNDS: u32 = 100_000;

#[derive(Serialize, Deserialize)]
struct Sealed {
    version: u32,
    salt: String,
    nonce: String,
    ciphertext: String,
}

/// The secret a token's encryption key derives from: the token without its CA pin, so that the
/// full join token and its bare secret open the same data.
pub fn token_secret(token: &str) -> &str {
    let token = token.trim();
    match token
        .strip_prefix("K10")
        .and_then(|rest| rest.split_once("::"))
    {
        Some((_, secret)) => secret,
        None => token,
    }
}

fn key_for(token: &str, salt: &[u8]) -> Result<LessSafeKey> {
    let mut key = [0u8; 32];
    let rounds = NonZeroU32::new(ROUNDS).ok_or_else(|| anyhow!("zero PBKDF2 rounds"))?;
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        token_secret(token).as_bytes(),
        &mut key,
    );
    let key = UnboundKey::new(&AES_256_GCM, &key).map_err(|_| anyhow!("bad AES key length"))?;
    Ok(LessSafeKey::new(key))
}

/// Encrypts `files` (name → contents) with a key derived from `token`.
pub fn seal(files: &BTreeMap<String, String>, token: &str) -> Result<Vec<u8>> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::fill(&mut salt);
    rand::fill(&mut nonce);
    let mut data = serde_json::to_vec(files)?;
    key_for(token, &salt)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(KEY),
            &mut data,
        )
        .map_err(|_| anyhow!("cannot encrypt the bootstrap data"))?;
    Ok(serde_json::to_vec(&Sealed {
        version: 1,
        salt: B64.encode(salt),
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(data),
    })?)
}

/// Decrypts what [`seal`] made; a wrong token is an error that says so.
pub fn open(sealed: &[u8], token: &str) -> Result<BTreeMap<String, String>> {
    let sealed: Sealed =
        serde_json::from_slice(sealed).context("the datastore's bootstrap data is unreadable")?;
    if sealed.version != 1 {
        bail!(
            "the datastore's bootstrap data has version {}, this server knows 1",
            sealed.version
        );
    }
    let decode = |s: &str| {
        B64.decode(s)
            .context("the datastore's bootstrap data is unreadable")
    };
    let salt = decode(&sealed.salt)?;
    let nonce: [u8; 12] = decode(&sealed.nonce)?
        .try_into()
        .map_err(|_| anyhow!("the datastore's bootstrap data has a bad nonce"))?;
    let mut data = decode(&sealed.ciphertext)?;
    let plain = key_for(token, &salt)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(KEY),
            &mut data,
        )
        .map_err(|_| {
            anyhow!(
                "the token does not match the cluster in this datastore: give the join token of \
                 the first server (its DATA_DIR/token) with --token"
            )
        })?;
    serde_json::from_slice(plain).context("the datastore's bootstrap data is unreadable")
}

/// Makes `data_dir` hold the cluster identity of the datastore, before [`crate::pki`] runs:
/// - the datastore has one: decrypt it with `token` (else the local `DATA_DIR/token`, as on a
///   restart) and write its files, replacing this server's own serving certificate when the CA
///   changes;
/// - it has none: create the local identity (`pki`), then store it, unless another server
///   stored one first (then that one is taken, as above).
///
/// `service_ip` is passed on to [`crate::pki::Pki::load_or_create`].
pub async fn sync(
    store: &dyn store::Store,
    data_dir: &Path,
    token: Option<&str>,
    service_ip: std::net::IpAddr,
) -> Result<()> {
    let local_token = std::fs::read_to_string(data_dir.join("token"))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    loop {
        let (stored, _) = store
            .get(KEY)
            .await
            .map_err(|e| anyhow!("cannot read the bootstrap data from the datastore: {e}"))?;
        if let Some(kv) = stored {
            let Some(token) = token.map(str::to_string).or(local_token.clone()) else {
                bail!(
                    "this datastore already holds a cluster: give its join token (the first \
                     server's DATA_DIR/token) with --token"
                );
            };
            let files = open(&kv.value, &token)?;
            if let Some(ca) = files.get("tls/ca.crt")
                && let Some(pin) = token
                    .trim()
                    .strip_prefix("K10")
                    .and_then(|r| r.split_once("::"))
                    .map(|(hash, _)| hash.to_ascii_lowercase())
                && pin != crate::pki::sha256_hex(ca.as_bytes())
            {
                bail!("the join token pins another cluster CA than the datastore's");
            }
            return write_files(data_dir, &files);
        }
        // No cluster yet: this server's identity (with the operator's token, if given).
        if let Some(token) = token {
            std::fs::create_dir_all(data_dir)?;
            crate::pki::write_private(&data_dir.join("token"), &format!("{}\n", token.trim()))?;
        }
        let pki = crate::pki::Pki::load_or_create(data_dir, service_ip)?;
        let mut files = BTreeMap::new();
        for name in FILES {
            let path = data_dir.join(name);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            files.insert(name.to_string(), text);
        }
        let sealed = seal(&files, &pki.join_token)?;
        match store.create(KEY, sealed.into()).await {
            Ok(_) => {
                tracing::info!("stored the cluster identity in the datastore");
                return Ok(());
            }
            Err(store::Error::AlreadyExists(_)) => continue,
            Err(e) => bail!("cannot store the bootstrap data in the datastore: {e}"),
        }
    }
}

/// Writes the shared files into `data_dir` (0600); a CA different from the local one removes
/// the certificates the old CA signed, so that `pki` makes new ones.
fn write_files(data_dir: &Path, files: &BTreeMap<String, String>) -> Result<()> {
    std::fs::create_dir_all(data_dir.join("tls"))
        .with_context(|| format!("cannot create {}", data_dir.join("tls").display()))?;
    let old_ca = std::fs::read_to_string(data_dir.join("tls/ca.crt")).unwrap_or_default();
    for (name, contents) in files {
        if !FILES.contains(&name.as_str()) {
            continue;
        }
        crate::pki::write_private(&data_dir.join(name), contents)?;
    }
    if files.get("tls/ca.crt").is_some_and(|ca| *ca != old_ca) {
        let _ = std::fs::remove_file(data_dir.join("tls/serving.crt"));
        tracing::info!("loaded the cluster identity from the datastore");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BTreeMap<String, String> {
        [("tls/ca.crt".to_string(), "PEM".to_string())].into()
    }

    #[test]
    fn sealed_data_opens_with_the_token_or_its_secret_only() {
        let token = format!("K10{}::node:s3cret", "ab".repeat(32));
        let sealed = seal(&files(), &token).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("PEM"));
        assert_eq!(open(&sealed, &token).unwrap(), files());
        assert_eq!(open(&sealed, "node:s3cret").unwrap(), files());
        let err = open(&sealed, "node:other").unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn token_secret_strips_the_ca_pin_only() {
        assert_eq!(token_secret("K10abc::node:x"), "node:x");
        assert_eq!(token_secret(" plain \n"), "plain");
        assert_eq!(token_secret("K10nopin"), "K10nopin");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(open(b"not json", "t").is_err());
        assert!(
            open(
                br#"{"version":2,"salt":"","nonce":"","ciphertext":""}"#,
                "t"
            )
            .is_err()
        );
        assert!(
            open(
                br#"{"version":1,"salt":"","nonce":"AA==","ciphertext":""}"#,
                "t"
            )
            .is_err()
        );
    }
}
