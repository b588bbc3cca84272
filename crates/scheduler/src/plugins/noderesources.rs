//! NodeResourcesFit: the pod's requests must fit in the node's allocatable minus what the
//! pods already on it request (filter: cpu, memory, ephemeral storage, extended resources,
//! and the pod count); the node with the most room left wins (score: upstream's
//! `LeastAllocated` strategy over cpu and memory, weight 1 each, with the non-zero defaults
//! for containers that request nothing).

use crate::framework::{Filter, MAX_NODE_SCORE, NodeInfo, PodInfo, Score, Status};

/// The NodeResourcesFit plugin.
pub struct Fit;

impl Fit {
    /// The plugin's name.
    pub const NAME: &'static str = "NodeResourcesFit";
}

impl Filter for Fit {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Status> {
        let mut reasons = vec![];
        if node.pod_count + 1 > node.allocatable.pods {
            reasons.push("Too many pods".to_string());
        }
        let want = &pod.requests;
        let have = &node.allocatable;
        let used = &node.requested;
        if want.milli_cpu > 0 && want.milli_cpu > have.milli_cpu - used.milli_cpu {
            reasons.push("Insufficient cpu".into());
        }
        if want.memory > 0 && want.memory > have.memory - used.memory {
            reasons.push("Insufficient memory".into());
        }
        if want.ephemeral_storage > 0
            && want.ephemeral_storage > have.ephemeral_storage - used.ephemeral_storage
        {
            reasons.push("Insufficient ephemeral-storage".into());
        }
        for (name, amount) in &want.scalar {
            let free = have.scalar.get(name).copied().unwrap_or(0)
                - used.scalar.get(name).copied().unwrap_or(0);
            if *amount > 0 && *amount > free {
                reasons.push(format!("Insufficient {name}"));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Status::unschedulable(reasons))
        }
    }
}

/// `(capacity - requested) * 100 / capacity`, 0 when nothing is left.
fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

impl Score for Fit {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let cpu = least_requested(
            node.non_zero_requested.milli_cpu + pod.non_zero_requests.milli_cpu,
            node.allocatable.milli_cpu,
        );
        let memory = least_requested(
            node.non_zero_requested.memory + pod.non_zero_requests.memory,
            node.allocatable.memory,
        );
        (cpu + memory) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{info, node, pinfo, pod};

    #[test]
    fn requests_must_fit_what_is_left() {
        let n = info(node("a", "2", "4Gi", &[]), &[pod("1500m", "1Gi")]);
        assert!(Fit.filter(&pinfo(pod("500m", "3Gi")), &n).is_ok());
        assert_eq!(
            Fit.filter(&pinfo(pod("600m", "1Gi")), &n),
            Err(Status::unschedulable(vec!["Insufficient cpu".into()]))
        );
        assert_eq!(
            Fit.filter(&pinfo(pod("1", "4Gi")), &n),
            Err(Status::unschedulable(vec![
                "Insufficient cpu".into(),
                "Insufficient memory".into()
            ]))
        );
        // A pod requesting nothing always fits the resources.
        assert!(Fit.filter(&pinfo(pod("", "")), &n).is_ok());
    }

    #[test]
    fn pod_count_is_limited() {
        let mut full = node("a", "2", "4Gi", &[]);
        full.status
            .as_mut()
            .unwrap()
            .allocatable
            .as_mut()
            .unwrap()
            .insert(
                "pods".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
            );
        let n = info(full, &[pod("", "")]);
        assert_eq!(
            Fit.filter(&pinfo(pod("", "")), &n),
            Err(Status::unschedulable(vec!["Too many pods".into()]))
        );
    }

    #[test]
    fn extended_resources_are_checked() {
        let mut gpu = pod("", "");
        gpu.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert(
                "example.com/gpu".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
            );
        let n = info(node("a", "2", "4Gi", &[]), &[]);
        assert_eq!(
            Fit.filter(&pinfo(gpu), &n),
            Err(Status::unschedulable(vec![
                "Insufficient example.com/gpu".into()
            ]))
        );
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let empty = info(node("a", "4", "8Gi", &[]), &[]);
        let busy = info(node("b", "4", "8Gi", &[]), &[pod("3", "6Gi")]);
        let p = pinfo(pod("1", "2Gi"));
        // (4000-1000)*100/4000 = 75 for both resources.
        assert_eq!(Fit.score(&p, &empty), 75);
        assert_eq!(Fit.score(&p, &busy), 0);
        // No requests: upstream's defaults (100m, 200Mi) still count.
        assert_eq!(Fit.score(&pinfo(pod("", "")), &empty), (97 + 97) / 2);
    }
}
