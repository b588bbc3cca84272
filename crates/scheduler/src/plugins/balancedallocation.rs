//! NodeResourcesBalancedAllocation: prefer nodes whose cpu and memory would be used in
//! similar fractions once the pod is placed. The score is `(1 - std) * 100`, where `std` is
//! the standard deviation of the requested/allocatable fractions (capped at 1).

use crate::framework::{MAX_NODE_SCORE, NodeInfo, PodInfo, Score};

/// The NodeResourcesBalancedAllocation plugin.
pub struct BalancedAllocation;

impl BalancedAllocation {
    /// The plugin's name.
    pub const NAME: &'static str = "NodeResourcesBalancedAllocation";
}

fn fraction(requested: i64, allocatable: i64) -> f64 {
    if allocatable <= 0 {
        return 1.0;
    }
    (requested as f64 / allocatable as f64).min(1.0)
}

impl Score for BalancedAllocation {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let cpu = fraction(
            node.requested.milli_cpu + pod.requests.milli_cpu,
            node.allocatable.milli_cpu,
        );
        let memory = fraction(
            node.requested.memory + pod.requests.memory,
            node.allocatable.memory,
        );
        // For two values the standard deviation is half their distance.
        let std = (cpu - memory).abs() / 2.0;
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{info, node, pinfo, pod};

    #[test]
    fn balanced_nodes_score_higher() {
        let n = info(node("a", "4", "4Gi", &[]), &[]);
        // 50% cpu, 50% memory: perfectly balanced.
        assert_eq!(BalancedAllocation.score(&pinfo(pod("2", "2Gi")), &n), 100);
        // 100% cpu, 0% memory: std 0.5.
        assert_eq!(BalancedAllocation.score(&pinfo(pod("4", "")), &n), 50);
        // Already cpu-heavy node: a memory-heavy pod rebalances it.
        let heavy = info(node("b", "4", "4Gi", &[]), &[pod("3", "")]);
        let mem_pod = pinfo(pod("", "3Gi"));
        assert!(
            BalancedAllocation.score(&mem_pod, &heavy)
                > BalancedAllocation.score(&pinfo(pod("1", "")), &heavy)
        );
    }
}
