//! PodTopologySpread, as upstream's `podtopologyspread` plugin.
//!
//! Filter (the pod's `DoNotSchedule` constraints): per constraint, count the pods matching its
//! selector (the pod's namespace, not terminating) in every topology domain of the nodes that
//! carry all the constraints' keys and pass its node inclusion policies (nodeAffinityPolicy
//! Honor by default, nodeTaintsPolicy Ignore by default). A node fits when
//! `count(domain) + self - min(count)` stays within `maxSkew`; with fewer domains than
//! `minDomains` the minimum is 0. A node without a constraint's key never fits.
//!
//! Score (the `ScheduleAnyway` constraints; a pod without constraints gets upstream's system
//! defaults, hostname maxSkew 3 and zone maxSkew 5, selecting what its Services,
//! ReplicationControllers, ReplicaSets and StatefulSets select): fewer matching pods in the
//! node's domains is better, each constraint weighted by log(domains + 2).

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use api::resources::validation::selector_matches;
use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::framework::{Filter, MAX_NODE_SCORE, NodeInfo, PodInfo, Score, Snapshot, Status};
use crate::plugins::nodeaffinity::NodeAffinity;
use crate::plugins::tainttoleration::TaintToleration;

/// Upstream's reason when the skew would be exceeded.
pub const ERR_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
/// Upstream's reason when the node lacks a constraint's topology key.
pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
/// The hostname label.
pub const HOSTNAME: &str = "kubernetes.io/hostname";
/// The zone label.
pub const ZONE: &str = "topology.kubernetes.io/zone";

/// The PodTopologySpread plugin.
pub struct PodTopologySpread;

impl PodTopologySpread {
    /// The plugin's name.
    pub const NAME: &'static str = "PodTopologySpread";
}

/// One constraint, resolved against the pod.
#[derive(Clone, Debug)]
pub struct Constraint {
    max_skew: i64,
    topology_key: String,
    selector: LabelSelector,
    min_domains: i64,
    honor_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn new(c: &TopologySpreadConstraint, pod: &Pod) -> Self {
        let mut selector = c.label_selector.clone().unwrap_or(LabelSelector {
            // No selector selects nothing.
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "corten.dev/no-selector".into(),
                operator: "In".into(),
                values: Some(vec![]),
            }]),
            match_labels: None,
        });
        for key in c.match_label_keys.iter().flatten() {
            if let Some(v) = pod.metadata.labels.as_ref().and_then(|l| l.get(key)) {
                selector
                    .match_expressions
                    .get_or_insert_with(Vec::new)
                    .push(LabelSelectorRequirement {
                        key: key.clone(),
                        operator: "In".into(),
                        values: Some(vec![v.clone()]),
                    });
            }
        }
        Constraint {
            max_skew: i64::from(c.max_skew),
            topology_key: c.topology_key.clone(),
            selector,
            min_domains: i64::from(c.min_domains.unwrap_or(1)),
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    /// Whether the node counts for this constraint (its inclusion policies).
    fn includes(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        (!self.honor_affinity || NodeAffinity.filter(pod, node).is_ok())
            && (!self.honor_taints || TaintToleration.filter(pod, node).is_ok())
    }

    /// Matching pods on `node` in `namespace` (terminating ones do not count).
    fn count(&self, node: &NodeInfo, namespace: Option<&str>) -> i64 {
        node.pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.metadata.namespace.as_deref() == namespace
                    && selector_matches(&self.selector, p.metadata.labels.as_ref())
            })
            .count() as i64
    }
}

/// The pod's constraints with `when` (`DoNotSchedule` or `ScheduleAnyway`).
pub fn constraints(pod: &Pod, when: &str) -> Vec<Constraint> {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| Constraint::new(c, pod))
        .collect()
}

/// Upstream's system default constraints for `pod` selected by `selector`.
pub fn system_defaults(selector: LabelSelector) -> Vec<Constraint> {
    [(HOSTNAME, 3), (ZONE, 5)]
        .into_iter()
        .map(|(key, skew)| Constraint {
            max_skew: skew,
            topology_key: key.into(),
            selector: selector.clone(),
            min_domains: 1,
            honor_affinity: true,
            honor_taints: false,
        })
        .collect()
}

fn has_all_keys(node: &NodeInfo, cs: &[Constraint]) -> bool {
    let labels = node.labels();
    cs.iter()
        .all(|c| labels.is_some_and(|l| l.contains_key(&c.topology_key)))
}

fn value<'a>(node: &'a NodeInfo, key: &str) -> Option<&'a String> {
    node.labels().and_then(|l| l.get(key))
}

/// The filter's counts.
#[derive(Debug, Default)]
pub struct State {
    constraints: Vec<Constraint>,
    /// Per constraint: matching pods per domain value.
    counts: Vec<HashMap<String, i64>>,
}

