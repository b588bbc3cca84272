//! Validation of a Job's failure handling, as upstream's `validatePodFailurePolicy` and the
//! per-index back-off checks: `podFailurePolicy` (at most 20 rules; each an action of FailJob /
//! FailIndex / Ignore / Count and exactly one of `onExitCodes` (In / NotIn, 1-255 ordered
//! unique values, 0 forbidden with In, a container name of the template) or
//! `onPodConditions` (at most 20 patterns, qualified type, status True / False / Unknown));
//! restartPolicy Never with a policy; `podReplacementPolicy` Failed with a policy;
//! `backoffLimitPerIndex` (Indexed only) and `maxFailedIndexes` (needs it, at most
//! completions); `successPolicy` (Indexed only; 1-20 rules, each with `succeededIndexes` in
//! the `completedIndexes` format below completions and / or a `succeededCount` no larger than
//! completions or those indexes).

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::{
    JobSpec, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
    PodFailurePolicyRule, SuccessPolicy,
};

use crate::error::FieldCause;
use crate::resources::validation::{self, invalid_raw};

const MAX_RULES: usize = 20;
const MAX_PATTERNS: usize = 20;
const MAX_EXIT_CODES: usize = 255;
const ACTIONS: &[&str] = &["Count", "FailIndex", "FailJob", "Ignore"];
const OPERATORS: &[&str] = &["In", "NotIn"];
const STATUSES: &[&str] = &["False", "True", "Unknown"];

fn too_many(field: String, have: usize, max: usize) -> FieldCause {
    FieldCause {
        reason: "FieldValueTooMany",
        field,
        message: format!("Too many: {have}: must have at most {max} items"),
    }
}

/// The failure-handling causes of a job spec under `path`.
pub fn validate(spec: &JobSpec, path: &str) -> Vec<FieldCause> {
    let mut causes = vec![];
    let restart = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("");
    if let Some(policy) = &spec.pod_failure_policy {
        if matches!(restart, "OnFailure") {
            causes.push(FieldCause::invalid(
                format!("{path}.template.spec.restartPolicy"),
                restart,
                "only \"Never\" is supported when podFailurePolicy is specified",
            ));
        }
        let rules_path = format!("{path}.podFailurePolicy.rules");
        if policy.rules.len() > MAX_RULES {
            causes.push(too_many(rules_path.clone(), policy.rules.len(), MAX_RULES));
        }
        let names: BTreeSet<&str> = spec
            .template
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .map(|c| c.name.as_str())
            .collect();
        for (i, rule) in policy.rules.iter().enumerate() {
            causes.extend(validate_rule(
                spec,
                rule,
                &format!("{rules_path}[{i}]"),
                &names,
            ));
        }
    }
    if let Some(r) = spec.pod_replacement_policy.as_deref() {
        let allowed: &[&str] = if spec.pod_failure_policy.is_some() {
            &["Failed"]
        } else {
            &["Failed", "TerminatingOrFailed"]
        };
        validation::supported(
            &format!("{path}.podReplacementPolicy"),
            Some(r),
            allowed,
            &mut causes,
        );
    }
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    if let Some(b) = spec.backoff_limit_per_index {
        let field = format!("{path}.backoffLimitPerIndex");
        validation::non_negative(&field, Some(i64::from(b)), &mut causes);
        if !indexed {
            causes.push(invalid_raw(field, b, "requires indexed completion mode"));
        }
    }
    if let Some(m) = spec.max_failed_indexes {
        let field = format!("{path}.maxFailedIndexes");
        validation::non_negative(&field, Some(i64::from(m)), &mut causes);
        if spec.backoff_limit_per_index.is_none() {
            causes.push(validation::required_because(
                format!("{path}.backoffLimitPerIndex"),
                "when maxFailedIndexes is specified",
            ));
        }
        if spec.completions.is_some_and(|c| m > c) {
            causes.push(invalid_raw(
                field,
                m,
                "must be less than or equal to completions",
            ));
        }
    }
    if let Some(sp) = &spec.success_policy {
        let field = format!("{path}.successPolicy");
        if !indexed {
            causes.push(FieldCause::invalid(
                field,
                "object",
                "requires indexed completion mode",
            ));
        } else {
            causes.extend(validate_success_policy(
                sp,
                spec.completions.unwrap_or(0),
                &field,
            ));
        }
    }
    causes
}

