//! corten's scheduler (kube-scheduler's counterpart).
//!
//! An API client like every component: reflectors (kube-rs `reflector` + `watcher`) keep
//! nodes and pods in memory; pods with `spec.schedulerName` `default-scheduler` (or unset)
//! and no `spec.nodeName` enter the [`queue`]; [`cycle`] takes them one at a time, runs the
//! [`framework`]'s [`plugins`] against a snapshot of the nodes, and binds the pod through
//! `pods/binding`. A pod that fits nowhere gets the PodScheduled=False condition (reason
//! `Unschedulable`) and a `FailedScheduling` event, then backs off until the cluster changes.
//!
//! Modules: [`framework`] (plugin traits, one cycle, the failure message), [`plugins`] (one
//! module per plugin, as upstream's `framework/plugins/*`), [`preemption`] (evicting
//! lower-priority pods), [`resources`] (request arithmetic), [`queue`] (backoff and
//! requeueing), [`cache`] (nodes with their pods, kept from the informers' events),
//! [`listers`] (the other informers the plugins read), [`cycle`] (the loop, status and
//! preemption writes), [`binding`] (bindings in flight, events).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{Notify, watch};

pub mod binding;
pub mod cache;
pub mod cycle;
pub mod fiterror;
pub mod framework;
pub mod listers;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod resources;

/// The scheduler's name: pods naming it (or none) are scheduled here.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Runs the scheduler until `shutdown` turns true.
pub async fn run(client: Client, mut shutdown: watch::Receiver<bool>) {
    let (nodes, node_writer) = reflector::store::<Node>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let shared = Arc::new(cycle::Shared {
        queue: Mutex::new(queue::Queue::default()),
        wake: Notify::new(),
        cache: Mutex::new(Default::default()),
    });
    let mut tasks = tokio::task::JoinSet::new();

    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer);
    let s = shared.clone();
    let node_store = nodes.clone();
    tasks.spawn(async move {
        let mut events = std::pin::pin!(node_events);
        while let Some(event) = events.next().await {
            let Ok(event) = event else { continue };
            if let Ok(mut c) = s.cache.lock() {
                match &event {
                    watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                        // The reflector's copy (already stored), not a second one.
                        let stored = node_store.get(&ObjectRef::from_obj(n));
                        c.apply_node(stored.unwrap_or_else(|| Arc::new(n.clone())))
                    }
                    watcher::Event::Delete(n) => c.delete_node(&n.name_any()),
                    watcher::Event::Init => c.relist_started(false),
                    watcher::Event::InitDone => c.relist_done(false),
                }
            }
            if let watcher::Event::Apply(_) | watcher::Event::InitDone = event {
                s.cluster_changed();
            }
        }
    });

    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer);
    let s = shared.clone();
    let pod_store = pods.clone();
    tasks.spawn(async move {
        let mut events = std::pin::pin!(pod_events);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    if let Ok(mut c) = s.cache.lock() {
                        let stored = pod_store.get(&ObjectRef::from_obj(&p));
                        c.apply_pod(stored.unwrap_or_else(|| Arc::new(p.clone())));
                    }
                    s.pod_seen(&p);
                }
                Ok(watcher::Event::Delete(p)) => s.pod_deleted(&p),
                Ok(watcher::Event::Init) => {
                    if let Ok(mut c) = s.cache.lock() {
                        c.relist_started(true);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Ok(mut c) = s.cache.lock() {
                        c.relist_done(true);
                    }
                    s.cluster_changed();
                }
                Err(_) => {}
            }
        }
    });

    let listers = listers::StoreListers {
        namespaces: reflect(&client, &mut tasks, None),
        services: reflect(&client, &mut tasks, None),
        rcs: reflect(&client, &mut tasks, None),
        replicasets: reflect(&client, &mut tasks, None),
        statefulsets: reflect(&client, &mut tasks, None),
        claims: reflect(&client, &mut tasks, Some(shared.clone())),
        volumes: reflect(&client, &mut tasks, Some(shared.clone())),
        classes: reflect(&client, &mut tasks, Some(shared.clone())),
        budgets: reflect(&client, &mut tasks, None),
    };
    let worker = cycle::Worker::new(client, nodes, pods, listers, shared);
    tasks.spawn(worker.run());
    tracing::info!("scheduler started");
    let _ = shutdown.wait_for(|stop| *stop).await;
    tasks.abort_all();
}

/// A reflector of every `K`, run in `tasks`; its changes requeue unschedulable pods when
/// `requeue` is given (volumes and claims can make a pod fit).
fn reflect<K>(
    client: &Client,
    tasks: &mut tokio::task::JoinSet<()>,
    requeue: Option<Arc<cycle::Shared>>,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let events = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tasks.spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            if let (Some(s), Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) =
                (&requeue, event)
            {
                s.cluster_changed();
            }
        }
    });
    store
}
