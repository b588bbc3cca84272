//! Storage: the PV/PVC binder and the built-in local-path provisioner (as upstream's
//! `pkg/controller/volume/persistentvolume` and Rancher's local-path-provisioner, which k3s
//! ships).
//!
//! - The default StorageClass `local-path` (provisioner `rancher.io/local-path`,
//!   volumeBindingMode WaitForFirstConsumer, reclaimPolicy Delete) is created at start.
//! - Binder: a claim naming a volume (`spec.volumeName`) is bound to it; a claim without one
//!   gets the smallest Available volume of its class whose capacity and access modes fit.
//!   Both sides get phase Bound (the volume's `claimRef`, the claim's `volumeName`, capacity and
//!   access modes). A volume whose claim is gone becomes Released, or is deleted when its
//!   reclaim policy is Delete.
//! - Provisioner: a pending `local-path` claim used by a pod that has been scheduled gets a
//!   hostPath volume on that node, under the directory the node's agent advertises in its
//!   `corten.io/local-path-root` annotation, with node affinity to it. The agent removes the
//!   directories of volumes that no longer exist.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, Pod,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// The default StorageClass's name.
pub const LOCAL_PATH: &str = "local-path";
/// Its provisioner name (as k3s's).
pub const PROVISIONER: &str = "rancher.io/local-path";
/// The Node annotation naming the directory local-path volumes live under on that node.
pub const ROOT_ANNOTATION: &str = "corten.io/local-path-root";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// Runs the binder and the provisioner forever (a pass a second: volumes are few and the
/// passes read from the API server).
pub async fn run(client: Client) {
    ensure_storage_class(&client).await;
    loop {
        if let Err(e) = pass(&client).await {
            tracing::debug!(error = %e, "volume pass failed");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn ensure_storage_class(client: &Client) {
    let api: Api<StorageClass> = Api::all(client.clone());
    let class = StorageClass {
        metadata: ObjectMeta {
            name: Some(LOCAL_PATH.into()),
            annotations: Some(BTreeMap::from([(
                "storageclass.kubernetes.io/is-default-class".to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    };
    for _ in 0..50 {
        match api.create(&PostParams::default(), &class).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn class_of(c: &PersistentVolumeClaim) -> String {
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn request_of(c: &PersistentVolumeClaim) -> f64 {
    c.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| api::resources::validation::parse_quantity(&q.0))
        .unwrap_or(0.0)
}

fn capacity_of(v: &PersistentVolume) -> f64 {
    v.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| api::resources::validation::parse_quantity(&q.0))
        .unwrap_or(0.0)
}

/// Whether volume `v` can serve claim `c` (class, capacity, access modes).
pub fn fits(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let vs = v.spec.clone().unwrap_or_default();
    let cs = c.spec.clone().unwrap_or_default();
    vs.storage_class_name.clone().unwrap_or_default() == class_of(c)
        && capacity_of(v) >= request_of(c)
        && cs
            .access_modes
            .iter()
            .flatten()
            .all(|m| vs.access_modes.iter().flatten().any(|x| x == m))
}

async fn pass(client: &Client) -> Result<(), kube::Error> {
    let claims_all: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims = claims_all.list(&ListParams::default()).await?.items;
    let mut vols = volumes.list(&ListParams::default()).await?.items;
    let key = |c: &PersistentVolumeClaim| {
        (
            c.namespace().unwrap_or_default(),
            c.name_any(),
            c.uid().unwrap_or_default(),
        )
    };
    let claim_keys: Vec<_> = claims.iter().map(key).collect();

    // Volumes whose claim is gone.
    for v in &vols {
        let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
            continue;
        };
        let bound_to_live = claim_keys.iter().any(|(ns, n, uid)| {
            Some(ns) == r.namespace.as_ref()
                && Some(n) == r.name.as_ref()
                && (r.uid.is_none() || r.uid.as_ref() == Some(uid))
        });
        if bound_to_live || v.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let policy = v
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.clone())
            .unwrap_or_default();
        if policy == "Delete" {
            volumes
                .delete(&v.name_any(), &DeleteParams::default())
                .await?;
        } else if v.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Released") {
            set_phase(&volumes, &v.name_any(), "Released").await?;
        }
    }

    for c in &claims {
        if c.metadata.deletion_timestamp.is_some() {
            continue;
        }
        // A claim without a class gets the default one (upstream's DefaultStorageClass
        // admission; setting it once from unset is allowed).
        if c.spec
            .as_ref()
            .is_some_and(|s| s.storage_class_name.is_none())
        {
            Api::<PersistentVolumeClaim>::namespaced(
                client.clone(),
                &c.namespace().unwrap_or_default(),
            )
            .patch(
                &c.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"storageClassName": LOCAL_PATH}})),
            )
            .await?;
            continue;
        }
        let phase = c
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let named = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty());
        if phase == "Bound" && named.is_some() {
            continue;
        }
        let chosen = match &named {
            Some(n) => vols.iter().find(|v| &v.name_any() == n).cloned(),
            None => {
                let mut free: Vec<&PersistentVolume> = vols
                    .iter()
                    .filter(|v| {
                        v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).is_none() && fits(v, c)
                    })
                    .collect();
                free.sort_by(|a, b| capacity_of(a).total_cmp(&capacity_of(b)));
                free.first().map(|v| (*v).clone())
            }
        };
        let chosen = match chosen {
            Some(v) => Some(v),
            None if named.is_none() && class_of(c) == LOCAL_PATH => provision(client, c).await?,
            None => None,
        };
        if let Some(v) = chosen {
            bind(client, &volumes, &v, c).await?;
            vols.retain(|x| x.name_any() != v.name_any());
        }
    }
    Ok(())
}

