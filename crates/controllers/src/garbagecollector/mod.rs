//! The garbage collector (upstream's `pkg/controller/garbagecollector`): deletes objects whose
//! owners are gone and carries out the `foregroundDeletion` and `orphan` finalizers the API
//! server puts on owners deleted with those propagation policies.
//!
//! - Monitors: one metadata-only watch per resource of the registry (events excepted, as
//!   upstream ignores them) feeds a [`graph::Graph`] of owner uid → dependents.
//! - Workers take [`graph::Work`] from a [`queue::WorkQueue`] and act through the API
//!   ([`worker`]): a dependent whose owners are all gone (checked with a GET, never from the
//!   cache alone) is deleted; an owner deleting its dependents in the foreground gets them
//!   deleted and loses its finalizer once none blocks it; an orphaning owner gets its
//!   reference removed from every dependent, then its finalizer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

pub mod graph;
pub mod queue;
pub mod worker;

use graph::{Graph, GraphNode, Work};
use queue::WorkQueue;

/// The finalizer of foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// How many workers process the queue.
const WORKERS: usize = 4;
/// How long a failed item waits before it is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// The collector's shared state.
pub struct Gc {
    /// The API client.
    pub client: Client,
    /// The dependency graph.
    pub graph: Mutex<Graph>,
    /// Work for the workers.
    pub queue: Arc<WorkQueue<Work>>,
}

impl Gc {
    /// Locks the graph.
    pub fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enqueue(&self, work: Vec<Work>) {
        for w in work {
            self.queue.add(w);
        }
    }
}

/// Whether the collector watches a resource: everything that can be listed, watched and
/// deleted, except events (upstream's ignored resources).
fn monitored(r: &api::ResourceInfo) -> bool {
    r.allows("list") && r.allows("watch") && r.allows("delete") && r.plural != "events"
}

/// Runs the collector forever.
pub async fn run(client: Client) {
    let gc = Arc::new(Gc {
        client,
        graph: Mutex::new(Graph::default()),
        queue: Arc::new(WorkQueue::default()),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for res in api::Registry::global()
        .all()
        .iter()
        .filter(|r| monitored(r))
    {
        tasks.spawn(monitor(gc.clone(), res.as_ref()));
    }
    for _ in 0..WORKERS {
        let gc = gc.clone();
        tasks.spawn(async move {
            loop {
                let work = gc.queue.next().await;
                if let Err(e) = worker::process(&gc, &work).await {
                    tracing::debug!(?work, error = %e, "garbage collection failed; retrying");
                    gc.queue.add_after(work.clone(), RETRY);
                }
                gc.queue.done(&work);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// The graph node of a watched object (`None` without a uid or name).
fn node_of(
    resource: &'static api::ResourceInfo,
    obj: &PartialObjectMeta<DynamicObject>,
) -> Option<(String, GraphNode)> {
    let meta = &obj.metadata;
    let uid = meta.uid.clone()?;
    let name = meta.name.clone()?;
    let finalizers = meta.finalizers.as_deref().unwrap_or_default();
    let being_deleted = meta.deletion_timestamp.is_some();
    Some((
        uid,
        GraphNode {
            resource,
            namespace: meta.namespace.clone().filter(|_| resource.namespaced),
            name,
            owners: meta.owner_references.clone().unwrap_or_default(),
            being_deleted,
            deleting_dependents: being_deleted && finalizers.iter().any(|f| f == FOREGROUND),
            orphaning: being_deleted && finalizers.iter().any(|f| f == ORPHAN),
        },
    ))
}

/// Watches one resource's metadata into the graph. After each (re)list, objects of the
/// resource that were not listed are treated as deleted: their delete events were missed.
async fn monitor(gc: Arc<Gc>, resource: &'static api::ResourceInfo) {
    let ar = crate::resources::api_resource(resource);
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(gc.client.clone(), &ar);
    let mut listed: HashSet<String> = HashSet::new();
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(obj)) => {
                if let Some((uid, node)) = node_of(resource, &obj) {
                    listed.insert(uid.clone());
                    let work = gc.graph().apply(&uid, node);
                    gc.enqueue(work);
                }
            }
            Ok(Event::InitDone) => {
                let mut graph = gc.graph();
                let stale: Vec<String> = graph
                    .uids_of(resource)
                    .into_iter()
                    .filter(|u| !listed.contains(u))
                    .collect();
                let work: Vec<Work> = stale.iter().flat_map(|u| graph.delete(u)).collect();
                drop(graph);
                gc.enqueue(work);
                listed.clear();
            }
            Ok(Event::Apply(obj)) => {
                if let Some((uid, node)) = node_of(resource, &obj) {
                    let work = gc.graph().apply(&uid, node);
                    gc.enqueue(work);
                }
            }
            Ok(Event::Delete(obj)) => {
                if let Some(uid) = obj.metadata.uid.as_deref() {
                    let work = gc.graph().delete(uid);
                    gc.enqueue(work);
                }
            }
            Err(e) => {
                tracing::debug!(resource = resource.plural, error = %e, "garbage collector watch failed");
            }
        }
    }
}
