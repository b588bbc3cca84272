//! Deployment status and conditions, after upstream's `pkg/controller/deployment/progress.go`
//! and the status half of `sync.go`: replica counts summed over the ReplicaSets, `Available`
//! (MinimumReplicasAvailable / MinimumReplicasUnavailable) and `Progressing`
//! (NewReplicaSetCreated, FoundNewReplicaSet, ReplicaSetUpdated, NewReplicaSetAvailable,
//! ProgressDeadlineExceeded, DeploymentPaused, DeploymentResumed).

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::util::{self, desired, max_unavailable};
use super::{Rollout, Sets};

/// The Progressing reason once the new ReplicaSet is fully available.
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
/// The Progressing reason while the rollout makes progress.
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
/// The Progressing reason once the progress deadline passed without progress.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
/// The Progressing reason while paused.
pub const PAUSED: &str = "DeploymentPaused";
/// The Progressing reason after a resume.
pub const RESUMED: &str = "DeploymentResumed";

/// Whether the Deployment has a progress deadline.
pub fn has_deadline(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|p| p != i32::MAX)
}

fn condition<'a>(d: &'a Deployment, kind: &str) -> Option<&'a DeploymentCondition> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

/// The Progressing condition.
pub fn progressing(d: &Deployment) -> Option<&DeploymentCondition> {
    condition(d, "Progressing")
}

/// Sets a condition (upstream's `SetDeploymentCondition`): an identical status and reason
/// is left alone; a same-status change keeps the transition time.
pub fn set_condition(d: &mut Deployment, kind: &str, status: &str, reason: &str, message: &str) {
    let now = Time(Timestamp::now());
    let conditions = d
        .status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new);
    let existing = conditions.iter().position(|c| c.type_ == kind);
    let mut transition = Some(now.clone());
    if let Some(i) = existing {
        let c = &conditions[i];
        if c.status == status && c.reason.as_deref() == Some(reason) {
            return;
        }
        if c.status == status {
            transition = c.last_transition_time.clone();
        }
        conditions.remove(i);
    }
    conditions.push(DeploymentCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(now),
        last_transition_time: transition,
    });
}

/// Records pausing and resuming in the Progressing condition (upstream's
/// `checkPausedConditions`); a timed-out rollout keeps its condition.
pub fn check_paused(d: &mut Deployment) {
    if !has_deadline(d) {
        return;
    }
    let reason = progressing(d).and_then(|c| c.reason.clone());
    if reason.as_deref() == Some(TIMED_OUT) {
        return;
    }
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let paused_cond = reason.as_deref() == Some(PAUSED);
    if paused && !paused_cond {
        set_condition(d, "Progressing", "Unknown", PAUSED, "Deployment is paused");
    } else if !paused && paused_cond {
        set_condition(
            d,
            "Progressing",
            "Unknown",
            RESUMED,
            "Deployment is resumed",
        );
    }
}

/// The status the ReplicaSets add up to, with the Available condition (upstream's
/// `calculateStatus`); other conditions are carried over.
pub fn calculate(d: &Deployment, sets: &Sets) -> DeploymentStatus {
    let all = sets.all();
    let available = util::sum_available(&all);
    let total = util::sum_spec(&all);
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: Some(d.metadata.generation.unwrap_or(0)),
        replicas: Some(util::sum_actual(&all)),
        updated_replicas: Some(
            sets.new
                .as_ref()
                .map_or(0, |n| util::sum_actual(std::slice::from_ref(n))),
        ),
        ready_replicas: Some(util::sum_ready(&all)),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        terminating_replicas: old.terminating_replicas,
        collision_count: old.collision_count,
        conditions: old.conditions,
    };
    let mut with = Deployment {
        status: Some(status.clone()),
        ..Default::default()
    };
    if available >= desired(d) - max_unavailable(d) {
        set_condition(
            &mut with,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        );
    } else {
        set_condition(
            &mut with,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        );
    }
    status.conditions = with.status.and_then(|s| s.conditions);
    status
}

/// Whether every replica is updated and available and the spec was observed.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = desired(d);
    s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

