//! core/v1 ResourceQuota: status reset on create, quantity and scope validation (scopes and
//! scope selectors valid for the tracked resources, not conflicting, operators), and the
//! AGE/REQUEST/LIMIT table (`pods: 1/10, requests.cpu: 0/4`).

use k8s_openapi::api::core::v1::ResourceQuota;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{self, invalid_raw};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

/// The scopes a quota may name.
const SCOPES: &[&str] = &[
    "BestEffort",
    "CrossNamespacePodAffinity",
    "NotBestEffort",
    "NotTerminating",
    "PriorityClass",
    "Terminating",
    "VolumeAttributesClass",
];

/// Upstream's `IsResourceQuotaScopeValidForResource`: pod scopes track the pod count and pod
/// compute resources (BestEffort only the count), VolumeAttributesClass the claim count and
/// `requests.storage`; names with a `/` (`count/...`, per StorageClass, extended resources)
/// are not standard quota names and pass.
fn scope_valid_for(scope: &str, resource: &str) -> bool {
    const COMPUTE: &[&str] = &[
        "cpu",
        "memory",
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
    ];
    if resource.contains('/') {
        return true;
    }
    match scope {
        "BestEffort" => resource == "pods",
        "Terminating"
        | "NotTerminating"
        | "NotBestEffort"
        | "PriorityClass"
        | "CrossNamespacePodAffinity" => resource == "pods" || COMPUTE.contains(&resource),
        "VolumeAttributesClass" => {
            matches!(resource, "persistentvolumeclaims" | "requests.storage")
        }
        _ => true,
    }
}

/// Whether scopes exclude each other (BestEffort with NotBestEffort, Terminating with
/// NotTerminating).
fn conflicting(scopes: &[&str]) -> bool {
    [
        ("BestEffort", "NotBestEffort"),
        ("Terminating", "NotTerminating"),
    ]
    .iter()
    .any(|(a, b)| scopes.contains(a) && scopes.contains(b))
}

