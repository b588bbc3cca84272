//! The etcd v3 backend: the same [`Store`] contract on an etcd cluster (3.4 or newer).
//!
//! * Keys are stored as they are (the API server's `/registry/...` layout); an object's
//!   resourceVersion is etcd's mod revision, so revisions are etcd's own (a fresh etcd is at
//!   revision 1, its first write gets 2).
//! * Writes are single transactions: create is `txn(create_revision(key) == 0) put`, update
//!   `txn(mod_revision(key) == expected) put`, a delete with a precondition likewise; the
//!   else branch reads the key so that a failure says what is there.
//! * Ranges map to etcd ranges (`[max(prefix, after_key + "\0"), prefix_end)`, limit, count
//!   for `remaining`, historical revisions).
//! * Watches (see `watch`) resume after a dropped connection from the last delivered
//!   revision + 1, so nothing is lost or repeated.
//! * etcd 3.4 does not report its compacted revision outside of watch responses; it is found
//!   by probing (a read below it fails with "compacted"; reads are monotone in the revision,
//!   so a binary search over `[last known, current]` finds it in a few round trips).

mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    KvClient, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchClient,
};

use crate::{Error, KeyValue, RangeRequest, RangeResponse, Result, Revision, Store, WatchStream};

/// How long one etcd request may take before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response accepted (a whole-collection list can be large; gRPC's default is
/// 4 MiB, etcd itself sends up to 2 GiB).
const MAX_RESPONSE: usize = i32::MAX as usize;

/// Where etcd is and how to reach it.
#[derive(Clone, Debug, Default)]
pub struct EtcdConfig {
    /// Client URLs, `http://HOST:PORT` or `https://HOST:PORT` (all with the same scheme).
    pub endpoints: Vec<String>,
    /// The CA bundle that signed etcd's serving certificate (https endpoints).
    pub ca_file: Option<PathBuf>,
    /// The client certificate to present (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
}

impl EtcdConfig {
    /// A configuration from a comma-separated endpoint list (as `--datastore-endpoint` takes).
    pub fn from_endpoints(list: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints: list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            ..Default::default()
        }
    }

    fn connect_options(&self) -> Result<ConnectOptions> {
        if self.endpoints.is_empty() {
            return Err(Error::Backend("no etcd endpoint given".into()));
        }
        let mut https = None;
        for e in &self.endpoints {
            let tls = if e.starts_with("https://") {
                true
            } else if e.starts_with("http://") {
                false
            } else {
                return Err(Error::Backend(format!(
                    "etcd endpoint {e:?}: expected http://HOST:PORT or https://HOST:PORT"
                )));
            };
            if https.is_some_and(|h| h != tls) {
                return Err(Error::Backend(
                    "etcd endpoints mix http:// and https://".into(),
                ));
            }
            https = Some(tls);
        }
        let mut options = ConnectOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let files = (&self.ca_file, &self.cert_file, &self.key_file);
        if https != Some(true) {
            if files != (&None, &None, &None) {
                return Err(Error::Backend(
                    "etcd CA, certificate and key files need https:// endpoints".into(),
                ));
            }
            return Ok(options);
        }
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA")?));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read(cert, "certificate")?,
                    read(key, "key")?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(Error::Backend(
                    "the etcd client certificate and key go together (give both or neither)".into(),
                ));
            }
        }
        options = options.with_tls(tls);
        Ok(options)
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::Backend(format!(
            "cannot read the etcd {what} file {}: {e}",
            path.display()
        ))
    })
}

