//! The watch cache (upstream's `storage/cacher`): one store watch per resource feeds every API
//! watch of that resource on this server.
//!
//! Without it each `?watch=true` request is a watch on the datastore; on etcd that is one etcd
//! watch per client, and several API servers multiply them. Here the first watch of a resource
//! starts a **feed**: one store watch on the resource's whole key prefix (`/registry/pods/`),
//! whose events go into a window of the most recent ones and out through a broadcast. A later
//! API watch from revision `after` is served from the window (the events after `after`) and
//! then live from the broadcast, both taken under one lock so that nothing is lost or
//! repeated. A watch from before the window (an old resourceVersion) falls back to a watch on
//! the store, which reads the history itself (or answers `Compacted`, a 410 to the client).
//! So does a watch from a revision the store has compacted, though the window still holds
//! it: the store's compacted revision is looked up at most once per [`COMPACTION_RECHECK`]
//! (on etcd that lookup is a few range requests).
//!
//! Watchers get each event as a shared [`CachedEvent`]: the object is decoded (and rendered
//! as JSON) at most once per event however many watchers see it, and only if one of them
//! needs it (a selector to test, a table to print, a line to write).
//!
//! A watcher that falls more than [`BROADCAST`] events behind is dropped with
//! [`store::Error::WatchLagged`] (the client re-lists, as with upstream's slow watchers); when
//! a feed's store watch ends (the store closed, or etcd compacted under it), its watchers get
//! the same error and the next watch starts a new feed.

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;
use store::{Error, Event, Revision, SharedStore};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// Events kept per resource for watchers that start a little in the past (a client resuming
/// from the last resourceVersion it saw; a list followed by a watch).
pub const WINDOW: usize = 256;
/// How far a watcher may fall behind a feed before it is dropped.
pub const BROADCAST: usize = 8192;
/// How long the store's compacted revision is taken as known.
pub const COMPACTION_RECHECK: Duration = Duration::from_secs(1);

/// A store event shared by every watcher that sees it, with its object decoded lazily and
/// once.
pub struct CachedEvent {
    event: Event,
    /// The object in API form (`metadata.resourceVersion` set); `None` if unreadable.
    object: OnceLock<Option<Value>>,
    /// The value before the change in API form.
    prev: OnceLock<Option<Value>>,
    /// `object` as JSON bytes.
    json: OnceLock<Option<Bytes>>,
}

impl CachedEvent {
    /// Wraps a store event; nothing is decoded yet.
    pub fn new(event: Event) -> Self {
        Self {
            event,
            object: OnceLock::new(),
            prev: OnceLock::new(),
            json: OnceLock::new(),
        }
    }

    /// The object as the API shows it, its resourceVersion the event's revision (for a delete,
    /// the last state with the delete's revision); `None` if the stored value is unreadable.
    pub fn object(&self) -> Option<&Value> {
        self.object
            .get_or_init(|| crate::objects::decode(&self.event.kv).ok())
            .as_ref()
    }

    /// The object before this change, as the API showed it then; `None` for a create.
    pub fn prev_object(&self) -> Option<&Value> {
        self.prev
            .get_or_init(|| {
                let prev = self.event.prev.as_ref()?;
                crate::objects::decode(prev).ok()
            })
            .as_ref()
    }

    /// [`Self::object`] as JSON, rendered without building the whole tree when possible.
    pub fn object_json(&self) -> Option<&Bytes> {
        self.json
            .get_or_init(|| {
                let mut out = Vec::with_capacity(self.event.kv.value.len() + 32);
                match crate::objects::decode_raw(&self.event.kv, &mut out) {
                    Ok(()) => Some(Bytes::from(out)),
                    Err(_) => None,
                }
            })
            .as_ref()
    }
}

impl Deref for CachedEvent {
    type Target = Event;
    fn deref(&self) -> &Event {
        &self.event
    }
}

/// The events of one API watch, in order; an error ends it.
pub type CachedStream = BoxStream<'static, store::Result<Arc<CachedEvent>>>;

