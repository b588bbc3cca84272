//! The Recreate strategy, after upstream's `pkg/controller/deployment/recreate.go`: scale every
//! old ReplicaSet to zero, wait until none of their pods is left running, then create (or
//! scale up) the new ReplicaSet.

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::ListParams;
use kube::runtime::controller::Action;

use super::progress;
use super::sync::{cleanup, get_all, scale_in};
use super::util::{self, desired, spec_replicas};
use super::{Rollout, Sets};
use crate::controller_utils::controller_of;

/// How often a Recreate rollout waiting for its old pods to go looks again.
const OLD_PODS_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// One step of a Recreate rollout, then the rollout status.
pub async fn rollout(r: &mut Rollout, owned: Vec<ReplicaSet>) -> Result<Action, kube::Error> {
    let mut sets = get_all(r, owned.clone(), false).await?;
    let mut scaled = false;
    for rs in sets.old.clone().iter().filter(|rs| spec_replicas(rs) > 0) {
        scale_in(r, &mut sets, rs, 0).await?;
        scaled = true;
    }
    if scaled || old_pods_running(r, &sets).await? {
        progress::sync_rollout_status(r, &sets).await?;
        // Pods are not watched by this controller, and the old ReplicaSets' last event may
        // come before their last pod is gone: look again shortly (upstream enqueues the
        // Deployment when a pod of a Recreate rollout is deleted).
        return Ok(Action::requeue(OLD_PODS_POLL));
    }
    if sets.new.is_none() {
        sets = get_all(r, owned, true).await?;
    }
    if let Some(new) = sets.new.clone()
        && spec_replicas(&new) != desired(&r.d)
    {
        scale_in(r, &mut sets, &new, desired(&r.d)).await?;
    }
    let status = progress::calculate(&r.d, &sets);
    if progress::complete(&r.d, &status) {
        cleanup(r, &sets).await?;
    }
    progress::sync_rollout_status(r, &sets).await
}

/// Whether an old ReplicaSet still has pods, by its status or by a pod (even a terminating
/// one) that has not finished.
async fn old_pods_running(r: &Rollout, sets: &Sets) -> Result<bool, kube::Error> {
    if util::sum_actual(&sets.old) > 0 {
        return Ok(true);
    }
    let old_uids: Vec<&str> = sets
        .old
        .iter()
        .filter_map(|rs| rs.metadata.uid.as_deref())
        .collect();
    let pods = r.pods.list(&ListParams::default()).await?.items;
    Ok(pods.iter().any(|p| {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        controller_of(&p.metadata).is_some_and(|o| old_uids.contains(&o.uid.as_str()))
            && !matches!(phase, Some("Succeeded" | "Failed"))
    }))
}
