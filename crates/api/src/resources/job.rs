//! batch/v1 Job: upstream's defaults (completions/parallelism 1, backoffLimit 6, NonIndexed,
//! not suspended, TerminatingOrFailed replacement), the generated selector
//! (`batch.kubernetes.io/controller-uid`) and template labels, validation (OnFailure/Never
//! restart policy, selector match, immutable fields (podFailurePolicy, backoffLimitPerIndex
//! and successPolicy among them); failure policies in `job_policy`), the
//! STATUS/COMPLETIONS/DURATION table and the `status.successful` field selector.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{self, invalid_raw};
use crate::resources::{job_policy, podspec, workload};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell, human_duration, human_duration_since};

/// The label the generated selector selects on.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";

/// Defaults of a job spec, shared with cron job templates (`SetDefaults_Job` on the spec part).
pub fn default_job_spec(spec: &mut JobSpec) {
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    if spec.backoff_limit.is_none() {
        spec.backoff_limit = Some(if spec.backoff_limit_per_index.is_some() {
            i32::MAX
        } else {
            6
        });
    }
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    let replacement = if spec.pod_failure_policy.is_some() {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    spec.pod_replacement_policy
        .get_or_insert_with(|| replacement.into());
    podspec::default_template(&mut spec.template);
}

/// Upstream's `generateSelector`: template labels naming the job and its uid, and a selector on
/// the uid. Needs `metadata.uid`, so it only happens once the server has assigned one.
fn generate_selector(meta: &ObjectMeta, spec: &mut JobSpec) {
    let (Some(name), Some(uid)) = (
        meta.name.clone(),
        meta.uid.clone().filter(|u| !u.is_empty()),
    ) else {
        return;
    };
    let labels = spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new);
    for key in ["job-name", "batch.kubernetes.io/job-name"] {
        labels.entry(key.into()).or_insert_with(|| name.clone());
    }
    for key in ["controller-uid", CONTROLLER_UID_LABEL] {
        labels.entry(key.into()).or_insert_with(|| uid.clone());
    }
    let sel = spec.selector.get_or_insert_with(LabelSelector::default);
    sel.match_labels
        .get_or_insert_with(BTreeMap::new)
        .entry(CONTROLLER_UID_LABEL.into())
        .or_insert(uid);
}

/// Validates a job spec under `path` (`spec` or `spec.jobTemplate.spec`); the selector is only
/// required on a job itself.
pub fn validate_job_spec(spec: &JobSpec, path: &str, selector_required: bool) -> Vec<FieldCause> {
    let mut causes = vec![];
    match &spec.selector {
        None if selector_required => causes.push(FieldCause::required(format!("{path}.selector"))),
        None => {}
        Some(sel) => {
            causes.extend(validation::validate_label_selector(
                sel,
                &format!("{path}.selector"),
            ));
            causes.extend(workload::template_matches(
                sel,
                &spec.template,
                &format!("{path}.template"),
            ));
        }
    }
    causes.extend(podspec::validate_template(
        &spec.template,
        &format!("{path}.template"),
    ));
    if let Some(p) = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        && p != "OnFailure"
        && p != "Never"
    {
        causes.push(FieldCause::not_supported(
            format!("{path}.template.spec.restartPolicy"),
            p,
            &["OnFailure", "Never"],
        ));
    }
    for (name, v) in [
        ("parallelism", spec.parallelism),
        ("completions", spec.completions),
        ("backoffLimit", spec.backoff_limit),
        ("ttlSecondsAfterFinished", spec.ttl_seconds_after_finished),
    ] {
        validation::non_negative(&format!("{path}.{name}"), v.map(i64::from), &mut causes);
    }
    if let Some(a) = spec.active_deadline_seconds.filter(|a| *a <= 0) {
        causes.push(invalid_raw(
            format!("{path}.activeDeadlineSeconds"),
            a,
            "must be greater than or equal to 0",
        ));
    }
    validation::supported(
        &format!("{path}.completionMode"),
        spec.completion_mode.as_deref(),
        &["NonIndexed", "Indexed"],
        &mut causes,
    );
    if spec.completion_mode.as_deref() == Some("Indexed") && spec.completions.is_none() {
        causes.push(validation::required_because(
            format!("{path}.completions"),
            "when completion mode is Indexed",
        ));
    }
    causes.extend(job_policy::validate(spec, path));
    causes
}

fn condition(conds: &[JobCondition], kind: &str) -> bool {
    conds.iter().any(|c| c.type_ == kind && c.status == "True")
}