/// Wraps a store's own watch (no feed: each event is its watcher's alone).
fn uncached(stream: store::WatchStream) -> CachedStream {
    Box::pin(stream.map(|r| r.map(|e| Arc::new(CachedEvent::new(e)))))
}

/// The feeds of one API server, by resource key prefix.
pub struct WatchCache {
    store: SharedStore,
    feeds: Mutex<HashMap<String, Arc<Feed>>>,
    /// Events kept per feed.
    window: usize,
    /// Broadcast capacity per feed.
    broadcast: usize,
    /// The store's compacted revision, and when it was read.
    compacted: tokio::sync::Mutex<(Revision, Option<Instant>)>,
}

/// One resource's store watch and its recent events.
struct Feed {
    state: Mutex<FeedState>,
    /// Events kept in the window.
    window: usize,
}

struct FeedState {
    /// The most recent events, oldest first (at most `Feed::window`).
    window: VecDeque<Arc<CachedEvent>>,
    /// Every event with a revision above this one is in `window` or still to come.
    floor: Revision,
    /// Live events; `None` once the store watch has ended.
    tx: Option<broadcast::Sender<Arc<CachedEvent>>>,
}

impl WatchCache {
    /// A cache over `store` (no feed runs until the first watch).
    pub fn new(store: SharedStore) -> Self {
        Self::with_sizes(store, WINDOW, BROADCAST)
    }

    /// A cache keeping `window` events per resource and dropping watchers `broadcast` events
    /// behind.
    pub fn with_sizes(store: SharedStore, window: usize, broadcast: usize) -> Self {
        Self {
            store,
            feeds: Mutex::new(HashMap::new()),
            window: window.max(1),
            broadcast: broadcast.max(1),
            compacted: tokio::sync::Mutex::new((0, None)),
        }
    }

    /// Every change under `prefix` after revision `after`, in order and without gaps, as
    /// [`store::Store::watch`] gives them. `resource_prefix` is the key prefix of the whole
    /// resource (`prefix` starts with it): one feed serves every watch under it.
    pub async fn watch(
        &self,
        resource_prefix: &str,
        prefix: &str,
        after: Revision,
    ) -> store::Result<CachedStream> {
        if after < self.compacted_revision().await? {
            // The store answers Compacted (a 410), as it does without a cache.
            return self.store.watch(prefix, after).await.map(uncached);
        }
        let feed = match self.feed(resource_prefix) {
            Some(feed) => feed,
            None => self.start_feed(resource_prefix, after).await?,
        };
        let joined = {
            let state = feed.state.lock().unwrap_or_else(PoisonError::into_inner);
            match &state.tx {
                Some(tx) if after >= state.floor => {
                    let backlog: VecDeque<Arc<CachedEvent>> = state
                        .window
                        .iter()
                        .filter(|e| e.revision() > after && e.kv.key.starts_with(prefix))
                        .cloned()
                        .collect();
                    Some((backlog, tx.subscribe()))
                }
                _ => None,
            }
        };
        match joined {
            Some((backlog, rx)) => Ok(follow(backlog, rx, prefix.to_string(), after)),
            // Older than the window, or the feed just ended: the store reads the history.
            None => self.store.watch(prefix, after).await.map(uncached),
        }
    }

    /// The store's compacted revision, read again when the last reading is older than
    /// [`COMPACTION_RECHECK`].
    async fn compacted_revision(&self) -> store::Result<Revision> {
        let mut known = self.compacted.lock().await;
        if known.1.is_none_or(|at| at.elapsed() >= COMPACTION_RECHECK) {
            *known = (self.store.compacted_revision().await?, Some(Instant::now()));
        }
        Ok(known.0)
    }

    /// The live feed for `resource_prefix`, if one runs.
    fn feed(&self, resource_prefix: &str) -> Option<Arc<Feed>> {
        let feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        feeds
            .get(resource_prefix)
            .filter(|f| {
                f.state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .tx
                    .is_some()
            })
            .cloned()
    }

