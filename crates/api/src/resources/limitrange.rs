//! core/v1 LimitRange: container default/defaultRequest filled from max/default/min as upstream
//! does, type validation (no defaults for `Pod`, a storage min or max for
//! `PersistentVolumeClaim`), and the CREATED AT table.

use k8s_openapi::api::core::v1::LimitRange;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation;
use crate::strategy::Behavior;
use crate::table::Column;

/// The CREATED AT column of kinds printed with their creation time (RFC 3339, UTC).
pub fn created_at_column() -> Column {
    Column::new(
        "Created At",
        "date",
        "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.",
    )
}

/// The CREATED AT cell.
pub fn created_at_cell(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Value {
    meta.creation_timestamp.as_ref().map_or(Value::Null, |t| {
        Value::String(t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
    })
}

impl Behavior for LimitRange {
    const SHORT_NAMES: &'static [&'static str] = &["limits"];

    fn apply_defaults(&mut self) {
        for item in self.spec.iter_mut().flat_map(|s| s.limits.iter_mut()) {
            if item.type_ != "Container" {
                continue;
            }
            let mut default = item.default.clone().unwrap_or_default();
            for (k, v) in item.max.iter().flatten() {
                default.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let mut request = item.default_request.clone().unwrap_or_default();
            for (k, v) in default.iter().chain(item.min.iter().flatten()) {
                request.entry(k.clone()).or_insert_with(|| v.clone());
            }
            item.default = (!default.is_empty()).then_some(default);
            item.default_request = (!request.is_empty()).then_some(request);
        }
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        for (i, item) in self.spec.iter().flat_map(|s| s.limits.iter()).enumerate() {
            validation::supported(
                &format!("spec.limits[{i}].type"),
                Some(&item.type_),
                &["Container", "Pod", "PersistentVolumeClaim"],
                &mut causes,
            );
            if item.type_ == "Pod" {
                for (kind, list) in [
                    ("default", &item.default),
                    ("defaultRequest", &item.default_request),
                ] {
                    if list.as_ref().is_some_and(|l| !l.is_empty()) {
                        causes.push(FieldCause::forbidden(
                            format!("spec.limits[{i}].{kind}"),
                            "may not be specified when `type` is 'Pod'",
                        ));
                    }
                }
            }
            let has = |l: &Option<std::collections::BTreeMap<String, _>>| {
                l.as_ref().is_some_and(|l| l.contains_key("storage"))
            };
            if item.type_ == "PersistentVolumeClaim" && !has(&item.min) && !has(&item.max) {
                causes.push(validation::required_because(
                    format!("spec.limits[{i}].limits"),
                    "either minimum or maximum storage value is required, but neither was provided",
                ));
            }
            for (kind, list) in [
                ("max", &item.max),
                ("min", &item.min),
                ("default", &item.default),
                ("defaultRequest", &item.default_request),
            ] {
                for (k, q) in list.iter().flatten() {
                    if validation::parse_quantity(&q.0).is_none() {
                        causes.push(FieldCause::invalid(
                            format!("spec.limits[{i}].{kind}[{k}]"),
                            &q.0,
                            "must be a valid quantity",
                        ));
                    }
                }
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![created_at_column()]
    }

    fn cells(&self) -> Vec<Value> {
        vec![created_at_cell(&self.metadata)]
    }
}
