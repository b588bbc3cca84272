//! Job arithmetic, after upstream's `pkg/controller/job` helpers: how many pods should run,
//! completed-index sets in the `"0-2,4"` notation of `status.completedIndexes`, the pod
//! failure back-off, job conditions (`ensureJobConditionStatus`), the pod predicates the
//! controller counts with, and the pods it creates (tracking finalizer, completion index
//! annotation, label, env var and hostname).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::controller_utils::{controller_ref, pod_from_template};

/// The finalizer that keeps a job's pods until the controller has counted them.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation (and label) carrying an Indexed job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The env var carrying the completion index inside an Indexed job's containers.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// The first back-off before replacing a failed pod (upstream's `DefaultJobPodFailureBackOff`).
pub const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// The longest back-off (upstream's `MaxJobPodFailureBackOff`).
pub const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(360);

/// How many pods should be active (upstream's `wantActive` in `manageJob`): without
/// `completions`, `parallelism` until one pod succeeded, then none beyond those still running;
/// with `completions`, the remaining completions capped at `parallelism`.
pub fn want_active(completions: Option<i32>, parallelism: i32, succeeded: i32, active: i32) -> i32 {
    match completions {
        None if succeeded > 0 => active,
        None => parallelism,
        Some(c) => (c - succeeded).clamp(0, parallelism.max(0)),
    }
}

/// How many pods to create (upstream's `manageJob`: `wantActive - terminating - active`):
/// those wanted beyond the active ones and, when only failed pods are replaced, beyond the
/// terminating ones too (`terminating` is then their count, else 0).
pub fn missing_pods(want: i32, active: i32, terminating: i32) -> i32 {
    (want - active - terminating).max(0)
}

/// Parses `status.completedIndexes` (`"1,3-5,7"`); malformed parts are skipped.
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Formats indexes as `status.completedIndexes` does: runs of consecutive indexes as `a-b`.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The `n` lowest indexes below `completions` that neither succeeded nor have an active pod.
pub fn indexes_to_create(
    completions: i32,
    succeeded: &BTreeSet<i32>,
    active: &BTreeSet<i32>,
    n: usize,
) -> Vec<i32> {
    (0..completions)
        .filter(|i| !succeeded.contains(i) && !active.contains(i))
        .take(n)
        .collect()
}

/// The back-off before creating a pod after `failures` failures since the last success:
/// 10 s doubling per failure, at most 6 min; none without failures.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    POD_FAILURE_BACKOFF
        .checked_mul(factor)
        .unwrap_or(MAX_POD_FAILURE_BACKOFF)
        .min(MAX_POD_FAILURE_BACKOFF)
}

/// Whether condition `kind` is true.
pub fn has_condition(conds: &[JobCondition], kind: &str) -> bool {
    conds.iter().any(|c| c.type_ == kind && c.status == "True")
}

/// Upstream's `ensureJobConditionStatus`: sets condition `kind` to `status` (adding it only
/// when `status` is True); returns whether anything changed.
pub fn ensure_condition(
    conds: &mut Vec<JobCondition>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == kind) {
        if c.status == status && c.reason.as_deref() == Some(reason) {
            return false;
        }
        if c.status != status {
            c.last_transition_time = Some(Time(now));
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(Time(now));
        return true;
    }
    if status != "True" {
        return false;
    }
    conds.push(JobCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
    true
}

/// A pod's phase.
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether the job replaces only failed pods (upstream's `onlyReplaceFailedPods`):
/// `podReplacementPolicy: Failed`, which a `podFailurePolicy` implies. Its terminating pods
/// are neither failed nor replaced until they reach phase Failed.
pub fn only_replaces_failed(spec: &JobSpec) -> bool {
    spec.pod_replacement_policy.as_deref() == Some("Failed") || spec.pod_failure_policy.is_some()
}

/// Whether a pod counts as failed (upstream's `isPodFailed`): in phase Failed; with the
/// default replacement policy (`only_failed` false) also when it is being deleted before it
/// succeeded (orphans never reach Failed).
pub fn counts_failed(pod: &Pod, only_failed: bool) -> bool {
    phase(pod) == "Failed"
        || (!only_failed && pod.metadata.deletion_timestamp.is_some() && phase(pod) != "Succeeded")
}

/// Whether a pod is being deleted but has not finished yet.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// Whether the pod still carries the tracking finalizer.
pub fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
}

/// An Indexed job pod's completion index (from the annotation).
pub fn completion_index(pod: &Pod) -> Option<i32> {
    pod.annotations()
        .get(COMPLETION_INDEX)
        .and_then(|v| v.parse().ok())
        .filter(|i| *i >= 0)
}

/// When a finished pod finished: its containers' latest finish time, else its Ready
/// condition's last transition.
pub fn finish_time(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref()?;
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    terminated.or_else(|| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
    })
}

