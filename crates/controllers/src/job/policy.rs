//! A Job's `podFailurePolicy`, after upstream's `pod_failure_policy.go`: the first rule that
//! matches a failed pod decides what its failure does. `onExitCodes` matches a terminated
//! container (regular ones first, then init containers; exit code 0 never matches) whose code
//! is In / NotIn the values, optionally only the named container; `onPodConditions` matches a
//! pod condition of the given type and status. FailJob fails the job (reason
//! `PodFailurePolicy`, upstream's message), Ignore does not count the failure toward
//! backoffLimit (nor backoffLimitPerIndex), Count counts it as usual, FailIndex fails the pod's
//! index at once (with backoffLimitPerIndex).

use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;

/// The job condition reason of a FailJob rule.
pub const REASON: &str = "PodFailurePolicy";

/// What a policy says of a failed pod (upstream's `matchPodFailurePolicy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The job's failure message, when a FailJob rule matched.
    pub fail_job: Option<String>,
    /// Whether the failure counts toward the back-off limits (false for Ignore).
    pub counts: bool,
    /// The action of the matched rule, if any matched.
    pub action: Option<String>,
}

impl Verdict {
    fn default_count() -> Self {
        Self {
            fail_job: None,
            counts: true,
            action: None,
        }
    }
}

/// Matches a failed pod against the policy's rules; without a policy or a matching rule the
/// failure counts.
pub fn verdict(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::default_count();
    };
    let status = pod.status.clone().unwrap_or_default();
    for (index, rule) in policy.rules.iter().enumerate() {
        let action = rule.action.as_str();
        let matched = if let Some(req) = &rule.on_exit_codes {
            let regular = status.container_statuses.as_deref().unwrap_or_default();
            let init = status
                .init_container_statuses
                .as_deref()
                .unwrap_or_default();
            matching_container(regular, req)
                .or_else(|| matching_container(init, req))
                .map(|(name, code)| {
                    format!(
                        "Container {name} for pod {}/{} failed with exit code {code} matching {action} rule at index {index}",
                        pod.namespace().unwrap_or_default(),
                        pod.name_any()
                    )
                })
        } else if let Some(patterns) = &rule.on_pod_conditions {
            status
                .conditions
                .iter()
                .flatten()
                .find(|c| {
                    patterns
                        .iter()
                        .any(|p| p.type_ == c.type_ && p.status == c.status)
                })
                .map(|c| {
                    format!(
                        "Pod {}/{} has condition {} matching {action} rule at index {index}",
                        pod.namespace().unwrap_or_default(),
                        pod.name_any(),
                        c.type_
                    )
                })
        } else {
            None
        };
        let Some(message) = matched else {
            continue;
        };
        let verdict = |fail_job: Option<String>, counts: bool| Verdict {
            fail_job,
            counts,
            action: Some(action.to_string()),
        };
        match action {
            "Ignore" => return verdict(None, false),
            "Count" | "FailIndex" => return verdict(None, true),
            "FailJob" => return verdict(Some(message), true),
            // An unknown action (validation refuses them) falls through to the next rule.
            _ => {}
        }
    }
    Verdict::default_count()
}

/// The first terminated container (name, exit code) whose non-zero exit code matches.
fn matching_container(
    statuses: &[ContainerStatus],
    req: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<(String, i32)> {
    statuses.iter().find_map(|c| {
        let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
        let named = req.container_name.as_ref().is_none_or(|n| *n == c.name);
        let listed = req.values.contains(&code);
        let hit = match req.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        (named && code != 0 && hit).then(|| (c.name.clone(), code))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> PodFailurePolicy {
        serde_json::from_value(json!({"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
            {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [2]}}
        ]}))
        .unwrap()
    }

    fn failed(container: &str, code: i32, conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed", "conditions": conditions,
                "containerStatuses": [
                    {"name": "side", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0}}},
                    {"name": container, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                     "state": {"terminated": {"exitCode": code}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn exit_code_fails_the_job() {
        let p = policy();
        let v = verdict(Some(&p), &failed("main", 42, json!([])));
        assert_eq!(
            v.fail_job.as_deref(),
            Some(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0"
            )
        );
        assert!(v.counts);
        // Another container with the same code does not match the named rule; NotIn does.
        let v = verdict(Some(&p), &failed("other", 42, json!([])));
        assert_eq!((v.fail_job, v.action.as_deref()), (None, Some("Count")));
    }

    #[test]
    fn conditions_ignore_and_unmatched_count() {
        let p = policy();
        let evicted = failed(
            "main",
            1,
            json!([{"type": "DisruptionTarget", "status": "True"}]),
        );
        let v = verdict(Some(&p), &evicted);
        assert_eq!((v.counts, v.action.as_deref()), (false, Some("Ignore")));
        let v = verdict(Some(&p), &failed("main", 1, json!([])));
        assert_eq!(v, Verdict::default_count());
        let v = verdict(Some(&p), &failed("main", 2, json!([])));
        assert_eq!((v.counts, v.action.as_deref()), (true, Some("FailIndex")));
        assert_eq!(
            verdict(None, &failed("main", 42, json!([]))),
            Verdict::default_count()
        );
    }

    #[test]
    fn condition_fail_job_message() {
        let p: PodFailurePolicy = serde_json::from_value(json!({"rules": [
            {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}))
        .unwrap();
        let pod = failed(
            "main",
            137,
            json!([{"type": "DisruptionTarget", "status": "True"}]),
        );
        assert_eq!(
            verdict(Some(&p), &pod).fail_job.as_deref(),
            Some("Pod ns/p has condition DisruptionTarget matching FailJob rule at index 0")
        );
    }
}
