//! Preemption, as upstream's DefaultPreemption PostFilter plugin: when a pod fits nowhere,
//! find a node where evicting pods of lower priority makes room for it.
//!
//! For each node whose failure preemption may fix (code `Unschedulable`): remove every pod of
//! lower priority; if the pod still does not fit, the node is out. Otherwise give back as many
//! of them as possible, most important first (the "reprieve"): the rest are the victims. The
//! chosen node is the one whose victims have the lowest highest priority, then the lowest sum
//! of priorities, then the fewest victims (upstream's `pickOneNodeForPreemption` without
//! PodDisruptionBudgets). The caller deletes the victims and sets the pod's
//! `status.nominatedNodeName`; the pod is retried when they are gone.
//!
//! A pod with `preemptionPolicy: Never` does not preempt; nor does a pod whose nominated node
//! already has a lower-priority pod terminating (it waits for that one).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

#[cfg(test)]
use crate::framework::AffinityCounts;
use crate::framework::{
    Code, FitError, Framework, Listers, NodeInfo, PodInfo, Snapshot, Status, pod_priority,
};

/// Upstream's per-node reason when no pod on the node has a lower priority.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// Upstream's per-node reason when the node failed for a reason preemption cannot fix.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// How many candidate nodes are enough (upstream's `minCandidateNodesAbsolute`).
pub const ENOUGH_CANDIDATES: usize = 100;

/// A node where preemption makes room, and the pods to evict there.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The node.
    pub node: String,
    /// The pods to evict.
    pub victims: Vec<Arc<Pod>>,
}

/// What preemption found.
#[derive(Debug)]
pub enum Outcome {
    /// Evict these pods; the pod will go to this node.
    Nominate(Candidate),
    /// The pod may not preempt; the message part says why.
    NotEligible(&'static str),
    /// No node helps: each node's reason.
    NoCandidates(BTreeMap<String, Status>),
}

/// Whether `pod` may preempt (its policy, and no lower-priority pod already terminating on
/// its nominated node).
pub fn eligible(pod: &PodInfo, nodes: &[Arc<NodeInfo>]) -> Result<(), &'static str> {
    let spec = pod.pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err("not eligible due to preemptionPolicy=Never.");
    }
    let nominated = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty());
    if let Some(node) = nominated.and_then(|n| nodes.iter().find(|i| i.name == n)) {
        let prio = pod.priority();
        if node
            .pods
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_some() && pod_priority(p) < prio)
        {
            return Err("not eligible due to a terminating pod on the nominated node.");
        }
    }
    Ok(())
}

/// Whether `pod` fits `node` when it replaces `nodes[index]` in the cluster.
fn fits(
    fw: &Framework,
    pod: &PodInfo,
    nodes: &[Arc<NodeInfo>],
    index: usize,
    node: &NodeInfo,
    listers: &dyn Listers,
) -> Result<(), Status> {
    let snapshot = Snapshot::new(
        nodes
            .iter()
            .enumerate()
            .map(|(j, n)| if j == index { node } else { &**n })
            .collect(),
        listers,
    );
    let prepared = fw.prepare(pod, &snapshot)?;
    fw.run_filters(&prepared, node)
}

/// Upstream's `SelectVictimsOnNode` for `nodes[index]`.
fn victims_on(
    fw: &Framework,
    pod: &PodInfo,
    nodes: &[Arc<NodeInfo>],
    index: usize,
    listers: &dyn Listers,
) -> Result<Vec<Arc<Pod>>, Status> {
    let prio = pod.priority();
    let node = &nodes[index];
    let mut potential: Vec<Arc<Pod>> = node
        .pods
        .iter()
        .filter(|p| pod_priority(p) < prio)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Status::unresolvable(NO_VICTIMS));
    }
    let mut reduced = node.without(|p| pod_priority(p) < prio);
    fits(fw, pod, nodes, index, &reduced, listers)?;
    // Most important first: higher priority, then the older.
    potential.sort_by(|a, b| {
        pod_priority(b).cmp(&pod_priority(a)).then_with(|| {
            let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(a).cmp(&t(b))
        })
    });
    let mut victims = vec![];
    for p in potential {
        let mut with = reduced.clone();
        with.add_pod(p.clone());
        if fits(fw, pod, nodes, index, &with, listers).is_ok() {
            reduced = with;
        } else {
            victims.push(p);
        }
    }
    if victims.is_empty() {
        return Err(Status::unresolvable(NO_VICTIMS));
    }
    Ok(victims)
}

/// Upstream's ordering of candidates: lowest highest victim priority, lowest sum of
/// priorities, fewest victims.
fn rank(c: &Candidate) -> (i32, i64, usize) {
    let highest = c
        .victims
        .iter()
        .map(|p| pod_priority(p))
        .max()
        .unwrap_or(i32::MIN);
    let sum = c
        .victims
        .iter()
        .map(|p| i64::from(pod_priority(p)) + i64::from(i32::MAX) + 1)
        .sum();
    (highest, sum, c.victims.len())
}

