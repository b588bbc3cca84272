//! One module per resource: its [`Behavior`](crate::strategy::Behavior) (defaults, validation,
//! columns, field selectors) lives in exactly one place. [`all`] lists what corten serves;
//! [`name_rule`] says how each kind's names are validated.

use crate::registry::ResourceInfo;

mod clusterrole;
mod clusterrolebinding;
mod configmap;
mod controllerrevision;
mod cronjob;
mod daemonset;
mod deployment;
mod endpoints;
mod endpointslice;
mod event;
mod eventv1;
mod horizontalpodautoscaler;
mod ingress;
mod ingressclass;
mod job;
mod job_policy;
mod lease;
mod limitrange;
mod namespace;
mod networkpolicy;
mod node;
mod persistentvolume;
mod persistentvolumeclaim;
mod pod;
mod poddisruptionbudget;
pub mod podspec;
mod priorityclass;
mod replicaset;
mod replicationcontroller;
mod resourcequota;
mod role;
mod rolebinding;
mod secret;
mod service;
mod serviceaccount;
mod statefulset;
mod storageclass;
pub mod validation;
pub mod workload;

pub use cronjob::every_seconds;

use validation::NameRule;

/// Every resource corten serves, core/v1 first.
pub fn all() -> Vec<ResourceInfo> {
    use k8s_openapi::api::{
        apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch,
        coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
        events::v1 as events, networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
        scheduling::v1 as scheduling, storage::v1 as storage,
    };
    vec![
        ResourceInfo::of::<core::Namespace>(),
        ResourceInfo::of::<core::Pod>(),
        ResourceInfo::of::<core::Service>(),
        ResourceInfo::of::<core::Endpoints>(),
        ResourceInfo::of::<core::ConfigMap>(),
        ResourceInfo::of::<core::Secret>(),
        ResourceInfo::of::<core::Node>(),
        ResourceInfo::of::<core::Event>(),
        ResourceInfo::of::<core::ServiceAccount>(),
        ResourceInfo::of::<core::PersistentVolume>(),
        ResourceInfo::of::<core::PersistentVolumeClaim>(),
        ResourceInfo::of::<core::LimitRange>(),
        ResourceInfo::of::<core::ResourceQuota>(),
        ResourceInfo::of::<core::ReplicationController>(),
        ResourceInfo::of::<apps::Deployment>(),
        ResourceInfo::of::<apps::ReplicaSet>(),
        ResourceInfo::of::<apps::StatefulSet>(),
        ResourceInfo::of::<apps::DaemonSet>(),
        ResourceInfo::of::<apps::ControllerRevision>(),
        ResourceInfo::of::<batch::Job>(),
        ResourceInfo::of::<batch::CronJob>(),
        ResourceInfo::of::<networking::Ingress>(),
        ResourceInfo::of::<networking::IngressClass>(),
        ResourceInfo::of::<networking::NetworkPolicy>(),
        ResourceInfo::of::<discovery::EndpointSlice>(),
        ResourceInfo::of::<coordination::Lease>(),
        ResourceInfo::of::<rbac::Role>(),
        ResourceInfo::of::<rbac::RoleBinding>(),
        ResourceInfo::of::<rbac::ClusterRole>(),
        ResourceInfo::of::<rbac::ClusterRoleBinding>(),
        ResourceInfo::of::<storage::StorageClass>(),
        ResourceInfo::of::<events::Event>(),
        ResourceInfo::of::<policy::PodDisruptionBudget>(),
        ResourceInfo::of::<autoscaling::HorizontalPodAutoscaler>(),
        ResourceInfo::of::<scheduling::PriorityClass>(),
    ]
}

/// How names of `kind` in `group` are validated, as upstream's `ValidateObjectMeta` name
/// function for that kind: DNS-1123 labels for namespaces and statefulsets (whose names become
/// pod host names), DNS-1035 labels for services, path segments for the RBAC kinds (names like
/// `system:node`), DNS-1123 subdomains for everything else.
pub fn name_rule(group: &str, kind: &str) -> NameRule {
    match (group, kind) {
        ("", "Namespace") | ("apps", "StatefulSet") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_complete_and_consistent() {
        let all = all();
        assert_eq!(all.len(), 35);
        let mut seen = std::collections::HashSet::new();
        for r in &all {
            assert!(
                seen.insert((r.group, r.version, r.plural)),
                "duplicate {}",
                r.plural
            );
            assert_eq!(
                r.strategy
                    .cells(&serde_json::json!({"metadata": {"name": "x"}}))
                    .len(),
                r.strategy.columns().len(),
                "{}",
                r.plural
            );
        }
        let get = |p: &str| all.iter().find(|r| r.plural == p);
        assert_eq!(get("pods").map(|r| r.short_names), Some(&["po"][..]));
        assert!(
            get("deployments").is_some_and(|r| r.categories.contains(&"all") && r.has_status())
        );
        assert!(get("namespaces").is_some_and(|r| !r.allows("deletecollection")));
        assert_eq!(name_rule("", "Service"), NameRule::Dns1035Label);
        assert_eq!(
            name_rule("rbac.authorization.k8s.io", "ClusterRole"),
            NameRule::PathSegment
        );
        assert_eq!(name_rule("apps", "Deployment"), NameRule::Subdomain);
    }
}