fn validate_success_policy(sp: &SuccessPolicy, completions: i32, path: &str) -> Vec<FieldCause> {
    let mut causes = vec![];
    let rules_path = format!("{path}.rules");
    if sp.rules.is_empty() {
        causes.push(validation::required_because(
            rules_path.clone(),
            "at least one rules must be specified when the successPolicy is specified",
        ));
    }
    if sp.rules.len() > MAX_RULES {
        causes.push(too_many(rules_path.clone(), sp.rules.len(), MAX_RULES));
    }
    for (i, rule) in sp.rules.iter().enumerate() {
        let rule_path = format!("{rules_path}[{i}]");
        if rule.succeeded_count.is_none() && rule.succeeded_indexes.is_none() {
            causes.push(validation::required_because(
                rule_path.clone(),
                "at least one of succeededCount or succeededIndexes must be specified",
            ));
        }
        let mut total = 0;
        if let Some(ix) = &rule.succeeded_indexes {
            match indexes_total(ix, completions) {
                Ok(t) => total = t,
                Err(e) => causes.push(FieldCause::invalid(
                    format!("{rule_path}.succeededIndexes"),
                    ix,
                    &format!("error parsing succeededIndexes: {e}"),
                )),
            }
        }
        if let Some(c) = rule.succeeded_count {
            let field = format!("{rule_path}.succeededCount");
            validation::non_negative(&field, Some(i64::from(c)), &mut causes);
            if c > completions {
                causes.push(invalid_raw(
                    field.clone(),
                    c,
                    &format!(
                        "must be less than or equal to {completions} (the number of specified completions)"
                    ),
                ));
            }
            if rule.succeeded_indexes.is_some() && c > total {
                causes.push(invalid_raw(
                    field,
                    c,
                    &format!(
                        "must be less than or equal to {total} (the number of indexes in the specified succeededIndexes field)"
                    ),
                ));
            }
        }
    }
    causes
}

/// Upstream's `validateIndexesFormat`: how many indexes `"0,2-5"` holds, or why it is
/// malformed (increasing intervals, each index below `completions`).
fn indexes_total(s: &str, completions: i32) -> Result<i32, String> {
    let mut last: Option<i32> = None;
    let mut total = 0;
    if s.is_empty() {
        return Ok(0);
    }
    let parse = |x: &str| -> Result<i32, String> {
        let v: i32 = x
            .parse()
            .map_err(|_| format!("cannot convert string to integer for index: {x:?}"))?;
        if v >= completions {
            return Err(format!("too large index: {x:?}"));
        }
        Ok(v)
    };
    for interval in s.split(',') {
        let parts: Vec<&str> = interval.split('-').collect();
        if parts.len() > 2 {
            return Err(format!(
                "the fragment {interval:?} violates the requirement that an index interval can have at most two parts separated by '-'"
            ));
        }
        let x = parse(parts[0])?;
        if let Some(l) = last.filter(|l| *l >= x) {
            return Err(format!("non-increasing order, previous: {l}, current: {x}"));
        }
        total += 1;
        last = Some(x);
        if let Some(y) = parts.get(1) {
            let y = parse(y)?;
            if x >= y {
                return Err(format!("non-increasing order, previous: {x}, current: {y}"));
            }
            total += y - x;
            last = Some(y);
        }
    }
    Ok(total)
}

fn validate_rule(
    spec: &JobSpec,
    rule: &PodFailurePolicyRule,
    path: &str,
    names: &BTreeSet<&str>,
) -> Vec<FieldCause> {
    let mut causes = vec![];
    let action_path = format!("{path}.action");
    let valid = ACTIONS
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    match rule.action.as_str() {
        "" => causes.push(validation::required_because(
            action_path,
            &format!("valid values: [{valid}]"),
        )),
        "FailIndex" if spec.backoff_limit_per_index.is_none() => causes.push(FieldCause::invalid(
            action_path,
            "FailIndex",
            "requires the backoffLimitPerIndex to be set",
        )),
        a if !ACTIONS.contains(&a) => {
            causes.push(FieldCause::not_supported(action_path, a, ACTIONS));
        }
        _ => {}
    }
    if let Some(codes) = &rule.on_exit_codes {
        causes.extend(validate_exit_codes(
            codes,
            &format!("{path}.onExitCodes"),
            names,
        ));
    }
    let conditions = rule.on_pod_conditions.as_deref().unwrap_or_default();
    if !conditions.is_empty() {
        causes.extend(validate_conditions(
            conditions,
            &format!("{path}.onPodConditions"),
        ));
    }
    match (rule.on_exit_codes.is_some(), !conditions.is_empty()) {
        (true, true) => causes.push(FieldCause {
            reason: "FieldValueInvalid",
            field: path.into(),
            message: "Invalid value: \"object\": specifying both OnExitCodes and OnPodConditions is not supported".into(),
        }),
        (false, false) => causes.push(FieldCause {
            reason: "FieldValueInvalid",
            field: path.into(),
            message: "Invalid value: \"object\": specifying one of OnExitCodes and OnPodConditions is required".into(),
        }),
        _ => {}
    }
    causes
}