    /// Starts the store watch of a resource from `after` and the task that feeds it in. When
    /// two watches race to start one, the first registered wins and the other store watch is
    /// dropped.
    async fn start_feed(&self, resource_prefix: &str, after: Revision) -> store::Result<Arc<Feed>> {
        let stream = self.store.watch(resource_prefix, after).await?;
        let (tx, _) = broadcast::channel(self.broadcast);
        let feed = Arc::new(Feed {
            state: Mutex::new(FeedState {
                window: VecDeque::with_capacity(self.window),
                floor: after,
                tx: Some(tx),
            }),
            window: self.window,
        });
        {
            let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(live) = feeds.get(resource_prefix).filter(|f| {
                f.state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .tx
                    .is_some()
            }) {
                return Ok(live.clone());
            }
            feeds.insert(resource_prefix.to_string(), feed.clone());
        }
        tokio::spawn(run_feed(feed.clone(), stream, resource_prefix.to_string()));
        Ok(feed)
    }
}

/// Moves a resource's store events into its feed until the store watch ends.
async fn run_feed(feed: Arc<Feed>, mut stream: store::WatchStream, resource_prefix: String) {
    let ended = loop {
        match stream.next().await {
            Some(Ok(event)) => {
                let event = Arc::new(CachedEvent::new(event));
                let mut state = feed.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.window.len() >= feed.window
                    && let Some(old) = state.window.pop_front()
                {
                    state.floor = old.revision();
                }
                state.window.push_back(event.clone());
                if let Some(tx) = &state.tx {
                    // No receiver is fine: the event stays in the window.
                    let _ = tx.send(event);
                }
            }
            Some(Err(e)) => break Some(e),
            None => break None,
        }
    };
    match ended {
        Some(Error::Closed) | None => {
            tracing::debug!(prefix = %resource_prefix, "watch cache: store watch ended")
        }
        Some(e) => {
            tracing::warn!(prefix = %resource_prefix, error = %e, "watch cache: store watch failed; its watchers re-list")
        }
    }
    // Dropping the sender ends every subscriber's stream with WatchLagged.
    feed.state.lock().unwrap_or_else(PoisonError::into_inner).tx = None;
}

