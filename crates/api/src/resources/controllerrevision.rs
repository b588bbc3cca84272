//! apps/v1 ControllerRevision: a non-negative revision, immutable data, and the
//! CONTROLLER/REVISION table.

use k8s_openapi::api::apps::v1::ControllerRevision;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{self, invalid_raw};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for ControllerRevision {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        validation::non_negative("revision", Some(self.revision), &mut causes);
        if self.data.is_none() {
            causes.push(FieldCause::required("data"));
        }
        if old.is_some_and(|o| o.data != self.data) {
            causes.push(invalid_raw(
                "data",
                "runtime.RawExtension{...}",
                "field is immutable",
            ));
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new("Controller", "string", "Controller of the object"),
            Column::new(
                "Revision",
                "integer",
                "Revision indicates the revision of the state represented by Data.",
            ),
            Column::age(),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let owner = self
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let controller = match owner {
            None => "<none>".to_string(),
            Some(o) => {
                let group = o.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
                let kind = if group.is_empty() {
                    o.kind.clone()
                } else {
                    format!("{}.{group}", o.kind)
                };
                format!("{}/{}", kind.to_lowercase(), o.name)
            }
        };
        vec![
            Value::String(controller),
            Value::from(self.revision),
            age_cell(&self.metadata),
        ]
    }
}
