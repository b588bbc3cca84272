//! Pods on this node: the manager watches the pods bound here (fieldSelector spec.nodeName)
//! and runs one [`worker::Worker`] per pod; it also removes runtime leftovers of pods the API
//! no longer has (deleted while the agent was down).
//!
//! - [`sandbox`]: the CRI sandbox config (hostname, DNS, ports, namespaces).
//! - [`container`]: the CRI container config (command, env, resources, security context).
//! - [`volumes`]: volumes on the node and the containers' mounts.
//! - [`images`]: pull policy and pulls.
//! - [`probes`], [`hooks`]: probes and lifecycle hooks.
//! - [`status`]: the pod status kubectl shows.
//! - [`start`], [`terminate`]: starting a container; stopping and removing a pod.

pub mod container;
pub mod hooks;
pub mod images;
pub mod probes;
pub mod sandbox;
pub mod start;
pub mod status;
pub mod terminate;
pub mod volumes;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::events::Recorder;
use crate::runtime::{Cri, cri};
use sandbox::{ClusterDns, LABEL_POD_UID};

/// What every pod worker shares.
pub struct Shared {
    /// The API client.
    pub client: Client,
    /// The container runtime.
    pub cri: Cri,
    /// This node's name.
    pub node_name: String,
    /// This node's address.
    pub node_ip: String,
    /// Where pod volumes live (`DATA_DIR/agent/pods`).
    pub pods_dir: PathBuf,
    /// Where container logs go (`DATA_DIR/agent/logs`, upstream's /var/log/pods).
    pub logs_dir: PathBuf,
    /// Cluster DNS for ClusterFirst pods.
    pub dns: ClusterDns,
    /// Events.
    pub events: Recorder,
    /// The node's allocatable cpu (cores) and memory (bytes).
    pub allocatable: (f64, f64),
}

/// Runs the pods bound to this node until `shutdown`; containers keep running after it.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.node_name));
    // Workers keep their pod: without managedFields (never read here), that is much less.
    let mut stream = watcher::watcher(api, config)
        .modify(|p| p.metadata.managed_fields = None)
        .boxed();
    let mut workers: HashMap<String, (watch::Sender<Option<Pod>>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    let mut listing: Option<HashSet<String>> = None;
    let mut synced = false;
    let mut orphan_timer = tokio::time::interval(Duration::from_secs(30));
    // The pod lifecycle event generator: one relist of the runtime a second; a pod whose
    // containers changed state wakes its worker.
    let mut relist_timer = tokio::time::interval(Duration::from_secs(1));
    let mut last_states: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    loop {
        tokio::select! {
            event = stream.next() => {
                let Some(event) = event else { return };
                match event {
                    Ok(watcher::Event::Init) => listing = Some(HashSet::new()),
                    Ok(watcher::Event::InitApply(pod)) => {
                        if let Some(l) = listing.as_mut() { l.insert(pod.uid().unwrap_or_default()); }
                        dispatch(&shared, &mut workers, pod);
                    }
                    Ok(watcher::Event::InitDone) => {
                        // Pods gone while we were not watching.
                        if let Some(seen) = listing.take() {
                            for (uid, (tx, _)) in workers.iter() {
                                if !seen.contains(uid) { let _ = tx.send(None); }
                            }
                        }
                        if !synced {
                            synced = true;
                            remove_orphans(&shared, &workers).await;
                        }
                    }
                    Ok(watcher::Event::Apply(pod)) => dispatch(&shared, &mut workers, pod),
                    Ok(watcher::Event::Delete(pod)) => {
                        if let Some((tx, _)) = workers.get(&pod.uid().unwrap_or_default()) {
                            let _ = tx.send(None);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("watching pods: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                workers.retain(|_, (_, h)| !h.is_finished());
            }
            _ = relist_timer.tick() => {
                let states = relist(&shared).await;
                for (uid, (tx, _)) in &workers {
                    if states.get(uid) != last_states.get(uid) {
                        tx.send_modify(|_| {});
                    }
                }
                last_states = states;
            }
            _ = orphan_timer.tick() => {
                workers.retain(|_, (_, h)| !h.is_finished());
                if synced { remove_orphans(&shared, &workers).await; }
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                // Dropping the senders ends the workers; containers keep running.
                for (_, (_, h)) in workers.drain() { h.abort(); }
                return;
            }
        }
    }
}

fn dispatch(
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, (watch::Sender<Option<Pod>>, tokio::task::JoinHandle<()>)>,
    pod: Pod,
) {
    let uid = pod.uid().unwrap_or_default();
    if let Some((tx, h)) = workers.get(&uid)
        && !h.is_finished()
    {
        let _ = tx.send(Some(pod));
        return;
    }
    let (tx, rx) = watch::channel(Some(pod));
    let worker = worker::Worker::new(shared.clone(), uid.clone(), rx);
    let handle = tokio::spawn(worker.run());
    workers.insert(uid, (tx, handle));
}

/// Sandboxes of pods the agent has no worker for (deleted while it was down): stopped and
/// removed, with their volumes and logs.
async fn remove_orphans(
    shared: &Shared,
    workers: &HashMap<String, (watch::Sender<Option<Pod>>, tokio::task::JoinHandle<()>)>,
) {
    let mut rt = shared.cri.runtime.clone();
    let Ok(list) = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
    else {
        return;
    };
    for s in list.into_inner().items {
        let Some(uid) = s.labels.get(LABEL_POD_UID) else {
            continue;
        };
        if workers.contains_key(uid) {
            continue;
        }
        tracing::info!(pod_uid = %uid, sandbox = %s.id, "removing the sandbox of a pod that is gone");
        let containers = rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: s.id.clone(),
                    ..Default::default()
                }),
            })
            .await
            .map(|r| r.into_inner().containers)
            .unwrap_or_default();
        for c in containers {
            let _ = rt
                .stop_container(cri::StopContainerRequest {
                    container_id: c.id,
                    timeout: 2,
                })
                .await;
        }
        let _ = rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: s.id.clone(),
            })
            .await;
        let _ = rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: s.id,
            })
            .await;
        volumes::teardown(&shared.pods_dir, uid);
        remove_logs_of(&shared.logs_dir, uid);
    }
}

/// Every pod's runtime objects and their states, by pod UID.
async fn relist(shared: &Shared) -> HashMap<String, Vec<(String, i32)>> {
    let mut rt = shared.cri.runtime.clone();
    let mut out: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    if let Ok(r) = rt
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
    {
        for c in r.into_inner().containers {
            if let Some(uid) = c.labels.get(LABEL_POD_UID) {
                out.entry(uid.clone()).or_default().push((c.id, c.state));
            }
        }
    }
    if let Ok(r) = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
    {
        for s in r.into_inner().items {
            if let Some(uid) = s.labels.get(LABEL_POD_UID) {
                out.entry(uid.clone())
                    .or_default()
                    .push((s.id, s.state + 100));
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// Removes the log directory of pod `uid` (named NS_NAME_UID).
pub fn remove_logs_of(logs_dir: &std::path::Path, uid: &str) {
    if let Ok(entries) = std::fs::read_dir(logs_dir) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .ends_with(&format!("_{uid}"))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
