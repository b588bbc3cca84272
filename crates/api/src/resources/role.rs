//! rbac.authorization.k8s.io/v1 Role, plus the rule validation shared with ClusterRole and the
//! CREATED AT table both print.

use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::limitrange::{created_at_cell, created_at_column};
use crate::resources::validation::{invalid_raw, required_because};
use crate::strategy::Behavior;
use crate::table::Column;

/// Validates policy rules; `namespaced` rules may not name non-resource URLs.
pub fn validate_rules(rules: &[PolicyRule], namespaced: bool) -> Vec<FieldCause> {
    let mut causes = vec![];
    for (i, r) in rules.iter().enumerate() {
        let p = format!("rules[{i}]");
        if r.verbs.is_empty() {
            causes.push(required_because(
                format!("{p}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = r.non_resource_urls.as_deref().unwrap_or_default();
        let resources = r.resources.as_deref().unwrap_or_default();
        if !urls.is_empty() {
            if namespaced {
                causes.push(invalid_raw(
                    format!("{p}.nonResourceURLs"),
                    format!("{urls:?}")
                        .replace('[', "[]string{")
                        .replace(']', "}"),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            } else if !resources.is_empty() || r.api_groups.as_ref().is_some_and(|g| !g.is_empty())
            {
                causes.push(invalid_raw(
                    format!("{p}.nonResourceURLs"),
                    format!("{urls:?}")
                        .replace('[', "[]string{")
                        .replace(']', "}"),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if r.api_groups.as_ref().is_none_or(|g| g.is_empty()) {
            causes.push(required_because(
                format!("{p}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if resources.is_empty() {
            causes.push(required_because(
                format!("{p}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    causes
}

impl Behavior for Role {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        validate_rules(self.rules.as_deref().unwrap_or_default(), true)
    }

    fn columns() -> Vec<Column> {
        vec![created_at_column()]
    }

    fn cells(&self) -> Vec<Value> {
        vec![created_at_cell(&self.metadata)]
    }
}
