//! core/v1 Namespace.

use k8s_openapi::api::core::v1::{Namespace, NamespaceSpec, NamespaceStatus};
use serde_json::Value;

use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for Namespace {
    const SHORT_NAMES: &'static [&'static str] = &["ns"];
    const SUBRESOURCES: &'static [&'static str] = &["status", "finalize"];
    const VERBS: &'static [&'static str] = &[
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];

    fn prepare_for_create(&mut self) {
        self.status = None;
    }

    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(NamespaceSpec::default);
        let finalizers = spec.finalizers.get_or_insert_with(Vec::new);
        if !finalizers.iter().any(|f| f == "kubernetes") {
            finalizers.push("kubernetes".into());
        }
        let status = self.status.get_or_insert_with(NamespaceStatus::default);
        status.phase.get_or_insert_with(|| "Active".into());
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new("Status", "string", "The status of the namespace"),
            Column::age(),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let phase = self
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        vec![Value::String(phase), age_cell(&self.metadata)]
    }

    fn field(&self, label: &str) -> Option<String> {
        match label {
            "status.phase" => Some(
                self.status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default(),
            ),
            _ => None,
        }
    }
}
