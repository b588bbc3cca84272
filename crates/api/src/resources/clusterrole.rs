//! rbac.authorization.k8s.io/v1 ClusterRole: rule validation (resource or non-resource rules,
//! not both) and the CREATED AT table.

use k8s_openapi::api::rbac::v1::ClusterRole;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::limitrange::{created_at_cell, created_at_column};
use crate::resources::role::validate_rules;
use crate::strategy::Behavior;
use crate::table::Column;

impl Behavior for ClusterRole {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        // Aggregated roles have their rules filled in by the controller.
        if self.aggregation_rule.is_some() {
            return vec![];
        }
        validate_rules(self.rules.as_deref().unwrap_or_default(), false)
    }

    fn columns() -> Vec<Column> {
        vec![created_at_column()]
    }

    fn cells(&self) -> Vec<Value> {
        vec![created_at_cell(&self.metadata)]
    }
}
