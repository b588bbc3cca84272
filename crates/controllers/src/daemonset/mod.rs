//! The DaemonSet controller, after upstream's `pkg/controller/daemon`: one pod per eligible
//! node.
//!
//! A reconcile reads the DaemonSet, the nodes and its namespace's pods from the API server,
//! claims pods by selector, records the template in a ControllerRevision `NAME-HASH` (pods are
//! labelled `controller-revision-hash=HASH` and `pod-template-generation`), then:
//! - creates a pod, pinned by a required node affinity on `metadata.name` and carrying the
//!   default daemon tolerations, on each node that should run one
//!   ([`util::should_run`]: nodeSelector, node affinity, taints) and has none;
//! - deletes failed pods, surplus pods (all but the oldest, or the surge pair's loser) and
//!   pods on nodes that no longer qualify (those that tolerate the node's NoExecute taints
//!   stay); pods of nodes that are gone are force-deleted (grace period 0), as upstream's pod
//!   garbage collector would;
//! - otherwise, with the RollingUpdate strategy, takes one rolling step
//!   ([`util::rolling_step`]: maxUnavailable without surge, maxSurge with it); OnDelete
//!   replaces pods only when they are deleted;
//! - writes the status kubectl shows (desired/current/ready/available/updated/misscheduled/
//!   unavailable, observedGeneration).
//!
//! Node events reconcile every DaemonSet; pod events the one that owns (or could adopt) them.

pub mod util;

use crate::informers::PodEvents;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::controller_utils::{
    claim, controller_ref, fresh_owner, is_available, is_ready, owners_of, until_available,
};
use crate::history::{RevisionLabel, Template, ensure_revision};
use crate::replicaset::slow_start;
use util::{is_updated, pod_for, rolling_step, should_run, surge_and_unavailable, target_node};

struct Ctx {
    client: Client,
}

/// Runs the controller forever.
pub async fn run(client: Client, pods: PodEvents) {
    let sets: Api<DaemonSet> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    let all = store.clone();
    controller
        .watches_shared_stream(pods, move |pod| {
            owners_of(&store, &*pod, |d: &DaemonSet| {
                d.spec.as_ref().map(|s| &s.selector)
            })
        })
        .watches(nodes, watcher::Config::default(), move |_node: Node| {
            all.state()
                .iter()
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(Ctx { client }),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "daemonset reconcile failed");
            }
        })
        .await;
}

