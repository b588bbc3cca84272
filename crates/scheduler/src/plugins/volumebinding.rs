//! VolumeBinding, as upstream's `volumebinding` plugin, for the pod's PersistentVolumeClaims.
//!
//! Pre-filter: a claim that does not exist, or an unbound claim whose StorageClass binds
//! immediately, rejects the pod everywhere (the binder has not bound it yet).
//! Filter: a bound claim's volume must allow the node (its required node affinity); an
//! unbound claim of a `WaitForFirstConsumer` class needs an Available volume that fits it and
//! allows the node, or a class that provisions.
//! After the pod is placed ([`decisions`]), the scheduler binds a chosen static volume by
//! setting the claim's `spec.volumeName` (the binder completes it), or marks the claim with
//! `volume.kubernetes.io/selected-node` for the provisioner, as upstream's PreBind does.

use std::any::Any;
use std::sync::Arc;

use crate::framework::{ClaimInfo, Filter, NodeInfo, PodInfo, Snapshot, Status, VolumeInfo};
use crate::plugins::nodeaffinity::term_matches;

/// Upstream's reason when a bound volume does not allow the node.
pub const ERR_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// Upstream's reason when no Available volume fits and the class cannot provision.
pub const ERR_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// Upstream's reason for unbound claims of immediate classes.
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// The claim annotation naming the node the provisioner should use.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The VolumeBinding plugin.
pub struct VolumeBinding;

impl VolumeBinding {
    /// The plugin's name.
    pub const NAME: &'static str = "VolumeBinding";
}

/// An unbound late-binding claim and the volumes that could serve it.
#[derive(Debug, Clone)]
pub struct Unbound {
    /// The claim.
    pub claim: ClaimInfo,
    /// Available volumes that fit it.
    pub candidates: Vec<VolumeInfo>,
}

/// The pod's claims, sorted out.
#[derive(Debug, Default)]
pub struct State {
    /// Volumes of bound claims.
    pub bound: Vec<VolumeInfo>,
    /// Unbound claims of `WaitForFirstConsumer` classes.
    pub unbound: Vec<Unbound>,
}

/// Whether `volume` allows `node`.
pub fn allows(volume: &VolumeInfo, node: &NodeInfo) -> bool {
    volume.node_affinity.as_ref().is_none_or(|sel| {
        sel.node_selector_terms
            .iter()
            .any(|t| term_matches(t, node))
    })
}

/// What to do with one unbound claim once the pod is on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bind claim `namespace/name` to this Available volume.
    BindVolume {
        /// The claim's namespace.
        namespace: String,
        /// The claim's name.
        claim: String,
        /// The volume.
        volume: String,
    },
    /// Ask the provisioner for a volume on the pod's node.
    Provision {
        /// The claim's namespace.
        namespace: String,
        /// The claim's name.
        claim: String,
    },
}

/// For each unbound claim: a volume that allows `node` (each volume used once), else
/// provisioning; None when some claim can be served neither way.
fn choose(state: &State, node: &NodeInfo) -> Option<Vec<Decision>> {
    let mut used: Vec<&str> = vec![];
    let mut out = vec![];
    for u in &state.unbound {
        let namespace = u.claim.claim.metadata.namespace.clone().unwrap_or_default();
        let claim = u.claim.claim.metadata.name.clone().unwrap_or_default();
        let pick = u
            .candidates
            .iter()
            .find(|v| !used.contains(&v.name.as_str()) && allows(v, node));
        match pick {
            Some(v) => {
                used.push(&v.name);
                out.push(Decision::BindVolume {
                    namespace,
                    claim,
                    volume: v.name.clone(),
                });
            }
            None if u.claim.provisionable => out.push(Decision::Provision { namespace, claim }),
            None => return None,
        }
    }
    Some(out)
}

/// What the scheduler must do with the pod's unbound claims now that it goes to `node`
/// (`pod` from [`crate::framework::Framework::prepare`]).
pub fn decisions(pod: &PodInfo, node: &NodeInfo) -> Vec<Decision> {
    pod.state::<State>(VolumeBinding::NAME)
        .and_then(|s| choose(s, node))
        .unwrap_or_default()
}