fn validate_conditions(
    patterns: &[PodFailurePolicyOnPodConditionsPattern],
    path: &str,
) -> Vec<FieldCause> {
    let mut causes = vec![];
    if patterns.len() > MAX_PATTERNS {
        causes.push(too_many(path.into(), patterns.len(), MAX_PATTERNS));
    }
    for (j, p) in patterns.iter().enumerate() {
        if !validation::is_qualified_name(&p.type_) {
            causes.push(FieldCause::invalid(
                format!("{path}[{j}].type"),
                &p.type_,
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ));
        }
        let status_path = format!("{path}[{j}].status");
        if p.status.is_empty() {
            causes.push(validation::required_because(
                status_path,
                "valid values: [\"False\" \"True\" \"Unknown\"]",
            ));
        } else if !STATUSES.contains(&p.status.as_str()) {
            causes.push(FieldCause::not_supported(status_path, &p.status, STATUSES));
        }
    }
    causes
}

fn validate_exit_codes(
    req: &PodFailurePolicyOnExitCodesRequirement,
    path: &str,
    names: &BTreeSet<&str>,
) -> Vec<FieldCause> {
    let mut causes = vec![];
    let op_path = format!("{path}.operator");
    if req.operator.is_empty() {
        causes.push(validation::required_because(
            op_path,
            "valid values: [\"In\" \"NotIn\"]",
        ));
    } else if !OPERATORS.contains(&req.operator.as_str()) {
        causes.push(FieldCause::not_supported(op_path, &req.operator, OPERATORS));
    }
    if let Some(name) = req.container_name.as_deref()
        && !names.contains(name)
    {
        causes.push(FieldCause::invalid(
            format!("{path}.containerName"),
            name,
            "must be one of the container or initContainer names in the pod template",
        ));
    }
    let values_path = format!("{path}.values");
    let shown = || {
        let v: Vec<String> = req.values.iter().map(i32::to_string).collect();
        format!("[]int32{{{}}}", v.join(", "))
    };
    if req.values.is_empty() {
        causes.push(invalid_raw(
            values_path.clone(),
            shown(),
            "at least one value is required",
        ));
    } else if req.values.len() > MAX_EXIT_CODES {
        causes.push(too_many(
            values_path.clone(),
            req.values.len(),
            MAX_EXIT_CODES,
        ));
    }
    let mut seen = BTreeSet::new();
    for (j, v) in req.values.iter().enumerate() {
        if req.operator == "In" && *v == 0 {
            causes.push(invalid_raw(
                format!("{values_path}[{j}]"),
                v,
                "must not be 0 for the In operator",
            ));
        }
        if !seen.insert(*v) {
            causes.push(FieldCause {
                reason: "FieldValueDuplicate",
                field: format!("{values_path}[{j}]"),
                message: format!("Duplicate value: {v}"),
            });
        }
    }
    if req.values.windows(2).any(|w| w[0] > w[1]) {
        causes.push(invalid_raw(values_path, shown(), "must be ordered"));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> JobSpec {
        let mut base = json!({"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "x"}]}}});
        if let (Some(b), Some(extra)) = (base.as_object_mut(), v.as_object()) {
            for (k, v) in extra {
                b.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(base).unwrap()
    }

    fn messages(spec: &JobSpec) -> Vec<String> {
        validate(spec, "spec")
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn valid_policy_passes() {
        let s = spec(json!({"podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [1, 42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [0]}}]}}));
        assert_eq!(messages(&s), Vec::<String>::new());
    }

    #[test]
    fn policy_needs_restart_policy_never() {
        let mut s = spec(json!({"podFailurePolicy": {"rules": []}}));
        if let Some(p) = s.template.spec.as_mut() {
            p.restart_policy = Some("OnFailure".into());
        }
        assert_eq!(
            messages(&s),
            [
                r#"spec.template.spec.restartPolicy: Invalid value: "OnFailure": only "Never" is supported when podFailurePolicy is specified"#
            ]
        );
    }

    #[test]
    fn bad_rules_are_named() {
        let s = spec(
            json!({"podReplacementPolicy": "TerminatingOrFailed", "podFailurePolicy": {"rules": [
            {"action": "FailIndex", "onExitCodes": {"containerName": "other", "operator": "In", "values": [3, 0, 3]}},
            {"action": "Restart", "onPodConditions": [{"type": "DisruptionTarget", "status": "Maybe"}]},
            {"action": "Ignore"}]}}),
        );
        assert_eq!(
            messages(&s),
            [
                r#"spec.podFailurePolicy.rules[0].action: Invalid value: "FailIndex": requires the backoffLimitPerIndex to be set"#,
                r#"spec.podFailurePolicy.rules[0].onExitCodes.containerName: Invalid value: "other": must be one of the container or initContainer names in the pod template"#,
                "spec.podFailurePolicy.rules[0].onExitCodes.values[1]: Invalid value: 0: must not be 0 for the In operator",
                "spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Duplicate value: 3",
                "spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid value: []int32{3, 0, 3}: must be ordered",
                r#"spec.podFailurePolicy.rules[1].action: Unsupported value: "Restart": supported values: "Count", "FailIndex", "FailJob", "Ignore""#,
                r#"spec.podFailurePolicy.rules[1].onPodConditions[0].status: Unsupported value: "Maybe": supported values: "False", "True", "Unknown""#,
                r#"spec.podFailurePolicy.rules[2]: Invalid value: "object": specifying one of OnExitCodes and OnPodConditions is required"#,
                r#"spec.podReplacementPolicy: Unsupported value: "TerminatingOrFailed": supported values: "Failed""#,
            ]
        );
    }

    #[test]
    fn per_index_limits() {
        let s = spec(json!({"completions": 3, "maxFailedIndexes": 4}));
        assert_eq!(
            messages(&s),
            [
                "spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified",
                "spec.maxFailedIndexes: Invalid value: 4: must be less than or equal to completions",
            ]
        );
        let s = spec(json!({"completions": 3, "backoffLimitPerIndex": 1}));
        assert_eq!(
            messages(&s),
            ["spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode"]
        );
        let s = spec(json!({"completions": 3, "completionMode": "Indexed",
            "backoffLimitPerIndex": 1, "maxFailedIndexes": 1}));
        assert_eq!(messages(&s), Vec::<String>::new());
    }

    #[test]
    fn success_policies() {
        let ok = spec(
            json!({"completions": 5, "completionMode": "Indexed", "successPolicy":
            {"rules": [{"succeededIndexes": "0,2-4", "succeededCount": 2}, {"succeededCount": 5}]}}),
        );
        assert_eq!(messages(&ok), Vec::<String>::new());
        let bad = spec(
            json!({"completions": 5, "completionMode": "Indexed", "successPolicy":
            {"rules": [{"succeededIndexes": "3,1"}, {}, {"succeededIndexes": "0-1", "succeededCount": 3},
                {"succeededIndexes": "7"}]}}),
        );
        assert_eq!(
            messages(&bad),
            [
                r#"spec.successPolicy.rules[0].succeededIndexes: Invalid value: "3,1": error parsing succeededIndexes: non-increasing order, previous: 3, current: 1"#,
                "spec.successPolicy.rules[1]: Required value: at least one of succeededCount or succeededIndexes must be specified",
                "spec.successPolicy.rules[2].succeededCount: Invalid value: 3: must be less than or equal to 2 (the number of indexes in the specified succeededIndexes field)",
                r#"spec.successPolicy.rules[3].succeededIndexes: Invalid value: "7": error parsing succeededIndexes: too large index: "7""#,
            ]
        );
        let plain =
            spec(json!({"completions": 5, "successPolicy": {"rules": [{"succeededCount": 1}]}}));
        assert_eq!(
            messages(&plain),
            [r#"spec.successPolicy: Invalid value: "object": requires indexed completion mode"#]
        );
    }
}
