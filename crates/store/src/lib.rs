//! The datastore behind corten's API server, with etcd's data model.
//!
//! Every write bumps one global **revision**. Each key remembers the revision that created it
//! (`create_revision`) and the one that last changed it (`mod_revision`); the API server exposes
//! `mod_revision` as an object's `resourceVersion`. Writes are compare-and-swap (create only if
//! absent, update or delete only at an expected `mod_revision`), reads are prefix ranges with a
//! limit, and watches deliver every change after a given revision, in order and without gaps.
//! Old revisions are dropped by compaction; reading or watching below the compacted revision
//! fails with [`Error::Compacted`].
//!
//! [`Store`] hides the backend. [`sqlite::SqliteStore`] is the embedded backend (SQLite in WAL
//! mode, group commit, watchers fed in-process); [`etcd::EtcdStore`] keeps the same contract on
//! an etcd v3 cluster.
//!
//! Invariant: only the API server opens a store. Every other component goes through the API.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub mod etcd;
pub mod sqlite;

/// A store revision: a logical clock bumped by every write. Revision 0 means "nothing yet".
pub type Revision = i64;

/// One key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, e.g. `/registry/pods/default/web-0`.
    pub key: String,
    /// The stored bytes (the API server stores JSON).
    pub value: Bytes,
    /// Revision of the write that created the key.
    pub create_revision: Revision,
    /// Revision of the write that last changed (or, in a delete event, deleted) the key.
    pub mod_revision: Revision,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, as delivered to watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// For a put: the new value. For a delete: the last value the key held, with
    /// `mod_revision` set to the revision of the delete.
    pub kv: KeyValue,
    /// The value before this change (None for a create).
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A range whose `limit` is at most this is cheap for a backend to answer at once (the SQLite
/// backend reads it on the calling task instead of a blocking one); callers that expect a
/// handful of keys ask for this many first.
pub const INLINE_RANGE: usize = 64;

/// A prefix range read.
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    /// Only keys starting with this prefix.
    pub prefix: String,
    /// Only keys strictly greater than this one (for pagination).
    pub after_key: Option<String>,
    /// At most this many keys (None: all).
    pub limit: Option<usize>,
    /// Read the state as of this revision (None: the latest). Fails with
    /// [`Error::Compacted`] below the compacted revision and [`Error::FutureRevision`] above the
    /// current one.
    pub revision: Option<Revision>,
}

/// The answer to a [`RangeRequest`].
#[derive(Clone, Debug, Default)]
pub struct RangeResponse {
    /// Matching keys in key order.
    pub kvs: Vec<KeyValue>,
    /// The revision the read was served at.
    pub revision: Revision,
    /// How many more keys match beyond `kvs` (0 when the range is complete).
    pub remaining: u64,
}

/// Errors from a store.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// A create found the key already present.
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// An update or delete found no such key.
    #[error("key {0} not found")]
    NotFound(String),
    /// An update or delete found the key at another revision than expected.
    #[error("key {key} changed: expected revision {expected}, found {}", current.mod_revision)]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// What is stored now.
        current: Box<KeyValue>,
    },
    /// The requested revision has been compacted away.
    #[error("required revision {requested} has been compacted (compacted up to {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compacted revision.
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A watcher fell too far behind and was dropped; it must re-list or re-watch.
    #[error("watcher fell behind and was closed")]
    WatchLagged,
    /// The backend failed (I/O, corruption, ...).
    #[error("datastore backend error: {0}")]
    Backend(String),
    /// The store is shutting down.
    #[error("datastore is closed")]
    Closed,
}

/// Result alias for store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stream of changes. It ends after yielding an error ([`Error::WatchLagged`],
/// [`Error::Closed`], ...), and it may end when the store shuts down.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// An etcd-model key-value store. All writes are durable when they return `Ok`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest value of `key`, and the store's current revision.
    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, Revision)>;

    /// Keys under a prefix, in key order, optionally at a past revision and paginated.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;

    /// Creates `key`; fails with [`Error::AlreadyExists`] if it exists. Returns the stored pair.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replaces `key` if its `mod_revision` is `expected`; [`Error::NotFound`] if absent,
    /// [`Error::Conflict`] if it changed. Returns the stored pair.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Deletes `key`, if `expected` is given only at that `mod_revision`. Returns the deleted
    /// pair with `mod_revision` set to the revision of the delete.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;

    /// Every change to keys under `prefix` with a revision greater than `after`, in revision
    /// order, without gaps: first the history since `after`, then live changes.
    /// Fails with [`Error::Compacted`] if `after` is below the compacted revision.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Drops history at or below `revision` (the latest value of each live key is kept).
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The store's current revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// The highest compacted revision (0 if never compacted).
    async fn compacted_revision(&self) -> Result<Revision>;
}

/// A shared handle to any store.
pub type SharedStore = Arc<dyn Store>;

/// Compacts `store` every `interval`, keeping the last `keep` revisions of history: each tick
/// compacts to `current - keep` when that is above the compacted revision. Errors are logged
/// and retried on the next tick. Abort the returned handle to stop it.
pub fn spawn_compactor(
    store: SharedStore,
    interval: Duration,
    keep: i64,
) -> tokio::task::JoinHandle<()> {
    let keep = keep.max(0);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate
        loop {
            ticks.tick().await;
            if let Err(e) = compact_keeping(store.as_ref(), keep).await {
                tracing::warn!(error = %e, "datastore compaction failed");
            }
        }
    })
}

/// Compacts `store` to `current - keep` if that is above its compacted revision; returns the
/// revision compacted to, if any.
pub async fn compact_keeping(store: &dyn Store, keep: i64) -> Result<Option<Revision>> {
    let target = store.current_revision().await? - keep.max(0);
    if target <= store.compacted_revision().await? {
        return Ok(None);
    }
    store.compact(target).await?;
    tracing::debug!(revision = target, "datastore compacted");
    Ok(Some(target))
}