impl Filter for PodTopologySpread {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn pre_filter(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot<'_>,
    ) -> Result<Option<Arc<dyn Any + Send + Sync>>, Status> {
        let cs = constraints(&pod.pod, "DoNotSchedule");
        if cs.is_empty() {
            return Ok(None);
        }
        let ns = pod.pod.metadata.namespace.as_deref();
        let mut counts = vec![HashMap::new(); cs.len()];
        for node in &snapshot.nodes {
            if !has_all_keys(node, &cs) {
                continue;
            }
            for (c, count) in cs.iter().zip(counts.iter_mut()) {
                if !c.includes(pod, node) {
                    continue;
                }
                let Some(v) = value(node, &c.topology_key) else {
                    continue;
                };
                *count.entry(v.clone()).or_insert(0) += c.count(node, ns);
            }
        }
        Ok(Some(Arc::new(State {
            constraints: cs,
            counts,
        })))
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Status> {
        let Some(state) = pod.state::<State>(Self::NAME) else {
            return Ok(());
        };
        let labels = pod.pod.metadata.labels.as_ref();
        for (c, counts) in state.constraints.iter().zip(&state.counts) {
            let Some(v) = value(node, &c.topology_key) else {
                return Err(Status::unresolvable(ERR_MISSING_LABEL));
            };
            let self_match = i64::from(selector_matches(&c.selector, labels));
            let mut min = counts.values().copied().min().unwrap_or(0);
            if (counts.len() as i64) < c.min_domains {
                min = 0;
            }
            let here = counts.get(v).copied().unwrap_or(0);
            if here + self_match - min > c.max_skew {
                return Err(Status::unschedulable(vec![ERR_CONSTRAINTS.into()]));
            }
        }
        Ok(())
    }
}

/// Score state: nodes that score 0, and the raw scores.
fn raw_scores(pod: &PodInfo, snapshot: &Snapshot<'_>, feasible: &[&NodeInfo]) -> Vec<Option<i64>> {
    let mut cs = constraints(&pod.pod, "ScheduleAnyway");
    let explicit = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .is_some_and(|c| !c.is_empty());
    if !explicit && let Some(sel) = snapshot.listers.default_spread_selector(&pod.pod) {
        cs = system_defaults(sel);
    }
    if cs.is_empty() {
        return vec![Some(0); feasible.len()];
    }
    let ns = pod.pod.metadata.namespace.as_deref();
    // Nodes lacking a key score 0 when the pod set its constraints itself.
    let ignored: HashSet<&str> = feasible
        .iter()
        .filter(|n| explicit && !has_all_keys(n, &cs))
        .map(|n| n.name.as_str())
        .collect();
    let mut domains: Vec<BTreeMap<String, i64>> = vec![BTreeMap::new(); cs.len()];
    for n in feasible
        .iter()
        .filter(|n| !ignored.contains(n.name.as_str()))
    {
        for (c, d) in cs.iter().zip(domains.iter_mut()) {
            if let Some(v) = value(n, &c.topology_key)
                && c.topology_key != HOSTNAME
            {
                d.insert(v.clone(), 0);
            }
        }
    }
    let hosts = (feasible.len() - ignored.len()) as f64;
    let weights: Vec<f64> = cs
        .iter()
        .zip(&domains)
        .map(|(c, d)| {
            let size = if c.topology_key == HOSTNAME {
                hosts
            } else {
                d.len() as f64
            };
            (size + 2.0).ln()
        })
        .collect();
    for node in &snapshot.nodes {
        if explicit && !has_all_keys(node, &cs) {
            continue;
        }
        for (c, d) in cs.iter().zip(domains.iter_mut()) {
            if c.topology_key == HOSTNAME || !c.includes(pod, node) {
                continue;
            }
            if let Some(v) = value(node, &c.topology_key)
                && let Some(count) = d.get_mut(v)
            {
                *count += c.count(node, ns);
            }
        }
    }
    feasible
        .iter()
        .map(|n| {
            if ignored.contains(n.name.as_str()) {
                return None;
            }
            let mut score = 0.0;
            for ((c, d), w) in cs.iter().zip(&domains).zip(&weights) {
                let Some(v) = value(n, &c.topology_key) else {
                    continue;
                };
                let count = if c.topology_key == HOSTNAME {
                    c.count(n, ns)
                } else {
                    d.get(v).copied().unwrap_or(0)
                };
                score += count as f64 * w + (c.max_skew - 1) as f64;
            }
            Some(score.round() as i64)
        })
        .collect()
}

impl Score for PodTopologySpread {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn score(&self, _pod: &PodInfo, _node: &NodeInfo) -> i64 {
        0
    }

    /// Raw scores; ignored nodes (missing a key of the pod's own constraints) get -1.
    fn score_all(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot<'_>,
        feasible: &[&NodeInfo],
    ) -> Vec<i64> {
        raw_scores(pod, snapshot, feasible)
            .into_iter()
            .map(|s| s.unwrap_or(-1))
            .collect()
    }

    /// Upstream's normalisation: fewer is better, `100 * (max + min - s) / max`; ignored
    /// nodes (-1) get 0, and all get 100 when the maximum is 0.
    fn normalize(&self, scores: &mut [i64]) {
        let counted = scores.iter().copied().filter(|s| *s >= 0);
        let min = counted.clone().min().unwrap_or(0);
        let max = counted.max().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if *s < 0 {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
    }
}

#[cfg(test)]
#[path = "podtopologyspread_tests.rs"]
mod tests;
