//! InterPodAffinity, as upstream's `interpodaffinity` plugin.
//!
//! Filter: the pod's required pod affinity terms must each find a matching pod in the node's
//! topology domain (the first pod of a group that matches its own terms may go anywhere with
//! the topology labels); its required anti-affinity terms must find none; and no pod already
//! placed may have a required anti-affinity term that matches the pod in the node's domain.
//! A term's namespaces are its `namespaces`, the namespaces its `namespaceSelector` matches
//! (`{}`: all), or else the owning pod's namespace; `matchLabelKeys` and `mismatchLabelKeys`
//! add the owning pod's values to the selector.
//!
//! Score: per topology domain, the weights of the pod's preferred terms matching pods there
//! (anti-affinity subtracts), plus the weights of the placed pods' preferred terms (and, with
//! weight 1, their required affinity terms) that match the pod; min-max normalised.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use api::resources::validation::selector_matches;
use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::framework::{
    Filter, Listers, MAX_NODE_SCORE, NodeInfo, PodInfo, Score, Snapshot, Status,
};

/// Upstream's reason when a required affinity term finds no pod.
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Upstream's reason when a required anti-affinity term of the pod matches a pod there.
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// Upstream's reason when a placed pod's anti-affinity rejects the pod.
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// The weight of placed pods' required affinity terms in scoring (upstream's default
/// `hardPodAffinityWeight`).
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// The InterPodAffinity plugin.
pub struct InterPodAffinity;

impl InterPodAffinity {
    /// The plugin's name.
    pub const NAME: &'static str = "InterPodAffinity";
}

/// One affinity term resolved against the pod that owns it.
#[derive(Clone, Debug)]
pub struct Term {
    namespaces: HashSet<String>,
    namespace_selector: Option<LabelSelector>,
    selector: Option<LabelSelector>,
    topology_key: String,
    weight: i64,
}

impl Term {
    /// Resolves `term` of `owner` (weight for preferred terms, else 1).
    pub fn new(term: &PodAffinityTerm, owner: &Pod, weight: i64) -> Self {
        let own_ns = owner.metadata.namespace.clone().unwrap_or_default();
        let mut namespaces: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && term.namespace_selector.is_none() {
            namespaces.insert(own_ns);
        }
        let labels = owner.metadata.labels.as_ref();
        let selector = term.label_selector.clone().map(|mut sel| {
            let mut extra = |keys: &Option<Vec<String>>, op: &str| {
                for key in keys.iter().flatten() {
                    if let Some(v) = labels.and_then(|l| l.get(key)) {
                        sel.match_expressions.get_or_insert_with(Vec::new).push(
                            LabelSelectorRequirement {
                                key: key.clone(),
                                operator: op.into(),
                                values: Some(vec![v.clone()]),
                            },
                        );
                    }
                }
            };
            extra(&term.match_label_keys, "In");
            extra(&term.mismatch_label_keys, "NotIn");
            sel
        });
        Term {
            namespaces,
            namespace_selector: term.namespace_selector.clone(),
            selector,
            topology_key: term.topology_key.clone(),
            weight,
        }
    }

    /// Whether `pod` is one this term selects (namespace and labels).
    pub fn matches(&self, pod: &Pod, listers: &dyn Listers) -> bool {
        let Some(selector) = &self.selector else {
            return false;
        };
        if !selector_matches(selector, pod.metadata.labels.as_ref()) {
            return false;
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        if self.namespaces.contains(ns) {
            return true;
        }
        match &self.namespace_selector {
            None => false,
            Some(sel) => {
                let labels = listers.namespace_labels(ns);
                labels.is_some_and(|l| selector_matches(sel, Some(&l)))
                    || (api::resources::validation::selector_is_empty(sel))
            }
        }
    }
}

/// The four kinds of terms of a pod.
#[derive(Clone, Debug, Default)]
pub struct Terms {
    /// Required affinity.
    pub required_affinity: Vec<Term>,
    /// Required anti-affinity.
    pub required_anti_affinity: Vec<Term>,
    /// Preferred affinity (with weights).
    pub preferred_affinity: Vec<Term>,
    /// Preferred anti-affinity (with weights).
    pub preferred_anti_affinity: Vec<Term>,
}

impl Terms {
    /// The resolved terms of `pod`.
    pub fn of(pod: &Pod) -> Self {
        let mut t = Terms::default();
        let Some(a) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
            return t;
        };
        if let Some(pa) = &a.pod_affinity {
            for term in pa
                .required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                t.required_affinity.push(Term::new(term, pod, 1));
            }
            for w in pa
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                let weight = i64::from(w.weight);
                t.preferred_affinity
                    .push(Term::new(&w.pod_affinity_term, pod, weight));
            }
        }
        if let Some(pa) = &a.pod_anti_affinity {
            for term in pa
                .required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                t.required_anti_affinity.push(Term::new(term, pod, 1));
            }
            for w in pa
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                let weight = i64::from(w.weight);
                t.preferred_anti_affinity
                    .push(Term::new(&w.pod_affinity_term, pod, weight));
            }
        }
        t
    }
}

