//! NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods that tolerate
//! the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::Taint;

use crate::framework::{Filter, NodeInfo, PodInfo, Status};
use crate::plugins::tainttoleration::tolerates;

/// Upstream's failure reason.
pub const ERR_REASON: &str = "node(s) were unschedulable";
/// The taint a cordoned node is treated as having.
pub const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// The NodeUnschedulable filter.
pub struct NodeUnschedulable;

impl NodeUnschedulable {
    /// The plugin's name.
    pub const NAME: &'static str = "NodeUnschedulable";
}

impl Filter for NodeUnschedulable {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Status> {
        if !node.unschedulable {
            return Ok(());
        }
        let taint = Taint {
            key: TAINT_KEY.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerations = pod.pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
        if tolerations
            .into_iter()
            .flatten()
            .any(|t| tolerates(t, &taint))
        {
            Ok(())
        } else {
            Err(Status::unresolvable(ERR_REASON))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{info, node, pinfo, pod};
    use k8s_openapi::api::core::v1::Toleration;

    #[test]
    fn cordoned_nodes_need_the_toleration() {
        let mut n = node("a", "1", "1Gi", &[]);
        let p = pod("", "");
        assert!(
            NodeUnschedulable
                .filter(&pinfo(p.clone()), &info(n.clone(), &[]))
                .is_ok()
        );
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        let n = info(n, &[]);
        assert_eq!(
            NodeUnschedulable.filter(&pinfo(p.clone()), &n),
            Err(Status::unresolvable(ERR_REASON))
        );
        let mut tolerant = p;
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some(TAINT_KEY.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]);
        assert!(NodeUnschedulable.filter(&pinfo(tolerant), &n).is_ok());
    }
}
