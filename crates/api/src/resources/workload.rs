//! What the workload kinds (deployments, replica sets, stateful sets, daemon sets, replication
//! controllers, jobs) share: selector/template validation as upstream's
//! `ValidatePodTemplateSpecForReplicaSet`, immutable selectors, rolling update bounds, and the
//! CONTAINERS/IMAGES/SELECTOR cells.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::podspec;
use crate::resources::validation::{
    go_map, go_selector, invalid_raw, selector_is_empty, selector_matches, selector_string,
    validate_label_selector,
};
use crate::table::Column;

/// Validates a selector and template of a kind whose pods restart `Always`: the selector is
/// non-empty (`what` names the kind in upstream's message) and matches the template labels, the
/// template is valid, and `replicas` is not negative.
pub fn validate_replicated(
    selector: &LabelSelector,
    template: Option<&PodTemplateSpec>,
    replicas: Option<i32>,
    what: &str,
) -> Vec<FieldCause> {
    let mut causes = validate_label_selector(selector, "spec.selector");
    if selector_is_empty(selector) {
        causes.push(invalid_raw(
            "spec.selector",
            go_selector(selector),
            &format!("empty selector is invalid for {what}"),
        ));
    }
    match template {
        None => causes.push(FieldCause::required("spec.template")),
        Some(t) => {
            causes.extend(template_matches(selector, t, "spec.template"));
            causes.extend(podspec::validate_template(t, "spec.template"));
            causes.extend(restart_always(t, "spec.template"));
        }
    }
    if let Some(r) = replicas.filter(|r| *r < 0) {
        causes.push(invalid_raw(
            "spec.replicas",
            r,
            crate::resources::validation::NON_NEGATIVE_MSG,
        ));
    }
    causes
}

/// The `` `selector` does not match template `labels` `` check (skipped for empty selectors).
pub fn template_matches(
    selector: &LabelSelector,
    t: &PodTemplateSpec,
    path: &str,
) -> Vec<FieldCause> {
    let labels = t.metadata.as_ref().and_then(|m| m.labels.as_ref());
    if !selector_is_empty(selector) && !selector_matches(selector, labels) {
        return vec![invalid_raw(
            format!("{path}.metadata.labels"),
            go_map(labels),
            "`selector` does not match template `labels`",
        )];
    }
    vec![]
}

/// Templates of replicated kinds must restart `Always` and have no active deadline.
pub fn restart_always(t: &PodTemplateSpec, path: &str) -> Vec<FieldCause> {
    let mut causes = vec![];
    let Some(spec) = &t.spec else { return causes };
    if let Some(p) = spec.restart_policy.as_deref().filter(|p| *p != "Always") {
        causes.push(FieldCause::not_supported(
            format!("{path}.spec.restartPolicy"),
            p,
            &["Always"],
        ));
    }
    if spec.active_deadline_seconds.is_some() {
        causes.push(FieldCause::forbidden(
            format!("{path}.spec.activeDeadlineSeconds"),
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
    causes
}

/// `spec.selector: Invalid value: v1.LabelSelector{...}: field is immutable` when it changed.
pub fn immutable_selector(new: &LabelSelector, old: &LabelSelector) -> Option<FieldCause> {
    (new != old).then(|| invalid_raw("spec.selector", go_selector(new), "field is immutable"))
}

/// The value of an int-or-percent as upstream compares it: (value, is_percent).
fn int_or_percent(v: &IntOrString) -> Option<(i64, bool)> {
    match v {
        IntOrString::Int(i) => Some((i64::from(*i), false)),
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|n| n.parse().ok())
            .map(|n| (n, true)),
    }
}

fn show(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => format!("{s:?}"),
    }
}

/// Validates `maxUnavailable`/`maxSurge` of a rolling update under `path`.
pub fn validate_rolling(
    max_unavailable: Option<&IntOrString>,
    max_surge: Option<&IntOrString>,
    path: &str,
) -> Vec<FieldCause> {
    let mut causes = vec![];
    let mut zero = [false, false];
    for (i, (name, v)) in [("maxUnavailable", max_unavailable), ("maxSurge", max_surge)]
        .into_iter()
        .enumerate()
    {
        let Some(v) = v else { continue };
        match int_or_percent(v) {
            None => causes.push(invalid_raw(format!("{path}.{name}"), show(v), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")),
            Some((n, _)) if n < 0 => causes.push(invalid_raw(format!("{path}.{name}"), show(v), crate::resources::validation::NON_NEGATIVE_MSG)),
            Some((n, true)) if n > 100 && name == "maxUnavailable" => causes.push(invalid_raw(format!("{path}.{name}"), show(v), "must not be greater than 100%")),
            Some((n, _)) => zero[i] = n == 0,
        }
    }
    if zero == [true, true] {
        causes.push(invalid_raw(
            format!("{path}.maxUnavailable"),
            max_unavailable.map(show).unwrap_or_default(),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    causes
}

/// The wide CONTAINERS and IMAGES column definitions.
pub fn container_columns() -> [Column; 2] {
    [
        Column::wide(
            "Containers",
            "string",
            "Names of each container in the template.",
        ),
        Column::wide(
            "Images",
            "string",
            "Images referenced by each container in the template.",
        ),
    ]
}

/// The wide SELECTOR column definition with the kind's description.
pub fn selector_column(description: &'static str) -> Column {
    Column::wide("Selector", "string", description)
}

/// The CONTAINERS and IMAGES cells of a template.
pub fn container_values(t: Option<&PodTemplateSpec>) -> [Value; 2] {
    let (c, i) = podspec::container_cells(t.and_then(|t| t.spec.as_ref()));
    [Value::String(c), Value::String(i)]
}

/// The SELECTOR cell (upstream's `LabelSelectorAsSelector(...).String()`).
pub fn selector_value(sel: Option<&LabelSelector>) -> Value {
    Value::String(selector_string(sel))
}
