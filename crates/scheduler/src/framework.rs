//! The scheduling framework, a small version of upstream's `pkg/scheduler/framework`:
//! [`Filter`] and [`Score`] plugins, the [`Framework`] that holds them (the registry of one
//! profile), and one scheduling cycle ([`Framework::schedule`]): filter every node, score the
//! feasible ones (each plugin's scores normalised to 0-100, then weighted), and pick the best,
//! breaking ties at random. When no node fits, the [`FitError`] (module `fiterror`) renders
//! upstream's message.
//!
//! Plugins that need the whole cluster (InterPodAffinity, PodTopologySpread, VolumeBinding)
//! compute their per-cycle state once in [`Filter::pre_filter`] from a [`Snapshot`]; the
//! framework keeps it in the [`PodInfo`]'s [`CycleState`] for their per-node `filter`. Score
//! plugins that need all feasible nodes at once override [`Score::score_all`].

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use rand::Rng;

use crate::resources::{Resource, pod_non_zero_requests, pod_requests};

pub use crate::fiterror::{FitError, PostFilter, nodes_message};

/// The highest score a plugin gives a node (upstream's `MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// Why a node does not fit (upstream's `Unschedulable` / `UnschedulableAndUnresolvable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The node might fit after preemption.
    Unschedulable,
    /// No preemption on this node can help.
    UnschedulableAndUnresolvable,
}

/// A filter's verdict against a node: the code and one or more reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// How hopeless the node is.
    pub code: Code,
    /// Human-readable reasons, counted per node in the failure message.
    pub reasons: Vec<String>,
}

impl Status {
    /// An `Unschedulable` status with `reasons`.
    pub fn unschedulable(reasons: Vec<String>) -> Self {
        Status {
            code: Code::Unschedulable,
            reasons,
        }
    }

    /// An `UnschedulableAndUnresolvable` status with one reason.
    pub fn unresolvable(reason: impl Into<String>) -> Self {
        Status {
            code: Code::UnschedulableAndUnresolvable,
            reasons: vec![reason.into()],
        }
    }
}

/// What the pre-filters of one cycle computed, by plugin name (upstream's `CycleState`).
pub type CycleState = HashMap<&'static str, Arc<dyn Any + Send + Sync>>;

/// What plugins may look up beyond nodes and pods (upstream's listers).
pub trait Listers: Send + Sync {
    /// The labels of a namespace (None: unknown namespace).
    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
    /// Upstream's `DefaultSelector`: the selectors of the Services, ReplicationControllers,
    /// ReplicaSets and StatefulSets that select `pod`, merged (None: nothing selects it).
    fn default_spread_selector(&self, pod: &Pod) -> Option<LabelSelector>;
    /// Whether the PersistentVolumeClaim `namespace/name` exists, and its StorageClass's
    /// binding mode and bound volume's required node affinity (see the VolumeBinding plugin).
    fn claim(&self, _namespace: &str, _name: &str) -> Option<ClaimInfo> {
        None
    }
    /// The Available PersistentVolumes that could bind `claim` (the VolumeBinding plugin).
    fn matching_volumes(&self, _claim: &ClaimInfo) -> Vec<VolumeInfo> {
        vec![]
    }
    /// Every PodDisruptionBudget (preemption prefers victims that violate none).
    fn disruption_budgets(&self) -> Vec<Arc<k8s_openapi::api::policy::v1::PodDisruptionBudget>> {
        vec![]
    }
}

/// A PersistentVolumeClaim as the VolumeBinding plugin sees it.
#[derive(Clone, Debug, Default)]
pub struct ClaimInfo {
    /// The claim itself.
    pub claim: Arc<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
    /// Its StorageClass binds late (`volumeBindingMode: WaitForFirstConsumer`).
    pub wait_for_first_consumer: bool,
    /// The StorageClass has a provisioner that can create a volume (not
    /// `kubernetes.io/no-provisioner`).
    pub provisionable: bool,
    /// The volume it is bound to, if any.
    pub bound: Option<VolumeInfo>,
}

