//! Preemption, as upstream's DefaultPreemption PostFilter plugin: when a pod fits nowhere,
//! find a node where evicting pods of lower priority makes room for it.
//!
//! For each node whose failure preemption may fix (code `Unschedulable`): remove every pod of
//! lower priority; if the pod still does not fit, the node is out. Otherwise give back as many
//! of them as possible (the "reprieve"): first those whose eviction would violate a
//! PodDisruptionBudget (a matching budget of their namespace, non-empty selector, whose
//! `disruptionsAllowed` they would overdraw, not counting pods already in its
//! `disruptedPods`), then the others, each group most important first; the rest are the
//! victims (upstream's `SelectVictimsOnNode`). The chosen node is the one with the fewest
//! victims violating a budget, then whose victims have the lowest highest priority, then the
//! lowest sum of priorities, then the fewest victims, then whose most important victims
//! started last (upstream's `pickOneNodeForPreemption`). Budgets are a preference: when every
//! node needs a violating victim, one is still evicted, as upstream does. The caller deletes
//! the victims and sets the pod's `status.nominatedNodeName`; the pod is retried when they
//! are gone.
//!
//! A pod with `preemptionPolicy: Never` does not preempt; nor does a pod whose nominated node
//! already has a lower-priority pod terminating (it waits for that one).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;

use api::resources::validation::{selector_is_empty, selector_matches};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;

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
    /// How many of them violate a PodDisruptionBudget.
    pub violating: usize,
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

/// Upstream's `filterPodsWithPDBViolation`: splits `pods` (in order) into those whose eviction
/// would overdraw a matching budget's `disruptionsAllowed` and the others.
pub fn split_by_budget(
    pods: Vec<Arc<Pod>>,
    budgets: &[Arc<PodDisruptionBudget>],
) -> (Vec<Arc<Pod>>, Vec<Arc<Pod>>) {
    let mut allowed: Vec<i32> = budgets
        .iter()
        .map(|b| b.status.as_ref().map_or(0, |s| s.disruptions_allowed))
        .collect();
    let (mut violating, mut other) = (vec![], vec![]);
    for p in pods {
        let mut violated = false;
        let labels = p.metadata.labels.as_ref().filter(|l| !l.is_empty());
        for (i, b) in budgets.iter().enumerate() {
            let Some(labels) = labels else { break };
            if b.metadata.namespace != p.metadata.namespace {
                continue;
            }
            let Some(sel) = b.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                continue;
            };
            if selector_is_empty(sel) || !selector_matches(sel, Some(labels)) {
                continue;
            }
            let name = p.metadata.name.as_deref().unwrap_or("");
            let disrupted = b
                .status
                .as_ref()
                .and_then(|s| s.disrupted_pods.as_ref())
                .is_some_and(|d| d.contains_key(name));
            if disrupted {
                continue;
            }
            allowed[i] -= 1;
            if allowed[i] < 0 {
                violated = true;
            }
        }
        if violated {
            violating.push(p);
        } else {
            other.push(p);
        }
    }
    (violating, other)
}

/// Upstream's `SelectVictimsOnNode` for `nodes[index]`: the victims, and how many of them
/// violate a budget.
fn victims_on(
    fw: &Framework,
    pod: &PodInfo,
    nodes: &[Arc<NodeInfo>],
    index: usize,
    listers: &dyn Listers,
    budgets: &[Arc<PodDisruptionBudget>],
) -> Result<(Vec<Arc<Pod>>, usize), Status> {
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
    let (violating, other) = split_by_budget(potential, budgets);
    let mut victims = vec![];
    let mut violations = 0;
    for (group, p) in violating
        .into_iter()
        .map(|p| (true, p))
        .chain(other.into_iter().map(|p| (false, p)))
    {
        let mut with = reduced.clone();
        with.add_pod(p.clone());
        if fits(fw, pod, nodes, index, &with, listers).is_ok() {
            reduced = with;
        } else {
            violations += usize::from(group);
            victims.push(p);
        }
    }
    if victims.is_empty() {
        return Err(Status::unresolvable(NO_VICTIMS));
    }
    Ok((victims, violations))
}

/// When a pod started (`status.startTime`), for ordering victims.
fn start_time(p: &Pod) -> Option<Timestamp> {
    p.status.as_ref()?.start_time.as_ref().map(|t| t.0)
}

