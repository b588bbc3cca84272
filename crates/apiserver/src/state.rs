//! The API server's shared state: the store, the registry, credentials, metrics and the
//! cached OpenAPI documents.

use std::sync::{Arc, OnceLock};

use api::Registry;
use bytes::Bytes;
use store::SharedStore;

use crate::instrumented::InstrumentedStore;
use crate::metrics::Metrics;

/// Everything a request handler needs.
pub struct ApiState {
    /// The datastore (only the API server holds it).
    pub store: SharedStore,
    /// The resources served.
    pub registry: &'static Registry,
    /// The admin bearer token.
    pub admin_token: String,
    /// Request and store metrics.
    pub metrics: Arc<Metrics>,
    /// The address clients reach the API server on (`host:port`), for discovery.
    pub advertise: String,
    /// OpenAPI documents, rendered once on first use.
    pub openapi: OpenApiCache,
}

/// Rendered OpenAPI documents.
#[derive(Default)]
pub struct OpenApiCache {
    /// `/openapi/v2`.
    pub v2: OnceLock<Bytes>,
    /// `/openapi/v3` and the per-group-version documents (keyed `api/v1`, `apis/apps/v1`).
    pub v3: OnceLock<(Bytes, std::collections::HashMap<String, Bytes>)>,
}

impl ApiState {
    /// State over a store; store operations are timed into the metrics.
    pub fn new(store: SharedStore, admin_token: String, advertise: String) -> Self {
        let metrics = Arc::new(Metrics::default());
        Self {
            store: Arc::new(InstrumentedStore::new(store, metrics.clone())),
            registry: Registry::global(),
            admin_token,
            metrics,
            advertise,
            openapi: OpenApiCache::default(),
        }
    }
}