/// A (topology key, value) pair.
type Pair = (String, String);

/// What the pre-filter counted, per topology pair.
#[derive(Debug, Default)]
pub struct State {
    terms: Terms,
    /// Pairs where a placed pod's required anti-affinity matches the incoming pod.
    existing_anti_affinity: HashMap<Pair, i64>,
    /// Pairs with pods matching all of the incoming pod's required affinity terms.
    affinity: HashMap<Pair, i64>,
    /// Pairs with pods matching one of the incoming pod's required anti-affinity terms.
    anti_affinity: HashMap<Pair, i64>,
    /// The incoming pod matches all its own required affinity terms.
    matches_own_affinity: bool,
}

fn pair_of(node: &NodeInfo, key: &str) -> Option<Pair> {
    node.labels()
        .and_then(|l| l.get(key))
        .map(|v| (key.to_string(), v.clone()))
}

impl Filter for InterPodAffinity {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn pre_filter(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot<'_>,
    ) -> Result<Option<Arc<dyn Any + Send + Sync>>, Status> {
        let listers = snapshot.listers;
        let mut state = State {
            terms: Terms::of(&pod.pod),
            ..Default::default()
        };
        let terms = &state.terms;
        let has_own =
            !terms.required_affinity.is_empty() || !terms.required_anti_affinity.is_empty();
        let existing_anti = snapshot.affinity.with_required_anti_affinity > 0;
        if !has_own && !existing_anti {
            // Nothing to look for on any node (the common case: no affinity anywhere); with
            // no required affinity of its own, the pod trivially matches it.
            state.matches_own_affinity = true;
            return Ok(Some(Arc::new(state)));
        }
        for node in &snapshot.nodes {
            if node.pods_with_required_anti_affinity > 0 {
                for existing in &node.pods {
                    for term in Terms::of(existing).required_anti_affinity {
                        if let Some(pair) = pair_of(node, &term.topology_key)
                            && term.matches(&pod.pod, listers)
                        {
                            *state.existing_anti_affinity.entry(pair).or_default() += 1;
                        }
                    }
                }
            }
            if !has_own {
                continue;
            }
            for existing in &node.pods {
                if !terms.required_affinity.is_empty()
                    && terms
                        .required_affinity
                        .iter()
                        .all(|t| t.matches(existing, listers))
                {
                    for t in &terms.required_affinity {
                        if let Some(pair) = pair_of(node, &t.topology_key) {
                            *state.affinity.entry(pair).or_default() += 1;
                        }
                    }
                }
                for t in &terms.required_anti_affinity {
                    if let Some(pair) = pair_of(node, &t.topology_key)
                        && t.matches(existing, listers)
                    {
                        *state.anti_affinity.entry(pair).or_default() += 1;
                    }
                }
            }
        }
        state.matches_own_affinity = state
            .terms
            .required_affinity
            .iter()
            .all(|t| t.matches(&pod.pod, listers));
        Ok(Some(Arc::new(state)))
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Status> {
        let Some(state) = pod.state::<State>(Self::NAME) else {
            return Ok(());
        };
        // Affinity: every term's domain must hold a matching pod (or this is the first pod).
        let mut pods_exist = true;
        for t in &state.terms.required_affinity {
            match pair_of(node, &t.topology_key) {
                None => return Err(Status::unresolvable(ERR_AFFINITY)),
                Some(pair) => {
                    if state.affinity.get(&pair).copied().unwrap_or(0) <= 0 {
                        pods_exist = false;
                    }
                }
            }
        }
        let first_of_group = state.affinity.is_empty() && state.matches_own_affinity;
        if !(pods_exist || first_of_group) {
            return Err(Status::unresolvable(ERR_AFFINITY));
        }
        let anti = state.terms.required_anti_affinity.iter().any(|t| {
            pair_of(node, &t.topology_key)
                .is_some_and(|p| state.anti_affinity.get(&p).copied().unwrap_or(0) > 0)
        });
        if anti {
            return Err(Status::unschedulable(vec![ERR_ANTI_AFFINITY.into()]));
        }
        if !state.existing_anti_affinity.is_empty() {
            let hit = node.labels().into_iter().flatten().any(|(k, v)| {
                state
                    .existing_anti_affinity
                    .get(&(k.clone(), v.clone()))
                    .is_some_and(|n| *n > 0)
            });
            if hit {
                return Err(Status::unschedulable(vec![
                    ERR_EXISTING_ANTI_AFFINITY.into(),
                ]));
            }
        }
        Ok(())
    }
}

/// Adds `weight` to the pair of `node` for `term`'s key.
fn bump(scores: &mut HashMap<Pair, i64>, node: &NodeInfo, term: &Term, weight: i64) {
    if let Some(pair) = pair_of(node, &term.topology_key) {
        *scores.entry(pair).or_default() += weight;
    }
}

impl Score for InterPodAffinity {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn score(&self, _pod: &PodInfo, _node: &NodeInfo) -> i64 {
        0
    }

