//! rbac.authorization.k8s.io/v1 ClusterRoleBinding: like RoleBinding, but naming only
//! ClusterRoles and requiring service account subjects' namespaces.

use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::rolebinding::{
    binding_cells, binding_columns, default_binding, validate_binding,
};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for ClusterRoleBinding {
    fn apply_defaults(&mut self) {
        default_binding(&mut self.role_ref, self.subjects.as_mut());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        validate_binding(
            &self.role_ref,
            self.subjects.as_deref().unwrap_or_default(),
            &["ClusterRole"],
            false,
            old.map(|o| &o.role_ref),
        )
    }

    fn columns() -> Vec<Column> {
        binding_columns()
    }

    fn cells(&self) -> Vec<Value> {
        binding_cells(
            &self.role_ref,
            self.subjects.as_deref().unwrap_or_default(),
            age_cell(&self.metadata),
        )
    }
}
