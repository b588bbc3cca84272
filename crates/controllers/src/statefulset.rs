//! The StatefulSet controller, after upstream's `pkg/controller/statefulset`: pods with stable
//! identities (`NAME-0`, `NAME-1`, ...; hostname = pod name, subdomain = serviceName), one
//! PersistentVolumeClaim per volumeClaimTemplate and ordinal (`TEMPLATE-NAME-ORDINAL`, created
//! before its pod, kept when the pod goes unless the retention policy says Delete),
//! OrderedReady (one pod at a time, in order, each Running and Ready before the next; scale
//! down from the highest ordinal) or Parallel pod management, RollingUpdate from the highest
//! ordinal down to the partition, or OnDelete; ControllerRevisions named `NAME-HASH` recording
//! each template, and the status kubectl shows.
//!
//! Like the ReplicaSet controller, a reconcile reads the set and lists pods and claims from the
//! API server, so it always sees what earlier reconciles did.

use crate::informers::PodEvents;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::controller_utils::{
    controller_of, controller_ref, fresh_owner, is_active, is_ready, owners_of,
};
use crate::history::{RevisionLabel, Template, ensure_revision};

/// The pod label naming a pod's revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The pod label carrying the pod's name (for per-pod Services).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The pod label carrying the ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

struct Ctx {
    client: Client,
}

/// Runs the controller forever.
pub async fn run(client: Client, pods: PodEvents) {
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    controller
        .watches_shared_stream(pods, move |pod| {
            owners_of(&store, &*pod, |s: &StatefulSet| {
                s.spec.as_ref().map(|s| &s.selector)
            })
        })
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(Ctx { client }),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "statefulset reconcile failed");
            }
        })
        .await;
}

/// The ordinal of a pod named `SET-N`.
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// The name of a claim from template `template` for ordinal `i` of set `set`.
pub fn claim_name(template: &str, set: &str, i: i32) -> String {
    format!("{template}-{set}-{i}")
}

async fn reconcile(cached: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let selector_of = |s: &StatefulSet| s.spec.as_ref().map(|s| s.selector.clone());
    let Some((set, _)) = fresh_owner(&sets, cached.as_ref(), false, selector_of).await? else {
        return Ok(Action::await_change());
    };
    let Some(spec) = set.spec.clone() else {
        return Ok(Action::await_change());
    };
    let template = Template {
        template: &spec.template,
        selector: &spec.selector,
        collision_count: set.status.as_ref().and_then(|s| s.collision_count),
        history_limit: spec.revision_history_limit,
    };
    let revision = ensure_revision(&ctx.client, &set, &template, RevisionLabel::Name).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = set.uid().unwrap_or_default();
    let mut mine: BTreeMap<i32, Pod> = BTreeMap::new();
    for p in pods.list(&ListParams::default()).await?.items {
        let owned = controller_of(&p.metadata).is_some_and(|o| o.uid == uid);
        if !owned {
            continue;
        }
        if let Some(i) = ordinal_of(&name, &p.name_any()) {
            mine.insert(i, p);
        }
    }
    let replicas = spec.replicas.unwrap_or(1);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let on_delete = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete");
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);

    // Pods that failed are replaced (deleted, then recreated by the next pass).
    for (_, p) in mine.iter() {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Failed" | "Succeeded")) && p.metadata.deletion_timestamp.is_none()
        {
            pods.delete(&p.name_any(), &DeleteParams::default()).await?;
        }
    }
    // Create missing pods in order.
    for i in 0..replicas {
        if mine.contains_key(&i) {
            let p = &mine[&i];
            let running = is_active(p) && is_ready(p);
            if !parallel && !running {
                break;
            }
            continue;
        }
        let rev = if on_delete || i < partition {
            current_or(&set, &revision)
        } else {
            revision.clone()
        };
        ensure_claims(&ctx.client, &set, i).await?;
        let pod = pod_for(&set, i, &rev);
        match pods.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                mine.insert(i, p);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
        if !parallel {
            break;
        }
    }
    // Scale down from the highest ordinal.
    let surplus: Vec<i32> = mine
        .keys()
        .copied()
        .filter(|i| *i >= replicas)
        .rev()
        .collect();
    for i in surplus {
        let p = &mine[&i];
        if p.metadata.deletion_timestamp.is_none() {
            pods.delete(&p.name_any(), &DeleteParams::default()).await?;
            delete_claims_on(&ctx.client, &set, i, "whenScaled").await?;
        }
        if !parallel {
            break;
        }
    }
    // Rolling update: from the highest ordinal down to the partition, one at a time.
    if !on_delete {
        let all_ready =
            (0..replicas).all(|i| mine.get(&i).is_some_and(|p| is_active(p) && is_ready(p)));
        for i in (partition..replicas).rev() {
            let Some(p) = mine.get(&i) else { continue };
            if p.labels().get(REVISION_LABEL) != Some(&format!("{name}-{revision}")) {
                if all_ready && p.metadata.deletion_timestamp.is_none() {
                    pods.delete(&p.name_any(), &DeleteParams::default()).await?;
                }
                break;
            }
        }
    }
    write_status(&sets, &set, &mine, replicas, &revision).await?;
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// The revision pods below the partition keep (the status's currentRevision, when known).
fn current_or(set: &StatefulSet, update: &str) -> String {
    set.status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .and_then(|r| r.rsplit_once('-').map(|(_, h)| h.to_string()))
        .unwrap_or_else(|| update.to_string())
}

