//! The ReplicaSet controller, after upstream's `pkg/controller/replicaset`: keeps
//! `spec.replicas` pods matching the selector, created from the pod template.
//!
//! Each reconcile reads the ReplicaSet and lists the pods of its namespace from the API server
//! (quorum reads), so upstream's "expectations" cache, which guards against acting twice on a
//! stale informer, is not needed: a reconcile always sees the pods earlier reconciles created
//! or deleted. Then it
//! - claims pods: adopts orphans that match the selector, releases owned pods that stopped
//!   matching ([`crate::controller_utils::claim`]);
//! - creates missing pods in slow-start batches (1, 2, 4, ...; a failed batch stops the rest)
//!   or deletes surplus ones in upstream's order ([`crate::controller_utils::sort_for_deletion`]),
//!   at most [`BURST_REPLICAS`] per reconcile;
//! - writes `status` (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
//!   observedGeneration) through the status subresource.
//!
//! Pods that are finished or being deleted do not count.
//!
//! core/v1 ReplicationControllers run through the same code, as upstream wraps its ReplicaSet
//! controller for them: [`Replicated`] is what the controller needs of either kind (an RC's
//! map selector becomes `matchLabels`), and [`run_replication_controllers`] starts it for RCs.

use crate::informers::PodEvents;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::controller_utils::{
    Selector, claim, controller_of, controller_ref, fresh_owner, is_active, is_available, is_ready,
    pod_from_template, sort_for_deletion, until_available,
};

/// The most pods one reconcile creates or deletes (upstream's `BurstReplicas`).
pub const BURST_REPLICAS: i32 = 500;

struct Ctx {
    client: Client,
}

/// What the controller needs of a replicated kind: apps/v1 ReplicaSet or core/v1
/// ReplicationController.
pub trait Replicated:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The selector as a LabelSelector (an RC's map as `matchLabels`).
    fn selector(&self) -> Option<LabelSelector>;
    /// `spec.replicas` (1 when unset).
    fn replicas(&self) -> i32;
    /// `spec.template`.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// `spec.minReadySeconds`.
    fn min_ready_seconds(&self) -> i32;
    /// The status counts: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
    /// observedGeneration.
    fn status_counts(&self) -> [i64; 5];
}

impl Replicated for ReplicaSet {
    fn selector(&self) -> Option<LabelSelector> {
        self.spec.as_ref().map(|s| s.selector.clone())
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn status_counts(&self) -> [i64; 5] {
        let s = self.status.clone().unwrap_or_default();
        [
            s.replicas.into(),
            s.fully_labeled_replicas.unwrap_or(0).into(),
            s.ready_replicas.unwrap_or(0).into(),
            s.available_replicas.unwrap_or(0).into(),
            s.observed_generation.unwrap_or(0),
        ]
    }
}

impl Replicated for ReplicationController {
    fn selector(&self) -> Option<LabelSelector> {
        let labels = self.spec.as_ref()?.selector.clone()?;
        Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        })
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn status_counts(&self) -> [i64; 5] {
        let s = self.status.clone().unwrap_or_default();
        [
            s.replicas.into(),
            s.fully_labeled_replicas.unwrap_or(0).into(),
            s.ready_replicas.unwrap_or(0).into(),
            s.available_replicas.unwrap_or(0).into(),
            s.observed_generation.unwrap_or(0),
        ]
    }
}

/// Runs the ReplicaSet controller forever.
pub async fn run(client: Client, pods: PodEvents) {
    run_for::<ReplicaSet>(client, pods).await
}

/// Runs the ReplicationController controller forever (the same controller, for RCs).
pub async fn run_replication_controllers(client: Client, pods: PodEvents) {
    run_for::<ReplicationController>(client, pods).await
}

/// The controllers a pod concerns: its controller of kind `K`, or, for an orphan, every `K`
/// in its namespace whose selector matches it (a candidate for adoption).
fn owners<K: Replicated>(store: &Store<K>, pod: &Pod) -> Vec<ObjectRef<K>> {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(r) = controller_of(&pod.metadata) {
        if r.kind == K::kind(&()) {
            return vec![ObjectRef::new(&r.name).within(&ns)];
        }
        return Vec::new();
    }
    let labels = pod.labels();
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns.as_str()))
        .filter(|o| {
            o.selector()
                .is_some_and(|s| Selector::new(&s).matches(labels))
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

async fn run_for<K: Replicated>(client: Client, pods: PodEvents) {
    let sets: Api<K> = Api::all(client.clone());
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    let kind = K::kind(&());
    controller
        // Owned pods map to their controller, orphans to every one that could adopt them.
        .watches_shared_stream(pods, move |pod| owners(&store, &pod))
        .run(
            reconcile::<K>,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(Ctx { client }),
        )
        .for_each(|r| {
            let kind = kind.clone();
            async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, %kind, "reconcile failed");
                }
            }
        })
        .await;
}

