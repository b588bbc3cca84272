//! core/v1 ResourceQuota: status reset on create, quantity and scope validation, and the
//! AGE/REQUEST/LIMIT table (`pods: 1/10, requests.cpu: 0/4`).

use k8s_openapi::api::core::v1::ResourceQuota;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation;
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

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
            validation::supported(
                &format!("spec.scopes[{i}]"),
                Some(s),
                &[
                    "BestEffort",
                    "CrossNamespacePodAffinity",
                    "NotBestEffort",
                    "NotTerminating",
                    "PriorityClass",
                    "Terminating",
                    "VolumeAttributesClass",
                ],
                &mut causes,
            );
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
