//! core/v1 Node: allocatable defaults to capacity, minimal validation, the STATUS/ROLES/VERSION
//! table (with `SchedulingDisabled` and roles from `node-role.kubernetes.io/*` labels) and the
//! `spec.unschedulable` field selector.

use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation;
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

/// Roles from `node-role.kubernetes.io/<role>` labels and the `kubernetes.io/role` label, sorted.
pub fn node_roles(node: &Node) -> Vec<String> {
    let mut roles = std::collections::BTreeSet::new();
    for (k, v) in node.metadata.labels.iter().flatten() {
        if let Some(role) = k
            .strip_prefix("node-role.kubernetes.io/")
            .filter(|r| !r.is_empty())
        {
            roles.insert(role.to_string());
        } else if k == "kubernetes.io/role" && !v.is_empty() {
            roles.insert(v.clone());
        }
    }
    roles.into_iter().collect()
}

impl Behavior for Node {
    const SHORT_NAMES: &'static [&'static str] = &["no"];
    const SUBRESOURCES: &'static [&'static str] = &["proxy", "status"];

    fn apply_defaults(&mut self) {
        if let Some(st) = &mut self.status
            && st.allocatable.is_none()
        {
            st.allocatable.clone_from(&st.capacity);
        }
    }

    fn prepare_for_create(&mut self) {
        if let Some(spec) = &mut self.spec {
            spec.config_source = None;
        }
        if let Some(st) = &mut self.status {
            st.config = None;
        }
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        for (i, t) in self
            .spec
            .iter()
            .flat_map(|s| s.taints.iter().flatten())
            .enumerate()
        {
            validation::supported(
                &format!("spec.taints[{i}].effect"),
                Some(&t.effect),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                &mut causes,
            );
            if !validation::is_qualified_name(&t.key) {
                causes.push(FieldCause::invalid(format!("spec.taints[{i}].key"), &t.key, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new("Status", "string", "The status of the node"),
            Column::new("Roles", "string", "The roles of the node"),
            Column::age(),
            Column::new("Version", "string", "Kubelet Version reported by the node."),
            Column::wide(
                "Internal-IP",
                "string",
                "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).",
            ),
            Column::wide(
                "External-IP",
                "string",
                "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).",
            ),
            Column::wide(
                "OS-Image",
                "string",
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            Column::wide(
                "Kernel-Version",
                "string",
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            Column::wide(
                "Container-Runtime",
                "string",
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let st = self.status.clone().unwrap_or_default();
        let mut status: Vec<String> = st
            .conditions
            .iter()
            .flatten()
            .filter(|c| c.type_ == "Ready")
            .take(1)
            .map(|c| {
                if c.status == "True" {
                    "Ready".into()
                } else {
                    "NotReady".into()
                }
            })
            .collect();
        if status.is_empty() {
            status.push("Unknown".into());
        }
        if self.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
            status.push("SchedulingDisabled".into());
        }
        let roles = node_roles(self).join(",");
        let info = st.node_info.clone().unwrap_or_default();
        let addr = |kind: &str| {
            st.addresses
                .iter()
                .flatten()
                .find(|a| a.type_ == kind)
                .map_or_else(|| "<none>".to_string(), |a| a.address.clone())
        };
        let unknown = |s: String| {
            if s.is_empty() {
                "<unknown>".to_string()
            } else {
                s
            }
        };
        vec![
            Value::String(status.join(",")),
            Value::String(if roles.is_empty() {
                "<none>".into()
            } else {
                roles
            }),
            age_cell(&self.metadata),
            Value::String(info.kubelet_version.clone()),
            Value::String(addr("InternalIP")),
            Value::String(addr("ExternalIP")),
            Value::String(unknown(info.os_image)),
            Value::String(unknown(info.kernel_version)),
            Value::String(unknown(info.container_runtime_version)),
        ]
    }

    fn field(&self, label: &str) -> Option<String> {
        (label == "spec.unschedulable").then(|| {
            self.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_and_roles() {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}))
        .unwrap_or_default();
        let cells = n.cells();
        assert_eq!(cells[0], "Ready,SchedulingDisabled");
        assert_eq!(cells[1], "control-plane");
        assert_eq!(cells[4], "10.0.0.1");
        assert_eq!(cells[5], "<none>");
        assert_eq!(n.field("spec.unschedulable").as_deref(), Some("true"));
    }
}
