//! What the Job controller deletes, and what it lets go: pods (with or without counting them
//! as failed), the `batch.kubernetes.io/job-tracking` finalizer (also from pods whose job is
//! gone, in a loop of its own), and finished jobs whose `ttlSecondsAfterFinished` passed
//! (upstream's TTL-after-finished controller, foreground propagation).

use crate::informers::PodEvents;
use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::util::{self, has_tracking_finalizer};
use crate::controller_utils::controller_of;

/// Deletes a finished job once its `ttlSecondsAfterFinished` passed; otherwise asks to be
/// called again then.
pub(super) async fn ttl(
    jobs: &Api<Job>,
    job: &Job,
    conds: &[JobCondition],
) -> Result<Action, kube::Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    let finished_at = conds
        .iter()
        .filter(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
        .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
        .max()
        .unwrap_or_else(Timestamp::now);
    let expires = finished_at + SignedDuration::from_secs(i64::from(ttl));
    let now = Timestamp::now();
    if expires > now {
        let wait = Duration::try_from(expires.duration_since(now)).unwrap_or_default();
        return Ok(Action::requeue(wait + Duration::from_millis(100)));
    }
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions {
            uid: job.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match jobs.delete(&job.name_any(), &dp).await {
        Ok(_) => {
            tracing::info!(job = %job.name_any(), "deleted finished job (ttlSecondsAfterFinished)")
        }
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => {}
        Err(e) => return Err(e),
    }
    Ok(Action::await_change())
}

/// Deletes pods (background), ignoring those already gone. With `untrack` (upstream's
/// `deleteJobPods`, for suspension and surplus pods) their tracking finalizer goes first, so
/// they do not count as failed; without it (upstream's `deleteActivePods`, for a failing job)
/// they count as failed once gone.
pub(super) async fn delete_pods(
    pods: &Api<Pod>,
    doomed: &[Pod],
    untrack: bool,
) -> Result<(), kube::Error> {
    let freed = if untrack {
        remove_finalizers(pods, doomed.iter()).await?
    } else {
        HashSet::new()
    };
    let doomed = doomed.iter().filter(|p| {
        !untrack || !has_tracking_finalizer(p) || p.uid().is_some_and(|u| freed.contains(&u))
    });
    let dp = DeleteParams::background();
    let results =
        join_all(doomed.map(|p| pods.delete(p.metadata.name.as_deref().unwrap_or(""), &dp))).await;
    for r in results {
        match r {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes the tracking finalizer from those of `list` that carry it; returns the uids of the
/// pods that no longer carry it (freed now or gone).
pub(super) async fn remove_finalizers<'a>(
    pods: &Api<Pod>,
    list: impl Iterator<Item = &'a Pod>,
) -> Result<HashSet<String>, kube::Error> {
    let mut freed = HashSet::new();
    for p in list.filter(|p| has_tracking_finalizer(p)) {
        let kept: Vec<&String> = p
            .finalizers()
            .iter()
            .filter(|f| *f != util::TRACKING_FINALIZER)
            .collect();
        // An empty list is dropped, as the Go client's omitempty does.
        let kept = if kept.is_empty() {
            json!(null)
        } else {
            json!(kept)
        };
        let patch = json!({
            "metadata": {"resourceVersion": p.resource_version(), "finalizers": kept}
        });
        match pods
            .patch(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            // Changed meanwhile: the watch event brings the pod back.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e),
        }
        freed.insert(p.uid().unwrap_or_default());
    }
    Ok(freed)
}

/// Removes the tracking finalizer from pods whose Job is gone, being deleted or no longer
/// their controller (upstream handles these in its pod event handlers).
/// (A deleted pod has no finalizers left, so deletions among `pods` are passed over.)
pub(super) async fn free_orphans(client: Client, cache: Store<Job>, mut pods: PodEvents) {
    while let Some(pod) = pods.next().await {
        if !has_tracking_finalizer(&pod) {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        let owner = controller_of(&pod.metadata)
            .filter(|o| o.kind == "Job")
            .cloned();
        let orphan = match owner {
            None => true,
            Some(o) => {
                let cached = cache.get(&ObjectRef::new(&o.name).within(&ns));
                let live = cached.is_some_and(|j| {
                    j.uid().as_deref() == Some(o.uid.as_str())
                        && j.metadata.deletion_timestamp.is_none()
                });
                if live {
                    continue;
                }
                // The cache may lag: only a fresh read decides.
                let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
                match jobs.get_opt(&o.name).await {
                    Ok(Some(j)) => {
                        j.uid() != Some(o.uid) || j.metadata.deletion_timestamp.is_some()
                    }
                    Ok(None) => true,
                    Err(_) => false,
                }
            }
        };
        if orphan {
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            if let Err(e) = remove_finalizers(&api, std::iter::once(&*pod)).await {
                tracing::debug!(pod = %pod.name_any(), error = %e, "tracking finalizer not removed");
            }
        }
    }
}
