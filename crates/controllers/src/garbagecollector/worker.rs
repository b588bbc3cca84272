//! What the workers do, through the API only: the checks and writes of upstream's
//! `attemptToDeleteItem`, `processDeletingDependentsItem` and `attemptToOrphanWorker`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use serde_json::{Value, json};

use super::graph::{GraphNode, Work};
use super::{FOREGROUND, Gc, ORPHAN};

type Meta = PartialObjectMeta<DynamicObject>;

/// Handles one item of work.
pub async fn process(gc: &Gc, work: &Work) -> Result<(), kube::Error> {
    match work {
        Work::Delete(uid) => attempt_to_delete(gc, uid).await,
        Work::Orphan(uid) => orphan_dependents(gc, uid).await,
    }
}

/// A dynamic API for `resource` in `namespace`.
fn api_for(
    client: &Client,
    resource: &api::ResourceInfo,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let ar = crate::resources::api_resource(resource);
    match namespace {
        Some(ns) if resource.namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

fn node_api(gc: &Gc, node: &GraphNode) -> Api<DynamicObject> {
    api_for(&gc.client, node.resource, node.namespace.as_deref())
}

/// The live object of `node`, if it still exists with that uid.
async fn latest(gc: &Gc, node: &GraphNode, uid: &str) -> Result<Option<Meta>, kube::Error> {
    let obj = node_api(gc, node).get_metadata_opt(&node.name).await?;
    Ok(obj.filter(|o| o.metadata.uid.as_deref() == Some(uid)))
}

fn has_finalizer(obj: &Meta, finalizer: &str) -> bool {
    obj.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// Ignores the answers that mean someone else got there first.
fn tolerate(r: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        other => other,
    }
}

/// How an owner reference stands.
enum Owner {
    /// The owner exists.
    Solid,
    /// The owner is gone (or was replaced by another object of the same name).
    Dangling,
    /// The owner is being deleted in the foreground, waiting for its dependents.
    Waiting,
}

/// Classifies one reference of `node` with a GET of the owner (upstream's `isDangling`).
async fn classify(gc: &Gc, node: &GraphNode, r: &OwnerReference) -> Result<Owner, kube::Error> {
    let (group, version) = match r.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", r.api_version.as_str()),
    };
    let Some(owner_res) = api::Registry::global().by_kind(group, version, &r.kind) else {
        // A kind corten does not serve: never collect on its account.
        tracing::debug!(kind = %r.kind, api_version = %r.api_version, "owner of an unknown kind");
        return Ok(Owner::Solid);
    };
    if owner_res.namespaced && node.namespace.is_none() {
        tracing::debug!(name = %node.name, kind = %r.kind, "cluster-scoped object with a namespaced owner");
        return Ok(Owner::Solid);
    }
    let api = api_for(&gc.client, owner_res, node.namespace.as_deref());
    let owner = api.get_metadata_opt(&r.name).await?;
    Ok(match owner {
        None => Owner::Dangling,
        Some(o) if o.metadata.uid.as_deref() != Some(r.uid.as_str()) => Owner::Dangling,
        Some(o) if o.metadata.deletion_timestamp.is_some() && has_finalizer(&o, FOREGROUND) => {
            Owner::Waiting
        }
        Some(_) => Owner::Solid,
    })
}

/// Upstream's `attemptToDeleteItem`.
async fn attempt_to_delete(gc: &Gc, uid: &str) -> Result<(), kube::Error> {
    let Some(node) = gc.graph().get(uid).cloned() else {
        return Ok(());
    };
    let Some(latest) = latest(gc, &node, uid).await? else {
        // Gone already; the watch reports the deletion.
        return Ok(());
    };
    if latest.metadata.deletion_timestamp.is_some() {
        if has_finalizer(&latest, FOREGROUND) {
            return process_deleting_dependents(gc, uid, &node, &latest).await;
        }
        return Ok(());
    }
    let refs = latest.metadata.owner_references.clone().unwrap_or_default();
    if refs.is_empty() {
        return Ok(());
    }
    let (mut solid, mut dangling, mut waiting) = (vec![], vec![], vec![]);
    for r in &refs {
        match classify(gc, &node, r).await? {
            Owner::Solid => solid.push(r.uid.clone()),
            Owner::Dangling => dangling.push(r.uid.clone()),
            Owner::Waiting => waiting.push(r.uid.clone()),
        }
    }
    let rv = latest.metadata.resource_version.clone();
    if !solid.is_empty() {
        if dangling.is_empty() && waiting.is_empty() {
            return Ok(());
        }
        // Keep the object for its live owners; drop the references to the others (a waiting
        // owner would otherwise wait for this object forever).
        let keep: Vec<&OwnerReference> = refs
            .iter()
            .filter(|r| !dangling.contains(&r.uid) && !waiting.contains(&r.uid))
            .collect();
        tracing::info!(name = %node.name, kind = node.resource.kind, "removing references to owners that are gone");
        let patch = json!({"metadata": {"resourceVersion": rv, "ownerReferences": keep}});
        return tolerate(patch_meta(gc, &node, &patch).await);
    }
    let policy = if !waiting.is_empty() && gc.graph().has_dependents(uid) {
        // A dependent that also deletes its dependents in the foreground could wait for this
        // owner in a cycle: stop blocking owners first (upstream does the same).
        let cycle = {
            let graph = gc.graph();
            graph
                .dependents(uid)
                .iter()
                .any(|d| graph.get(d).is_some_and(|n| n.deleting_dependents))
        };
        if cycle {
            let unblocked: Vec<OwnerReference> = refs
                .iter()
                .cloned()
                .map(|mut r| {
                    r.block_owner_deletion = Some(false);
                    r
                })
                .collect();
            let patch = json!({"metadata": {"resourceVersion": rv, "ownerReferences": unblocked}});
            tolerate(patch_meta(gc, &node, &patch).await)?;
        }
        PropagationPolicy::Foreground
    } else if has_finalizer(&latest, ORPHAN) {
        PropagationPolicy::Orphan
    } else if has_finalizer(&latest, FOREGROUND) {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    };
    tracing::info!(name = %node.name, kind = node.resource.kind, ?policy, "deleting an object whose owners are gone");
    let params = DeleteParams {
        propagation_policy: Some(policy),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    tolerate(
        node_api(gc, &node)
            .delete(&node.name, &params)
            .await
            .map(|_| ()),
    )
}

/// Upstream's `processDeletingDependentsItem`: an owner deleting its dependents in the
/// foreground loses its finalizer once no dependent blocks it.
async fn process_deleting_dependents(
    gc: &Gc,
    uid: &str,
    node: &GraphNode,
    latest: &Meta,
) -> Result<(), kube::Error> {
    let blocking = gc.graph().blocking_dependents(uid);
    if blocking.is_empty() {
        tracing::info!(name = %node.name, kind = node.resource.kind, "foreground deletion done");
        return remove_finalizer(gc, node, latest, FOREGROUND).await;
    }
    let graph = gc.graph();
    for d in blocking {
        if graph.get(&d).is_some_and(|n| !n.deleting_dependents) {
            gc.queue.add(Work::Delete(d));
        }
    }
    Ok(())
}

/// Upstream's `attemptToOrphanWorker`: remove the owner from every dependent, then the
/// `orphan` finalizer.
async fn orphan_dependents(gc: &Gc, uid: &str) -> Result<(), kube::Error> {
    let Some(owner) = gc.graph().get(uid).cloned() else {
        return Ok(());
    };
    let dependents: Vec<(String, GraphNode)> = {
        let graph = gc.graph();
        graph
            .dependents(uid)
            .into_iter()
            .filter_map(|d| graph.get(&d).cloned().map(|n| (d, n)))
            .collect()
    };
    for (dep_uid, dep) in dependents {
        let Some(obj) = latest(gc, &dep, &dep_uid).await? else {
            continue;
        };
        let refs = obj.metadata.owner_references.clone().unwrap_or_default();
        if !refs.iter().any(|r| r.uid == uid) {
            continue;
        }
        let keep: Vec<&OwnerReference> = refs.iter().filter(|r| r.uid != uid).collect();
        let keep = if keep.is_empty() {
            Value::Null
        } else {
            json!(keep)
        };
        let patch = json!({"metadata": {
            "resourceVersion": obj.metadata.resource_version,
            "ownerReferences": keep,
        }});
        match patch_meta(gc, &dep, &patch).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            other => other?,
        }
    }
    let Some(latest) = latest(gc, &owner, uid).await? else {
        return Ok(());
    };
    tracing::info!(name = %owner.name, kind = owner.resource.kind, "dependents orphaned");
    remove_finalizer(gc, &owner, &latest, ORPHAN).await
}

/// Removes `finalizer` from `obj` (conditional on its resourceVersion).
async fn remove_finalizer(
    gc: &Gc,
    node: &GraphNode,
    obj: &Meta,
    finalizer: &str,
) -> Result<(), kube::Error> {
    if !has_finalizer(obj, finalizer) {
        return Ok(());
    }
    let left: Vec<&String> = obj
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .collect();
    let left = if left.is_empty() {
        Value::Null
    } else {
        json!(left)
    };
    let patch = json!({"metadata": {
        "resourceVersion": obj.metadata.resource_version,
        "finalizers": left,
    }});
    match patch_meta(gc, node, &patch).await {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other,
    }
}

/// A JSON merge patch of an object's metadata.
async fn patch_meta(gc: &Gc, node: &GraphNode, patch: &Value) -> Result<(), kube::Error> {
    node_api(gc, node)
        .patch_metadata(&node.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| ())
}