async fn reconcile<K: Replicated>(cached: Arc<K>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let sets: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    // Status is still written while the controller is being deleted.
    let Some((rs, selector)) = fresh_owner(&sets, cached.as_ref(), true, K::selector).await? else {
        return Ok(Action::await_change());
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let all = pods.list(&ListParams::default()).await?.items;
    let deleting = rs.meta().deletion_timestamp.is_some();
    let owned = claim(&pods, &controller_ref(&rs), &selector, all, !deleting).await?;
    let mut active: Vec<Pod> = owned.into_iter().filter(is_active).collect();

    let managed = if deleting {
        Ok(())
    } else {
        let want = rs.replicas();
        manage(&pods, &rs, &name, rs.template(), &mut active, want).await
    };

    let min_ready = rs.min_ready_seconds();
    let now = Timestamp::now();
    update_status(&sets, &rs, &name, rs.template(), &active, now).await?;
    managed?;
    // Ready pods become available after minReadySeconds: look again then.
    let next = active
        .iter()
        .filter_map(|p| until_available(p, min_ready, now))
        .min();
    Ok(match next {
        Some(d) if min_ready > 0 => {
            Action::requeue(Duration::try_from(d).unwrap_or_default() + Duration::from_millis(100))
        }
        _ => Action::await_change(),
    })
}

/// Creates or deletes pods so that `active` has `want` pods; on return `active` holds the
/// pods believed to exist.
async fn manage<K: Replicated>(
    pods: &Api<Pod>,
    rs: &K,
    name: &str,
    template: Option<&PodTemplateSpec>,
    active: &mut Vec<Pod>,
    want: i32,
) -> Result<(), kube::Error> {
    let have = i32::try_from(active.len()).unwrap_or(i32::MAX);
    if have < want {
        let Some(template) = template else {
            return Ok(());
        };
        let missing = (want - have).min(BURST_REPLICAS);
        let pod = pod_from_template(template, name, controller_ref(rs));
        let created = slow_start(missing, || async {
            pods.create(&PostParams::default(), &pod).await
        })
        .await;
        let (ok, err) = created;
        tracing::debug!(replicaset = %name, created = ok.len(), "created pods");
        active.extend(ok);
        if let Some(e) = err {
            return Err(e);
        }
    } else if have > want {
        let surplus = usize::try_from((have - want).min(BURST_REPLICAS)).unwrap_or(0);
        sort_for_deletion(active);
        let doomed: Vec<Pod> = active.drain(..surplus).collect();
        let dp = DeleteParams::background();
        let results = join_all(
            doomed
                .iter()
                .map(|p| pods.delete(p.metadata.name.as_deref().unwrap_or(""), &dp)),
        )
        .await;
        tracing::debug!(replicaset = %name, deleted = doomed.len(), "deleted pods");
        for r in results {
            match r {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Runs `create` `count` times in batches of 1, 2, 4, ... (upstream's `slowStartBatch`): a batch
/// with a failure stops the rest, so a template the API server rejects costs one call, not
/// `count`. Returns the created objects and the first error.
pub async fn slow_start<T, F, Fut>(count: i32, create: F) -> (Vec<T>, Option<kube::Error>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut done = Vec::new();
    let mut remaining = count;
    let mut batch = 1;
    while remaining > 0 {
        let size = batch.min(remaining);
        let results = join_all((0..size).map(|_| create())).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(t) => done.push(t),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if first_err.is_some() {
            return (done, first_err);
        }
        remaining -= size;
        batch *= 2;
    }
    (done, None)
}

/// Writes the ReplicaSet's status if it changed.
async fn update_status<K: Replicated>(
    sets: &Api<K>,
    rs: &K,
    name: &str,
    template: Option<&PodTemplateSpec>,
    active: &[Pod],
    now: Timestamp,
) -> Result<(), kube::Error> {
    let min_ready = rs.min_ready_seconds();
    let template_labels = template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let replicas = count(&|_| true);
    let fully_labeled = count(&|p| {
        let labels = p.labels();
        template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    });
    let ready = count(&is_ready);
    let available = count(&|p| is_available(p, min_ready, now));
    let generation = rs.meta().generation.unwrap_or(0);
    let new = [
        replicas.into(),
        fully_labeled.into(),
        ready.into(),
        available.into(),
        generation,
    ];
    if rs.status_counts() == new {
        return Ok(());
    }
    let patch = json!({
        "status": {
            "replicas": replicas,
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": generation,
        }
    });
    match sets
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn slow_start_doubles_batches_and_stops_on_failure() {
        let calls = Mutex::new(0);
        let (ok, err) = slow_start(10, || async {
            let mut n = calls
                .lock()
                .map_err(|_| kube::Error::LinesCodecMaxLineLengthExceeded)?;
            *n += 1;
            Ok::<_, kube::Error>(*n)
        })
        .await;
        assert_eq!(ok.len(), 10);
        assert!(err.is_none());

        // Fail from the 4th call on: batches 1 and 2 succeed, the batch of 4 fails, nothing more.
        let calls = Mutex::new(0);
        let (ok, err) = slow_start(10, || async {
            let mut n = calls
                .lock()
                .map_err(|_| kube::Error::LinesCodecMaxLineLengthExceeded)?;
            *n += 1;
            if *n >= 4 {
                Err(kube::Error::LinesCodecMaxLineLengthExceeded)
            } else {
                Ok(*n)
            }
        })
        .await;
        assert_eq!(ok.len(), 3);
        assert!(err.is_some());
        assert_eq!(*calls.lock().unwrap(), 7);
    }
}