/// The pod for ordinal `i` at revision `rev`.
fn pod_for(set: &StatefulSet, i: i32, rev: &str) -> Pod {
    let spec = set.spec.clone().unwrap_or_default();
    let name = set.name_any();
    let template = spec.template.clone();
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), format!("{name}-{rev}"));
    labels.insert(POD_NAME_LABEL.into(), format!("{name}-{i}"));
    labels.insert(POD_INDEX_LABEL.into(), i.to_string());
    let mut pod_spec = template.spec.clone().unwrap_or_default();
    pod_spec.hostname = Some(format!("{name}-{i}"));
    if !spec.service_name.as_deref().unwrap_or("").is_empty() {
        pod_spec.subdomain = spec.service_name.clone();
    }
    let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
    for t in spec.volume_claim_templates.iter().flatten() {
        let tname = t.name_any();
        volumes.retain(|v| v.name != tname);
        volumes.push(Volume {
            name: tname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&tname, &name, i),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{i}")),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![controller_ref(set)]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// Creates the claims of ordinal `i` that do not exist yet.
async fn ensure_claims(client: &Client, set: &StatefulSet, i: i32) -> Result<(), kube::Error> {
    let ns = set.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let spec = set.spec.clone().unwrap_or_default();
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    for t in spec.volume_claim_templates.iter().flatten() {
        let name = claim_name(&t.name_any(), &set.name_any(), i);
        if api.get_opt(&name).await?.is_some() {
            continue;
        }
        let mut labels = t.labels().clone();
        labels.extend(selector_labels.clone());
        let delete_with_set = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .and_then(|p| p.when_deleted.as_deref())
            == Some("Delete");
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some(labels),
                annotations: t.metadata.annotations.clone(),
                // With whenDeleted=Delete the set owns its claims, so the garbage collector
                // removes them with it.
                owner_references: delete_with_set.then(|| vec![controller_ref(set)]),
                ..Default::default()
            },
            spec: t.spec.clone(),
            status: None,
        };
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes the claims of ordinal `i` when the retention policy's `which` rule says Delete.
async fn delete_claims_on(
    client: &Client,
    set: &StatefulSet,
    i: i32,
    which: &str,
) -> Result<(), kube::Error> {
    let spec = set.spec.clone().unwrap_or_default();
    let policy = spec
        .persistent_volume_claim_retention_policy
        .unwrap_or_default();
    let rule = if which == "whenScaled" {
        policy.when_scaled
    } else {
        policy.when_deleted
    };
    if rule.as_deref() != Some("Delete") {
        return Ok(());
    }
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &set.namespace().unwrap_or_default());
    for t in spec.volume_claim_templates.iter().flatten() {
        let name = claim_name(&t.name_any(), &set.name_any(), i);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_status(
    sets: &Api<StatefulSet>,
    set: &StatefulSet,
    mine: &BTreeMap<i32, Pod>,
    replicas: i32,
    hash: &str,
) -> Result<(), kube::Error> {
    let name = set.name_any();
    let update_revision = format!("{name}-{hash}");
    let active: Vec<&Pod> = mine.values().filter(|p| is_active(p)).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| active.iter().filter(|p| f(p)).count() as i32;
    let ready = count(&|p: &Pod| is_ready(p));
    let updated = count(&|p: &Pod| p.labels().get(REVISION_LABEL) == Some(&update_revision));
    let current_revision = if updated >= replicas {
        update_revision.clone()
    } else {
        set.status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .unwrap_or_else(|| update_revision.clone())
    };
    let current = count(&|p: &Pod| p.labels().get(REVISION_LABEL) == Some(&current_revision));
    let status = json!({
        "status": {
            "observedGeneration": set.metadata.generation,
            "replicas": active.len() as i32,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "currentRevision": current_revision,
            "updateRevision": update_revision,
            "collisionCount": set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0),
        }
    });
    let unchanged = set
        .status
        .as_ref()
        .is_some_and(|s| serde_json::to_value(s).ok().as_ref() == Some(&status["status"]));
    if !unchanged {
        sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_and_claim_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(claim_name("data", "db", 2), "data-db-2");
    }

    #[test]
    fn pods_get_identity_and_claims() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "default", "uid": "u"},
            "spec": {
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]
            }
        }))
        .unwrap();
        let pod = pod_for(&set, 1, "abc");
        assert_eq!(pod.metadata.name.as_deref(), Some("db-1"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("db-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
        let v = &spec.volumes.unwrap()[0];
        assert_eq!(
            v.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-db-1"
        );
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels[REVISION_LABEL], "db-abc");
        assert_eq!(labels[POD_INDEX_LABEL], "1");
    }
}
