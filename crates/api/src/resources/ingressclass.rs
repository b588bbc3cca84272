//! networking.k8s.io/v1 IngressClass: controller validation and the CONTROLLER/PARAMETERS table.

use k8s_openapi::api::networking::v1::IngressClass;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation;
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for IngressClass {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        let spec = self.spec.clone().unwrap_or_default();
        if spec.controller.as_deref().is_some_and(|c| c.len() > 250) {
            causes.push(FieldCause::too_long("spec.controller", 250));
        }
        if let Some(p) = &spec.parameters {
            validation::supported(
                "spec.parameters.scope",
                p.scope.as_deref(),
                &["Cluster", "Namespace"],
                &mut causes,
            );
        }
        if let Some(old) = old {
            let old_c = old.spec.as_ref().and_then(|s| s.controller.clone());
            if old_c != spec.controller {
                causes.push(FieldCause::immutable(
                    "spec.controller",
                    spec.controller.as_deref().unwrap_or(""),
                ));
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Controller",
                "string",
                "Controller that is responsible for handling this class",
            ),
            Column::new(
                "Parameters",
                "string",
                "A reference to a resource with additional parameters",
            ),
            Column::age(),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let params = spec.parameters.map_or_else(
            || "<none>".to_string(),
            |p| match p.api_group {
                Some(g) => format!("{}.{g}/{}", p.kind, p.name),
                None => format!("{}/{}", p.kind, p.name),
            },
        );
        vec![
            Value::String(spec.controller.unwrap_or_default()),
            Value::String(params),
            age_cell(&self.metadata),
        ]
    }
}
