//! The RollingUpdate strategy, after upstream's `pkg/controller/deployment/rolling.go`: grow
//! the new ReplicaSet while the total stays within replicas + maxSurge, shrink old ones while
//! at least replicas - maxUnavailable pods stay available, one step per reconcile.

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::runtime::controller::Action;

use super::progress;
use super::sync::{cleanup, get_all, scale_in};
use super::util::{self, desired, max_unavailable, spec_replicas};
use super::{Rollout, Sets};

/// One step of a rolling update, then the rollout status.
pub async fn rollout(r: &mut Rollout, owned: Vec<ReplicaSet>) -> Result<Action, kube::Error> {
    let mut sets = get_all(r, owned, true).await?;
    if reconcile_new(r, &mut sets).await? {
        return progress::sync_rollout_status(r, &sets).await;
    }
    if reconcile_old(r, &mut sets).await? {
        return progress::sync_rollout_status(r, &sets).await;
    }
    let status = progress::calculate(&r.d, &sets);
    if progress::complete(&r.d, &status) {
        cleanup(r, &sets).await?;
    }
    progress::sync_rollout_status(r, &sets).await
}

/// Scales the new ReplicaSet towards the Deployment's size as far as maxSurge allows (or
/// down, when the Deployment shrank). Returns whether it scaled.
async fn reconcile_new(r: &Rollout, sets: &mut Sets) -> Result<bool, kube::Error> {
    let Some(new) = sets.new.clone() else {
        return Ok(false);
    };
    let want = desired(&r.d);
    let have = spec_replicas(&new);
    let target = if have > want {
        want
    } else {
        util::new_rs_new_replicas(&r.d, &sets.all(), &new)
    };
    if target == have {
        return Ok(false);
    }
    scale_in(r, sets, &new, target).await?;
    Ok(true)
}

/// Scales old ReplicaSets down: first their unavailable pods (which cost no availability),
/// then available ones while replicas - maxUnavailable stay available. Returns whether it
/// scaled.
async fn reconcile_old(r: &Rollout, sets: &mut Sets) -> Result<bool, kube::Error> {
    if util::sum_spec(&sets.old) == 0 {
        return Ok(false);
    }
    let all_pods = util::sum_spec(&sets.all());
    let min_available = desired(&r.d) - max_unavailable(&r.d);
    let new_unavailable = sets
        .new
        .as_ref()
        .map_or(0, |n| spec_replicas(n) - util::available(n));
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Ok(false);
    }
    let cleaned = cleanup_unhealthy(r, sets, max_scaled_down).await?;
    let scaled = scale_down_old(r, sets).await?;
    Ok(cleaned + scaled > 0)
}

fn oldest_first(sets: &Sets) -> Vec<ReplicaSet> {
    let mut old = sets.old.clone();
    old.sort_by(|a, b| {
        let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b))
    });
    old
}

/// Removes old ReplicaSets' unavailable replicas, at most `max` (upstream's
/// `cleanupUnhealthyReplicas`).
async fn cleanup_unhealthy(r: &Rollout, sets: &mut Sets, max: i32) -> Result<i32, kube::Error> {
    let mut total = 0;
    for rs in oldest_first(sets) {
        if total >= max {
            break;
        }
        let have = spec_replicas(&rs);
        let unhealthy = have - util::available(&rs);
        if have == 0 || unhealthy <= 0 {
            continue;
        }
        let down = (max - total).min(unhealthy);
        scale_in(r, sets, &rs, have - down).await?;
        total += down;
    }
    Ok(total)
}

/// Scales old ReplicaSets down, oldest first, by as many available pods as exceed
/// replicas - maxUnavailable (upstream's `scaleDownOldReplicaSetsForRollingUpdate`).
async fn scale_down_old(r: &Rollout, sets: &mut Sets) -> Result<i32, kube::Error> {
    let min_available = desired(&r.d) - max_unavailable(&r.d);
    let available = util::sum_available(&sets.all());
    if available <= min_available {
        return Ok(0);
    }
    let budget = available - min_available;
    let mut total = 0;
    for rs in oldest_first(sets) {
        if total >= budget {
            break;
        }
        let have = spec_replicas(&rs);
        if have == 0 {
            continue;
        }
        let down = have.min(budget - total);
        scale_in(r, sets, &rs, have - down).await?;
        total += down;
    }
    Ok(total)
}
