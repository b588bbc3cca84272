//! The Deployment controller, after upstream's `pkg/controller/deployment`: rolls a
//! Deployment's pod template out through ReplicaSets named `<deployment>-<pod-template-hash>`.
//!
//! Each reconcile reads the Deployment and lists the ReplicaSets of its namespace from the API
//! server, claims those matching the selector (adopting orphans, releasing non-matching ones),
//! then, as upstream's `syncDeployment`:
//! - a paused Deployment, or one whose replica count changed ("scaling event"), is only
//!   scaled ([`sync`]: proportional scaling across ReplicaSets mid-rollout), its old
//!   ReplicaSets cleaned up (when paused) and its status written;
//! - otherwise the strategy runs: [`rolling`] (maxSurge / maxUnavailable) or [`recreate`]
//!   (every old pod gone before the new ReplicaSet is scaled up);
//! - [`progress`] computes the status and the Available and Progressing conditions, and
//!   requeues a Deployment to notice when its progress deadline passes.
//!
//! Rollback needs nothing here: `kubectl rollout undo` copies an old ReplicaSet's template
//! back into the Deployment (apps/v1 has no `spec.rollbackTo`), and the controller then finds
//! that ReplicaSet as the new one and gives it the next revision ([`util`]'s revision
//! annotations, with the old number kept in `deployment.kubernetes.io/revision-history`).

pub mod progress;
pub mod recreate;
pub mod rolling;
pub mod sync;
pub mod util;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::controller_utils::{Selector, claim, controller_ref, owners_of};

struct Ctx {
    client: Client,
}

/// One reconcile's view of a Deployment: the fresh object (its status is edited in memory
/// and written once at the end) and the APIs of its namespace.
pub struct Rollout {
    /// The Deployment.
    pub d: Deployment,
    /// ReplicaSets of its namespace.
    pub sets: Api<ReplicaSet>,
    /// Deployments of its namespace.
    pub deployments: Api<Deployment>,
    /// Pods of its namespace.
    pub pods: Api<Pod>,
}

impl Rollout {
    /// The Deployment's name.
    pub fn name(&self) -> String {
        self.d.name_any()
    }
}

/// The new ReplicaSet (whose template is the Deployment's) and the old ones.
#[derive(Clone, Default)]
pub struct Sets {
    /// The ReplicaSet running the current template, if it exists.
    pub new: Option<ReplicaSet>,
    /// Every other ReplicaSet the Deployment owns, including scaled-down ones.
    pub old: Vec<ReplicaSet>,
}

impl Sets {
    /// Old and new together.
    pub fn all(&self) -> Vec<ReplicaSet> {
        self.old.iter().chain(self.new.iter()).cloned().collect()
    }

    /// Replaces the ReplicaSet with `rs`'s uid by `rs` (after an update).
    pub fn replace(&mut self, rs: ReplicaSet) {
        let uid = rs.metadata.uid.clone();
        if let Some(n) = self.new.as_mut().filter(|n| n.metadata.uid == uid) {
            *n = rs;
        } else if let Some(o) = self.old.iter_mut().find(|o| o.metadata.uid == uid) {
            *o = rs;
        }
    }
}

fn selector_of(d: &Deployment) -> Option<&LabelSelector> {
    d.spec.as_ref().map(|s| &s.selector)
}

/// Runs the controller forever.
pub async fn run(client: Client) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let controller = Controller::new(deployments, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(sets, watcher::Config::default(), move |rs| {
            owners_of(&store, &rs, selector_of)
        })
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_millis(500)),
            Arc::new(Ctx { client }),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "deployment reconcile failed");
            }
        })
        .await;
}

async fn reconcile(cached: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let ns = cached.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let d = match deployments.get_opt(&cached.name_any()).await? {
        Some(d) if d.metadata.uid == cached.metadata.uid => d,
        _ => return Ok(Action::await_change()),
    };
    // Deleting: the garbage collector removes the ReplicaSets.
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(spec) = d.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let selector = Selector::new(&spec.selector);
    if !selector.is_valid() {
        tracing::warn!(deployment = %d.name_any(), namespace = %ns, "empty or invalid selector, ignoring");
        return Ok(Action::await_change());
    }
    let paused = spec.paused.unwrap_or(false);
    let sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let listed = sets.list(&ListParams::default()).await?.items;
    let owned = claim(&sets, &controller_ref(&d), &selector, listed, true).await?;
    let mut r = Rollout {
        d,
        sets,
        deployments,
        pods: Api::namespaced(ctx.client.clone(), &ns),
    };
    progress::check_paused(&mut r.d);
    if paused {
        return sync::sync(&mut r, owned).await;
    }
    if sync::is_scaling_event(&mut r, owned.clone()).await? {
        return sync::sync(&mut r, owned).await;
    }
    if util::is_rolling(&r.d) {
        rolling::rollout(&mut r, owned).await
    } else {
        recreate::rollout(&mut r, owned).await
    }
}
