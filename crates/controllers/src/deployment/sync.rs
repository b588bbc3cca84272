//! Finding and creating the new ReplicaSet, scaling ReplicaSets (including upstream's
//! proportional scaling when a Deployment is resized mid-rollout), revision bookkeeping and
//! the cleanup of old ReplicaSets beyond `revisionHistoryLimit`; after upstream's
//! `pkg/controller/deployment/sync.go`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::util::{
    self, MAX_REPLICAS, POD_TEMPLATE_HASH, REVISION, desired, equal_ignore_hash, max_surge,
    spec_replicas,
};
use super::{Rollout, Sets, progress};
use crate::controller_utils::{controller_of, controller_ref};

fn created_order(a: &ReplicaSet, b: &ReplicaSet) -> std::cmp::Ordering {
    let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    t(a).cmp(&t(b))
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

/// Splits the Deployment's ReplicaSets into the new one and the old ones, syncing the new
/// one's revision annotations and the Deployment's revision; creates the new ReplicaSet when
/// missing and `create` is set (upstream's `getAllReplicaSetsAndSyncRevision`).
pub async fn get_all(
    r: &mut Rollout,
    mut owned: Vec<ReplicaSet>,
    create: bool,
) -> Result<Sets, kube::Error> {
    owned.sort_by(created_order);
    let Some(template) = r.d.spec.as_ref().map(|s| s.template.clone()) else {
        return Ok(Sets::default());
    };
    let found = owned.iter().position(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| equal_ignore_hash(t, &template))
    });
    let new = found.map(|i| owned.remove(i));
    let old = owned;
    let new_revision = util::max_revision(&old) + 1;
    let new = match new {
        Some(rs) => Some(sync_existing(r, rs, new_revision).await?),
        None if create => Some(create_new(r, &old, new_revision).await?),
        None => None,
    };
    if let Some(rs) = &new {
        sync_deployment_revision(r, rs).await?;
    }
    Ok(Sets { new, old })
}

/// Brings an existing new ReplicaSet's annotations and minReadySeconds up to date.
async fn sync_existing(
    r: &mut Rollout,
    rs: ReplicaSet,
    new_revision: i64,
) -> Result<ReplicaSet, kube::Error> {
    let mut annotations = rs.metadata.annotations.clone().unwrap_or_default();
    let changed = util::set_new_rs_annotations(&r.d, &mut annotations, new_revision, true);
    let min_ready = r.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
    let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
    let rs = if changed || min_ready.unwrap_or(0) != rs_min_ready.unwrap_or(0) {
        let patch = json!({
            "metadata": {"resourceVersion": rs.metadata.resource_version, "annotations": annotations},
            "spec": {"minReadySeconds": min_ready.unwrap_or(0)},
        });
        r.sets
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?
    } else {
        rs
    };
    if progress::progressing(&r.d).is_none() && progress::has_deadline(&r.d) {
        let msg = format!("Found new replica set \"{}\"", rs.name_any());
        progress::set_condition(&mut r.d, "Progressing", "True", "FoundNewReplicaSet", &msg);
    }
    Ok(rs)
}

/// Creates the new ReplicaSet `<deployment>-<hash>`. A name taken by a ReplicaSet with another
/// template is a hash collision: status.collisionCount is bumped and the error returned, so
/// the next reconcile tries another name.
async fn create_new(
    r: &mut Rollout,
    old: &[ReplicaSet],
    new_revision: i64,
) -> Result<ReplicaSet, kube::Error> {
    let spec = r.d.spec.clone().unwrap_or_default();
    let collisions = r.d.status.as_ref().and_then(|s| s.collision_count);
    let hash = util::pod_template_hash(&spec.template, collisions);
    let mut template = spec.template.clone();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let name = format!("{}-{hash}", r.name());
    let mut annotations = BTreeMap::new();
    util::set_new_rs_annotations(&r.d, &mut annotations, new_revision, false);
    let mut rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(&r.d)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    };
    let mut all = old.to_vec();
    all.push(rs.clone());
    let replicas = util::new_rs_new_replicas(&r.d, &all, &rs);
    if let Some(s) = rs.spec.as_mut() {
        s.replicas = Some(replicas);
    }
    match r.sets.create(&PostParams::default(), &rs).await {
        Ok(created) => {
            tracing::info!(deployment = %r.name(), replicaset = %name, replicas, "created new replica set");
            if progress::has_deadline(&r.d) {
                let msg = format!("Created new replica set \"{name}\"");
                progress::set_condition(
                    &mut r.d,
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    &msg,
                );
            }
            Ok(created)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let existing = r.sets.get(&name).await?;
            let ours = controller_of(&existing.metadata)
                .is_some_and(|o| Some(&o.uid) == r.d.metadata.uid.as_ref());
            let same = existing
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &spec.template));
            if ours && same {
                return Ok(existing);
            }
            let count = collisions.unwrap_or(0).saturating_add(1);
            tracing::info!(deployment = %r.name(), collisions = count, "pod-template-hash collision");
            let patch = json!({"status": {"collisionCount": count}});
            r.deployments
                .patch_status(&r.name(), &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Err(kube::Error::Api(s))
        }
        Err(e) => Err(e),
    }
}

