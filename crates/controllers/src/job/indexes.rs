//! `backoffLimitPerIndex` for Indexed Jobs, after upstream's `indexed_job_utils.go`: every pod
//! carries the failures of its index before it (annotations
//! `batch.kubernetes.io/job-index-failure-count` and `...-ignored-failure-count`); an index
//! whose pod fails with `failure-count >= backoffLimitPerIndex` (or that matches a FailIndex
//! rule) is failed for good (`status.failedIndexes`) and never recreated; a replacement pod
//! gets its index's counts and waits for that index's own back-off.
//!
//! Also the `successPolicy` of an Indexed Job (upstream's `matchSuccessPolicy`): the first
//! rule whose `succeededIndexes` (all of them, or `succeededCount` of them) or, without
//! indexes, whose `succeededCount` of any indexes succeeded makes the job succeed early.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::batch::v1::{PodFailurePolicy, SuccessPolicy};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use super::policy::Verdict;
use super::util::{backoff, completion_index, counts_failed, finish_time, parse_indexes};

/// The annotation with the failures of a pod's index before the pod was created.
pub const FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// The annotation with the ignored failures of a pod's index before the pod was created.
pub const IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";

fn annotation(pod: &Pod, key: &str) -> i32 {
    pod.annotations()
        .get(key)
        .and_then(|v| v.parse().ok())
        .filter(|v: &i32| *v >= 0)
        .unwrap_or(0)
}

/// Whether a failed pod fails its index (upstream's `isIndexFailed`).
pub fn index_failed(limit: i32, verdict: &Verdict, pod: &Pod) -> bool {
    verdict.action.as_deref() == Some("FailIndex")
        || (verdict.counts && annotation(pod, FAILURE_COUNT) >= limit)
}

/// What an index has been through: counted and ignored failures, and when its last failed
/// pod finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Failures counted toward backoffLimitPerIndex.
    pub failures: i32,
    /// Failures an Ignore rule left out.
    pub ignored: i32,
    /// When the index's last failed pod finished.
    pub last: Option<Timestamp>,
}

/// Each index's history from the job's failed pods (`only_failed`: see
/// [`super::util::counts_failed`]).
pub fn histories(
    pods: &[Pod],
    policy: Option<&PodFailurePolicy>,
    only_failed: bool,
) -> BTreeMap<i32, History> {
    let mut out: BTreeMap<i32, History> = BTreeMap::new();
    for p in pods.iter().filter(|p| counts_failed(p, only_failed)) {
        let Some(i) = completion_index(p) else {
            continue;
        };
        let v = super::policy::verdict(policy, p);
        let mut failures = annotation(p, FAILURE_COUNT);
        let mut ignored = annotation(p, IGNORED_FAILURE_COUNT);
        if v.counts {
            failures += 1;
        } else {
            ignored += 1;
        }
        let h = out.entry(i).or_default();
        if (failures, ignored) > (h.failures, h.ignored) {
            h.failures = failures;
            h.ignored = ignored;
        }
        h.last = h.last.max(finish_time(p).or(Some(Timestamp::UNIX_EPOCH)));
    }
    out
}

/// When an index may get a new pod: its last failure plus the back-off of its failures.
pub fn ready_at(h: &History) -> Option<Timestamp> {
    let failures = u32::try_from(h.failures).unwrap_or(0);
    h.last
        .map(|t| t + SignedDuration::try_from(backoff(failures)).unwrap_or_default())
}

/// Puts an index's counts on the pod that replaces its failed ones.
pub fn annotate(pod: &mut Pod, h: &History) {
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(FAILURE_COUNT.into(), h.failures.to_string());
    annotations.insert(IGNORED_FAILURE_COUNT.into(), h.ignored.to_string());
}

/// The reason of the conditions a met success policy sets.
pub const SUCCESS_POLICY_REASON: &str = "SuccessPolicy";

