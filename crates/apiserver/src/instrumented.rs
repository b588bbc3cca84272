//! A [`Store`] wrapper that times every operation into the API server's metrics
//! (`corten_store_request_duration_seconds{operation}`), whatever the backend.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use store::{
    KeyValue, RangeRequest, RangeResponse, Result, Revision, SharedStore, Store, WatchStream,
};

use crate::metrics::Metrics;

/// The wrapped store.
pub struct InstrumentedStore {
    inner: SharedStore,
    metrics: Arc<Metrics>,
}

impl InstrumentedStore {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: SharedStore, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn done<T>(&self, op: &'static str, started: Instant, r: Result<T>) -> Result<T> {
        self.metrics.observe_store(op, r.is_ok(), started.elapsed());
        r
    }
}

#[async_trait]
impl Store for InstrumentedStore {
    async fn get(&self, key: &str) -> Result<(Option<KeyValue>, Revision)> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.done("get", t, r)
    }
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let t = Instant::now();
        let r = self.inner.range(req).await;
        self.done("range", t, r)
    }
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let t = Instant::now();
        let r = self.inner.create(key, value).await;
        self.done("create", t, r)
    }
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let t = Instant::now();
        let r = self.inner.update(key, value, expected).await;
        self.done("update", t, r)
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let t = Instant::now();
        let r = self.inner.delete(key, expected).await;
        self.done("delete", t, r)
    }
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let t = Instant::now();
        let r = self.inner.watch(prefix, after).await;
        self.done("watch", t, r)
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.compact(revision).await;
        self.done("compact", t, r)
    }
    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }
    async fn compacted_revision(&self) -> Result<Revision> {
        self.inner.compacted_revision().await
    }
}
