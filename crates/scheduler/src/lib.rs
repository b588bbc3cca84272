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
//! module per plugin, as upstream's `framework/plugins/*`), [`resources`] (request
//! arithmetic), [`queue`] (backoff and requeueing), [`cycle`] (informers, binding, status and
//! events).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::{Notify, watch};

pub mod cycle;
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
        assumed: Mutex::new(Default::default()),
    });
    let mut tasks = tokio::task::JoinSet::new();

    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer);
    let s = shared.clone();
    tasks.spawn(async move {
        let mut events = std::pin::pin!(node_events);
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(_) | watcher::Event::InitDone) = event {
                s.cluster_changed();
            }
        }
    });

    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer);
    let s = shared.clone();
    tasks.spawn(async move {
        let mut events = std::pin::pin!(pod_events);
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => s.pod_seen(&p),
                Ok(watcher::Event::Delete(p)) => s.pod_deleted(&p),
                _ => {}
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