/// How many pods failed after the last success, and when the last of them finished (what
/// upstream's back-off record keeps).
pub fn failures_since_success(pods: &[Pod]) -> (u32, Option<Timestamp>) {
    let last_success = pods
        .iter()
        .filter(|p| phase(p) == "Succeeded")
        .filter_map(finish_time)
        .max();
    let failed: Vec<Timestamp> = pods
        .iter()
        .filter(|p| phase(p) == "Failed")
        .filter_map(finish_time)
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    (
        u32::try_from(failed.len()).unwrap_or(u32::MAX),
        failed.into_iter().max(),
    )
}

/// The pod a job creates: its template with the tracking finalizer and, for an Indexed job,
/// the completion index as annotation, label and `JOB_COMPLETION_INDEX` env var (from the
/// annotation, through the downward API) and the hostname `JOB-INDEX`; named by the API
/// server from `JOB-` (`JOB-INDEX-` when indexed).
pub fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let name = job.name_any();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let prefix = match index {
        Some(i) => format!("{name}-{i}"),
        None => name.clone(),
    };
    let mut pod = pod_from_template(&template, &prefix, controller_ref(job));
    let finalizers = pod.metadata.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.into());
    }
    if let Some(i) = index {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.into(), i.to_string());
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.into(), i.to_string());
        if let Some(spec) = pod.spec.as_mut() {
            if spec.hostname.as_deref().unwrap_or("").is_empty() {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            let env = EnvVar {
                name: COMPLETION_INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }),
                    ..Default::default()
                }),
            };
            let containers = spec.containers.iter_mut();
            for c in containers.chain(spec.init_containers.iter_mut().flatten()) {
                let vars = c.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
                    vars.push(env.clone());
                }
            }
        }
    }
    pod
}

