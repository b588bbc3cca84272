//! NodePorts: a pod's host ports must be free on the node. Two host ports conflict when
//! protocol and port are equal and either address is `0.0.0.0` or both are the same.

use crate::framework::{Filter, NodeInfo, PodInfo, Status};

/// Upstream's failure reason.
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// The NodePorts filter.
pub struct NodePorts;

impl NodePorts {
    /// The plugin's name.
    pub const NAME: &'static str = "NodePorts";
}

fn conflicts(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    a.0 == b.0 && a.2 == b.2 && (a.1 == "0.0.0.0" || b.1 == "0.0.0.0" || a.1 == b.1)
}

impl Filter for NodePorts {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Status> {
        let wanted = pod.host_ports();
        if wanted
            .iter()
            .any(|w| node.used_ports.iter().any(|u| conflicts(w, u)))
        {
            Err(Status::unschedulable(vec![ERR_REASON.into()]))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{info, node, pinfo, pod};
    use k8s_openapi::api::core::v1::{ContainerPort, Pod};

    fn with_port(ip: &str, port: i32, proto: &str) -> Pod {
        let mut p = pod("", "");
        p.spec.as_mut().unwrap().containers[0].ports = Some(vec![ContainerPort {
            container_port: 80,
            host_port: Some(port),
            host_ip: (!ip.is_empty()).then(|| ip.to_string()),
            protocol: Some(proto.into()),
            ..Default::default()
        }]);
        p
    }

    #[test]
    fn host_ports_conflict_as_upstream() {
        let n = info(node("a", "1", "1Gi", &[]), &[with_port("", 8080, "TCP")]);
        let fails = |p: Pod| NodePorts.filter(&pinfo(p), &n).is_err();
        assert!(fails(with_port("", 8080, "TCP")));
        assert!(fails(with_port("10.0.0.1", 8080, "TCP")));
        assert!(!fails(with_port("", 8080, "UDP")));
        assert!(!fails(with_port("", 8081, "TCP")));
        assert!(!fails(pod("", "")));
        let n = info(
            node("a", "1", "1Gi", &[]),
            &[with_port("10.0.0.1", 80, "TCP")],
        );
        assert!(
            NodePorts
                .filter(&pinfo(with_port("10.0.0.2", 80, "TCP")), &n)
                .is_ok()
        );
        assert!(
            NodePorts
                .filter(&pinfo(with_port("10.0.0.1", 80, "TCP")), &n)
                .is_err()
        );
    }
}