/// A PersistentVolume as the VolumeBinding plugin sees it.
#[derive(Clone, Debug, Default)]
pub struct VolumeInfo {
    /// The volume's name.
    pub name: String,
    /// Its required node affinity (None: any node).
    pub node_affinity: Option<k8s_openapi::api::core::v1::NodeSelector>,
}

/// Listers that know nothing (tests, and callers without informers).
pub struct NoListers;

impl Listers for NoListers {
    fn namespace_labels(&self, _: &str) -> Option<BTreeMap<String, String>> {
        None
    }
    fn default_spread_selector(&self, _: &Pod) -> Option<LabelSelector> {
        None
    }
}

/// The cluster as one cycle sees it: every node with its pods, and the listers.
pub struct Snapshot<'a> {
    /// Every node (feasible or not).
    pub nodes: Vec<&'a NodeInfo>,
    /// Lookups beyond nodes and pods.
    pub listers: &'a dyn Listers,
    /// How many pods on all the nodes have pod (anti-)affinity: plugins skip the walk over
    /// every node's pods when none has.
    pub affinity: AffinityCounts,
}

impl<'a> Snapshot<'a> {
    /// A snapshot of `nodes`, counting their affinity pods.
    pub fn new(nodes: Vec<&'a NodeInfo>, listers: &'a dyn Listers) -> Self {
        let affinity = AffinityCounts::of(nodes.iter().copied());
        Snapshot {
            nodes,
            listers,
            affinity,
        }
    }
}

/// Pods with pod affinity terms, summed over nodes (upstream's snapshot keeps the lists of
/// such nodes for the same reason).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityCounts {
    /// Pods with pod affinity or anti-affinity of any kind.
    pub with_affinity: usize,
    /// Pods with required pod anti-affinity.
    pub with_required_anti_affinity: usize,
}

impl AffinityCounts {
    /// The sum over `nodes`.
    pub fn of<'a>(nodes: impl IntoIterator<Item = &'a NodeInfo>) -> Self {
        nodes
            .into_iter()
            .fold(Self::default(), |sum, n| sum.plus(n))
    }

    /// This sum with one node's pods added.
    pub fn plus(self, n: &NodeInfo) -> Self {
        AffinityCounts {
            with_affinity: self.with_affinity + n.pods_with_affinity,
            with_required_anti_affinity: self.with_required_anti_affinity
                + n.pods_with_required_anti_affinity,
        }
    }

    /// This sum with one node's pods taken away.
    pub fn minus(self, n: &NodeInfo) -> Self {
        AffinityCounts {
            with_affinity: self.with_affinity.saturating_sub(n.pods_with_affinity),
            with_required_anti_affinity: self
                .with_required_anti_affinity
                .saturating_sub(n.pods_with_required_anti_affinity),
        }
    }
}

/// The pod being scheduled, with what the plugins keep asking about it computed once.
#[derive(Clone)]
pub struct PodInfo {
    /// The pod.
    pub pod: Arc<Pod>,
    /// Its requests.
    pub requests: Resource,
    /// Its requests with cpu and memory defaulted (for scoring).
    pub non_zero_requests: Resource,
    /// What this cycle's pre-filters computed.
    pub state: CycleState,
}

impl std::fmt::Debug for PodInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodInfo")
            .field("pod", &self.pod.metadata.name)
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl PodInfo {
    /// Wraps `pod`.
    pub fn new(pod: Arc<Pod>) -> Self {
        PodInfo {
            requests: pod_requests(&pod),
            non_zero_requests: pod_non_zero_requests(&pod),
            pod,
            state: CycleState::new(),
        }
    }

    /// The state plugin `name` stored in this cycle, if it is of type `T`.
    pub fn state<T: Any + Send + Sync>(&self, name: &str) -> Option<&T> {
        self.state.get(name).and_then(|s| s.downcast_ref::<T>())
    }

    /// The pod's priority (`spec.priority`, 0 when unset).
    pub fn priority(&self) -> i32 {
        pod_priority(&self.pod)
    }

    /// The pod's host ports as (protocol, hostIP, port).
    pub fn host_ports(&self) -> Vec<(String, String, i32)> {
        host_ports(&self.pod)
    }
}