impl Filter for VolumeBinding {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn pre_filter(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot<'_>,
    ) -> Result<Option<Arc<dyn Any + Send + Sync>>, Status> {
        let Some(spec) = pod.pod.spec.as_ref() else {
            return Ok(None);
        };
        let ns = pod.pod.metadata.namespace.as_deref().unwrap_or_default();
        let mut state = State::default();
        for v in spec.volumes.iter().flatten() {
            let Some(pvc) = &v.persistent_volume_claim else {
                continue;
            };
            let Some(claim) = snapshot.listers.claim(ns, &pvc.claim_name) else {
                return Err(Status::unresolvable(format!(
                    "persistentvolumeclaim \"{}\" not found",
                    pvc.claim_name
                )));
            };
            if let Some(bound) = &claim.bound {
                state.bound.push(bound.clone());
            } else if claim.wait_for_first_consumer {
                let mut candidates = snapshot.listers.matching_volumes(&claim);
                candidates.sort_by(|a, b| a.name.cmp(&b.name));
                state.unbound.push(Unbound { claim, candidates });
            } else {
                return Err(Status::unresolvable(ERR_UNBOUND_IMMEDIATE));
            }
        }
        if state.bound.is_empty() && state.unbound.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(state)))
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Status> {
        let Some(state) = pod.state::<State>(Self::NAME) else {
            return Ok(());
        };
        if !state.bound.iter().all(|v| allows(v, node)) {
            return Err(Status::unresolvable(ERR_NODE_CONFLICT));
        }
        if choose(state, node).is_none() {
            return Err(Status::unresolvable(ERR_BIND_CONFLICT));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{
        NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaim,
        PersistentVolumeClaimVolumeSource, Pod, Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    use super::*;
    use crate::framework::{Framework, Listers};
    use crate::plugins::testing::{info, labelled, node, pinfo};

    fn on(host: &str) -> Option<NodeSelector> {
        Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "kubernetes.io/hostname".into(),
                    operator: "In".into(),
                    values: Some(vec![host.into()]),
                }]),
                match_fields: None,
            }],
        })
    }

    fn vol(name: &str, host: &str) -> VolumeInfo {
        VolumeInfo {
            name: name.into(),
            node_affinity: on(host),
        }
    }

    struct Claims(BTreeMap<String, ClaimInfo>, Vec<VolumeInfo>);

    impl Listers for Claims {
        fn namespace_labels(&self, _: &str) -> Option<BTreeMap<String, String>> {
            None
        }
        fn default_spread_selector(&self, _: &Pod) -> Option<LabelSelector> {
            None
        }
        fn claim(&self, _: &str, name: &str) -> Option<ClaimInfo> {
            self.0.get(name).cloned()
        }
        fn matching_volumes(&self, _: &ClaimInfo) -> Vec<VolumeInfo> {
            self.1.clone()
        }
    }

    fn claim(name: &str, wffc: bool, provisionable: bool, bound: Option<VolumeInfo>) -> ClaimInfo {
        ClaimInfo {
            claim: Arc::new(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some("default".into()),
                    ..Default::default()
                },
                ..Default::default()
            }),
            wait_for_first_consumer: wffc,
            provisionable,
            bound,
        }
    }

    fn using(claims: &[&str]) -> Pod {
        let mut p = labelled("p", "default", &[]);
        p.spec.as_mut().unwrap().volumes = Some(
            claims
                .iter()
                .map(|c| Volume {
                    name: c.to_string(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: c.to_string(),
                        read_only: None,
                    }),
                    ..Default::default()
                })
                .collect(),
        );
        p
    }

    fn nodes() -> Vec<NodeInfo> {
        ["node-a", "node-b"]
            .iter()
            .map(|n| info(node(n, "4", "8Gi", &[("kubernetes.io/hostname", n)]), &[]))
            .collect()
    }

    fn run(pod: Pod, listers: &Claims) -> (Vec<Result<(), Status>>, Vec<Vec<Decision>>) {
        let fw = Framework::new().with_filter(VolumeBinding);
        let nodes = nodes();
        let snap = Snapshot::new(nodes.iter().collect(), listers);
        match fw.prepare(&pinfo(pod), &snap) {
            Err(s) => (vec![Err(s); nodes.len()], vec![]),
            Ok(p) => (
                nodes.iter().map(|n| fw.run_filters(&p, n)).collect(),
                nodes.iter().map(|n| decisions(&p, n)).collect(),
            ),
        }
    }

    #[test]
    fn bound_volumes_pin_the_pod_to_their_node() {
        let l = Claims(
            [(
                "data".into(),
                claim("data", true, true, Some(vol("pv-1", "node-b"))),
            )]
            .into(),
            vec![],
        );
        let (r, _) = run(using(&["data"]), &l);
        assert_eq!(
            r,
            vec![Err(Status::unresolvable(ERR_NODE_CONFLICT)), Ok(())]
        );
    }

    #[test]
    fn unbound_late_claims_go_where_a_volume_can_be() {
        let l = Claims(
            [("data".into(), claim("data", true, false, None))].into(),
            vec![vol("pv-a", "node-a")],
        );
        let (r, d) = run(using(&["data"]), &l);
        assert_eq!(
            r,
            vec![Ok(()), Err(Status::unresolvable(ERR_BIND_CONFLICT))]
        );
        assert_eq!(
            d[0],
            vec![Decision::BindVolume {
                namespace: "default".into(),
                claim: "data".into(),
                volume: "pv-a".into()
            }]
        );
        // Two claims cannot share the one volume.
        let l = Claims(
            [
                ("a".into(), claim("a", true, false, None)),
                ("b".into(), claim("b", true, false, None)),
            ]
            .into(),
            vec![vol("pv-a", "node-a")],
        );
        let (r, _) = run(using(&["a", "b"]), &l);
        assert!(r.iter().all(|r| r.is_err()), "{r:?}");
    }

    #[test]
    fn provisioning_classes_fit_anywhere_and_mark_the_node() {
        let l = Claims(
            [("data".into(), claim("data", true, true, None))].into(),
            vec![],
        );
        let (r, d) = run(using(&["data"]), &l);
        assert_eq!(r, vec![Ok(()), Ok(())]);
        assert_eq!(
            d[1],
            vec![Decision::Provision {
                namespace: "default".into(),
                claim: "data".into()
            }]
        );
    }

    #[test]
    fn missing_and_unbound_immediate_claims_reject_the_pod() {
        let l = Claims(
            [("data".into(), claim("data", false, true, None))].into(),
            vec![],
        );
        let (r, _) = run(using(&["data"]), &l);
        assert_eq!(r[0], Err(Status::unresolvable(ERR_UNBOUND_IMMEDIATE)));
        let (r, _) = run(using(&["nope"]), &l);
        assert_eq!(
            r[0],
            Err(Status::unresolvable(
                "persistentvolumeclaim \"nope\" not found"
            ))
        );
    }
}