    fn score_all(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot<'_>,
        feasible: &[&NodeInfo],
    ) -> Vec<i64> {
        let listers = snapshot.listers;
        let own = Terms::of(&pod.pod);
        let has_preferred =
            !own.preferred_affinity.is_empty() || !own.preferred_anti_affinity.is_empty();
        let mut pairs: HashMap<Pair, i64> = HashMap::new();
        let nodes: &[&NodeInfo] = if has_preferred || snapshot.affinity.with_affinity > 0 {
            &snapshot.nodes
        } else {
            &[]
        };
        for node in nodes {
            if !has_preferred && node.pods_with_affinity == 0 {
                continue;
            }
            for existing in &node.pods {
                for t in &own.preferred_affinity {
                    if t.matches(existing, listers) {
                        bump(&mut pairs, node, t, t.weight);
                    }
                }
                for t in &own.preferred_anti_affinity {
                    if t.matches(existing, listers) {
                        bump(&mut pairs, node, t, -t.weight);
                    }
                }
                if !crate::framework::has_pod_affinity(existing) {
                    continue;
                }
                let theirs = Terms::of(existing);
                for t in &theirs.required_affinity {
                    if t.matches(&pod.pod, listers) {
                        bump(&mut pairs, node, t, HARD_POD_AFFINITY_WEIGHT);
                    }
                }
                for t in &theirs.preferred_affinity {
                    if t.matches(&pod.pod, listers) {
                        bump(&mut pairs, node, t, t.weight);
                    }
                }
                for t in &theirs.preferred_anti_affinity {
                    if t.matches(&pod.pod, listers) {
                        bump(&mut pairs, node, t, -t.weight);
                    }
                }
            }
        }
        if pairs.is_empty() {
            return vec![0; feasible.len()];
        }
        feasible
            .iter()
            .map(|n| {
                n.labels()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| pairs.get(&(k.clone(), v.clone())))
                    .sum()
            })
            .collect()
    }

    /// Min-max normalisation, as upstream (all equal: all 0).
    fn normalize(&self, scores: &mut [i64]) {
        let (Some(min), Some(max)) = (scores.iter().min().copied(), scores.iter().max().copied())
        else {
            return;
        };
        let diff = max - min;
        for s in scores.iter_mut() {
            *s = if diff > 0 {
                MAX_NODE_SCORE * (*s - min) / diff
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
#[path = "interpodaffinity_tests.rs"]
mod tests;