/// A watcher's stream: the backlog from the window, then live events under `prefix`.
fn follow(
    backlog: VecDeque<Arc<CachedEvent>>,
    rx: broadcast::Receiver<Arc<CachedEvent>>,
    prefix: String,
    after: Revision,
) -> CachedStream {
    struct Follower {
        backlog: VecDeque<Arc<CachedEvent>>,
        rx: broadcast::Receiver<Arc<CachedEvent>>,
        prefix: String,
        after: Revision,
    }
    impl Follower {
        async fn next(&mut self) -> store::Result<Arc<CachedEvent>> {
            if let Some(event) = self.backlog.pop_front() {
                return Ok(event);
            }
            loop {
                match self.rx.recv().await {
                    Ok(event) => {
                        if event.revision() > self.after && event.kv.key.starts_with(&self.prefix) {
                            return Ok(event);
                        }
                    }
                    Err(RecvError::Lagged(_) | RecvError::Closed) => {
                        return Err(Error::WatchLagged);
                    }
                }
            }
        }
    }
    let follower = Follower {
        backlog,
        rx,
        prefix,
        after,
    };
    Box::pin(futures::stream::unfold(
        Some(follower),
        |state| async move {
            let mut follower = state?;
            match follower.next().await {
                Ok(event) => Some((Ok(event), Some(follower))),
                // The stream ends after an error, as a store's watch does.
                Err(e) => Some((Err(e), None)),
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;
    use store::sqlite::SqliteStore;
    use store::{KeyValue, RangeRequest, RangeResponse, Store, WatchStream};

    use super::*;

    /// A real SQLite store that counts the watches opened on it.
    struct Counting {
        inner: SqliteStore,
        watches: AtomicUsize,
    }

    #[async_trait]
    impl Store for Counting {
        async fn get(&self, key: &str) -> store::Result<(Option<KeyValue>, Revision)> {
            self.inner.get(key).await
        }
        async fn range(&self, req: RangeRequest) -> store::Result<RangeResponse> {
            self.inner.range(req).await
        }
        async fn create(&self, key: &str, value: Bytes) -> store::Result<KeyValue> {
            self.inner.create(key, value).await
        }
        async fn update(
            &self,
            key: &str,
            value: Bytes,
            expected: Revision,
        ) -> store::Result<KeyValue> {
            self.inner.update(key, value, expected).await
        }
        async fn delete(&self, key: &str, expected: Option<Revision>) -> store::Result<KeyValue> {
            self.inner.delete(key, expected).await
        }
        async fn watch(&self, prefix: &str, after: Revision) -> store::Result<WatchStream> {
            self.watches.fetch_add(1, Ordering::SeqCst);
            self.inner.watch(prefix, after).await
        }
        async fn compact(&self, revision: Revision) -> store::Result<()> {
            self.inner.compact(revision).await
        }
        async fn current_revision(&self) -> store::Result<Revision> {
            self.inner.current_revision().await
        }
        async fn compacted_revision(&self) -> store::Result<Revision> {
            self.inner.compacted_revision().await
        }
    }

    fn open() -> (tempfile::TempDir, Arc<Counting>) {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
        let store = Arc::new(Counting {
            inner,
            watches: AtomicUsize::new(0),
        });
        (dir, store)
    }

    async fn take(stream: &mut CachedStream, n: usize) -> Vec<(String, Revision)> {
        let mut got = vec![];
        for _ in 0..n {
            let event = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
                .await
                .expect("an event in time")
                .expect("the stream goes on")
                .expect("an event, not an error");
            got.push((event.kv.key.clone(), event.revision()));
        }
        got
    }

    #[tokio::test]
    async fn one_store_watch_serves_every_watcher_of_a_resource() {
        let (_dir, store) = open();
        let cache = WatchCache::new(store.clone());
        let start = store.current_revision().await.unwrap();
        let mut all = cache
            .watch("/registry/pods/", "/registry/pods/", start)
            .await
            .unwrap();
        let mut in_a = cache
            .watch("/registry/pods/", "/registry/pods/a/", start)
            .await
            .unwrap();
        let a1 = store
            .create("/registry/pods/a/x", Bytes::from("1"))
            .await
            .unwrap();
        let b1 = store
            .create("/registry/pods/b/y", Bytes::from("2"))
            .await
            .unwrap();
        store
            .create("/registry/services/a/s", Bytes::from("3"))
            .await
            .unwrap();
        let a2 = store
            .update("/registry/pods/a/x", Bytes::from("4"), a1.mod_revision)
            .await
            .unwrap();
        assert_eq!(
            take(&mut all, 3).await,
            [
                ("/registry/pods/a/x".to_string(), a1.mod_revision),
                ("/registry/pods/b/y".to_string(), b1.mod_revision),
                ("/registry/pods/a/x".to_string(), a2.mod_revision),
            ]
        );
        assert_eq!(
            take(&mut in_a, 2).await,
            [
                ("/registry/pods/a/x".to_string(), a1.mod_revision),
                ("/registry/pods/a/x".to_string(), a2.mod_revision),
            ]
        );
        // A watcher resuming after the first write replays the rest from the window.
        let mut resumed = cache
            .watch("/registry/pods/", "/registry/pods/", a1.mod_revision)
            .await
            .unwrap();
        assert_eq!(
            take(&mut resumed, 2).await,
            [
                ("/registry/pods/b/y".to_string(), b1.mod_revision),
                ("/registry/pods/a/x".to_string(), a2.mod_revision),
            ]
        );
        assert_eq!(
            store.watches.load(Ordering::SeqCst),
            1,
            "one store watch for pods"
        );
    }

    #[tokio::test]
    async fn a_watch_from_before_the_window_reads_the_stores_history() {
        let (_dir, store) = open();
        let cache = WatchCache::with_sizes(store.clone(), 16, 1024);
        let start = store.current_revision().await.unwrap();
        let mut live = cache
            .watch("/registry/pods/", "/registry/pods/", start)
            .await
            .unwrap();
        let mut revisions = vec![];
        for i in 0..26 {
            let kv = store
                .create(&format!("/registry/pods/ns/p{i:04}"), Bytes::from("x"))
                .await
                .unwrap();
            revisions.push(kv.mod_revision);
        }
        // The feed has seen them all once the first watcher has.
        assert_eq!(take(&mut live, 26).await.len(), 26);
        let mut old = cache
            .watch("/registry/pods/", "/registry/pods/", start)
            .await
            .unwrap();
        let got: Vec<Revision> = take(&mut old, 26)
            .await
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(got, revisions, "every event, in order, none twice");
        assert_eq!(
            store.watches.load(Ordering::SeqCst),
            2,
            "the old one went to the store"
        );
    }

    #[tokio::test]
    async fn a_watch_from_a_compacted_revision_is_refused_though_the_window_holds_it() {
        let (_dir, store) = open();
        let cache = WatchCache::new(store.clone());
        let start = store.current_revision().await.unwrap();
        let mut live = cache
            .watch("/registry/pods/", "/registry/pods/", start)
            .await
            .unwrap();
        let first = store
            .create("/registry/pods/a/x", Bytes::from("1"))
            .await
            .unwrap();
        let second = store
            .create("/registry/pods/a/y", Bytes::from("2"))
            .await
            .unwrap();
        assert_eq!(take(&mut live, 2).await.len(), 2);
        store.compact(second.mod_revision).await.unwrap();
        tokio::time::sleep(COMPACTION_RECHECK).await;
        let refused = cache
            .watch("/registry/pods/", "/registry/pods/", first.mod_revision)
            .await;
        assert!(
            matches!(refused, Err(Error::Compacted { .. })),
            "{:?}",
            refused.map(|_| "a stream")
        );
        // From the compacted revision itself, the window serves what follows.
        let mut ok = cache
            .watch("/registry/pods/", "/registry/pods/", second.mod_revision)
            .await
            .unwrap();
        let third = store
            .create("/registry/pods/a/z", Bytes::from("3"))
            .await
            .unwrap();
        assert_eq!(
            take(&mut ok, 1).await,
            [("/registry/pods/a/z".to_string(), third.mod_revision)]
        );
    }

    #[tokio::test]
    async fn a_watcher_that_falls_too_far_behind_is_told_to_relist() {
        let (_dir, store) = open();
        let cache = WatchCache::with_sizes(store.clone(), 16, 32);
        let start = store.current_revision().await.unwrap();
        let mut slow = cache
            .watch("/registry/pods/", "/registry/pods/", start)
            .await
            .unwrap();
        let mut last = 0;
        for i in 0..50 {
            last = store
                .create(&format!("/registry/pods/ns/p{i:05}"), Bytes::from("x"))
                .await
                .unwrap()
                .mod_revision;
        }
        // Another watcher from the latest revision sees the next write, so the feed has
        // passed every earlier one.
        let mut fresh = cache
            .watch("/registry/pods/", "/registry/pods/", last)
            .await
            .unwrap();
        let next = store
            .create("/registry/pods/ns/next", Bytes::from("x"))
            .await
            .unwrap();
        assert_eq!(
            take(&mut fresh, 1).await,
            [("/registry/pods/ns/next".to_string(), next.mod_revision)]
        );
        let mut outcome = None;
        while let Some(item) = slow.next().await {
            if let Err(e) = item {
                outcome = Some(e);
            }
        }
        assert_eq!(outcome, Some(Error::WatchLagged));
    }
}
