//! The scheduling loop: what the informers feed the queue and the [`Cache`] ([`Shared`]),
//! and the worker that takes pods off the queue ([`Worker`]): snapshot the cache, run the
//! framework, assume the pod on the chosen node and hand the binding to the
//! [`binding::Writer`]; on failure try preemption, then write the PodScheduled condition and
//! a `FailedScheduling` event.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::Notify;

use crate::SCHEDULER_NAME;
use crate::binding::Writer;
use crate::cache::Cache;
pub use crate::cache::key_of;
use crate::framework::{
    FitError, Framework, NodeInfo, PodInfo, PostFilter, nodes_message, pod_priority,
};
use crate::listers::StoreListers;
use crate::plugins::default_framework;
use crate::plugins::volumebinding::{self, Decision};
use crate::preemption::{self, Outcome};
use crate::queue::Queue;

/// State shared by the informers and the worker.
pub struct Shared {
    /// Pods waiting for a node.
    pub queue: Mutex<Queue>,
    /// Wakes the worker when the queue may have work.
    pub wake: Notify,
    /// Nodes with their pods.
    pub cache: Mutex<Cache>,
}

/// Whether this scheduler should place `pod`: ours, unbound, not being deleted, not finished.
pub fn needs_scheduling(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let ours = spec
        .scheduler_name
        .as_deref()
        .is_none_or(|n| n.is_empty() || n == SCHEDULER_NAME);
    ours && spec.node_name.as_deref().is_none_or(str::is_empty)
        && pod.metadata.deletion_timestamp.is_none()
        && !is_terminal(pod)
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// What a pod looked like, for telling its own changes from status writes.
pub fn fingerprint(pod: &Pod) -> String {
    serde_json::to_string(&(&pod.spec, &pod.metadata.labels)).unwrap_or_default()
}

impl Shared {
    /// A node was added or changed (or the node cache synced).
    pub fn cluster_changed(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.move_all();
        }
        self.wake.notify_one();
    }

    /// A pod was added or changed.
    pub fn pod_seen(&self, pod: &Pod) {
        let key = key_of(pod);
        if needs_scheduling(pod) {
            if let Ok(mut q) = self.queue.lock() {
                q.add(&key, &fingerprint(pod), pod_priority(pod));
            }
            self.wake.notify_one();
            return;
        }
        if let Ok(mut q) = self.queue.lock() {
            q.forget(&key);
            // A finished pod frees its node's resources.
            if is_terminal(pod) && pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                q.move_all();
            }
        }
    }

    /// A pod was deleted: it frees room, so unschedulable pods may fit.
    pub fn pod_deleted(&self, pod: &Pod) {
        let key = key_of(pod);
        if let Ok(mut c) = self.cache.lock() {
            c.delete_pod(&key);
        }
        self.cluster_changed_after(|q| q.forget(&key));
    }

    fn cluster_changed_after(&self, f: impl FnOnce(&mut Queue)) {
        if let Ok(mut q) = self.queue.lock() {
            f(&mut q);
            q.move_all();
        }
        self.wake.notify_one();
    }
}

/// Takes pods off the queue and places them.
pub struct Worker {
    client: Client,
    nodes: Store<Node>,
    pods: Store<Pod>,
    shared: Arc<Shared>,
    framework: Framework,
    listers: StoreListers,
    rng: StdRng,
    writer: Writer,
}

impl Worker {
    /// A worker with the default profile.
    pub fn new(
        client: Client,
        nodes: Store<Node>,
        pods: Store<Pod>,
        listers: StoreListers,
        shared: Arc<Shared>,
    ) -> Self {
        Worker {
            writer: Writer::new(client.clone(), shared.clone()),
            client,
            nodes,
            pods,
            shared,
            listers,
            framework: default_framework(),
            rng: StdRng::from_os_rng(),
        }
    }

    /// Schedules forever, once both caches have synced.
    pub async fn run(mut self) {
        if self.nodes.wait_until_ready().await.is_err()
            || self.pods.wait_until_ready().await.is_err()
        {
            tracing::error!("scheduler informers stopped before syncing");
            return;
        }
        tracing::info!("scheduler caches synced");
        loop {
            let next = match self.shared.queue.lock() {
                Ok(mut q) => {
                    q.flush(Instant::now());
                    q.pop().ok_or_else(|| q.next_wakeup())
                }
                Err(_) => return,
            };
            match next {
                Ok(key) => self.schedule_one(&key).await,
                Err(wakeup) => {
                    let notified = self.shared.wake.notified();
                    match wakeup {
                        Some(at) => {
                            tokio::select! {
                                _ = notified => {}
                                _ = tokio::time::sleep_until(at.into()) => {}
                            }
                        }
                        None => notified.await,
                    }
                }
            }
        }
    }

