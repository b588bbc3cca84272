//! scheduling.k8s.io/v1 PriorityClass: PreemptLowerPriority by default, reserved `system-`
//! names and value bounds, immutable value and policy, and the VALUE/GLOBAL-DEFAULT table.

use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{self, invalid_raw};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

/// Values above this are reserved for the built-in system classes.
const HIGHEST_USER_PRIORITY: i32 = 1_000_000_000;
const SYSTEM_CLASSES: [&str; 2] = ["system-cluster-critical", "system-node-critical"];

impl Behavior for PriorityClass {
    const SHORT_NAMES: &'static [&'static str] = &["pc"];

    fn apply_defaults(&mut self) {
        self.preemption_policy
            .get_or_insert_with(|| "PreemptLowerPriority".into());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        let name = self.metadata.name.as_deref().unwrap_or("");
        if SYSTEM_CLASSES.contains(&name) {
            // The built-in classes carry their fixed values.
        } else if name.starts_with("system-") {
            causes.push(FieldCause::forbidden(
                "metadata.name",
                "priority class names with 'system-' prefix are reserved.",
            ));
        } else if self.value > HIGHEST_USER_PRIORITY {
            causes.push(invalid_raw(
                "value",
                self.value,
                &format!(
                    "maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"
                ),
            ));
        }
        validation::supported(
            "preemptionPolicy",
            self.preemption_policy.as_deref(),
            &["Never", "PreemptLowerPriority"],
            &mut causes,
        );
        if let Some(old) = old {
            if old.value != self.value {
                causes.push(FieldCause::forbidden(
                    "value",
                    "may not be changed in an update.",
                ));
            }
            if old.preemption_policy != self.preemption_policy {
                causes.push(FieldCause::immutable(
                    "preemptionPolicy",
                    self.preemption_policy.as_deref().unwrap_or(""),
                ));
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Value",
                "integer",
                "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec.",
            ),
            Column::new(
                "Global-Default",
                "boolean",
                "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority.",
            ),
            Column::age(),
            Column::new(
                "PreemptionPolicy",
                "string",
                "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset.",
            ),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        vec![
            Value::from(self.value),
            Value::Bool(self.global_default.unwrap_or(false)),
            age_cell(&self.metadata),
            Value::String(
                self.preemption_policy
                    .clone()
                    .unwrap_or_else(|| "PreemptLowerPriority".into()),
            ),
        ]
    }
}
