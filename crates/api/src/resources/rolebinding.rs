//! rbac.authorization.k8s.io/v1 RoleBinding, plus what it shares with ClusterRoleBinding:
//! subject and roleRef defaults and validation (roleRef may not change) and the
//! ROLE/USERS/GROUPS/SERVICEACCOUNTS table.

use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{self, invalid_raw};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Upstream's subject and roleRef API group defaults.
pub fn default_binding(role_ref: &mut RoleRef, subjects: Option<&mut Vec<Subject>>) {
    if role_ref.api_group.is_empty() {
        role_ref.api_group = RBAC_GROUP.into();
    }
    for s in subjects.into_iter().flatten() {
        if s.api_group.as_deref().unwrap_or("").is_empty() {
            s.api_group = Some(if s.kind == "ServiceAccount" {
                String::new()
            } else {
                RBAC_GROUP.into()
            });
        }
    }
}

/// Validates a binding's roleRef (`kinds` it may name) and subjects; `old_ref` on update.
pub fn validate_binding(
    role_ref: &RoleRef,
    subjects: &[Subject],
    kinds: &[&str],
    namespaced: bool,
    old_ref: Option<&RoleRef>,
) -> Vec<FieldCause> {
    let mut causes = vec![];
    if role_ref.api_group != RBAC_GROUP {
        causes.push(FieldCause::not_supported(
            "roleRef.apiGroup",
            &role_ref.api_group,
            &[RBAC_GROUP],
        ));
    }
    validation::supported("roleRef.kind", Some(&role_ref.kind), kinds, &mut causes);
    if role_ref.name.is_empty() {
        causes.push(FieldCause::required("roleRef.name"));
    }
    for (i, s) in subjects.iter().enumerate() {
        let p = format!("subjects[{i}]");
        if s.name.is_empty() {
            causes.push(FieldCause::required(format!("{p}.name")));
        }
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !namespaced && s.namespace.as_deref().unwrap_or("").is_empty() {
                    causes.push(FieldCause::required(format!("{p}.namespace")));
                }
            }
            "User" | "Group" => {}
            k => causes.push(FieldCause::not_supported(
                format!("{p}.kind"),
                k,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    if old_ref.is_some_and(|o| o != role_ref) {
        causes.push(invalid_raw(
            "roleRef",
            format!(
                "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
                role_ref.api_group, role_ref.kind, role_ref.name
            ),
            "cannot change roleRef",
        ));
    }
    causes
}

/// The binding columns after NAME.
pub fn binding_columns() -> Vec<Column> {
    vec![
        Column::new(
            "Role",
            "string",
            "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error. This field is immutable.",
        ),
        Column::age(),
        Column::wide("Users", "string", "Users in the roleBinding"),
        Column::wide("Groups", "string", "Groups in the roleBinding"),
        Column::wide(
            "ServiceAccounts",
            "string",
            "ServiceAccounts in the roleBinding",
        ),
    ]
}

/// The binding cells after NAME.
pub fn binding_cells(role_ref: &RoleRef, subjects: &[Subject], age: Value) -> Vec<Value> {
    let pick = |kind: &str| -> Value {
        let list: Vec<String> = subjects
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| {
                if kind == "ServiceAccount" {
                    format!("{}/{}", s.namespace.as_deref().unwrap_or(""), s.name)
                } else {
                    s.name.clone()
                }
            })
            .collect();
        Value::String(list.join(", "))
    };
    vec![
        Value::String(format!("{}/{}", role_ref.kind, role_ref.name)),
        age,
        pick("User"),
        pick("Group"),
        pick("ServiceAccount"),
    ]
}

impl Behavior for RoleBinding {
    fn apply_defaults(&mut self) {
        default_binding(&mut self.role_ref, self.subjects.as_mut());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        validate_binding(
            &self.role_ref,
            self.subjects.as_deref().unwrap_or_default(),
            &["Role", "ClusterRole"],
            true,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_validation_and_cells() {
        let mut b: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "b", "namespace": "ns"},
            "roleRef": {"apiGroup": "", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]}))
        .unwrap_or_default();
        b.apply_defaults();
        assert_eq!(b.role_ref.api_group, RBAC_GROUP);
        assert!(b.validate(None).is_empty(), "{:?}", b.validate(None));
        let cells = b.cells();
        assert_eq!(cells[0], "Role/r");
        assert_eq!(cells[2], "alice");
        assert_eq!(cells[4], "ns/sa");
        let mut changed = b.clone();
        changed.role_ref.name = "other".into();
        assert_eq!(changed.validate(Some(&b))[0].field, "roleRef");
    }
}
