//! The Job controller, after upstream's `pkg/controller/job` (v1.32 behaviour) and the
//! TTL-after-finished controller.
//!
//! A reconcile reads the Job and lists its namespace's pods from the API server (as the
//! ReplicaSet controller does, so no expectations cache is needed), claims pods by selector,
//! then:
//! - counts finished pods exactly once through the `batch.kubernetes.io/job-tracking`
//!   finalizer, in two status writes as upstream does: newly finished pods' uids go to
//!   `status.uncountedTerminatedPods` (Indexed jobs: their index to `completedIndexes`), their
//!   finalizers are removed, then the uids move into `succeeded` / `failed`. A pod deleted
//!   before it succeeded counts as failed;
//! - matches each failed pod against the `podFailurePolicy` (`policy`): a FailJob rule fails
//!   the job (reason `PodFailurePolicy`), an Ignore rule leaves the failure uncounted;
//! - fails the job when `failed > backoffLimit` (or, with restartPolicy OnFailure, when the
//!   active pods' restarts reach it) with reason `BackoffLimitExceeded`, or when it has been
//!   active for `activeDeadlineSeconds` (`DeadlineExceeded`), or (Indexed, with
//!   `backoffLimitPerIndex`, see `indexes`) when more than `maxFailedIndexes` indexes failed
//!   (`MaxFailedIndexesExceeded`) or every index finished and some failed (`FailedIndexes`):
//!   first the `FailureTarget` condition and the deletion of the active pods, then `Failed`
//!   once no pod is left terminating or uncounted;
//! - otherwise keeps `min(completions - succeeded, parallelism)` pods active (Indexed: one pod
//!   per missing index, named `JOB-INDEX-xxxxx`), replacing failed pods after upstream's
//!   back-off (10 s doubling per failure since the last success, at most 6 min), and deletes
//!   every active pod of a suspended job (`Suspended` condition; resuming resets `startTime`);
//! - replaces a terminating pod (being deleted, not yet Succeeded or Failed) at once with
//!   `podReplacementPolicy: TerminatingOrFailed` (the default without a `podFailurePolicy`),
//!   where it also counts as failed at once; with `Failed` it counts neither as failed nor
//!   as replaced until its phase is Failed (its index stays taken), as upstream's
//!   `onlyReplaceFailedPods`. `status.terminating` counts such pods either way;
//! - completes the job when enough pods succeeded and none is active, or (Indexed) when its
//!   `successPolicy` is met (reason `SuccessPolicy`; the other pods are deleted first):
//!   `SuccessCriteriaMet`, then `Complete` with `completionTime`;
//! - deletes a finished job `ttlSecondsAfterFinished` after it finished (foreground
//!   propagation, as upstream's TTL controller).
//!
//! `cleanup` holds the deletions and a second loop, which removes the tracking finalizer from
//! pods whose Job is gone or being deleted, or that were orphaned, so that they can go.

mod cleanup;
pub mod indexes;
pub mod policy;
pub mod util;

use crate::informers::PodEvents;
use cleanup::{delete_pods, free_orphans, remove_finalizers, ttl};

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::controller_utils::{
    Selector, claim, controller_of, controller_ref, is_active, is_ready, owners_of,
    sort_for_deletion,
};
use crate::replicaset::{BURST_REPLICAS, slow_start};
use util::{
    backoff, completion_index, count, counts_failed, ensure_condition, failures_since_success,
    format_indexes, has_condition, has_tracking_finalizer, indexes_to_create, is_terminating,
    min_some, missing_pods, only_replaces_failed, parse_indexes, past_backoff_on_failure, phase,
    pod_for, uncounted_of, want_active,
};

struct Ctx {
    client: Client,
}

fn selector_of(job: &Job) -> Option<&LabelSelector> {
    job.spec.as_ref()?.selector.as_ref()
}