/// Upstream's ordering of candidates: fewest budget violations, lowest highest victim
/// priority, lowest sum of priorities, fewest victims, latest start among the victims of the
/// highest priority.
fn rank(c: &Candidate) -> (usize, i32, i64, usize, Reverse<Option<Timestamp>>) {
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
    let earliest = c
        .victims
        .iter()
        .filter(|p| pod_priority(p) == highest)
        .filter_map(|p| start_time(p))
        .min();
    (
        c.violating,
        highest,
        sum,
        c.victims.len(),
        Reverse(earliest),
    )
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
    let budgets = listers.disruption_budgets();
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
        match victims_on(fw, pod, nodes, i, listers, &budgets) {
            Ok((victims, violating)) => candidates.push(Candidate {
                node: node.name.clone(),
                victims,
                violating,
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
        run_with(incoming, nodes, &NoListers)
    }

    /// Listers that know only PodDisruptionBudgets.
    struct Budgets(Vec<Arc<PodDisruptionBudget>>);

    impl Listers for Budgets {
        fn namespace_labels(&self, _: &str) -> Option<BTreeMap<String, String>> {
            None
        }
        fn default_spread_selector(
            &self,
            _: &Pod,
        ) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector> {
            None
        }
        fn disruption_budgets(&self) -> Vec<Arc<PodDisruptionBudget>> {
            self.0.clone()
        }
    }

    fn budget(ns: &str, app: &str, allowed: i32, disrupted: &[&str]) -> Arc<PodDisruptionBudget> {
        let disrupted: serde_json::Map<String, serde_json::Value> = disrupted
            .iter()
            .map(|n| (n.to_string(), "2026-01-01T00:00:00Z".into()))
            .collect();
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "b", "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": app}}},
                "status": {"disruptionsAllowed": allowed, "disruptedPods": disrupted,
                    "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}
            }))
            .unwrap(),
        )
    }

    fn app(mut p: Pod, app: &str) -> Pod {
        p.metadata.labels = Some(BTreeMap::from([("app".to_string(), app.to_string())]));
        p
    }

    fn run_with(incoming: Pod, nodes: &[NodeInfo], listers: &dyn Listers) -> Outcome {
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
        preempt(&fw, &p, nodes, listers, &fit)
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

    #[test]
    fn budgets_split_victims() {
        let db = |name: &str| {
            let mut p = app(prio(name, "100m", 1), "db");
            p.metadata.name = Some(name.into());
            Arc::new(p)
        };
        let pods = vec![
            db("a"),
            db("b"),
            db("c"),
            Arc::new(prio("plain", "100m", 1)),
        ];
        let names = |v: &[Arc<Pod>]| -> Vec<String> {
            v.iter().filter_map(|p| p.metadata.name.clone()).collect()
        };
        // One disruption allowed: the first db pod uses it, the next ones violate.
        let (violating, other) = split_by_budget(pods.clone(), &[budget("default", "db", 1, &[])]);
        assert_eq!(names(&violating), ["b", "c"]);
        assert_eq!(names(&other), ["a", "plain"]);
        // Pods already in disruptedPods do not draw on it; other namespaces do not match.
        let (violating, _) = split_by_budget(pods.clone(), &[budget("default", "db", 0, &["a"])]);
        assert_eq!(names(&violating), ["b", "c"]);
        let (violating, _) = split_by_budget(pods, &[budget("other", "db", 0, &[])]);
        assert!(violating.is_empty());
    }

    #[test]
    fn prefers_victims_and_nodes_without_budget_violations() {
        let budgets = Budgets(vec![budget("default", "db", 0, &[])]);
        // The guarded pod has the lower priority: without budgets, machine1 is chosen.
        let nodes = [
            info(
                node("machine1", "1", "8Gi", &[]),
                &[app(prio("guarded", "1", 10), "db")],
            ),
            info(node("machine2", "1", "8Gi", &[]), &[prio("free", "1", 20)]),
        ];
        assert_eq!(victims(run(prio("p", "1", 50), &nodes)).0, "machine1");
        assert_eq!(
            victims(run_with(prio("p", "1", 50), &nodes, &budgets)),
            ("machine2".into(), vec!["free".into()])
        );
        // On one node, the guarded pod is reprieved first, though less important.
        let shared = [info(
            node("machine1", "1", "8Gi", &[]),
            &[
                app(prio("guarded", "500m", 10), "db"),
                prio("free", "500m", 20),
            ],
        )];
        assert_eq!(victims(run(prio("p", "500m", 50), &shared)).1, ["guarded"]);
        assert_eq!(
            victims(run_with(prio("p", "500m", 50), &shared, &budgets)).1,
            ["free"]
        );
        // When only a violating victim makes room, it is still evicted.
        match run_with(prio("p", "1", 50), &nodes[..1], &budgets) {
            Outcome::Nominate(c) => assert_eq!((c.node.as_str(), c.violating), ("machine1", 1)),
            other => panic!("{other:?}"),
        }
    }
}
