//! The embedded SQLite backend.
//!
//! * SQLite in WAL mode with `synchronous=FULL`: a write returns only once it is durable.
//! * Group commit: one writer thread owns the write connection, drains the queued writes and
//!   commits them in one transaction (see the `writer` module).
//! * Reads of the present (point reads, ranges at the latest revision) are answered from an
//!   in-memory mirror of the `current` table that the writer updates after each commit
//!   (the `latest` module).
//! * Reads of the past run on a small pool of read connections, each in its own read
//!   transaction, so they never wait for the writer; a range limited to at most
//!   [`INLINE_RANGE`] keys runs on the calling task, longer ones in blocking tasks.
//! * Schema: `log` (one row per revision), `current` (the latest value of every live key) and
//!   `meta` (schema version, current and compacted revisions).
//! * Watchers are fed in-process from a broadcast the writer publishes to after each commit.
//! * Snapshots (`snapshot`, `restore`): `VACUUM INTO` copies, restored over an unused store.

mod latest;
mod query;
mod schema;
mod snapshot;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};

use crate::{
    Error, Event, INLINE_RANGE, KeyValue, RangeRequest, RangeResponse, Result, Revision, Store,
    WatchStream,
};
pub use snapshot::{ensure_unused, restore, snapshot};
use writer::{Cmd, Op, Writer};

/// Write requests that may wait for the writer before senders wait.
const WRITE_QUEUE: usize = 4096;
/// Live events a watcher may fall behind before it gets [`Error::WatchLagged`].
const WATCH_BUFFER: usize = 8192;
/// Reads running at once (and read connections kept open).
const READERS: usize = 8;

/// State shared by the store handle, the writer thread and watch streams.
pub(crate) struct Shared {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    read_slots: Semaphore,
    /// The live keys, and the current revision, as the last commit left them.
    latest: RwLock<latest::Latest>,
    compacted: AtomicI64,
}

impl Shared {
    /// Runs `f` on a read connection in a blocking task.
    async fn read<T, F>(self: Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let _slot = self.read_slots.acquire().await.map_err(|_| Error::Closed)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_now(f))
            .await
            .map_err(|e| Error::Backend(format!("datastore read task failed: {e}")))?
    }

    /// [`Self::read`] on the calling task, for reads known to be short.
    async fn read_inline<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> Result<T>,
    {
        let _slot = self.read_slots.acquire().await.map_err(|_| Error::Closed)?;
        self.read_now(f)
    }

    /// Runs `f` on a pooled read connection (a new one if the pool is empty).
    fn read_now<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&mut Connection) -> Result<T>,
    {
        let mut conn = match self.pool().pop() {
            Some(conn) => conn,
            None => schema::open_reader(&self.path)?,
        };
        let result = f(&mut conn);
        let mut pool = self.pool();
        if pool.len() < READERS {
            pool.push(conn);
        }
        result
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The live keys, for reading.
    pub(crate) fn latest(&self) -> RwLockReadGuard<'_, latest::Latest> {
        self.latest.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live keys, for the writer to apply a commit.
    pub(crate) fn latest_mut(&self) -> RwLockWriteGuard<'_, latest::Latest> {
        self.latest.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The embedded SQLite datastore. Cheap to share behind an `Arc` (see [`crate::SharedStore`]).
///
/// Dropping it stops the writer thread once queued writes are done; open watch streams then
/// end with [`Error::Closed`].
pub struct SqliteStore {
    writes: mpsc::Sender<Cmd>,
    events: broadcast::Sender<Arc<Event>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the datastore at `path`, e.g. `/var/lib/corten/state.db`.
    ///
    /// Creates the parent directory if missing. Fails with [`Error::Backend`] if the file is
    /// not a SQLite database, is corrupt, or cannot be written. Needs no Tokio runtime.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Backend(format!(
                    "cannot create the directory of datastore {}: {e}",
                    path.display()
                ))
            })?;
        }
        let (conn, meta) = schema::open_writer(path)?;
        let latest = latest::Latest::load(&conn, meta.current).map_err(schema::backend)?;
        // Open one reader now so that a problem shows here rather than on the first read.
        let reader = schema::open_reader(path)?;
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            readers: Mutex::new(vec![reader]),
            read_slots: Semaphore::new(READERS),
            latest: RwLock::new(latest),
            compacted: AtomicI64::new(meta.compacted),
        });
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        let writer = Writer::new(
            conn,
            meta.current,
            meta.compacted,
            shared.clone(),
            events.clone(),
        );
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Backend(format!("cannot start the datastore writer: {e}")))?;
        tracing::info!(path = %path.display(), revision = meta.current, compacted = meta.compacted, "datastore opened");
        Ok(SqliteStore {
            writes,
            events,
            shared,
        })
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    async fn write(&self, op: Op) -> Result<KeyValue> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(Cmd::Write { op, reply })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, Revision)> {
        let latest = self.shared.latest();
        Ok((latest.get(key).cloned(), latest.revision()))
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        {
            let latest = self.shared.latest();
            let current = latest.revision();
            match req.revision {
                Some(r) if r > current => {
                    return Err(Error::FutureRevision {
                        requested: r,
                        current,
                    });
                }
                Some(r) if r < current => {} // the past: from the log, below
                _ => {
                    let (kvs, remaining) =
                        latest.range(&req.prefix, req.after_key.as_deref(), req.limit);
                    return Ok(RangeResponse {
                        kvs,
                        revision: current,
                        remaining,
                    });
                }
            }
        }
        if req.limit.is_some_and(|n| n <= INLINE_RANGE) {
            return self.shared.read_inline(|c| query::range(c, &req)).await;
        }
        self.shared
            .clone()
            .read(move |c| query::range(c, &req))
            .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.write(Op::Create {
            key: key.to_owned(),
            value,
        })
        .await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        self.write(Op::Update {
            key: key.to_owned(),
            value,
            expected,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        self.write(Op::Delete {
            key: key.to_owned(),
            expected,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        watch::watch(self.shared.clone(), &self.events, prefix, after).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(Cmd::Compact { revision, reply })
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.latest().revision())
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }
}