/// Sets the Deployment's revision annotation to its new ReplicaSet's.
async fn sync_deployment_revision(r: &mut Rollout, rs: &ReplicaSet) -> Result<(), kube::Error> {
    let want = util::revision(rs).to_string();
    if r.d.annotations().get(REVISION) == Some(&want) {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {REVISION: want}}});
    let updated = r
        .deployments
        .patch(&r.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    r.d.metadata = updated.metadata;
    Ok(())
}

/// Scales `rs` to `replicas`, recording the Deployment's size in its annotations (upstream's
/// `scaleReplicaSet`); the write is conditioned on the ReplicaSet's resourceVersion.
pub async fn scale_rs(
    r: &Rollout,
    rs: &ReplicaSet,
    replicas: i32,
) -> Result<ReplicaSet, kube::Error> {
    let mut annotations = rs.metadata.annotations.clone().unwrap_or_default();
    let changed = util::set_replicas_annotations(
        &mut annotations,
        desired(&r.d),
        desired(&r.d) + max_surge(&r.d),
    );
    if spec_replicas(rs) == replicas && !changed {
        return Ok(rs.clone());
    }
    let patch = json!({
        "metadata": {"resourceVersion": rs.metadata.resource_version, "annotations": annotations},
        "spec": {"replicas": replicas},
    });
    let updated = r
        .sets
        .patch(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    if spec_replicas(rs) != replicas {
        tracing::info!(deployment = %r.name(), replicaset = %rs.name_any(), from = spec_replicas(rs), to = replicas, "scaled replica set");
    }
    Ok(updated)
}

/// Scales `rs` and records the result in `sets`.
pub async fn scale_in(
    r: &Rollout,
    sets: &mut Sets,
    rs: &ReplicaSet,
    replicas: i32,
) -> Result<(), kube::Error> {
    let updated = scale_rs(r, rs, replicas).await?;
    sets.replace(updated);
    Ok(())
}

fn is_active(rs: &ReplicaSet) -> bool {
    spec_replicas(rs) > 0
}

/// Whether the Deployment's replica count differs from the one its active ReplicaSets were
/// last scaled for (upstream's `isScalingEvent`).
pub async fn is_scaling_event(
    r: &mut Rollout,
    owned: Vec<ReplicaSet>,
) -> Result<bool, kube::Error> {
    let sets = get_all(r, owned, false).await?;
    let want = desired(&r.d);
    Ok(sets
        .all()
        .iter()
        .filter(|rs| is_active(rs))
        .filter_map(|rs| util::int_annotation(rs, util::DESIRED_REPLICAS))
        .any(|d| d != want))
}

/// Scaling only (paused Deployments and scaling events), then status (upstream's `sync`).
pub async fn sync(r: &mut Rollout, owned: Vec<ReplicaSet>) -> Result<Action, kube::Error> {
    let mut sets = get_all(r, owned, false).await?;
    scale(r, &mut sets).await?;
    if r.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
        cleanup(r, &sets).await?;
    }
    progress::sync_status(r, &sets).await
}