/// Runs the controller (and the loop that frees orphaned pods) forever.
/// `pods` and `orphan_pods` are two subscriptions to the shared pod informer.
pub async fn run(client: Client, pods: PodEvents, orphan_pods: PodEvents) {
    let jobs: Api<Job> = Api::all(client.clone());
    let controller = Controller::new(jobs, watcher::Config::default());
    let store = controller.store();
    let cache = store.clone();
    let main = controller
        .watches_shared_stream(pods, move |pod| owners_of(&store, &*pod, selector_of))
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(Ctx {
                client: client.clone(),
            }),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "job reconcile failed");
            }
        });
    tokio::join!(main, free_orphans(client, cache, orphan_pods));
}

/// What a job is finishing with: the terminal condition to add once every pod is counted.
struct Finish {
    kind: &'static str,
    reason: String,
    message: String,
}

async fn reconcile(cached: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let job = match jobs.get_opt(&name).await? {
        Some(j) if j.metadata.uid == cached.metadata.uid => j,
        _ => return Ok(Action::await_change()),
    };
    let Some(spec) = job.spec.clone() else {
        return Ok(Action::await_change());
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let all = pods.list(&ListParams::default()).await?.items;
    let uid = job.uid().unwrap_or_default();
    if job.metadata.deletion_timestamp.is_some() {
        let mine: Vec<Pod> = all
            .into_iter()
            .filter(|p| controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        remove_finalizers(&pods, mine.iter()).await?;
        return Ok(Action::await_change());
    }
    let conds = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let finished = has_condition(&conds, "Complete") || has_condition(&conds, "Failed");
    let selector = Selector::new(spec.selector.as_ref().unwrap_or(&LabelSelector::default()));
    if !selector.is_valid() {
        return Ok(Action::await_change());
    }
    let owned = claim(&pods, &controller_ref(&job), &selector, all, !finished).await?;
    if finished {
        remove_finalizers(&pods, owned.iter()).await?;
        return ttl(&jobs, &job, &conds).await;
    }
    sync(&jobs, &pods, job, spec, owned).await
}

/// One pass over an unfinished job (upstream's `syncJob`).
async fn sync(
    jobs: &Api<Job>,
    pods: &Api<Pod>,
    job: Job,
    spec: JobSpec,
    owned: Vec<Pod>,
) -> Result<Action, kube::Error> {
    let now = Timestamp::now();
    let old_status = job.status.clone().unwrap_or_default();
    let mut st = old_status.clone();
    let mut conds = st.conditions.take().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let suspended = spec.suspend == Some(true);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let mut requeue: Option<Duration> = None;

    let uncounted = st.uncounted_terminated_pods.take().unwrap_or_default();
    let mut unc_succ: BTreeSet<String> = uncounted.succeeded.into_iter().flatten().collect();
    let mut unc_fail: BTreeSet<String> = uncounted.failed.into_iter().flatten().collect();
    let mut completed = parse_indexes(st.completed_indexes.as_deref().unwrap_or(""));
    let policy = spec.pod_failure_policy.as_ref();
    let per_index = spec.backoff_limit_per_index.filter(|_| indexed);
    let mut failed_idx = parse_indexes(st.failed_indexes.as_deref().unwrap_or(""));
    let only_failed = only_replaces_failed(&spec);

    // Newly finished pods: counted (as uncounted uids) before their finalizers go.
    let mut to_finalize: Vec<&Pod> = Vec::new();
    for p in owned.iter().filter(|p| has_tracking_finalizer(p)) {
        let uid = p.uid().unwrap_or_default();
        let valid_index = completion_index(p).filter(|i| completions.is_some_and(|c| *i < c));
        if phase(p) == "Succeeded" && !unc_fail.contains(&uid) {
            if indexed {
                completed.extend(valid_index);
            } else {
                unc_succ.insert(uid);
            }
            to_finalize.push(p);
        } else if counts_failed(p, only_failed) {
            let verdict = policy::verdict(policy, p);
            if let (Some(limit), Some(i)) = (per_index, valid_index)
                && !completed.contains(&i)
                && indexes::index_failed(limit, &verdict, p)
            {
                failed_idx.insert(i);
            }
            if verdict.counts && (!indexed || valid_index.is_some()) {
                unc_fail.insert(uid);
            }
            to_finalize.push(p);
        }
    }
    let succeeded = if indexed {
        i32::try_from(completed.len()).unwrap_or(i32::MAX)
    } else {
        st.succeeded.unwrap_or(0) + count(unc_succ.len())
    };
    let failed = st.failed.unwrap_or(0) + count(unc_fail.len());
    let mut active: Vec<Pod> = owned.iter().filter(|p| is_active(p)).cloned().collect();
    let mut terminating = count(owned.iter().filter(|p| is_terminating(p)).count());

    if st.start_time.is_none() && !suspended {
        st.start_time = Some(Time(now));
    }

    // A finish decided earlier, or now.
    let mut finish = if let Some(c) = conds
        .iter()
        .find(|c| c.type_ == "FailureTarget" && c.status == "True")
    {
        Some(finish_from("Failed", c))
    } else {
        conds
            .iter()
            .find(|c| c.type_ == "SuccessCriteriaMet" && c.status == "True")
            .map(|c| finish_from("Complete", c))
    };
    if finish.is_none() {
        let deadline = spec
            .active_deadline_seconds
            .filter(|_| !suspended)
            .zip(st.start_time.as_ref())
            .map(|(secs, start)| start.0 + SignedDuration::from_secs(secs));
        // A FailJob rule first, then the limits, as upstream's syncJob.
        let fail_job = policy.and_then(|_| {
            owned
                .iter()
                .filter(|p| counts_failed(p, only_failed))
                .find_map(|p| policy::verdict(policy, p).fail_job)
        });
        let failed_indexes = count(failed_idx.len());
        let failure: Option<(&str, String)> = if let Some(message) = fail_job {
            Some((policy::REASON, message))
        } else if failed > backoff_limit || past_backoff_on_failure(&spec, &active) {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into(),
            ))
        } else if deadline.is_some_and(|d| d <= now) {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline".into(),
            ))
        } else if per_index.is_some() && spec.max_failed_indexes.is_some_and(|m| failed_indexes > m)
        {
            Some((
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes".into(),
            ))
        } else if per_index.is_some()
            && failed_indexes > 0
            && failed_indexes + count(completed.len()) >= completions.unwrap_or(0)
        {
            Some(("FailedIndexes", "Job has failed indexes".into()))
        } else {
            if let Some(d) = deadline {
                requeue = Some(Duration::try_from(d.duration_since(now)).unwrap_or_default());
            }
            None
        };
        if let Some((reason, message)) = failure {
            ensure_condition(&mut conds, "FailureTarget", "True", reason, &message, now);
            finish = Some(Finish {
                kind: "Failed",
                reason: reason.into(),
                message,
            });
        } else if let Some(message) = indexed
            .then(|| {
                let policy = spec.success_policy.as_ref();
                indexes::success_policy_met(policy, completions.unwrap_or(0), &completed)
            })
            .flatten()
        {
            // The success policy is met: the other pods go, then the job completes.
            let reason = indexes::SUCCESS_POLICY_REASON;
            ensure_condition(
                &mut conds,
                "SuccessCriteriaMet",
                "True",
                reason,
                &message,
                now,
            );
            finish = Some(Finish {
                kind: "Complete",
                reason: reason.into(),
                message,
            });
        }
    }

    let mut manage_err = None;
    if finish.is_none() {
        // Failed indexes are as done as succeeded ones: never run again.
        let done: BTreeSet<i32> = completed.union(&failed_idx).copied().collect();
        let wait = manage(
            pods,
            &job,
            &spec,
            &owned,
            &mut active,
            &done,
            succeeded + count(failed_idx.len()),
            suspended,
            now,
        )
        .await;
        match wait {
            Ok(w) => requeue = min_some(requeue, w),
            Err(e) => manage_err = Some(e),
        }
        let done = match completions {
            None => succeeded > 0 && active.is_empty(),
            Some(c) => succeeded >= c && active.is_empty(),
        };
        if done && !suspended {
            let (reason, message) = (
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            );
            ensure_condition(
                &mut conds,
                "SuccessCriteriaMet",
                "True",
                reason,
                message,
                now,
            );
            finish = Some(Finish {
                kind: "Complete",
                reason: reason.into(),
                message: message.into(),
            });
        }
    } else {
        // A failing job's active pods go (they count as failed once they are gone).
        delete_pods(pods, &active, false).await?;
        terminating += count(active.len());
        active.clear();
    }

    if suspended {
        ensure_condition(
            &mut conds,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            now,
        );
    } else if ensure_condition(
        &mut conds,
        "Suspended",
        "False",
        "JobResumed",
        "Job resumed",
        now,
    ) {
        // activeDeadlineSeconds counts from the resume.
        st.start_time = Some(Time(now));
    }

    // First write: the newly finished pods as uncounted.
    st.active = Some(count(active.len()));
    st.ready = Some(count(active.iter().filter(|p| is_ready(p)).count()));
    st.terminating = Some(terminating);
    st.failed = Some(st.failed.unwrap_or(0));
    if indexed {
        st.succeeded = Some(succeeded);
        st.completed_indexes = Some(format_indexes(&completed));
        st.failed_indexes = per_index.map(|_| format_indexes(&failed_idx));
    } else {
        st.succeeded = Some(st.succeeded.unwrap_or(0));
    }
    st.uncounted_terminated_pods = Some(uncounted_of(&unc_succ, &unc_fail));
    st.conditions = (!conds.is_empty()).then(|| conds.clone());
    let job = write_status(jobs, job, &old_status, st.clone()).await?;

    // Then the finalizers go, then the counters move.
    let freed = remove_finalizers(pods, to_finalize.into_iter()).await?;
    let tracked: HashSet<String> = owned
        .iter()
        .filter(|p| has_tracking_finalizer(p))
        .filter_map(|p| p.uid())
        .filter(|u| !freed.contains(u))
        .collect();
    let moved_succ: Vec<String> = unc_succ
        .iter()
        .filter(|u| !tracked.contains(*u))
        .cloned()
        .collect();
    let moved_fail: Vec<String> = unc_fail
        .iter()
        .filter(|u| !tracked.contains(*u))
        .cloned()
        .collect();
    for u in &moved_succ {
        unc_succ.remove(u);
    }
    for u in &moved_fail {
        unc_fail.remove(u);
    }
    let before = st.clone();
    if !indexed {
        st.succeeded = Some(st.succeeded.unwrap_or(0) + count(moved_succ.len()));
    }
    st.failed = Some(st.failed.unwrap_or(0) + count(moved_fail.len()));
    st.uncounted_terminated_pods = Some(uncounted_of(&unc_succ, &unc_fail));
    if let Some(f) = &finish
        && unc_succ.is_empty()
        && unc_fail.is_empty()
        && terminating == 0
        && active.is_empty()
    {
        ensure_condition(&mut conds, f.kind, "True", &f.reason, &f.message, now);
        if f.kind == "Complete" {
            st.completion_time = Some(Time(now));
        }
        st.ready = Some(0);
        st.terminating = Some(0);
        st.conditions = Some(conds);
        tracing::info!(job = %job.name_any(), condition = f.kind, reason = %f.reason, "job finished");
    }
    write_status(jobs, job, &before, st).await?;
    if let Some(e) = manage_err {
        return Err(e);
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d + Duration::from_millis(100)),
        None => Action::await_change(),
    })
}

