//! The plugins, one module per plugin as upstream's `framework/plugins/*`, and
//! [`default_framework`], the default profile built from them.
//!
//! Filters run in upstream's order: NodeUnschedulable, NodeName, TaintToleration,
//! NodeAffinity, NodePorts, NodeResourcesFit, VolumeBinding, PodTopologySpread,
//! InterPodAffinity. Scores use upstream's default weights: TaintToleration 3, NodeAffinity 2,
//! PodTopologySpread 2, InterPodAffinity 2, NodeResourcesFit (LeastAllocated) 1,
//! NodeResourcesBalancedAllocation 1.

use crate::framework::Framework;

pub mod balancedallocation;
pub mod interpodaffinity;
pub mod nodeaffinity;
pub mod nodename;
pub mod nodeports;
pub mod noderesources;
pub mod nodeunschedulable;
pub mod podtopologyspread;
pub mod tainttoleration;
pub mod volumebinding;

/// The default profile.
pub fn default_framework() -> Framework {
    Framework::new()
        .with_filter(nodeunschedulable::NodeUnschedulable)
        .with_filter(nodename::NodeName)
        .with_filter(tainttoleration::TaintToleration)
        .with_filter(nodeaffinity::NodeAffinity)
        .with_filter(nodeports::NodePorts)
        .with_filter(noderesources::Fit)
        .with_filter(volumebinding::VolumeBinding)
        .with_filter(podtopologyspread::PodTopologySpread)
        .with_filter(interpodaffinity::InterPodAffinity)
        .with_score(tainttoleration::TaintToleration, 3)
        .with_score(nodeaffinity::NodeAffinity, 2)
        .with_score(podtopologyspread::PodTopologySpread, 2)
        .with_score(interpodaffinity::InterPodAffinity, 2)
        .with_score(noderesources::Fit, 1)
        .with_score(balancedallocation::BalancedAllocation, 1)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders of k8s-openapi objects for the plugin tests.

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Container, Node, NodeSpec, NodeStatus, Pod, PodSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use crate::framework::{NodeInfo, PodInfo};

    /// A node with `cpu` and `memory` allocatable, 110 pods, and `labels`.
    pub fn node(name: &str, cpu: &str, memory: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity(cpu.into())),
                    ("memory".to_string(), Quantity(memory.into())),
                    ("pods".to_string(), Quantity("110".into())),
                ])),
                ..Default::default()
            }),
        }
    }

    /// A pod with one container requesting `cpu` and `memory` (empty: none).
    pub fn pod(cpu: &str, memory: &str) -> Pod {
        let c: Container = crate::resources::tests::container("c", cpu, memory);
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![c],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A pod named `name` in `namespace` with `labels` and no requests.
    pub fn labelled(name: &str, namespace: &str, labels: &[(&str, &str)]) -> Pod {
        let mut p = pod("", "");
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some(namespace.into());
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p
    }

    /// A [`NodeInfo`] for `node` with `pods` on it.
    pub fn info(node: Node, pods: &[Pod]) -> NodeInfo {
        let mut n = NodeInfo::new(Arc::new(node));
        for p in pods {
            n.add_pod(Arc::new(p.clone()));
        }
        n
    }

    /// A [`PodInfo`] for `pod`.
    pub fn pinfo(pod: Pod) -> PodInfo {
        PodInfo::new(Arc::new(pod))
    }
}