/// Scales the ReplicaSets to the Deployment's size: the only active one (or latest) takes all;
/// a saturated new ReplicaSet lets old ones go to zero; mid-rollout, the difference is spread
/// proportionally to each ReplicaSet's share (upstream's `scale`).
async fn scale(r: &Rollout, sets: &mut Sets) -> Result<(), kube::Error> {
    let want = desired(&r.d);
    let mut newest_first = sets.old.clone();
    newest_first.sort_by(|a, b| created_order(b, a));
    let active: Vec<ReplicaSet> = newest_first
        .iter()
        .chain(sets.new.iter())
        .filter(|rs| is_active(rs))
        .cloned()
        .collect();
    let only = match active.len() {
        0 => sets.new.clone().or_else(|| newest_first.first().cloned()),
        1 => active.first().cloned(),
        _ => None,
    };
    if let Some(rs) = only {
        if spec_replicas(&rs) != want {
            scale_in(r, sets, &rs, want).await?;
        }
        return Ok(());
    }
    if let Some(new) = sets.new.clone()
        && spec_replicas(&new) == want
        && util::int_annotation(&new, util::DESIRED_REPLICAS) == Some(want)
        && new.status.as_ref().and_then(|s| s.available_replicas) == Some(want)
    {
        for rs in sets.old.clone().iter().filter(|rs| is_active(rs)) {
            scale_in(r, sets, rs, 0).await?;
        }
        return Ok(());
    }
    if !util::is_rolling(&r.d) {
        return Ok(());
    }
    let allowed = if want > 0 { want + max_surge(&r.d) } else { 0 };
    let to_add = allowed - util::sum_spec(&active);
    let mut ordered = active;
    // Largest first; among equals, newer first when growing, older first when shrinking.
    ordered.sort_by(|a, b| {
        spec_replicas(b).cmp(&spec_replicas(a)).then_with(|| {
            if to_add > 0 {
                created_order(b, a)
            } else {
                created_order(a, b)
            }
        })
    });
    let mut added = 0;
    let mut sizes = Vec::new();
    for rs in &ordered {
        let p = proportion(r, rs, to_add, added);
        added += p;
        sizes.push(spec_replicas(rs) + p);
    }
    if let Some(first) = sizes.first_mut()
        && to_add != 0
    {
        *first = (*first + to_add - added).max(0);
    }
    for (rs, size) in ordered.iter().zip(sizes) {
        scale_in(r, sets, rs, size).await?;
    }
    Ok(())
}

/// How many replicas `rs` gains (or loses) of `to_add` (upstream's `GetProportion`).
fn proportion(r: &Rollout, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
    if spec_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = {
        let want = desired(&r.d);
        if want == 0 {
            -spec_replicas(rs)
        } else {
            let max_now = want + max_surge(&r.d);
            let before = util::int_annotation(rs, MAX_REPLICAS)
                .filter(|v| *v != 0)
                .unwrap_or_else(|| r.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
            if before == 0 {
                0
            } else {
                let size = f64::from(spec_replicas(rs)) * f64::from(max_now) / f64::from(before);
                // Rounded to the nearest count, as upstream's RoundToInt32.
                size.round() as i32 - spec_replicas(rs)
            }
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// Deletes the oldest scaled-down ReplicaSets beyond `revisionHistoryLimit` (upstream's
/// `cleanupDeployment`).
pub async fn cleanup(r: &Rollout, sets: &Sets) -> Result<(), kube::Error> {
    let Some(limit) = r.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
        return Ok(());
    };
    let mut cleanable: Vec<&ReplicaSet> = sets
        .old
        .iter()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let surplus = cleanable
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(0));
    if surplus == 0 {
        return Ok(());
    }
    cleanable.sort_by(|a, b| {
        util::revision(a)
            .cmp(&util::revision(b))
            .then_with(|| created_order(a, b))
    });
    for rs in cleanable.into_iter().take(surplus) {
        let status = rs.status.clone().unwrap_or_default();
        if status.replicas != 0
            || spec_replicas(rs) != 0
            || rs.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0)
        {
            continue;
        }
        tracing::info!(deployment = %r.name(), replicaset = %rs.name_any(), "deleting old replica set");
        match r
            .sets
            .delete(&rs.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