    async fn schedule_one(&mut self, key: &str) {
        let Some((ns, name)) = key.split_once('/') else {
            return;
        };
        let pod = self.pods.get(&ObjectRef::new(name).within(ns));
        let Some(pod) = pod.filter(|p| needs_scheduling(p)) else {
            self.writer.forget(key);
            if let Ok(mut q) = self.shared.queue.lock() {
                q.forget(key);
            }
            return;
        };
        let info = PodInfo::new(pod.clone());
        let (nodes, affinity) = match self.shared.cache.lock() {
            // Its binding is in flight.
            Ok(c) if c.is_assumed(key) => return,
            Ok(c) => c.snapshot(key, info.priority()),
            Err(_) => return,
        };
        match self
            .framework
            .schedule(&info, &nodes, affinity, &self.listers, &mut self.rng)
        {
            Ok((node, prepared)) => {
                let chosen = nodes
                    .binary_search_by(|n| n.name.as_str().cmp(&node))
                    .ok()
                    .map(|i| nodes[i].clone());
                // Let go of the snapshot before the cache changes, so it is not copied.
                drop(nodes);
                if let Some(n) = chosen {
                    self.bind_volumes(key, &prepared, &n).await;
                }
                if let Ok(mut c) = self.shared.cache.lock() {
                    c.assume(pod.clone(), &node);
                }
                self.writer.bind(key.to_string(), pod, node).await;
            }
            Err(mut fit) => {
                match preemption::preempt(&self.framework, &info, &nodes, &self.listers, &fit) {
                    Outcome::Nominate(c) => {
                        fit.post_filter = PostFilter::Nominated;
                        self.evict(key, &pod, &c).await;
                    }
                    Outcome::NotEligible(why) => fit.post_filter = PostFilter::Message(why.into()),
                    Outcome::NoCandidates(statuses) => {
                        fit.post_filter =
                            PostFilter::Message(nodes_message(nodes.len(), &statuses));
                    }
                }
                self.requeue(key, &pod);
                self.record_failure(key, &pod, &fit).await;
            }
        }
    }

    /// Binds the pod's late-binding claims for `node` (upstream's VolumeBinding PreBind, in
    /// the form corten's binder and provisioner understand).
    async fn bind_volumes(&self, key: &str, pod: &PodInfo, node: &NodeInfo) {
        for d in volumebinding::decisions(pod, node) {
            let (ns, claim, patch) = match &d {
                Decision::BindVolume {
                    namespace,
                    claim,
                    volume,
                } => (
                    namespace,
                    claim,
                    serde_json::json!({"spec": {"volumeName": volume}}),
                ),
                Decision::Provision { namespace, claim } => (
                    namespace,
                    claim,
                    serde_json::json!({"metadata": {"annotations": {
                        volumebinding::SELECTED_NODE: node.name,
                    }}}),
                ),
            };
            let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
            if let Err(e) = api
                .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(pod = %key, claim, error = %e, "claim update failed");
            }
        }
    }

    /// Evicts the victims of a preemption (graceful deletes, with the DisruptionTarget
    /// condition and a `Preempted` event as upstream) and nominates the node for `pod`.
    async fn evict(&self, key: &str, pod: &Pod, c: &preemption::Candidate) {
        tracing::info!(pod = %key, node = %c.node, victims = c.victims.len(), "preempting");
        let message = format!(
            "Preempted by pod {} on node {}",
            pod.uid().unwrap_or_default(),
            c.node
        );
        for v in &c.victims {
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &v.namespace().unwrap_or_default());
            let condition = serde_json::json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": format!("{SCHEDULER_NAME}: preempting to accommodate a higher priority pod"),
                "lastTransitionTime": Time(jiff::Timestamp::now()),
            }]}});
            if let Err(e) = api
                .patch_status(
                    &v.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&condition),
                )
                .await
            {
                tracing::debug!(victim = %v.name_any(), error = %e, "DisruptionTarget update failed");
            }
            match api.delete(&v.name_any(), &DeleteParams::default()).await {
                Ok(_) => self.writer.emit(v, "Preempted", "Normal", &message).await,
                Err(e) => {
                    tracing::warn!(victim = %v.name_any(), error = %e, "preemption delete failed")
                }
            }
        }
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = serde_json::json!({"status": {"nominatedNodeName": c.node}});
        if let Err(e) = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(pod = %key, error = %e, "nominatedNodeName update failed");
        }
    }

    fn requeue(&self, key: &str, pod: &Pod) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.failed(key, &fingerprint(pod), pod_priority(pod), Instant::now());
        }
    }

    /// Writes PodScheduled=False (when it changed) and a FailedScheduling event.
    async fn record_failure(&self, key: &str, pod: &Pod, fit: &FitError) {
        let message = fit.message();
        tracing::info!(pod = %key, %message, "unschedulable");
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        let unchanged = current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message.as_str())
        });
        if !unchanged {
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let patch = serde_json::json!({"status": {"conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": Time(jiff::Timestamp::now()),
            }]}});
            if let Err(e) = api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                tracing::debug!(pod = %key, error = %e, "PodScheduled condition update failed");
            }
        }
        self.writer
            .emit(pod, "FailedScheduling", "Warning", &message)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::pod;

    #[test]
    fn only_unbound_pods_of_this_scheduler_are_queued() {
        let p = pod("", "");
        assert!(needs_scheduling(&p));
        let mut other = p.clone();
        other.spec.as_mut().unwrap().scheduler_name = Some("other".into());
        assert!(!needs_scheduling(&other));
        let mut named = p.clone();
        named.spec.as_mut().unwrap().scheduler_name = Some(SCHEDULER_NAME.into());
        assert!(needs_scheduling(&named));
        let mut bound = p.clone();
        bound.spec.as_mut().unwrap().node_name = Some("n".into());
        assert!(!needs_scheduling(&bound));
        let mut done = p;
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        assert!(!needs_scheduling(&done));
    }

    #[test]
    fn status_writes_do_not_change_the_fingerprint() {
        let p = pod("1", "");
        let mut with_status = p.clone();
        with_status.status = Some(Default::default());
        assert_eq!(fingerprint(&p), fingerprint(&with_status));
        let mut relabelled = p.clone();
        relabelled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        assert_ne!(fingerprint(&p), fingerprint(&relabelled));
    }
}
