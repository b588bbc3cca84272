//! The scheduler's [`Listers`] over kube-rs reflector stores: namespaces (pod affinity's
//! namespaceSelector), the Services, ReplicationControllers, ReplicaSets and StatefulSets
//! that give PodTopologySpread its system-default selector, claims, volumes and
//! StorageClasses for VolumeBinding, and PodDisruptionBudgets for preemption.

use std::collections::BTreeMap;
use std::sync::Arc;

use api::resources::validation::selector_matches;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::framework::{ClaimInfo, Listers, VolumeInfo};

/// The provisioner name of StorageClasses that cannot provision (static volumes only).
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// Reflector stores the plugins look things up in.
#[derive(Clone)]
pub struct StoreListers {
    /// Namespaces.
    pub namespaces: Store<Namespace>,
    /// Services.
    pub services: Store<Service>,
    /// ReplicationControllers.
    pub rcs: Store<ReplicationController>,
    /// ReplicaSets.
    pub replicasets: Store<ReplicaSet>,
    /// StatefulSets.
    pub statefulsets: Store<StatefulSet>,
    /// PersistentVolumeClaims.
    pub claims: Store<PersistentVolumeClaim>,
    /// PersistentVolumes.
    pub volumes: Store<PersistentVolume>,
    /// StorageClasses.
    pub classes: Store<StorageClass>,
    /// PodDisruptionBudgets.
    pub budgets: Store<PodDisruptionBudget>,
}

fn same_ns(obj_ns: Option<String>, pod: &Pod) -> bool {
    obj_ns.as_deref() == pod.metadata.namespace.as_deref()
}

/// The required node affinity of a volume.
pub fn volume_info(v: &PersistentVolume) -> VolumeInfo {
    VolumeInfo {
        name: v.name_any(),
        node_affinity: v
            .spec
            .as_ref()
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.clone()),
    }
}

impl Listers for StoreListers {
    fn disruption_budgets(&self) -> Vec<Arc<PodDisruptionBudget>> {
        self.budgets.state()
    }

    fn namespace_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .map(|n| n.labels().clone())
    }

    fn default_spread_selector(&self, pod: &Pod) -> Option<LabelSelector> {
        let labels = pod.metadata.labels.as_ref();
        let mut match_labels = BTreeMap::new();
        let mut match_expressions: Vec<LabelSelectorRequirement> = vec![];
        for s in self.services.state() {
            let sel = s.spec.as_ref().and_then(|sp| sp.selector.as_ref());
            if let Some(sel) = sel.filter(|m| !m.is_empty())
                && same_ns(s.namespace(), pod)
                && sel
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            {
                match_labels.extend(sel.clone());
            }
        }
        for rc in self.rcs.state() {
            let sel = rc.spec.as_ref().and_then(|sp| sp.selector.as_ref());
            if let Some(sel) = sel.filter(|m| !m.is_empty())
                && same_ns(rc.namespace(), pod)
                && sel
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            {
                match_labels.extend(sel.clone());
            }
        }
        let sets = self
            .replicasets
            .state()
            .into_iter()
            .filter(|r| same_ns(r.namespace(), pod))
            .filter_map(|r| r.spec.as_ref().map(|s| s.selector.clone()))
            .chain(
                self.statefulsets
                    .state()
                    .into_iter()
                    .filter(|s| same_ns(s.namespace(), pod))
                    .filter_map(|s| s.spec.as_ref().map(|s| s.selector.clone())),
            );
        for sel in sets {
            if api::resources::validation::selector_is_empty(&sel)
                || !selector_matches(&sel, labels)
            {
                continue;
            }
            match_labels.extend(sel.match_labels.clone().unwrap_or_default());
            match_expressions.extend(sel.match_expressions.clone().unwrap_or_default());
        }
        if match_labels.is_empty() && match_expressions.is_empty() {
            return None;
        }
        Some(LabelSelector {
            match_labels: Some(match_labels),
            match_expressions: (!match_expressions.is_empty()).then_some(match_expressions),
        })
    }

    fn claim(&self, namespace: &str, name: &str) -> Option<ClaimInfo> {
        let claim = self.claims.get(&ObjectRef::new(name).within(namespace))?;
        let class = claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .and_then(|c| self.classes.get(&ObjectRef::new(&c)));
        let bound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty())
            .and_then(|v| self.volumes.get(&ObjectRef::new(&v)))
            .map(|v| volume_info(&v));
        Some(ClaimInfo {
            wait_for_first_consumer: class
                .as_ref()
                .and_then(|c| c.volume_binding_mode.as_deref())
                == Some("WaitForFirstConsumer"),
            provisionable: class
                .as_ref()
                .is_some_and(|c| c.provisioner != NO_PROVISIONER),
            bound,
            claim: claim.clone(),
        })
    }

    fn matching_volumes(&self, claim: &ClaimInfo) -> Vec<VolumeInfo> {
        self.volumes
            .state()
            .iter()
            .filter(|v| {
                v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none()
                    && v.metadata.deletion_timestamp.is_none()
                    && volume_fits(v, &claim.claim)
            })
            .map(|v| volume_info(v))
            .collect()
    }
}

/// Whether volume `v` can serve claim `c`: class, capacity and access modes, as the binder
/// (`controllers::volumes::fits`) decides.
pub fn volume_fits(v: &PersistentVolume, c: &Arc<PersistentVolumeClaim>) -> bool {
    let storage = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.map(|q| crate::resources::quantity_value(q, false))
            .unwrap_or(0)
    };
    let (Some(vs), Some(cs)) = (v.spec.as_ref(), c.spec.as_ref()) else {
        return false;
    };
    let capacity = storage(vs.capacity.as_ref().and_then(|c| c.get("storage")));
    let request = storage(
        cs.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    );
    vs.storage_class_name.clone().unwrap_or_default()
        == cs.storage_class_name.clone().unwrap_or_default()
        && capacity >= request
        && cs
            .access_modes
            .iter()
            .flatten()
            .all(|m| vs.access_modes.iter().flatten().any(|x| x == m))
}