/// The etcd datastore. Cheap to share behind an `Arc` (see [`crate::SharedStore`]).
///
/// Dropping it ends its open watch streams with [`Error::Closed`].
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    endpoints: Vec<String>,
    /// A known lower bound of etcd's compacted revision (it only grows).
    compacted_hint: Arc<AtomicI64>,
    /// Dropped with the store: watch streams end.
    closed: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers (a read), failing with
    /// [`Error::Backend`] on a bad configuration or an unreachable cluster.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdStore> {
        let options = config.connect_options()?;
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| {
                Error::Backend(format!(
                    "cannot connect to etcd at {}: {e}",
                    config.endpoints.join(",")
                ))
            })?;
        let (closed, _) = tokio::sync::watch::channel(());
        let store = EtcdStore {
            kv: client.kv_client().max_decoding_message_size(MAX_RESPONSE),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE),
            endpoints: config.endpoints.clone(),
            compacted_hint: Arc::new(AtomicI64::new(0)),
            closed,
        };
        let revision = store.current_revision().await.map_err(|e| {
            Error::Backend(format!(
                "etcd at {} does not answer: {e}",
                config.endpoints.join(",")
            ))
        })?;
        tracing::info!(endpoints = %config.endpoints.join(","), revision, "etcd datastore connected");
        Ok(store)
    }

    /// A copy of the KV client (etcd-client's calls take `&mut`; clones share the connection).
    fn client(&self) -> KvClient {
        self.kv.clone()
    }

    /// Maps an etcd error for a request at `requested` (where a revision is involved).
    async fn error(&self, e: etcd_client::Error, requested: Revision) -> Error {
        match classify(&e) {
            Kind::Compacted => Error::Compacted {
                requested,
                compacted: self.compacted_revision().await.unwrap_or(requested + 1),
            },
            Kind::Future => Error::FutureRevision {
                requested,
                current: self.current_revision().await.unwrap_or(requested - 1),
            },
            Kind::Other => backend(e),
        }
    }

    /// Whether a read at `revision` is allowed (not compacted away).
    async fn readable(&self, revision: Revision) -> Result<bool> {
        let options = GetOptions::new().with_revision(revision).with_count_only();
        match self.client().get("\0", Some(options)).await {
            Ok(_) => Ok(true),
            Err(e) => match classify(&e) {
                Kind::Compacted => Ok(false),
                // Not yet written: nothing is compacted there.
                Kind::Future => Ok(true),
                Kind::Other => Err(backend(e)),
            },
        }
    }
}

/// What an etcd error means to the store.
#[derive(PartialEq, Eq)]
enum Kind {
    Compacted,
    Future,
    Other,
}

fn classify(e: &etcd_client::Error) -> Kind {
    let msg = match e {
        etcd_client::Error::GRpcStatus(s) => s.message(),
        _ => return Kind::Other,
    };
    if msg.contains("required revision has been compacted") {
        Kind::Compacted
    } else if msg.contains("required revision is a future revision") {
        Kind::Future
    } else {
        Kind::Other
    }
}

fn backend(e: etcd_client::Error) -> Error {
    Error::Backend(format!("etcd: {e}"))
}

/// Converts etcd's key-value pair.
fn kv(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|_| Error::Backend("etcd returned a key that is not UTF-8".into()))?
            .to_string(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// The first key after every key starting with `prefix` (etcd's `range_end` for a prefix);
/// `"\0"` (to the end) for the empty prefix or one of only 0xff bytes.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| Error::Backend("etcd response without a header".into()))
}