fn made_progress(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// When the Progressing condition's deadline passes (`None`: no running deadline).
fn deadline(d: &Deployment) -> Option<Timestamp> {
    let secs = d.spec.as_ref()?.progress_deadline_seconds?;
    let c = progressing(d)?;
    if matches!(c.reason.as_deref(), Some(NEW_RS_AVAILABLE | TIMED_OUT)) {
        return None;
    }
    let from = c.last_update_time.as_ref()?.0;
    Some(from + SignedDuration::from_secs(i64::from(secs)))
}

/// Status for the sync path (scaling, paused): counts and conditions, no progress tracking.
pub async fn sync_status(r: &mut Rollout, sets: &Sets) -> Result<Action, kube::Error> {
    let status = calculate(&r.d, sets);
    write(r, status).await?;
    Ok(Action::await_change())
}

/// Status for the rollout path (upstream's `syncRolloutStatus`): the Progressing condition
/// turns NewReplicaSetAvailable when complete, ReplicaSetUpdated on progress, and
/// ProgressDeadlineExceeded once the deadline passes; a rollout still in progress is requeued
/// for its deadline.
pub async fn sync_rollout_status(r: &mut Rollout, sets: &Sets) -> Result<Action, kube::Error> {
    let mut status = calculate(&r.d, sets);
    let new_name = sets
        .new
        .as_ref()
        .and_then(|n| n.metadata.name.clone())
        .unwrap_or_default();
    let mut next = Deployment {
        metadata: r.d.metadata.clone(),
        spec: r.d.spec.clone(),
        status: Some(status.clone()),
    };
    if !has_deadline(&r.d) {
        if let Some(c) = next.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c.retain(|c| c.type_ != "Progressing");
        }
    } else {
        let current = progressing(&r.d).cloned();
        let done = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
        let old = r.d.status.clone().unwrap_or_default();
        if !done {
            if complete(&r.d, &status) {
                let msg = format!("ReplicaSet \"{new_name}\" has successfully progressed.");
                set_condition(&mut next, "Progressing", "True", NEW_RS_AVAILABLE, &msg);
            } else if made_progress(&old, &status) {
                // Progress refreshes lastUpdateTime, which restarts the deadline.
                let msg = format!("ReplicaSet \"{new_name}\" is progressing.");
                if let Some(c) = next.status.as_mut().and_then(|s| s.conditions.as_mut()) {
                    c.retain(|c| c.type_ != "Progressing");
                }
                set_condition(&mut next, "Progressing", "True", RS_UPDATED, &msg);
                if let Some(cur) = current.filter(|c| c.status == "True")
                    && let Some(c) = next
                        .status
                        .as_mut()
                        .and_then(|s| s.conditions.as_mut())
                        .and_then(|cs| cs.iter_mut().find(|c| c.type_ == "Progressing"))
                {
                    c.last_transition_time = cur.last_transition_time;
                }
            } else if deadline(&r.d).is_some_and(|at| at <= Timestamp::now()) {
                let msg = format!("ReplicaSet \"{new_name}\" has timed out progressing.");
                set_condition(&mut next, "Progressing", "False", TIMED_OUT, &msg);
            }
        }
    }
    status = next.status.clone().unwrap_or_default();
    write(r, status).await?;
    // Look again when the deadline passes, unless something changes first.
    Ok(match deadline(&r.d) {
        Some(at)
            if !complete(
                &r.d,
                r.d.status.as_ref().unwrap_or(&DeploymentStatus::default()),
            ) =>
        {
            let wait = at.duration_since(Timestamp::now());
            Action::requeue(Duration::try_from(wait).unwrap_or_default() + Duration::from_secs(1))
        }
        _ => Action::await_change(),
    })
}

fn normalized(s: &DeploymentStatus) -> serde_json::Value {
    json!({
        "observedGeneration": s.observed_generation.unwrap_or(0),
        "replicas": s.replicas.unwrap_or(0),
        "updatedReplicas": s.updated_replicas.unwrap_or(0),
        "readyReplicas": s.ready_replicas.unwrap_or(0),
        "availableReplicas": s.available_replicas.unwrap_or(0),
        "unavailableReplicas": s.unavailable_replicas.unwrap_or(0),
        "collisionCount": s.collision_count,
        "conditions": s.conditions.clone().unwrap_or_default(),
    })
}

/// Writes `status` through the status subresource if it differs from the Deployment's, and
/// keeps it as the Deployment's status.
async fn write(r: &mut Rollout, status: DeploymentStatus) -> Result<(), kube::Error> {
    let body = normalized(&status);
    if r.d.status.as_ref().map(normalized) == Some(body.clone()) {
        return Ok(());
    }
    let patch = json!({ "status": body });
    match r
        .deployments
        .patch_status(&r.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e),
    }
    r.d.status = Some(status);
    Ok(())
}
