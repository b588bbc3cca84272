//! The watch cache: one watch on the backend (from the server's start, every key under `/`)
//! serves every watch the API server opens, instead of one backend watch per API watch.
//! It is meant for [`crate::etcd::EtcdStore`], whose watches are gRPC streams to etcd; the
//! embedded store already fans out in-process.
//!
//! A feeder task reads the backend watch and, under one lock, appends each event to a ring of
//! recent events ([`HISTORY`]) and broadcasts it. A watch from revision `after`:
//! - when every event after `after` is known to the cache (`after >= covered`, the revision the
//!   cache's backend watch started after), subscribes to the broadcast and copies the matching
//!   ring events under the same lock, so that each revision comes exactly once, in order;
//! - otherwise (older than the cache, or after a compaction made through this store) goes to
//!   the backend, which replays history or says [`Error::Compacted`].
//!
//! A watcher that falls [`LIVE_BUFFER`] events behind ends with [`Error::WatchLagged`] (the API
//! answers 410 and clients re-list). If the backend watch fails, every cached watch ends with
//! [`Error::WatchLagged`] and the cache starts over from the backend's current revision.
//! Reads and writes go straight to the backend.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    Error, Event, KeyValue, RangeRequest, RangeResponse, Result, Revision, SharedStore, Store,
    WatchStream,
};

/// Recent events kept for watches that start a little in the past (after a list).
pub const HISTORY: usize = 4096;
/// Live events a watcher may fall behind before it gets [`Error::WatchLagged`].
pub const LIVE_BUFFER: usize = 8192;

struct State {
    /// Every event after this revision has been seen (`Revision::MAX`: not watching now).
    covered: Revision,
    /// The most recent events, oldest first.
    ring: VecDeque<Event>,
    tx: broadcast::Sender<Event>,
}

/// A [`Store`] whose watches share one backend watch.
pub struct WatchCache {
    inner: SharedStore,
    state: Arc<Mutex<State>>,
    feeder: tokio::task::JoinHandle<()>,
}

impl WatchCache {
    /// Wraps `inner`; starts the backend watch (needs a Tokio runtime).
    pub fn new(inner: SharedStore) -> Self {
        let (tx, _) = broadcast::channel(LIVE_BUFFER);
        let state = Arc::new(Mutex::new(State {
            covered: Revision::MAX,
            ring: VecDeque::new(),
            tx,
        }));
        let feeder = tokio::spawn(feed(inner.clone(), state.clone()));
        Self {
            inner,
            state,
            feeder,
        }
    }
}

impl WatchCache {
    /// The revision after which the cache has every event, once its backend watch runs.
    pub fn covered(&self) -> Option<Revision> {
        Some(lock(&self.state).covered).filter(|c| *c != Revision::MAX)
    }
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        self.feeder.abort();
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Keeps one backend watch running, restarting it (from the current revision) when it fails.
async fn feed(inner: SharedStore, state: Arc<Mutex<State>>) {
    loop {
        let started = async {
            let from = inner.current_revision().await?;
            Ok::<_, Error>((from, inner.watch("/", from).await?))
        }
        .await;
        let (from, mut stream) = match started {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "watch cache: cannot watch the datastore; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        {
            let mut s = lock(&state);
            s.covered = from;
            s.ring.clear();
        }
        let error = loop {
            match stream.next().await {
                Some(Ok(event)) => {
                    let mut s = lock(&state);
                    if s.ring.len() == HISTORY {
                        s.ring.pop_front();
                    }
                    s.ring.push_back(event.clone());
                    let _ = s.tx.send(event);
                }
                Some(Err(e)) => break e.to_string(),
                None => break "the datastore watch ended".to_string(),
            }
        };
        tracing::warn!(error = %error, "watch cache: datastore watch failed; starting over");
        // End every cached watch (they re-watch), and serve new ones from the backend until
        // the new watch is up.
        {
            let (tx, _) = broadcast::channel(LIVE_BUFFER);
            let mut s = lock(&state);
            s.covered = Revision::MAX;
            s.ring.clear();
            s.tx = tx;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[async_trait]
impl Store for WatchCache {
    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, Revision)> {
        self.inner.get(key).await
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.inner.range(req).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        self.inner.create(key, value).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        self.inner.update(key, value, expected).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        self.inner.delete(key, expected).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let cached = {
            let s = lock(&self.state);
            (after >= s.covered).then(|| {
                let replay: Vec<Event> = s
                    .ring
                    .iter()
                    .filter(|e| e.revision() > after && e.kv.key.starts_with(prefix))
                    .cloned()
                    .collect();
                (replay, s.tx.subscribe())
            })
        };
        let Some((replay, rx)) = cached else {
            return self.inner.watch(prefix, after).await;
        };
        let last = replay.last().map_or(after, Event::revision);
        let cache = Arc::downgrade(&self.state);
        let start = Some((rx, last, prefix.to_string(), cache));
        let live = futures::stream::unfold(start, |state| async {
            let (mut rx, mut done, prefix, cache) = state?;
            loop {
                match rx.recv().await {
                    Ok(event) if event.revision() <= done => continue,
                    Ok(event) => {
                        done = event.revision();
                        if event.kv.key.starts_with(&prefix) {
                            return Some((Ok(event), Some((rx, done, prefix, cache))));
                        }
                    }
                    // Fell behind, or the cache started over: the caller re-watches.
                    Err(RecvError::Lagged(_)) => return Some((Err(Error::WatchLagged), None)),
                    Err(RecvError::Closed) if cache.upgrade().is_some() => {
                        return Some((Err(Error::WatchLagged), None));
                    }
                    // The store was dropped.
                    Err(RecvError::Closed) => return Some((Err(Error::Closed), None)),
                }
            }
        });
        Ok(futures::stream::iter(replay.into_iter().map(Ok))
            .chain(live)
            .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await?;
        let mut s = lock(&self.state);
        if s.covered != Revision::MAX && s.covered < revision {
            s.covered = revision;
            s.ring.retain(|e| e.revision() > revision);
        }
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.inner.compacted_revision().await
    }
}