/// A pod's priority (`spec.priority`, 0 when unset).
pub fn pod_priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Whether a pod has any pod affinity or anti-affinity (required or preferred).
pub fn has_pod_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}

/// Whether a pod has required pod anti-affinity terms.
pub fn has_required_anti_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|t| !t.is_empty())
}

/// A pod's host ports as (protocol, hostIP, port); hostIP defaults to 0.0.0.0.
pub fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let Some(spec) = pod.spec.as_ref() else {
        return vec![];
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            Some((
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                port,
            ))
        })
        .collect()
}

/// A node with what is already placed on it (upstream's `NodeInfo`).
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node.
    pub node: Arc<Node>,
    /// The node's name.
    pub name: String,
    /// Whether the node is cordoned (`spec.unschedulable`), kept here because every cycle
    /// asks it of many nodes.
    pub unschedulable: bool,
    /// What the node offers (`status.allocatable`).
    pub allocatable: Resource,
    /// The sum of the requests of the pods on the node.
    pub requested: Resource,
    /// The same with cpu and memory defaulted per container (for scoring).
    pub non_zero_requested: Resource,
    /// How many pods are on the node.
    pub pod_count: i64,
    /// Host ports in use, as (protocol, hostIP, port).
    pub used_ports: HashSet<(String, String, i32)>,
    /// Lowest priority among the pods on the node (None: no pods).
    pub min_pod_priority: Option<i32>,
    /// The pods on the node.
    pub pods: Vec<Arc<Pod>>,
    /// How many of them have pod affinity or anti-affinity of any kind.
    pub pods_with_affinity: usize,
    /// How many of them have required pod anti-affinity.
    pub pods_with_required_anti_affinity: usize,
}

impl NodeInfo {
    /// An empty node.
    pub fn new(node: Arc<Node>) -> Self {
        let allocatable = Resource::from_list(
            node.status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())),
        );
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            node,
            allocatable,
            requested: Resource::default(),
            non_zero_requested: Resource::default(),
            pod_count: 0,
            used_ports: HashSet::new(),
            min_pod_priority: None,
            pods: vec![],
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
        }
    }

    /// Accounts for `pod` placed on this node.
    pub fn add_pod(&mut self, pod: Arc<Pod>) {
        self.requested.add(&pod_requests(&pod));
        self.non_zero_requested.add(&pod_non_zero_requests(&pod));
        self.pod_count += 1;
        self.used_ports.extend(host_ports(&pod));
        let prio = pod_priority(&pod);
        self.min_pod_priority = Some(self.min_pod_priority.map_or(prio, |p| p.min(prio)));
        if has_pod_affinity(&pod) {
            self.pods_with_affinity += 1;
        }
        if has_required_anti_affinity(&pod) {
            self.pods_with_required_anti_affinity += 1;
        }
        self.pods.push(pod);
    }

    /// This node as it would be without the pods for which `remove` is true (for
    /// preemption): the same node, re-accounted.
    pub fn without(&self, mut remove: impl FnMut(&Pod) -> bool) -> NodeInfo {
        let mut n = NodeInfo::new(self.node.clone());
        for p in &self.pods {
            if !remove(p) {
                n.add_pod(p.clone());
            }
        }
        n
    }

    /// The node's labels.
    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.node.metadata.labels.as_ref()
    }
}