impl Behavior for ResourceQuota {
    const SHORT_NAMES: &'static [&'static str] = &["quota"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn prepare_for_create(&mut self) {
        self.status = Some(Default::default());
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        let spec = self.spec.clone().unwrap_or_default();
        for (k, q) in spec.hard.iter().flatten() {
            match validation::parse_quantity(&q.0) {
                None => causes.push(FieldCause::invalid(
                    format!("spec.hard[{k}]"),
                    &q.0,
                    "must be a valid quantity",
                )),
                Some(v) if v < 0.0 => causes.push(FieldCause::invalid(
                    format!("spec.hard[{k}]"),
                    &q.0,
                    "must be greater than or equal to 0",
                )),
                _ => {}
            }
        }
        for (i, s) in spec.scopes.iter().flatten().enumerate() {
            validation::supported(&format!("spec.scopes[{i}]"), Some(s), SCOPES, &mut causes);
        }
        let hard: Vec<&str> = spec
            .hard
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        let scopes: Vec<&str> = spec.scopes.iter().flatten().map(String::as_str).collect();
        if !scopes.is_empty() {
            let shown = format!(
                "[]core.ResourceQuotaScope{{{}}}",
                scopes
                    .iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for scope in &scopes {
                for k in &hard {
                    if !scope_valid_for(scope, k) {
                        causes.push(invalid_raw(
                            "spec.scopes",
                            &shown,
                            "unsupported scope applied to resource",
                        ));
                    }
                }
            }
            if conflicting(&scopes) {
                causes.push(invalid_raw("spec.scopes", &shown, "conflicting scopes"));
            }
        }
        let exprs = spec
            .scope_selector
            .as_ref()
            .and_then(|s| s.match_expressions.clone())
            .unwrap_or_default();
        let path = "spec.scopeSelector.matchExpressions";
        for e in &exprs {
            if !SCOPES.contains(&e.scope_name.as_str()) {
                causes.push(FieldCause::invalid(
                    format!("{path}.scopeName"),
                    &e.scope_name,
                    "unsupported scope",
                ));
            }
            for k in &hard {
                if !scope_valid_for(&e.scope_name, k) {
                    causes.push(FieldCause {
                        reason: "FieldValueInvalid",
                        field: path.into(),
                        message: "Invalid value: \"object\": unsupported scope applied to resource"
                            .into(),
                    });
                }
            }
            if e.scope_name != "PriorityClass"
                && e.scope_name != "VolumeAttributesClass"
                && e.operator != "Exists"
            {
                causes.push(FieldCause::invalid(
                    format!("{path}.operator"),
                    &e.operator,
                    "must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity",
                ));
            }
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => causes.push(validation::required_because(
                    format!("{path}.values"),
                    "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
                )),
                "Exists" | "DoesNotExist" if !values.is_empty() => causes.push(invalid_raw(
                    format!("{path}.values"),
                    format!("{values:?}"),
                    "must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                op => causes.push(FieldCause::invalid(
                    format!("{path}.operator"),
                    op,
                    "not a valid selector operator",
                )),
            }
        }
        let selected: Vec<&str> = exprs.iter().map(|e| e.scope_name.as_str()).collect();
        if conflicting(&selected) {
            causes.push(FieldCause {
                reason: "FieldValueInvalid",
                field: path.into(),
                message: "Invalid value: \"object\": conflicting scopes".into(),
            });
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::age(),
            Column::new(
                "Request",
                "string",
                "Request represents a minimum amount of cpu/memory that a container may consume.",
            ),
            Column::new(
                "Limit",
                "string",
                "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
            ),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let hard = self
            .spec
            .as_ref()
            .and_then(|s| s.hard.clone())
            .unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let get = |m: &Option<
            std::collections::BTreeMap<
                String,
                k8s_openapi::apimachinery::pkg::api::resource::Quantity,
            >,
        >,
                   k: &str| {
            m.as_ref()
                .and_then(|m| m.get(k))
                .map_or_else(|| "0".to_string(), |q| q.0.clone())
        };
        let (mut requests, mut limits) = (vec![], vec![]);
        for k in hard.keys() {
            let item = format!("{k}: {}/{}", get(&st.used, k), get(&st.hard, k));
            if k.split('.').next() == Some("limits") && k.contains('.') {
                limits.push(item)
            } else {
                requests.push(item)
            }
        }
        vec![
            age_cell(&self.metadata),
            Value::String(requests.join(", ")),
            Value::String(limits.join(", ")),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn causes(spec: serde_json::Value) -> Vec<String> {
        let q: ResourceQuota =
            serde_json::from_value(json!({"metadata": {"name": "q"}, "spec": spec}))
                .unwrap_or_default();
        q.validate(None)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn scopes_fit_their_resources() {
        assert!(causes(json!({"hard": {"pods": "2", "requests.cpu": "1"}, "scopes": ["NotBestEffort", "Terminating"]})).is_empty());
        assert_eq!(
            causes(json!({"hard": {"requests.cpu": "1"}, "scopes": ["BestEffort"]})),
            [
                r#"spec.scopes: Invalid value: []core.ResourceQuotaScope{"BestEffort"}: unsupported scope applied to resource"#
            ]
        );
        assert_eq!(
            causes(json!({"hard": {"pods": "1"}, "scopes": ["Terminating", "NotTerminating"]})),
            [
                r#"spec.scopes: Invalid value: []core.ResourceQuotaScope{"Terminating", "NotTerminating"}: conflicting scopes"#
            ]
        );
        assert!(
            causes(
                json!({"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}})
            )
            .is_empty()
        );
        assert_eq!(
            causes(
                json!({"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": "In"},
                {"scopeName": "BestEffort", "operator": "In", "values": ["x"]}]}})
            ),
            [
                "spec.scopeSelector.matchExpressions.values: Required value: must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
                "spec.scopeSelector.matchExpressions.operator: Invalid value: \"In\": must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity",
            ]
        );
    }

    #[test]
    fn volume_attributes_class_scope_tracks_claims() {
        let vac = |hard: serde_json::Value, op: &str| {
            let values = if op == "In" || op == "NotIn" {
                json!(["gold"])
            } else {
                serde_json::Value::Null
            };
            causes(json!({"hard": hard, "scopeSelector": {"matchExpressions": [
                {"scopeName": "VolumeAttributesClass", "operator": op, "values": values}]}}))
        };
        for op in ["In", "NotIn", "Exists", "DoesNotExist"] {
            assert!(
                vac(
                    json!({"persistentvolumeclaims": "2", "requests.storage": "5Gi",
                    "count/persistentvolumeclaims": "2"}),
                    op
                )
                .is_empty(),
                "{op}"
            );
        }
        assert_eq!(
            vac(json!({"pods": "2"}), "In"),
            [
                "spec.scopeSelector.matchExpressions: Invalid value: \"object\": unsupported scope applied to resource"
            ]
        );
        assert_eq!(
            causes(json!({"hard": {"requests.cpu": "1"}, "scopes": ["VolumeAttributesClass"]})),
            [
                r#"spec.scopes: Invalid value: []core.ResourceQuotaScope{"VolumeAttributesClass"}: unsupported scope applied to resource"#
            ]
        );
    }
}
