//! One module per resource: its [`Behavior`](crate::strategy::Behavior) (defaults, validation,
//! columns, field selectors) lives in exactly one place. [`all`] lists what corten serves;
//! [`name_rule`] says how each kind's names are validated.

use crate::registry::ResourceInfo;

mod configmap;
mod controllerrevision;
mod cronjob;
mod daemonset;
mod deployment;
mod endpoints;
mod endpointslice;
mod event;
mod eventv1;
mod job;
mod limitrange;
mod namespace;
mod node;
mod persistentvolume;
mod persistentvolumeclaim;
mod pod;
pub mod podspec;
mod replicaset;
mod replicationcontroller;
mod resourcequota;
mod secret;
mod service;
mod serviceaccount;
mod statefulset;
pub mod validation;
pub mod workload;

use validation::NameRule;

/// Every resource corten serves, core/v1 first.
pub fn all() -> Vec<ResourceInfo> {
    use k8s_openapi::api::{
        apps::v1 as apps, batch::v1 as batch, core::v1 as core, discovery::v1 as discovery,
        events::v1 as events,
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
        ResourceInfo::of::<discovery::EndpointSlice>(),
        ResourceInfo::of::<events::Event>(),
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