/// Upstream's `pastBackoffLimitOnFailure`: with restartPolicy OnFailure, the active pods'
/// container restarts reach backoffLimit.
pub fn past_backoff_on_failure(spec: &JobSpec, active: &[Pod]) -> bool {
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i32 = active
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    let limit = spec.backoff_limit.unwrap_or(6);
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// A count as the `i32` of job status fields (saturating).
pub fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The smaller of two optional durations.
pub fn min_some(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `status.uncountedTerminatedPods`, empty lists left out (as upstream serialises them).
pub fn uncounted_of(succ: &BTreeSet<String>, fail: &BTreeSet<String>) -> UncountedTerminatedPods {
    let list = |s: &BTreeSet<String>| (!s.is_empty()).then(|| s.iter().cloned().collect());
    UncountedTerminatedPods {
        succeeded: list(succ),
        failed: list(fail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn active_pods_wanted() {
        assert_eq!(want_active(Some(5), 2, 0, 0), 2);
        assert_eq!(want_active(Some(5), 2, 4, 1), 1);
        assert_eq!(want_active(Some(5), 2, 5, 0), 0);
        assert_eq!(want_active(Some(5), 2, 7, 0), 0);
        assert_eq!(want_active(None, 3, 0, 1), 3);
        assert_eq!(want_active(None, 3, 1, 2), 2);
    }

    #[test]
    fn terminating_pods_hold_their_place_only_when_replaced_on_failure() {
        // Two wanted, one active, one terminating.
        assert_eq!(
            missing_pods(2, 1, 0),
            1,
            "TerminatingOrFailed: replaced at once"
        );
        assert_eq!(missing_pods(2, 1, 1), 0, "Failed: not until it failed");
        assert_eq!(missing_pods(1, 0, 3), 0);
        assert_eq!(missing_pods(3, 0, 1), 2);
        let spec = |v: serde_json::Value| -> JobSpec { serde_json::from_value(v).unwrap() };
        let template = json!({"spec": {"containers": []}});
        assert!(only_replaces_failed(&spec(
            json!({"template": template, "podReplacementPolicy": "Failed"})
        )));
        assert!(!only_replaces_failed(&spec(
            json!({"template": template, "podReplacementPolicy": "TerminatingOrFailed"})
        )));
        assert!(only_replaces_failed(&spec(
            json!({"template": template, "podFailurePolicy": {"rules": []}})
        )));
        let pod = |phase: &str, deleted: bool| -> Pod {
            let mut v = json!({"metadata": {"name": "p"}, "status": {"phase": phase}});
            if deleted {
                v["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
            }
            serde_json::from_value(v).unwrap()
        };
        let terminating = pod("Running", true);
        assert!(counts_failed(&terminating, false));
        assert!(
            !counts_failed(&terminating, true),
            "not before phase Failed"
        );
        assert!(is_terminating(&terminating));
        let failed = pod("Failed", true);
        assert!(counts_failed(&failed, true) && counts_failed(&failed, false));
        assert!(!is_terminating(&failed));
        assert!(!counts_failed(&pod("Succeeded", true), false));
    }

    #[test]
    fn index_sets_round_trip() {
        let s = parse_indexes("1,3-5,7");
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [1, 3, 4, 5, 7]);
        assert_eq!(format_indexes(&s), "1,3-5,7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(format_indexes(&parse_indexes("0,1,2")), "0-2");
        assert!(parse_indexes("x,-").is_empty());
        let active = BTreeSet::from([0]);
        assert_eq!(indexes_to_create(7, &s, &active, 2), [2, 6]);
        assert_eq!(indexes_to_create(3, &s, &active, 5), [2]);
    }

    #[test]
    fn backoff_doubles_up_to_six_minutes() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(10), MAX_POD_FAILURE_BACKOFF);
        assert_eq!(backoff(100), MAX_POD_FAILURE_BACKOFF);
    }

    #[test]
    fn conditions_added_only_when_true() {
        let now = Timestamp::from_second(100).unwrap();
        let mut conds = Vec::new();
        assert!(!ensure_condition(
            &mut conds,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now
        ));
        assert!(conds.is_empty());
        assert!(ensure_condition(
            &mut conds,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            now
        ));
        assert!(!ensure_condition(
            &mut conds,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            now
        ));
        let later = Timestamp::from_second(200).unwrap();
        assert!(ensure_condition(
            &mut conds,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            later
        ));
        assert_eq!(conds[0].status, "False");
        assert_eq!(conds[0].last_transition_time, Some(Time(later)));
        assert!(!has_condition(&conds, "Suspended"));
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "idx", "namespace": "default", "uid": "u"},
            "spec": {"completionMode": "Indexed", "completions": 3,
                "template": {"metadata": {"labels": {"job-name": "idx"}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}
        }))
        .unwrap();
        let pod = pod_for(&job, Some(2));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("idx-2-"));
        assert_eq!(pod.annotations()[COMPLETION_INDEX], "2");
        assert_eq!(pod.labels()[COMPLETION_INDEX], "2");
        assert_eq!(pod.labels()["job-name"], "idx");
        assert_eq!(pod.finalizers(), [TRACKING_FINALIZER]);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("idx-2"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, COMPLETION_INDEX_ENV);
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
        let plain = pod_for(&job, None);
        assert_eq!(plain.metadata.generate_name.as_deref(), Some("idx-"));
        assert!(plain.annotations().get(COMPLETION_INDEX).is_none());
    }

    #[test]
    fn failures_counted_after_last_success() {
        let pod = |phase: &str, t: i64| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p"},
                "status": {"phase": phase, "containerStatuses": [{"name": "c", "image": "x",
                    "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0,
                        "finishedAt": Timestamp::from_second(t).unwrap().to_string()}}}]}
            }))
            .unwrap()
        };
        let pods = [
            pod("Failed", 10),
            pod("Succeeded", 20),
            pod("Failed", 30),
            pod("Failed", 40),
        ];
        let (n, last) = failures_since_success(&pods);
        assert_eq!(n, 2);
        assert_eq!(last, Some(Timestamp::from_second(40).unwrap()));
        assert_eq!(failures_since_success(&[]), (0, None));
    }
}
