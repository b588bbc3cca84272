//! The API server's shared state: the store, the registry, credentials, metrics, the cached
//! OpenAPI documents, and what it deals with nodes through (their credentials' signer and the
//! client for their agents).

use std::sync::{Arc, OnceLock};

use api::Registry;
use bytes::Bytes;
use store::SharedStore;

use crate::instrumented::InstrumentedStore;
use crate::metrics::Metrics;
use crate::nodeauth::NodeSigner;
use crate::nodeproxy::AgentClient;
use crate::watchcache::WatchCache;

/// Everything a request handler needs.
pub struct ApiState {
    /// The datastore (only the API server holds it).
    pub store: SharedStore,
    /// Feeds every API watch of a resource from one store watch.
    pub watch_cache: WatchCache,
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
    /// Issues node credentials (`None`: the endpoint answers 503).
    pub node_signer: Option<NodeSigner>,
    /// Reaches node agents for the streaming subresources (`None`: they answer 503).
    pub agents: Option<AgentClient>,
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
        let store: SharedStore = Arc::new(InstrumentedStore::new(store, metrics.clone()));
        Self {
            watch_cache: WatchCache::new(store.clone()),
            store,
            registry: Registry::global(),
            admin_token,
            metrics,
            advertise,
            openapi: OpenApiCache::default(),
            node_signer: None,
            agents: None,
        }
    }

    /// The same state, issuing node credentials and reaching agents with these.
    pub fn with_nodes(mut self, signer: NodeSigner, agents: AgentClient) -> Self {
        self.node_signer = Some(signer);
        self.agents = Some(agents);
        self
    }
}