/// Runs preemption for `pod`, which failed with `fit` on `nodes`.
pub fn preempt(
    fw: &Framework,
    pod: &PodInfo,
    nodes: &[Arc<NodeInfo>],
    listers: &dyn Listers,
    fit: &FitError,
) -> Outcome {
    if let Err(why) = eligible(pod, nodes) {
        return Outcome::NotEligible(why);
    }
    let mut statuses = BTreeMap::new();
    let mut candidates = vec![];
    for (i, node) in nodes.iter().enumerate() {
        let helpful = fit
            .node_statuses
            .get(&node.name)
            .is_some_and(|s| s.code == Code::Unschedulable);
        if !helpful {
            statuses.insert(node.name.clone(), Status::unresolvable(NOT_HELPFUL));
            continue;
        }
        if candidates.len() >= ENOUGH_CANDIDATES {
            continue;
        }
        match victims_on(fw, pod, nodes, i, listers) {
            Ok(victims) => candidates.push(Candidate {
                node: node.name.clone(),
                victims,
            }),
            Err(s) => {
                statuses.insert(node.name.clone(), s);
            }
        }
    }
    match candidates.into_iter().min_by_key(rank) {
        Some(best) => Outcome::Nominate(best),
        None => Outcome::NoCandidates(statuses),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::NoListers;
    use crate::plugins::default_framework;
    use crate::plugins::testing::{info, node, pinfo, pod};

    fn prio(name: &str, cpu: &str, priority: i32) -> Pod {
        let mut p = pod(cpu, "");
        p.metadata.name = Some(name.into());
        p.spec.as_mut().unwrap().priority = Some(priority);
        p
    }

    fn run(incoming: Pod, nodes: &[NodeInfo]) -> Outcome {
        let nodes: Vec<Arc<NodeInfo>> = nodes.iter().cloned().map(Arc::new).collect();
        let nodes = &nodes[..];
        let fw = default_framework();
        let p = pinfo(incoming);
        let fit = fw
            .schedule(
                &p,
                nodes,
                AffinityCounts::of(nodes.iter().map(|n| &**n)),
                &NoListers,
                &mut rand::rng(),
            )
            .expect_err("the pod must not fit");
        preempt(&fw, &p, nodes, &NoListers, &fit)
    }

    fn victims(o: Outcome) -> (String, Vec<String>) {
        match o {
            Outcome::Nominate(c) => (
                c.node,
                c.victims
                    .iter()
                    .map(|p| p.metadata.name.clone().unwrap_or_default())
                    .collect(),
            ),
            other => panic!("no candidate: {other:?}"),
        }
    }

    #[test]
    fn evicts_the_fewest_lowest_priority_pods() {
        let nodes = [
            info(
                node("machine1", "1", "8Gi", &[]),
                &[prio("m1.1", "500m", 10), prio("m1.2", "500m", 10)],
            ),
            info(
                node("machine2", "1", "8Gi", &[]),
                &[prio("m2.1", "500m", 5), prio("m2.2", "500m", 100)],
            ),
        ];
        // Needs 500m: machine2 has a priority-5 pod to evict, machine1 only priority 10.
        assert_eq!(
            victims(run(prio("p", "500m", 50), &nodes)),
            ("machine2".into(), vec!["m2.1".into()])
        );
        // Needs the whole node: only machine1 (machine2's priority-100 pod stays).
        assert_eq!(
            victims(run(prio("p", "1", 50), &nodes)),
            ("machine1".into(), vec!["m1.1".into(), "m1.2".into()])
        );
    }

    #[test]
    fn keeps_what_it_can_most_important_first() {
        let nodes = [info(
            node("machine1", "1", "8Gi", &[]),
            &[
                prio("low", "250m", 1),
                prio("mid", "250m", 2),
                prio("high", "500m", 3),
            ],
        )];
        // 250m needed: reprieve high, then mid; low goes.
        assert_eq!(
            victims(run(prio("p", "250m", 10), &nodes)),
            ("machine1".into(), vec!["low".into()])
        );
    }

    #[test]
    fn no_candidates_and_policy_never() {
        let nodes = [info(
            node("machine1", "1", "8Gi", &[]),
            &[prio("big", "1", 100)],
        )];
        match run(prio("p", "500m", 50), &nodes) {
            Outcome::NoCandidates(s) => {
                assert_eq!(s["machine1"], Status::unresolvable(NO_VICTIMS))
            }
            other => panic!("{other:?}"),
        }
        let mut never = prio("p", "500m", 500);
        never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert!(matches!(run(never, &nodes), Outcome::NotEligible(_)));
        // Equal priority is not lower.
        assert!(matches!(
            run(prio("p", "500m", 100), &nodes),
            Outcome::NoCandidates(_)
        ));
    }
}
