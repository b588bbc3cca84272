//! policy/v1 PodDisruptionBudget: minAvailable xor maxUnavailable, valid selector and eviction
//! policy, and the MIN AVAILABLE/MAX UNAVAILABLE/ALLOWED DISRUPTIONS table.

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::{validation, workload};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

fn show(v: Option<&IntOrString>) -> String {
    match v {
        None => "N/A".into(),
        Some(IntOrString::Int(i)) => i.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
    }
}

impl Behavior for PodDisruptionBudget {
    const SHORT_NAMES: &'static [&'static str] = &["pdb"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn prepare_for_create(&mut self) {
        self.status = Some(Default::default());
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        let spec = self.spec.clone().unwrap_or_default();
        if spec.min_available.is_some() && spec.max_unavailable.is_some() {
            causes.push(FieldCause::invalid(
                "spec",
                "",
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        if let Some(v) = &spec.min_available {
            causes.extend(
                workload::validate_rolling(None, Some(v), "spec")
                    .into_iter()
                    .map(|mut c| {
                        c.field = "spec.minAvailable".into();
                        c
                    }),
            );
        }
        if let Some(v) = &spec.max_unavailable {
            causes.extend(workload::validate_rolling(Some(v), None, "spec"));
        }
        if let Some(sel) = &spec.selector {
            causes.extend(validation::validate_label_selector(sel, "spec.selector"));
        }
        validation::supported(
            "spec.unhealthyPodEvictionPolicy",
            spec.unhealthy_pod_eviction_policy.as_deref(),
            &["AlwaysAllow", "IfHealthyBudget"],
            &mut causes,
        );
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Min Available",
                "string",
                "The minimum number of pods that must be available.",
            ),
            Column::new(
                "Max Unavailable",
                "string",
                "The maximum number of pods that may be unavailable.",
            ),
            Column::new(
                "Allowed Disruptions",
                "integer",
                "Calculated number of pods that may be disrupted at this time.",
            ),
            Column::age(),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        vec![
            Value::String(show(spec.min_available.as_ref())),
            Value::String(show(spec.max_unavailable.as_ref())),
            Value::from(self.status.as_ref().map_or(0, |s| s.disruptions_allowed)),
            age_cell(&self.metadata),
        ]
    }
}