fn finish_from(kind: &'static str, c: &JobCondition) -> Finish {
    Finish {
        kind,
        reason: c.reason.clone().unwrap_or_default(),
        message: c.message.clone().unwrap_or_default(),
    }
}

/// Creates and deletes pods (upstream's `manageJob`); `active` ends as the pods believed
/// active. `completed` holds the indexes not to run again (succeeded or failed), `succeeded`
/// counts them. Returns how long to wait before creating more (the failure back-off, per
/// index with backoffLimitPerIndex).
#[allow(clippy::too_many_arguments)]
async fn manage(
    pods: &Api<Pod>,
    job: &Job,
    spec: &JobSpec,
    owned: &[Pod],
    active: &mut Vec<Pod>,
    completed: &BTreeSet<i32>,
    succeeded: i32,
    suspended: bool,
    now: Timestamp,
) -> Result<Option<Duration>, kube::Error> {
    if suspended {
        delete_pods(pods, active, true).await?;
        active.clear();
        return Ok(None);
    }
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    if indexed {
        // Pods of an index that succeeded, out of range, or duplicated go.
        let completions = spec.completions.unwrap_or(0);
        let mut seen = BTreeMap::new();
        let mut extra = Vec::new();
        sort_for_deletion(active);
        active.reverse();
        for p in active.drain(..) {
            match completion_index(&p) {
                Some(i) if i < completions && !completed.contains(&i) && !seen.contains_key(&i) => {
                    seen.insert(i, p);
                }
                _ => extra.push(p),
            }
        }
        delete_pods(pods, &extra, true).await?;
        active.extend(seen.into_values());
    }
    let have = count(active.len());
    let want = want_active(
        spec.completions,
        spec.parallelism.unwrap_or(1),
        succeeded,
        have,
    );
    // With podReplacementPolicy Failed, a terminating pod keeps its place (and its index)
    // until it has failed.
    let only_failed = only_replaces_failed(spec);
    let terminating: Vec<&Pod> = owned
        .iter()
        .filter(|p| only_failed && is_terminating(p))
        .collect();
    if have > want {
        sort_for_deletion(active);
        let surplus = usize::try_from(have - want).unwrap_or(0);
        let doomed: Vec<Pod> = active.drain(..surplus).collect();
        delete_pods(pods, &doomed, true).await?;
        return Ok(None);
    }
    let missing = missing_pods(want, have, count(terminating.len()));
    if missing == 0 {
        return Ok(None);
    }
    let per_index = spec.backoff_limit_per_index.filter(|_| indexed).is_some();
    let histories =
        per_index.then(|| indexes::histories(owned, spec.pod_failure_policy.as_ref(), only_failed));
    let (failures, last) = failures_since_success(owned);
    if let Some(last) = last.filter(|_| !per_index) {
        let ready_at = last + SignedDuration::try_from(backoff(failures)).unwrap_or_default();
        if ready_at > now {
            return Ok(Some(
                Duration::try_from(ready_at.duration_since(now)).unwrap_or_default(),
            ));
        }
    }
    let missing = usize::try_from(missing.min(BURST_REPLICAS)).unwrap_or(0);
    let mut wait = None;
    let to_create: Vec<Pod> = if indexed {
        let active_idx: BTreeSet<i32> = active
            .iter()
            .chain(terminating.iter().copied())
            .filter_map(completion_index)
            .collect();
        let mut chosen = Vec::new();
        let candidates = indexes_to_create(
            spec.completions.unwrap_or(0),
            completed,
            &active_idx,
            usize::MAX,
        );
        for i in candidates {
            if chosen.len() >= missing {
                break;
            }
            let Some(histories) = &histories else {
                chosen.push(pod_for(job, Some(i)));
                continue;
            };
            let h = histories.get(&i).copied().unwrap_or_default();
            if let Some(at) = indexes::ready_at(&h).filter(|at| *at > now) {
                let left = Duration::try_from(at.duration_since(now)).unwrap_or_default();
                wait = min_some(wait, Some(left));
                continue;
            }
            let mut pod = pod_for(job, Some(i));
            indexes::annotate(&mut pod, &h);
            chosen.push(pod);
        }
        chosen
    } else {
        (0..missing).map(|_| pod_for(job, None)).collect()
    };
    let next = AtomicUsize::new(0);
    let pp = PostParams::default();
    let (created, err) = slow_start(count(to_create.len()), || {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let pod = to_create.get(i).cloned().unwrap_or_default();
        let pp = &pp;
        async move { pods.create(pp, &pod).await }
    })
    .await;
    tracing::debug!(job = %job.name_any(), created = created.len(), "created pods");
    active.extend(created);
    match err {
        Some(e) => Err(e),
        None => Ok(wait),
    }
}

/// Replaces the job's status when it differs from `old`; returns the job as now stored.
async fn write_status(
    jobs: &Api<Job>,
    mut job: Job,
    old: &JobStatus,
    status: JobStatus,
) -> Result<Job, kube::Error> {
    if &status == old {
        return Ok(job);
    }
    job.status = Some(status);
    jobs.replace_status(&job.name_any(), &PostParams::default(), &job)
        .await
}