/// A filter plugin: can the pod run on the node?
pub trait Filter: Send + Sync {
    /// The plugin's name (its `NAME` constant).
    fn name(&self) -> &'static str;
    /// Computes the plugin's state for this cycle from the whole cluster (upstream's
    /// PreFilter); the framework stores it under [`Filter::name`] in [`PodInfo::state`].
    /// An error rejects the pod on every node with that status.
    fn pre_filter(
        &self,
        _pod: &PodInfo,
        _snapshot: &Snapshot<'_>,
    ) -> Result<Option<Arc<dyn Any + Send + Sync>>, Status> {
        Ok(None)
    }
    /// `Ok` if the pod fits the node, otherwise why not.
    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Status>;
}

/// A score plugin: how good is the node for the pod?
pub trait Score: Send + Sync {
    /// The plugin's name (its `NAME` constant).
    fn name(&self) -> &'static str;
    /// A raw score for one feasible node.
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Raw scores for all feasible nodes at once (upstream's PreScore + Score); the default
    /// scores each node alone.
    fn score_all(
        &self,
        pod: &PodInfo,
        _snapshot: &Snapshot<'_>,
        feasible: &[&NodeInfo],
    ) -> Vec<i64> {
        feasible.iter().map(|n| self.score(pod, n)).collect()
    }
    /// Maps the raw scores of all feasible nodes into 0..=[`MAX_NODE_SCORE`]; the default
    /// keeps them as they are (for plugins whose raw scores are already in range).
    fn normalize(&self, _scores: &mut [i64]) {}
}

/// Upstream's `DefaultNormalizeScore`: scales scores so the highest becomes
/// [`MAX_NODE_SCORE`]; `reverse` makes the lowest raw score the best.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

/// One profile's plugins: filters in order, and weighted scores.
pub struct Framework {
    filters: Vec<Box<dyn Filter>>,
    scores: Vec<(Box<dyn Score>, i64)>,
    /// Where the next cycle starts looking for feasible nodes (upstream's
    /// `nextStartNodeIndex`).
    next_start: AtomicUsize,
}

/// How many feasible nodes are enough in a cluster of `n` (upstream's
/// `numFeasibleNodesToFind` with the adaptive `percentageOfNodesToScore`): all of them below
/// 100 nodes, else `50 - n/125` percent (at least 5%) but at least 100.
pub fn feasible_nodes_to_find(n: usize) -> usize {
    if n < 100 {
        return n;
    }
    let percent = 50usize.saturating_sub(n / 125).max(5);
    (n * percent / 100).max(100)
}

impl Framework {
    /// An empty framework.
    pub fn new() -> Self {
        Framework {
            filters: vec![],
            scores: vec![],
            next_start: AtomicUsize::new(0),
        }
    }

    /// Adds a filter (run in the order added).
    pub fn with_filter(mut self, f: impl Filter + 'static) -> Self {
        self.filters.push(Box::new(f));
        self
    }

    /// Adds a score plugin with its weight.
    pub fn with_score(mut self, s: impl Score + 'static, weight: i64) -> Self {
        self.scores.push((Box::new(s), weight));
        self
    }

    /// The names of the filters, then of the score plugins.
    pub fn plugin_names(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        (
            self.filters.iter().map(|f| f.name()).collect(),
            self.scores.iter().map(|(s, _)| s.name()).collect(),
        )
    }

    /// Runs the pre-filters: `pod` with this cycle's state, or the status that rejects it
    /// everywhere.
    pub fn prepare(&self, pod: &PodInfo, snapshot: &Snapshot<'_>) -> Result<PodInfo, Status> {
        let mut info = pod.clone();
        info.state.clear();
        for f in &self.filters {
            if let Some(state) = f.pre_filter(&info, snapshot)? {
                info.state.insert(f.name(), state);
            }
        }
        Ok(info)
    }

