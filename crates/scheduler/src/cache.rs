//! The scheduler's cache, as upstream's `internal/cache`: every node's [`NodeInfo`] kept up to
//! date from the informers' events (instead of being rebuilt from the stores each cycle), the
//! pods this scheduler has bound but not yet seen bound ("assumed", so that a burst of pods
//! does not overcommit a node while bindings are in flight), and the pending pods nominated
//! to a node by preemption.
//!
//! A cycle's snapshot is a shared, name-sorted list of `Arc<NodeInfo>` that the cache keeps
//! in step with its map: taking it costs one reference count, not one per node; a node
//! changed later is copied on write (and so is the list, if a snapshot still holds it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use crate::framework::{AffinityCounts, NodeInfo, pod_priority};
use crate::queue::Key;

/// `namespace/name` of a pod.
pub fn key_of(pod: &Pod) -> Key {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The cache.
#[derive(Default)]
pub struct Cache {
    nodes: BTreeMap<String, Arc<NodeInfo>>,
    /// The values of `nodes`, in the same (name) order, shared with snapshots.
    list: Arc<Vec<Arc<NodeInfo>>>,
    /// The affinity pods over `list`.
    affinity: AffinityCounts,
    /// Pods counted on a node (bound, or assumed), with that node.
    pods: HashMap<Key, (String, Arc<Pod>)>,
    /// Keys of the assumed pods among them.
    assumed: HashSet<Key>,
    /// Pending pods nominated to a node, with that node.
    nominated: HashMap<Key, (String, Arc<Pod>)>,
    /// Nodes and pods seen since the informer began a re-list.
    relist_nodes: Option<HashSet<String>>,
    relist_pods: Option<HashSet<Key>>,
}

impl Cache {
    /// Brings the shared list in step with the map for node `name`.
    fn sync(&mut self, name: &str) {
        let list = Arc::make_mut(&mut self.list);
        let at = list.binary_search_by(|n| n.name.as_str().cmp(name));
        if let Ok(i) = at {
            self.affinity = self.affinity.minus(&list[i]);
        }
        match (self.nodes.get(name), at) {
            (Some(info), Ok(i)) => list[i] = info.clone(),
            (Some(info), Err(i)) => list.insert(i, info.clone()),
            (None, Ok(i)) => {
                list.remove(i);
            }
            (None, Err(_)) => {}
        }
        if let Some(info) = self.nodes.get(name) {
            self.affinity = self.affinity.plus(info);
        }
    }

    /// A node was added or changed.
    pub fn apply_node(&mut self, node: Arc<Node>) {
        let name = node.name_any();
        if let Some(seen) = self.relist_nodes.as_mut() {
            seen.insert(name.clone());
        }
        let mut info = NodeInfo::new(node);
        match self.nodes.get(&name) {
            Some(old) => old.pods.iter().for_each(|p| info.add_pod(p.clone())),
            None => self
                .pods
                .values()
                .filter(|(n, _)| *n == name)
                .for_each(|(_, p)| info.add_pod(p.clone())),
        }
        self.nodes.insert(name.clone(), Arc::new(info));
        self.sync(&name);
    }

    /// A node was deleted.
    pub fn delete_node(&mut self, name: &str) {
        self.nodes.remove(name);
        self.sync(name);
    }

    fn remove_from_node(&mut self, key: &str) {
        if let Some((node, _)) = self.pods.remove(key)
            && let Some(info) = self.nodes.get_mut(&node)
        {
            let rebuilt = info.without(|p| key_of(p) == key);
            *info = Arc::new(rebuilt);
            self.sync(&node);
        }
    }

    fn add_to_node(&mut self, key: Key, node: &str, pod: Arc<Pod>) {
        if let Some(info) = self.nodes.get_mut(node) {
            // The list shares this NodeInfo, so it is copied (a few pods) and the copy changed.
            Arc::make_mut(info).add_pod(pod.clone());
            self.sync(node);
        }
        self.pods.insert(key, (node.to_string(), pod));
    }

    /// A pod was added or changed.
    pub fn apply_pod(&mut self, pod: Arc<Pod>) {
        let key = key_of(&pod);
        if let Some(seen) = self.relist_pods.as_mut() {
            seen.insert(key.clone());
        }
        let nominated = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.clone())
            .filter(|n| !n.is_empty());
        match node_name(&pod) {
            Some(node) if !is_terminal(&pod) => {
                let node = node.to_string();
                self.assumed.remove(&key);
                self.nominated.remove(&key);
                self.remove_from_node(&key);
                self.add_to_node(key, &node, pod);
            }
            Some(_) => {
                self.assumed.remove(&key);
                self.nominated.remove(&key);
                self.remove_from_node(&key);
            }
            None => {
                if pod.metadata.deletion_timestamp.is_some() {
                    self.nominated.remove(&key);
                } else if let Some(node) = nominated {
                    self.nominated.insert(key.clone(), (node, pod));
                } else {
                    self.nominated.remove(&key);
                }
                // An unbound pod is counted only while this scheduler's binding is in flight.
                if !self.assumed.contains(&key) {
                    self.remove_from_node(&key);
                }
            }
        }
    }

    /// A pod was deleted.
    pub fn delete_pod(&mut self, key: &str) {
        self.assumed.remove(key);
        self.nominated.remove(key);
        self.remove_from_node(key);
    }

    /// This scheduler is binding `pod` to `node`: count it there now.
    pub fn assume(&mut self, pod: Arc<Pod>, node: &str) {
        let key = key_of(&pod);
        self.remove_from_node(&key);
        self.nominated.remove(&key);
        self.assumed.insert(key.clone());
        self.add_to_node(key, node, pod);
    }

    /// The binding of an assumed pod failed: stop counting it.
    pub fn forget(&mut self, key: &str) {
        if self.assumed.remove(key) {
            self.remove_from_node(key);
        }
    }

    /// The informer begins a re-list of nodes (`pods` false) or pods.
    pub fn relist_started(&mut self, pods: bool) {
        if pods {
            self.relist_pods = Some(HashSet::new());
        } else {
            self.relist_nodes = Some(HashSet::new());
        }
    }

    /// The re-list is complete: what it did not show is gone.
    pub fn relist_done(&mut self, pods: bool) {
        if pods {
            let Some(seen) = self.relist_pods.take() else {
                return;
            };
            let gone: Vec<Key> = self
                .pods
                .keys()
                .chain(self.nominated.keys())
                .filter(|k| !seen.contains(*k) && !self.assumed.contains(*k))
                .cloned()
                .collect();
            gone.iter().for_each(|k| self.delete_pod(k));
        } else if let Some(seen) = self.relist_nodes.take() {
            self.nodes.retain(|n, _| seen.contains(n));
            self.list = Arc::new(self.nodes.values().cloned().collect());
            self.affinity = AffinityCounts::of(self.list.iter().map(|n| &**n));
        }
    }

    /// The nodes, sorted by name, with the pending pods nominated to them whose priority is at
    /// least `priority` (other than `exclude`), so that the room preemption made for them is
    /// not taken by pods of lower priority.
    /// The affinity pods are counted with them.
    pub fn snapshot(
        &self,
        exclude: &str,
        priority: i32,
    ) -> (Arc<Vec<Arc<NodeInfo>>>, AffinityCounts) {
        let counted = |key: &str, pod: &Pod| key != exclude && pod_priority(pod) >= priority;
        if !self.nominated.iter().any(|(k, (_, p))| counted(k, p)) {
            return (self.list.clone(), self.affinity);
        }
        let mut nodes: Vec<Arc<NodeInfo>> = self.list.as_ref().clone();
        for (key, (node, pod)) in &self.nominated {
            if !counted(key, pod) {
                continue;
            }
            if let Ok(i) = nodes.binary_search_by(|n| n.name.as_str().cmp(node)) {
                Arc::make_mut(&mut nodes[i]).add_pod(pod.clone());
            }
        }
        let affinity = AffinityCounts::of(nodes.iter().map(|n| &**n));
        (Arc::new(nodes), affinity)
    }

    /// Whether `key` is assumed (its binding is in flight).
    pub fn is_assumed(&self, key: &str) -> bool {
        self.assumed.contains(key)
    }

    /// How many nodes and counted pods the cache holds.
    pub fn len(&self) -> (usize, usize) {
        (self.nodes.len(), self.pods.len())
    }

    /// Whether the cache holds no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};

    fn bound(name: &str, node: &str, cpu: &str) -> Arc<Pod> {
        let mut p = pod(cpu, "");
        p.metadata.name = Some(name.into());
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        Arc::new(p)
    }

    fn cpu_on(c: &Cache, n: &str) -> i64 {
        c.snapshot("", 0)
            .0
            .iter()
            .find(|i| i.name == n)
            .map(|i| i.requested.milli_cpu)
            .unwrap_or(-1)
    }

    #[test]
    fn pods_follow_their_nodes() {
        let mut c = Cache::default();
        // A pod seen before its node counts once the node arrives.
        c.apply_pod(bound("a", "n1", "1"));
        c.apply_node(Arc::new(node("n1", "4", "8Gi", &[])));
        assert_eq!(cpu_on(&c, "n1"), 1000);
        // A node update keeps its pods.
        c.apply_node(Arc::new(node("n1", "8", "8Gi", &[])));
        assert_eq!(cpu_on(&c, "n1"), 1000);
        // Updates replace, deletes remove, finished pods stop counting.
        c.apply_pod(bound("a", "n1", "2"));
        assert_eq!(cpu_on(&c, "n1"), 2000);
        let mut done = (*bound("a", "n1", "2")).clone();
        done.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        c.apply_pod(Arc::new(done));
        assert_eq!(cpu_on(&c, "n1"), 0);
        c.apply_pod(bound("b", "n1", "1"));
        c.delete_pod("default/b");
        assert_eq!(cpu_on(&c, "n1"), 0);
    }

    #[test]
    fn snapshots_are_sorted_and_keep_their_view_while_the_cache_moves_on() {
        let mut c = Cache::default();
        for n in ["n3", "n1", "n2"] {
            c.apply_node(Arc::new(node(n, "4", "8Gi", &[])));
        }
        let (before, _) = c.snapshot("", 0);
        let names: Vec<&str> = before.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3"]);
        c.apply_pod(bound("a", "n2", "1"));
        c.delete_node("n1");
        // The old snapshot is unchanged; a new one sees the pod and the deletion.
        assert_eq!(before.len(), 3);
        assert_eq!(before[1].requested.milli_cpu, 0);
        let (after, _) = c.snapshot("", 0);
        let names: Vec<&str> = after.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n2", "n3"]);
        assert_eq!(after[0].requested.milli_cpu, 1000);
        // A relist that no longer shows a node drops it from snapshots too.
        c.relist_started(false);
        c.apply_node(Arc::new(node("n3", "4", "8Gi", &[])));
        c.relist_done(false);
        let names: Vec<String> = c.snapshot("", 0).0.iter().map(|n| n.name.clone()).collect();
        assert_eq!(names, ["n3"]);
        // The affinity pods are counted as they come and go.
        use k8s_openapi::api::core::v1::{Affinity, PodAffinityTerm, PodAntiAffinity};
        let mut anti = (*bound("x", "n3", "1")).clone();
        anti.spec.as_mut().unwrap().affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        c.apply_pod(Arc::new(anti));
        let counts = AffinityCounts {
            with_affinity: 1,
            with_required_anti_affinity: 1,
        };
        assert_eq!(c.snapshot("", 0).1, counts);
        c.delete_pod("default/x");
        assert_eq!(c.snapshot("", 0).1, AffinityCounts::default());
    }

    #[test]
    fn assumed_pods_count_until_confirmed_or_forgotten() {
        let mut c = Cache::default();
        c.apply_node(Arc::new(node("n1", "4", "8Gi", &[])));
        let mut p = pod("1", "");
        p.metadata.name = Some("a".into());
        let p = Arc::new(p);
        c.assume(p.clone(), "n1");
        // The pending version of the pod (a status write) does not undo the assumption.
        c.apply_pod(p.clone());
        assert_eq!(cpu_on(&c, "n1"), 1000);
        c.forget("default/a");
        assert_eq!(cpu_on(&c, "n1"), 0);
        c.assume(p, "n1");
        c.apply_pod(bound("a", "n1", "1"));
        c.forget("default/a");
        assert_eq!(cpu_on(&c, "n1"), 1000, "confirmed pods stay");
    }

    #[test]
    fn relists_drop_what_is_gone() {
        let mut c = Cache::default();
        c.apply_node(Arc::new(node("n1", "4", "8Gi", &[])));
        c.apply_node(Arc::new(node("n2", "4", "8Gi", &[])));
        c.apply_pod(bound("a", "n1", "1"));
        c.relist_started(false);
        c.apply_node(Arc::new(node("n1", "4", "8Gi", &[])));
        c.relist_done(false);
        c.relist_started(true);
        c.relist_done(true);
        assert_eq!(c.len(), (1, 0));
        assert_eq!(cpu_on(&c, "n1"), 0);
    }

    #[test]
    fn nominated_pods_hold_room_for_equal_or_higher_priority() {
        let mut c = Cache::default();
        c.apply_node(Arc::new(node("n1", "4", "8Gi", &[])));
        let mut p = pod("3", "");
        p.metadata.name = Some("big".into());
        p.spec.as_mut().unwrap().priority = Some(100);
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            nominated_node_name: Some("n1".into()),
            ..Default::default()
        });
        c.apply_pod(Arc::new(p));
        assert_eq!(
            c.snapshot("default/other", 10).0[0].requested.milli_cpu,
            3000
        );
        assert_eq!(c.snapshot("default/other", 200).0[0].requested.milli_cpu, 0);
        assert_eq!(c.snapshot("default/big", 10).0[0].requested.milli_cpu, 0);
    }
}