/// The message of a met success policy (`Matched rules at index N`), if a rule is met by the
/// succeeded indexes.
pub fn success_policy_met(
    policy: Option<&SuccessPolicy>,
    completions: i32,
    succeeded: &BTreeSet<i32>,
) -> Option<String> {
    let policy = policy?;
    if succeeded.is_empty() {
        return None;
    }
    let total = i32::try_from(succeeded.len()).unwrap_or(i32::MAX);
    policy.rules.iter().enumerate().find_map(|(i, rule)| {
        let met = match &rule.succeeded_indexes {
            Some(s) => {
                let required: BTreeSet<i32> = parse_indexes(s)
                    .into_iter()
                    .filter(|x| *x < completions)
                    .collect();
                if required.is_empty() {
                    false
                } else {
                    let have =
                        i32::try_from(required.intersection(succeeded).count()).unwrap_or(i32::MAX);
                    have >= rule
                        .succeeded_count
                        .unwrap_or(i32::try_from(required.len()).unwrap_or(i32::MAX))
                }
            }
            None => rule.succeeded_count.is_some_and(|c| total >= c),
        };
        met.then(|| format!("Matched rules at index {i}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(index: i32, count: Option<i32>, code: i32, finished: i64, disrupted: bool) -> Pod {
        let mut annotations =
            json!({"batch.kubernetes.io/job-completion-index": index.to_string()});
        if let Some(c) = count {
            annotations[FAILURE_COUNT] = c.to_string().into();
        }
        let conditions = if disrupted {
            json!([{"type": "DisruptionTarget", "status": "True"}])
        } else {
            json!([])
        };
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "annotations": annotations},
            "status": {"phase": "Failed", "conditions": conditions, "containerStatuses": [
                {"name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": code,
                    "finishedAt": Timestamp::from_second(finished).unwrap().to_string()}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn failures_accumulate_per_index() {
        let policy: PodFailurePolicy = serde_json::from_value(json!({"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [7]}}]}))
        .unwrap();
        let pods = [
            pod(0, None, 1, 10, false),
            pod(0, Some(1), 1, 30, false),
            pod(1, None, 1, 20, true),
        ];
        let h = histories(&pods, Some(&policy), false);
        assert_eq!(
            h[&0],
            History {
                failures: 2,
                ignored: 0,
                last: Some(Timestamp::from_second(30).unwrap())
            }
        );
        assert_eq!((h[&1].failures, h[&1].ignored), (0, 1));
        assert_eq!(ready_at(&h[&0]), Some(Timestamp::from_second(50).unwrap()));
        assert_eq!(ready_at(&h[&1]), Some(Timestamp::from_second(20).unwrap()));

        let counted = super::super::policy::verdict(Some(&policy), &pods[1]);
        assert!(
            index_failed(1, &counted, &pods[1]),
            "second failure, limit 1"
        );
        assert!(!index_failed(2, &counted, &pods[1]));
        let first = super::super::policy::verdict(Some(&policy), &pods[0]);
        assert!(!index_failed(1, &first, &pods[0]));
        let ignored = super::super::policy::verdict(Some(&policy), &pods[2]);
        assert!(
            !index_failed(0, &ignored, &pods[2]),
            "ignored failures never fail an index"
        );
        let fail_index = pod(2, None, 7, 5, false);
        let v = super::super::policy::verdict(Some(&policy), &fail_index);
        assert!(index_failed(5, &v, &fail_index));

        let mut fresh = Pod::default();
        annotate(&mut fresh, &h[&0]);
        assert_eq!(fresh.annotations()[FAILURE_COUNT], "2");
        assert_eq!(fresh.annotations()[IGNORED_FAILURE_COUNT], "0");
    }

    #[test]
    fn success_policy_rules() {
        let policy: SuccessPolicy = serde_json::from_value(json!({"rules": [
            {"succeededIndexes": "0,2-3"},
            {"succeededIndexes": "4-9", "succeededCount": 2},
            {"succeededCount": 5}]}))
        .unwrap();
        let met = |s: &[i32]| success_policy_met(Some(&policy), 10, &s.iter().copied().collect());
        assert_eq!(met(&[0, 2]), None);
        assert_eq!(met(&[0, 2, 3]).as_deref(), Some("Matched rules at index 0"));
        assert_eq!(met(&[1, 5, 9]).as_deref(), Some("Matched rules at index 1"));
        assert_eq!(
            met(&[0, 1, 2, 4, 6]).as_deref(),
            Some("Matched rules at index 1")
        );
        assert_eq!(
            met(&[0, 1, 2, 5, 7]).as_deref(),
            Some("Matched rules at index 1")
        );
        assert_eq!(
            met(&[0, 1, 3, 4, 8]).as_deref(),
            Some("Matched rules at index 1")
        );
        assert_eq!(met(&[0, 1, 2, 4]), None);
        assert_eq!(
            met(&[0, 1, 3, 5, 6]).as_deref(),
            Some("Matched rules at index 1")
        );
        assert_eq!(
            met(&[0, 1, 2, 3]).as_deref(),
            Some("Matched rules at index 0")
        );
        assert_eq!(success_policy_met(None, 10, &BTreeSet::from([1])), None);
        let count_only: SuccessPolicy =
            serde_json::from_value(json!({"rules": [{"succeededCount": 2}]})).unwrap();
        let met =
            |s: &[i32]| success_policy_met(Some(&count_only), 10, &s.iter().copied().collect());
        assert_eq!(met(&[1]), None);
        assert_eq!(met(&[1, 7]).as_deref(), Some("Matched rules at index 0"));
    }
}