async fn set_phase(
    volumes: &Api<PersistentVolume>,
    name: &str,
    phase: &str,
) -> Result<(), kube::Error> {
    volumes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": phase}})),
        )
        .await
        .map(|_| ())
}

async fn bind(
    client: &Client,
    volumes: &Api<PersistentVolume>,
    v: &PersistentVolume,
    c: &PersistentVolumeClaim,
) -> Result<(), kube::Error> {
    let ns = c.namespace().unwrap_or_default();
    let claim_ref = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: Some(ns.clone()),
        name: Some(c.name_any()),
        uid: c.uid(),
        ..Default::default()
    };
    volumes
        .patch(
            &v.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"claimRef": claim_ref}})),
        )
        .await?;
    set_phase(volumes, &v.name_any(), "Bound").await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    if c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) != Some(&v.name_any()) {
        claims
            .patch(
                &c.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"volumeName": v.name_any()}})),
            )
            .await?;
    }
    let spec = v.spec.clone().unwrap_or_default();
    claims
        .patch_status(
            &c.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "Bound", "capacity": spec.capacity, "accessModes": spec.access_modes}})),
        )
        .await?;
    tracing::info!(claim = %c.name_any(), namespace = %ns, volume = %v.name_any(), "bound");
    Ok(())
}

/// A local-path volume for claim `c` on the node of the first scheduled pod using it.
async fn provision(
    client: &Client,
    c: &PersistentVolumeClaim,
) -> Result<Option<PersistentVolume>, kube::Error> {
    let ns = c.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let node = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|p| p.claim_name == c.name_any())
                })
        })
        .find_map(|p| p.spec.and_then(|s| s.node_name))
        .or_else(|| c.annotations().get(SELECTED_NODE).cloned());
    let Some(node) = node else { return Ok(None) };
    let root = Api::<Node>::all(client.clone())
        .get_opt(&node)
        .await?
        .and_then(|n| n.annotations().get(ROOT_ANNOTATION).cloned());
    let Some(root) = root else { return Ok(None) };
    let name = format!("pvc-{}", c.uid().unwrap_or_default());
    let capacity = c
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.clone())
        .and_then(|r| r.get("storage").cloned())
        .unwrap_or(Quantity("1Gi".into()));
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            annotations: Some(BTreeMap::from([(
                "pv.kubernetes.io/provisioned-by".to_string(),
                PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), capacity)])),
            access_modes: c.spec.as_ref().and_then(|s| s.access_modes.clone()),
            storage_class_name: Some(LOCAL_PATH.into()),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            host_path: Some(HostPathVolumeSource {
                path: format!("{root}/{name}_{ns}_{}", c.name_any()),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node.clone()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let created = match volumes.create(&PostParams::default(), &pv).await {
        Ok(v) => v,
        Err(kube::Error::Api(s)) if s.code == 409 => volumes.get(&name).await?,
        Err(e) => return Err(e),
    };
    tracing::info!(claim = %c.name_any(), namespace = %ns, %node, volume = %name, "provisioned a local-path volume");
    Ok(Some(created))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(class: &str, size: &str, modes: &[&str]) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": "v"}, "spec": {
            "storageClassName": class, "capacity": {"storage": size}, "accessModes": modes}}))
        .unwrap()
    }

    fn pvc(class: &str, size: &str, modes: &[&str]) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "c"}, "spec": {
            "storageClassName": class, "resources": {"requests": {"storage": size}}, "accessModes": modes}}))
        .unwrap()
    }

    #[test]
    fn fitting_follows_class_capacity_and_modes() {
        assert!(fits(
            &pv("", "1Gi", &["ReadWriteOnce"]),
            &pvc("", "500Mi", &["ReadWriteOnce"])
        ));
        assert!(!fits(
            &pv("", "1Gi", &["ReadWriteOnce"]),
            &pvc("", "2Gi", &["ReadWriteOnce"])
        ));
        assert!(!fits(
            &pv("fast", "1Gi", &["ReadWriteOnce"]),
            &pvc("", "1Gi", &["ReadWriteOnce"])
        ));
        assert!(!fits(
            &pv("", "1Gi", &["ReadWriteOnce"]),
            &pvc("", "1Gi", &["ReadWriteMany"])
        ));
    }
}