/// The key-value pair a txn's else branch read (`None`: the key is absent).
fn else_get(resp: &etcd_client::TxnResponse) -> Result<Option<KeyValue>> {
    for op in resp.op_responses() {
        if let TxnOpResponse::Get(get) = op {
            return get.kvs().first().map(kv).transpose();
        }
    }
    Ok(None)
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, Revision)> {
        let resp = self.client().get(key, None).await.map_err(backend)?;
        let found = resp.kvs().first().map(kv).transpose()?;
        Ok((found, header_revision(resp.header())?))
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        if let Some(r) = req.revision.filter(|&r| r < 1) {
            // etcd reads revision 0 as "latest"; before the first revision nothing existed.
            let compacted = self.compacted_revision().await?;
            if compacted > r {
                return Err(Error::Compacted {
                    requested: r,
                    compacted,
                });
            }
            return Ok(RangeResponse {
                revision: r,
                ..Default::default()
            });
        }
        let prefix = req.prefix.as_bytes();
        let mut start = prefix.to_vec();
        if let Some(after) = req.after_key.as_ref().filter(|a| a.as_bytes() >= prefix) {
            start = after.as_bytes().to_vec();
            start.push(0);
        }
        if start.is_empty() {
            start = vec![0];
        }
        let mut options = GetOptions::new().with_range(prefix_end(prefix));
        if let Some(r) = req.revision {
            options = options.with_revision(r);
        }
        match req.limit {
            Some(0) => options = options.with_count_only(),
            Some(n) => options = options.with_limit(i64::try_from(n).unwrap_or(i64::MAX)),
            None => {}
        }
        let resp = match self.client().get(start, Some(options)).await {
            Ok(resp) => resp,
            Err(e) => return Err(self.error(e, req.revision.unwrap_or(0)).await),
        };
        let kvs = resp.kvs().iter().map(kv).collect::<Result<Vec<_>>>()?;
        let remaining = u64::try_from(resp.count())
            .unwrap_or(0)
            .saturating_sub(kvs.len() as u64);
        let revision = match req.revision {
            Some(r) => r,
            None => header_revision(resp.header())?,
        };
        Ok(RangeResponse {
            kvs,
            revision,
            remaining,
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.client().txn(txn).await.map_err(backend)?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        let revision = header_revision(resp.header())?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(
                key,
                value.to_vec(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.client().txn(txn).await.map_err(backend)?;
        if !resp.succeeded() {
            return Err(match else_get(&resp)? {
                None => Error::NotFound(key.to_string()),
                Some(current) => Error::Conflict {
                    key: key.to_string(),
                    expected,
                    current: Box::new(current),
                },
            });
        }
        let revision = header_revision(resp.header())?;
        let create_revision = resp
            .op_responses()
            .iter()
            .find_map(|op| match op {
                TxnOpResponse::Put(put) => put.prev_key().map(|p| p.create_revision()),
                _ => None,
            })
            .unwrap_or(expected);
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let compare = match expected {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.client().txn(txn).await.map_err(backend)?;
        if !resp.succeeded() {
            return Err(match (else_get(&resp)?, expected) {
                (Some(current), Some(expected)) => Error::Conflict {
                    key: key.to_string(),
                    expected,
                    current: Box::new(current),
                },
                _ => Error::NotFound(key.to_string()),
            });
        }
        let revision = header_revision(resp.header())?;
        let prev = resp.op_responses().iter().find_map(|op| match op {
            TxnOpResponse::Delete(del) => del.prev_kvs().first().map(kv),
            _ => None,
        });
        let mut deleted = prev
            .transpose()?
            .ok_or_else(|| Error::Backend(format!("etcd deleted {key} without its last value")))?;
        deleted.mod_revision = revision;
        Ok(deleted)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // etcd reports a compacted start revision asynchronously; check it first so that the
        // caller gets the error now, as from the embedded store.
        let compacted = if after >= 1 {
            match self.readable(after).await {
                Ok(true) => None,
                Ok(false) => Some(self.compacted_revision().await?),
                Err(e) => return Err(e),
            }
        } else {
            Some(self.compacted_revision().await?).filter(|&c| c > after)
        };
        if let Some(compacted) = compacted.filter(|&c| c > after) {
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        Ok(watch::stream(
            self.watch.clone(),
            prefix.as_bytes().to_vec(),
            after,
            self.closed.subscribe(),
        ))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        match self.client().compact(revision, None).await {
            Ok(_) => {
                self.compacted_hint.fetch_max(revision, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => match classify(&e) {
                // At or below the compacted revision: nothing to do, as in the embedded store.
                Kind::Compacted => Ok(()),
                Kind::Future => Err(Error::FutureRevision {
                    requested: revision,
                    current: self.current_revision().await?,
                }),
                Kind::Other => Err(backend(e)),
            },
        }
    }

    async fn current_revision(&self) -> Result<Revision> {
        let resp = self
            .client()
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(backend)?;
        header_revision(resp.header())
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        // The smallest readable revision in [hint, current] is the compacted one (1: never).
        let current = self.current_revision().await?;
        let mut lo = self.compacted_hint.load(Ordering::Acquire).max(1);
        let mut hi = current.max(lo);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.readable(mid).await? {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        self.compacted_hint.fetch_max(lo, Ordering::AcqRel);
        Ok(if lo <= 1 { 0 } else { lo })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"/a\xff"), b"/b");
        assert_eq!(prefix_end(b""), b"\0");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn bad_configurations_are_clear_errors() {
        let err = |c: EtcdConfig| match c.connect_options() {
            Err(Error::Backend(msg)) => msg,
            Ok(_) => panic!("accepted"),
            Err(e) => panic!("{e}"),
        };
        assert!(err(EtcdConfig::from_endpoints("")).contains("no etcd endpoint"));
        assert!(err(EtcdConfig::from_endpoints("localhost:2379")).contains("expected http"));
        assert!(err(EtcdConfig::from_endpoints("http://a:1,https://b:2")).contains("mix"));
        let mut c = EtcdConfig::from_endpoints("http://a:1");
        c.ca_file = Some("/ca.pem".into());
        assert!(err(c).contains("need https"));
        let mut c = EtcdConfig::from_endpoints("https://a:1");
        c.cert_file = Some("/nonexistent/cert.pem".into());
        c.key_file = Some("/nonexistent/key.pem".into());
        assert!(err(c).contains("cannot read the etcd certificate file"));
    }
}
