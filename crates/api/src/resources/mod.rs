//! One module per resource: its [`Behavior`](crate::strategy::Behavior) (defaults, validation,
//! columns, field selectors) lives in exactly one place. [`all`] lists what corten serves.

use crate::registry::ResourceInfo;

mod configmap;
mod namespace;
pub mod validation;

/// Every resource corten serves, core/v1 first.
pub fn all() -> Vec<ResourceInfo> {
    use k8s_openapi::api::core::v1 as core;
    vec![
        ResourceInfo::of::<core::Namespace>(),
        ResourceInfo::of::<core::ConfigMap>(),
    ]
}

/// TEMPORARY shim (replaced at merge): how names of a kind are validated.
pub fn name_rule(_group: &str, kind: &str) -> validation::NameRule {
    match kind {
        "Namespace" | "Service" => validation::NameRule::Label,
        _ => validation::NameRule::Subdomain,
    }
}
