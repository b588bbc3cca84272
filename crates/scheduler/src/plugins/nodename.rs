//! NodeName: a pod that names a node (`spec.nodeName`) fits only that node.
//!
//! The queue only takes pods without a nodeName, so in practice this filter only matters
//! for callers of the framework that evaluate already-placed pods; it is kept for parity with
//! upstream's default profile.

use crate::framework::{Filter, NodeInfo, PodInfo, Status};

/// Upstream's failure reason.
pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

/// The NodeName filter.
pub struct NodeName;

impl NodeName {
    /// The plugin's name.
    pub const NAME: &'static str = "NodeName";
}

impl Filter for NodeName {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Status> {
        match pod.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(wanted) if !wanted.is_empty() && wanted != node.name => {
                Err(Status::unresolvable(ERR_REASON))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{info, node, pinfo, pod};

    #[test]
    fn only_the_named_node_fits() {
        let n = info(node("a", "1", "1Gi", &[]), &[]);
        assert!(NodeName.filter(&pinfo(pod("", "")), &n).is_ok());
        let mut p = pod("", "");
        p.spec.as_mut().unwrap().node_name = Some("a".into());
        assert!(NodeName.filter(&pinfo(p.clone()), &n).is_ok());
        p.spec.as_mut().unwrap().node_name = Some("b".into());
        assert_eq!(
            NodeName.filter(&pinfo(p), &n),
            Err(Status::unresolvable(ERR_REASON))
        );
    }
}