async fn reconcile(cached: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let ns = cached.namespace().unwrap_or_default();
    let sets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
    let selector_of = |d: &DaemonSet| d.spec.as_ref().map(|s| s.selector.clone());
    let Some((ds, selector)) = fresh_owner(&sets, cached.as_ref(), false, selector_of).await?
    else {
        return Ok(Action::await_change());
    };
    let Some(spec) = ds.spec.clone() else {
        return Ok(Action::await_change());
    };
    let template = Template {
        template: &spec.template,
        selector: &spec.selector,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        history_limit: spec.revision_history_limit,
    };
    let hash = ensure_revision(&ctx.client, &ds, &template, RevisionLabel::Hash).await?;
    let nodes: Vec<Arc<Node>> = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let all = pods.list(&ListParams::default()).await?.items;
    let owned = claim(&pods, &controller_ref(&ds), &selector, all, true).await?;
    let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in owned {
        if let Some(n) = target_node(&p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    for pods in by_node.values_mut() {
        pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    }
    // Pods of nodes that are gone will never be stopped by an agent: they are force-deleted
    // (what upstream's pod garbage collector does) and otherwise ignored.
    let known: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    let (by_node, orphans): (BTreeMap<_, _>, BTreeMap<_, _>) =
        by_node.into_iter().partition(|(n, _)| known.contains(n));
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::background()
    };
    for p in orphans.values().flatten() {
        match pods.delete(&p.name_any(), &force).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let (surge, unavailable) = surge_and_unavailable(&ds, desired(&ds, &nodes));
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    let surge = if rolling { surge } else { 0 };
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = Timestamp::now();

    let (mut delete, mut create) = manage(&nodes, &by_node, &ds, &hash, surge, min_ready, now);
    if delete.is_empty() && create.is_empty() && rolling {
        let step = rolling_step(&by_node, &hash, surge, unavailable, min_ready, now);
        delete = step.delete;
        create = step.create;
    }
    let synced = sync_pods(&pods, &ds, &hash, &delete, &create).await;
    write_status(&sets, &ds, &nodes, &by_node, &hash, now).await?;
    synced?;
    let next = by_node
        .values()
        .flatten()
        .filter_map(|p| until_available(p, min_ready, now))
        .min();
    Ok(match next {
        Some(d) if min_ready > 0 => {
            Action::requeue(Duration::try_from(d).unwrap_or_default() + Duration::from_millis(100))
        }
        _ => Action::await_change(),
    })
}

/// The number of nodes that should run a daemon pod.
fn desired(ds: &DaemonSet, nodes: &[Arc<Node>]) -> i32 {
    i32::try_from(nodes.iter().filter(|n| should_run(ds, n).0).count()).unwrap_or(i32::MAX)
}

/// Upstream's `manage` / `podsShouldBeOnNode`: the pods to delete and the nodes that need a
/// pod.
fn manage(
    nodes: &[Arc<Node>],
    by_node: &BTreeMap<String, Vec<Pod>>,
    ds: &DaemonSet,
    hash: &str,
    surge: i32,
    min_ready: i32,
    now: Timestamp,
) -> (Vec<String>, Vec<String>) {
    let (mut delete, mut create) = (Vec::new(), Vec::new());
    let none = Vec::new();
    for node in nodes {
        let name = node.name_any();
        let (run, keep) = should_run(ds, node);
        let pods = by_node.get(&name).unwrap_or(&none);
        let live: Vec<&Pod> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if run && pods.is_empty() {
            create.push(name);
            continue;
        }
        if !keep {
            delete.extend(live.iter().map(|p| p.name_any()));
            continue;
        }
        let (failed, running): (Vec<&Pod>, Vec<&Pod>) = live
            .into_iter()
            .partition(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"));
        delete.extend(failed.iter().map(|p| p.name_any()));
        if running.len() <= 1 {
            continue;
        }
        if surge > 0 {
            // Keep the oldest updated and the oldest old pod; the old one goes once the new
            // one is available (or when it is not even ready).
            let (mut new, mut old) = (None, None);
            for p in running {
                let slot = if is_updated(p, hash) {
                    &mut new
                } else {
                    &mut old
                };
                if slot.is_none() {
                    *slot = Some(p);
                } else {
                    delete.push(p.name_any());
                }
            }
            if let (Some(n), Some(o)) = (new, old)
                && (!is_ready(o) || is_available(n, min_ready, now))
            {
                delete.push(o.name_any());
            }
        } else {
            delete.extend(running.iter().skip(1).map(|p| p.name_any()));
        }
    }
    (delete, create)
}

/// Deletes the named pods and creates one on each node of `create` (slow-start batches).
async fn sync_pods(
    pods: &Api<Pod>,
    ds: &DaemonSet,
    hash: &str,
    delete: &[String],
    create: &[String],
) -> Result<(), kube::Error> {
    let dp = DeleteParams::background();
    for r in join_all(delete.iter().map(|n| pods.delete(n, &dp))).await {
        match r {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let next = AtomicUsize::new(0);
    let pp = PostParams::default();
    let n = i32::try_from(create.len()).unwrap_or(i32::MAX);
    let (created, err) = slow_start(n, || {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let pod = pod_for(ds, create.get(i).map(String::as_str).unwrap_or(""), hash);
        let pp = &pp;
        async move { pods.create(pp, &pod).await }
    })
    .await;
    if !delete.is_empty() || !created.is_empty() {
        tracing::debug!(daemonset = %ds.name_any(), created = created.len(), deleted = delete.len(), "synced pods");
    }
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Upstream's `updateDaemonSetStatus`, written when it changed.
async fn write_status(
    sets: &Api<DaemonSet>,
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    by_node: &BTreeMap<String, Vec<Pod>>,
    hash: &str,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let mut st = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let (mut available, mut updated) = (0, 0);
    for node in nodes {
        let (run, _) = should_run(ds, node);
        let pods = by_node.get(&node.name_any()).filter(|p| !p.is_empty());
        match (run, pods) {
            (true, None) => st.desired_number_scheduled += 1,
            (true, Some(pods)) => {
                st.desired_number_scheduled += 1;
                st.current_number_scheduled += 1;
                // The oldest pod, running ones first.
                let pod = pods
                    .iter()
                    .find(|p| p.metadata.deletion_timestamp.is_none())
                    .unwrap_or(&pods[0]);
                if is_ready(pod) {
                    st.number_ready += 1;
                    if is_available(pod, min_ready, now) {
                        available += 1;
                    }
                }
                if is_updated(pod, hash) {
                    updated += 1;
                }
            }
            (false, Some(_)) => st.number_misscheduled += 1,
            (false, None) => {}
        }
    }
    st.number_available = Some(available);
    st.updated_number_scheduled = Some(updated);
    st.number_unavailable = Some(st.desired_number_scheduled - available);
    if ds.status.as_ref() == Some(&st) {
        return Ok(());
    }
    let mut new = ds.clone();
    new.status = Some(st);
    match sets
        .replace_status(&ds.name_any(), &PostParams::default(), &new)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
        Err(e) => Err(e),
    }
}