    /// Runs the filters on one node; the first failing plugin's status stands. `pod` must
    /// come from [`Framework::prepare`].
    pub fn run_filters(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Status> {
        self.filters.iter().try_for_each(|f| f.filter(pod, node))
    }

    /// Total weighted, normalised scores of `nodes` (all feasible), in the same order.
    pub fn run_scores(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot<'_>,
        nodes: &[&NodeInfo],
    ) -> Vec<i64> {
        let mut total = vec![0; nodes.len()];
        for (plugin, weight) in &self.scores {
            let mut scores = plugin.score_all(pod, snapshot, nodes);
            plugin.normalize(&mut scores);
            for (t, s) in total.iter_mut().zip(scores) {
                *t += s.clamp(0, MAX_NODE_SCORE) * weight;
            }
        }
        total
    }

    /// One scheduling cycle: the name of the chosen node (and the pod with this cycle's
    /// state), or why none fits. Like upstream, it stops filtering once it has found
    /// [`feasible_nodes_to_find`] nodes, and the next cycle starts where this one stopped.
    /// `affinity` must be the [`AffinityCounts`] of `nodes` (kept by the cache).
    pub fn schedule(
        &self,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        affinity: AffinityCounts,
        listers: &dyn Listers,
        rng: &mut impl Rng,
    ) -> Result<(String, PodInfo), FitError> {
        let snapshot = Snapshot {
            nodes: nodes.iter().map(|n| &**n).collect(),
            listers,
            affinity,
        };
        let preemption_never = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.preemption_policy.as_deref())
            == Some("Never");
        let pod = match self.prepare(pod, &snapshot) {
            Ok(p) => p,
            Err(status) => {
                return Err(FitError {
                    num_all_nodes: nodes.len(),
                    node_statuses: nodes
                        .iter()
                        .map(|n| (n.name.clone(), status.clone()))
                        .collect(),
                    preemption_never,
                    post_filter: PostFilter::NotRun,
                });
            }
        };
        let mut feasible: Vec<&NodeInfo> = vec![];
        let mut node_statuses = BTreeMap::new();
        let total = nodes.len();
        let wanted = feasible_nodes_to_find(total);
        let start = if total == 0 {
            0
        } else {
            self.next_start.load(Ordering::Relaxed) % total
        };
        let mut processed = 0;
        for i in 0..total {
            let n = &nodes[(start + i) % total];
            processed += 1;
            match self.run_filters(&pod, n) {
                Ok(()) => {
                    feasible.push(n);
                    if feasible.len() >= wanted {
                        break;
                    }
                }
                Err(s) => {
                    node_statuses.insert(n.name.clone(), s);
                }
            }
        }
        if total > 0 {
            self.next_start
                .store((start + processed) % total, Ordering::Relaxed);
        }
        if feasible.is_empty() {
            return Err(FitError {
                num_all_nodes: nodes.len(),
                node_statuses,
                preemption_never,
                post_filter: PostFilter::NotRun,
            });
        }
        if feasible.len() == 1 {
            return Ok((feasible[0].name.clone(), pod));
        }
        let scores = self.run_scores(&pod, &snapshot, &feasible);
        // Reservoir sampling among the best, as upstream's selectHost.
        let mut best = 0;
        let mut ties = 0u32;
        for (i, s) in scores.iter().enumerate() {
            if *s > scores[best] {
                best = i;
                ties = 1;
            } else if *s == scores[best] {
                ties += 1;
                if rng.random_range(0..ties) == 0 {
                    best = i;
                }
            }
        }
        Ok((feasible[best].name.clone(), pod))
    }
}

impl Default for Framework {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_of_nodes_to_find_as_upstream() {
        assert_eq!(feasible_nodes_to_find(50), 50);
        assert_eq!(feasible_nodes_to_find(100), 100);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(6000), 300);
        assert_eq!(feasible_nodes_to_find(2000), 680);
    }

    #[test]
    fn normalize_scales_and_reverses() {
        let mut s = vec![0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, vec![0, 50, 100]);
        let mut s = vec![0, 5, 10];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 50, 0]);
        let mut s = vec![0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 100]);
    }
}