impl Behavior for Job {
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(JobSpec::default);
        default_job_spec(spec);
        if spec.manual_selector != Some(true) {
            generate_selector(&self.metadata, spec);
        }
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone());
        if self.metadata.labels.as_ref().is_none_or(|l| l.is_empty())
            && let Some(labels) = template_labels
        {
            self.metadata.labels = Some(labels);
        }
    }

    fn prepare_for_create(&mut self) {
        self.status = Some(Default::default());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let Some(spec) = &self.spec else {
            return vec![FieldCause::required("spec")];
        };
        let mut causes = validate_job_spec(spec, "spec", self.metadata.uid.is_some());
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            if spec.selector != old_spec.selector {
                let shown = spec
                    .selector
                    .as_ref()
                    .map_or_else(|| "null".into(), validation::go_selector);
                causes.push(invalid_raw("spec.selector", shown, "field is immutable"));
            }
            let elastic = spec.completion_mode.as_deref() == Some("Indexed")
                && spec.completions == spec.parallelism;
            if spec.completions != old_spec.completions && !elastic {
                causes.push(invalid_raw(
                    "spec.completions",
                    spec.completions.map_or("null".into(), |c| c.to_string()),
                    "field is immutable",
                ));
            }
            if spec.completion_mode != old_spec.completion_mode {
                causes.push(FieldCause::immutable(
                    "spec.completionMode",
                    spec.completion_mode.as_deref().unwrap_or(""),
                ));
            }
            let shown = |v: Option<serde_json::Value>| v.map_or("null".into(), |v| v.to_string());
            if spec.pod_failure_policy != old_spec.pod_failure_policy {
                let v = serde_json::to_value(&spec.pod_failure_policy).ok();
                causes.push(invalid_raw(
                    "spec.podFailurePolicy",
                    shown(v),
                    "field is immutable",
                ));
            }
            if spec.backoff_limit_per_index != old_spec.backoff_limit_per_index {
                let v = spec.backoff_limit_per_index.map(serde_json::Value::from);
                causes.push(invalid_raw(
                    "spec.backoffLimitPerIndex",
                    shown(v),
                    "field is immutable",
                ));
            }
            if spec.success_policy != old_spec.success_policy {
                let v = serde_json::to_value(&spec.success_policy).ok();
                causes.push(invalid_raw(
                    "spec.successPolicy",
                    shown(v),
                    "field is immutable",
                ));
            }
            if spec.template != old_spec.template && old_spec.suspend != Some(true) {
                let shown = serde_json::to_string(&spec.template).unwrap_or_default();
                causes.push(invalid_raw("spec.template", shown, "field is immutable"));
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        let [c, i] = crate::resources::workload::container_columns();
        vec![
            Column::new("Status", "string", "Status of the job."),
            Column::new(
                "Completions",
                "string",
                "The number of pods which reached phase Succeeded. The value increases monotonically for a given spec. However, it may decrease in reaction to scale down of elastic indexed jobs.",
            ),
            Column::new("Duration", "string", "Time required to complete the job."),
            Column::age(),
            c,
            i,
            workload::selector_column(
                "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
            ),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let spec = self.spec.as_ref();
        let st = self.status.clone().unwrap_or_default();
        let succeeded = st.succeeded.unwrap_or(0);
        let completions = match spec.and_then(|s| s.completions) {
            Some(c) => format!("{succeeded}/{c}"),
            None => match spec.and_then(|s| s.parallelism).unwrap_or(0) {
                p if p > 1 => format!("{succeeded}/1 of {p}"),
                _ => format!("{succeeded}/1"),
            },
        };
        let duration = match (&st.start_time, &st.completion_time) {
            (None, _) => String::new(),
            (Some(s), None) => human_duration_since(s.0),
            (Some(s), Some(c)) => human_duration(c.0.as_second() - s.0.as_second()),
        };
        let conds = st.conditions.as_deref().unwrap_or_default();
        let status = if condition(conds, "Complete") {
            "Complete"
        } else if condition(conds, "Failed") {
            "Failed"
        } else if self.metadata.deletion_timestamp.is_some() {
            "Terminating"
        } else if condition(conds, "Suspended") {
            "Suspended"
        } else if condition(conds, "FailureTarget") {
            "FailureTarget"
        } else if condition(conds, "SuccessCriteriaMet") {
            "SuccessCriteriaMet"
        } else {
            "Running"
        };
        let [c, i] = workload::container_values(spec.map(|s| &s.template));
        vec![
            Value::String(status.into()),
            Value::String(completions),
            Value::String(duration),
            age_cell(&self.metadata),
            c,
            i,
            workload::selector_value(spec.and_then(|s| s.selector.as_ref())),
        ]
    }

    fn field(&self, label: &str) -> Option<String> {
        (label == "status.successful").then(|| {
            self.status
                .as_ref()
                .and_then(|s| s.succeeded)
                .unwrap_or(0)
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_selector_and_restart_policy() {
        let mut j: Job = serde_json::from_value(json!({"metadata": {"name": "pi", "uid": "u1"}, "spec": {
            "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}], "restartPolicy": "Never"}}}}))
        .unwrap_or_default();
        j.prepare_for_create();
        j.apply_defaults();
        let v = serde_json::to_value(&j).unwrap_or_default();
        assert_eq!(v["spec"]["completions"], 1);
        assert_eq!(v["spec"]["parallelism"], 1);
        assert_eq!(v["spec"]["backoffLimit"], 6);
        assert_eq!(v["spec"]["completionMode"], "NonIndexed");
        assert_eq!(v["spec"]["suspend"], false);
        assert_eq!(
            v["spec"]["selector"]["matchLabels"][CONTROLLER_UID_LABEL],
            "u1"
        );
        assert_eq!(
            v["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        assert_eq!(
            v["metadata"]["labels"]["batch.kubernetes.io/job-name"],
            "pi"
        );
        assert!(j.validate(None).is_empty(), "{:?}", j.validate(None));
        assert_eq!(j.cells()[1], "0/1");
        if let Some(s) = j.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            s.restart_policy = Some("Always".into());
        }
        let causes = j.validate(None);
        assert_eq!(causes[0].field, "spec.template.spec.restartPolicy");
        let old = j.clone();
        if let Some(s) = j.spec.as_mut() {
            s.backoff_limit_per_index = Some(2);
        }
        assert!(
            j.validate(Some(&old))
                .iter()
                .any(|c| c.field == "spec.backoffLimitPerIndex"
                    && c.message == "Invalid value: 2: field is immutable"),
            "{:?}",
            j.validate(Some(&old))
        );
        assert_eq!(
            causes[0].message,
            r#"Unsupported value: "Always": supported values: "OnFailure", "Never""#
        );
    }
}
