//! The dependency graph: every object the monitors have seen, by uid, with its
//! ownerReferences, and for every owner uid (seen or not) the uids of its dependents.
//!
//! Pure data: each change returns the [`Work`] it calls for, and the caller queues it.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// What the workers do with an object (named by uid).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Work {
    /// Check the object: delete it if its owners are gone, finish its foreground deletion if
    /// it is deleting its dependents.
    Delete(String),
    /// Remove the object's uid from its dependents' ownerReferences, then its `orphan`
    /// finalizer.
    Orphan(String),
}

/// One observed object.
#[derive(Clone)]
pub struct GraphNode {
    /// The resource it belongs to.
    pub resource: &'static api::ResourceInfo,
    /// Its namespace (`None` when cluster-scoped).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its ownerReferences.
    pub owners: Vec<OwnerReference>,
    /// Whether it has a deletionTimestamp.
    pub being_deleted: bool,
    /// Being deleted with the `foregroundDeletion` finalizer.
    pub deleting_dependents: bool,
    /// Being deleted with the `orphan` finalizer.
    pub orphaning: bool,
}

/// The graph.
#[derive(Default)]
pub struct Graph {
    nodes: HashMap<String, GraphNode>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// The node of `uid`, if observed.
    pub fn get(&self, uid: &str) -> Option<&GraphNode> {
        self.nodes.get(uid)
    }

    /// The uids of the objects that name `owner` in their ownerReferences.
    pub fn dependents(&self, owner: &str) -> Vec<String> {
        self.dependents
            .get(owner)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether `uid` has dependents.
    pub fn has_dependents(&self, uid: &str) -> bool {
        self.dependents.get(uid).is_some_and(|d| !d.is_empty())
    }

    /// The dependents that block `owner`'s deletion (`blockOwnerDeletion: true`).
    pub fn blocking_dependents(&self, owner: &str) -> Vec<String> {
        self.dependents(owner)
            .into_iter()
            .filter(|d| {
                self.nodes.get(d).is_some_and(|n| {
                    n.owners
                        .iter()
                        .any(|r| r.uid == owner && r.block_owner_deletion == Some(true))
                })
            })
            .collect()
    }

    /// The uids of the observed objects of one resource.
    pub fn uids_of(&self, resource: &api::ResourceInfo) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| {
                n.resource.group == resource.group && n.resource.plural == resource.plural
            })
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// Records an added or updated object.
    pub fn apply(&mut self, uid: &str, node: GraphNode) -> Vec<Work> {
        let mut work = vec![];
        let old_owners = self
            .nodes
            .get(uid)
            .map(|n| n.owners.clone())
            .unwrap_or_default();
        for r in &old_owners {
            if !node.owners.iter().any(|o| o.uid == r.uid)
                && let Some(d) = self.dependents.get_mut(&r.uid)
            {
                d.remove(uid);
                if d.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
        }
        for r in &node.owners {
            self.dependents
                .entry(r.uid.clone())
                .or_default()
                .insert(uid.to_string());
        }
        // Owners waiting for their dependents re-check whether this one still blocks them.
        for r in old_owners.iter().chain(&node.owners) {
            if self
                .nodes
                .get(&r.uid)
                .is_some_and(|o| o.deleting_dependents)
            {
                push(&mut work, Work::Delete(r.uid.clone()));
            }
        }
        // An owner never seen may not exist: the worker checks with the API server.
        if node.owners.iter().any(|r| !self.nodes.contains_key(&r.uid)) {
            push(&mut work, Work::Delete(uid.to_string()));
        }
        if node.orphaning {
            push(&mut work, Work::Orphan(uid.to_string()));
        }
        if node.deleting_dependents {
            push(&mut work, Work::Delete(uid.to_string()));
            for d in self.dependents(uid) {
                push(&mut work, Work::Delete(d));
            }
        }
        self.nodes.insert(uid.to_string(), node);
        work
    }

    /// Records a deleted object: its dependents lost an owner, and owners waiting for it may
    /// be done.
    pub fn delete(&mut self, uid: &str) -> Vec<Work> {
        let mut work = vec![];
        let Some(node) = self.nodes.remove(uid) else {
            return work;
        };
        for r in &node.owners {
            if let Some(d) = self.dependents.get_mut(&r.uid) {
                d.remove(uid);
                if d.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
            if self
                .nodes
                .get(&r.uid)
                .is_some_and(|o| o.deleting_dependents)
            {
                push(&mut work, Work::Delete(r.uid.clone()));
            }
        }
        for d in self.dependents(uid) {
            push(&mut work, Work::Delete(d));
        }
        work
    }
}

fn push(work: &mut Vec<Work>, w: Work) {
    if !work.contains(&w) {
        work.push(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configmaps() -> &'static api::ResourceInfo {
        api::Registry::global()
            .by_kind("", "v1", "ConfigMap")
            .map(|r| r.as_ref())
            .expect("configmaps")
    }

    fn node(owners: &[(&str, bool)]) -> GraphNode {
        GraphNode {
            resource: configmaps(),
            namespace: Some("default".into()),
            name: "x".into(),
            owners: owners
                .iter()
                .map(|(uid, block)| OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: "owner".into(),
                    uid: uid.to_string(),
                    block_owner_deletion: Some(*block),
                    controller: None,
                })
                .collect(),
            being_deleted: false,
            deleting_dependents: false,
            orphaning: false,
        }
    }

    #[test]
    fn tracks_dependents_and_absent_owners() {
        let mut g = Graph::default();
        assert!(g.apply("o", node(&[])).is_empty());
        // An owner already seen: nothing to check.
        assert!(g.apply("d1", node(&[("o", true)])).is_empty());
        // An owner never seen: check it.
        assert_eq!(
            g.apply("d2", node(&[("ghost", false)])),
            vec![Work::Delete("d2".into())]
        );
        assert_eq!(g.dependents("o"), vec!["d1".to_string()]);
        assert_eq!(g.blocking_dependents("o"), vec!["d1".to_string()]);
        // The owner goes: its dependents are checked.
        assert_eq!(g.delete("o"), vec![Work::Delete("d1".into())]);
    }

    #[test]
    fn foreground_and_orphan_owners_call_for_work() {
        let mut g = Graph::default();
        g.apply("o", node(&[]));
        g.apply("d", node(&[("o", true)]));
        let mut deleting = node(&[]);
        deleting.being_deleted = true;
        deleting.deleting_dependents = true;
        let work = g.apply("o", deleting);
        assert!(work.contains(&Work::Delete("o".into())));
        assert!(work.contains(&Work::Delete("d".into())));
        // The blocking dependent drops its reference: the owner re-checks.
        assert_eq!(g.apply("d", node(&[])), vec![Work::Delete("o".into())]);
        assert!(g.blocking_dependents("o").is_empty());
        let mut orphaning = node(&[]);
        orphaning.being_deleted = true;
        orphaning.orphaning = true;
        assert_eq!(g.apply("o", orphaning), vec![Work::Orphan("o".into())]);
        assert_eq!(g.uids_of(configmaps()).len(), 2);
    }
}
