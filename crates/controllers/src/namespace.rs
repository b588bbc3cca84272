//! The namespace controller: when a namespace is deleted (it shows `Terminating`), delete
//! everything in it, and once nothing is left remove the `kubernetes` finalizer through the
//! `finalize` subresource, after which the API server removes the namespace.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::resources::namespaced_apis;

/// The finalizer the namespace controller owns.
pub const FINALIZER: &str = "kubernetes";

struct Ctx {
    client: Client,
}

/// Runs the controller forever.
pub async fn run(client: Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(Ctx { client }))
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "namespace reconcile failed");
            }
        })
        .await;
}

fn error_policy(_ns: Arc<Namespace>, _e: &kube::Error, _ctx: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let remaining = delete_contents(&ctx.client, &name).await?;
    if remaining > 0 {
        tracing::debug!(namespace = %name, remaining, "waiting for namespace contents to go");
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let has_finalizer = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER));
    if has_finalizer {
        let mut finalized = (*ns).clone();
        if let Some(f) = finalized.spec.as_mut().and_then(|s| s.finalizers.as_mut()) {
            f.retain(|x| x != FINALIZER);
        }
        let api: Api<Namespace> = Api::all(ctx.client.clone());
        match api
            .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
            .await
        {
            Ok(_) => tracing::info!(namespace = %name, "namespace finalized"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Action::await_change())
}

/// Deletes every object in namespace `ns`; returns how many are still there.
async fn delete_contents(client: &Client, ns: &str) -> Result<usize, kube::Error> {
    let mut remaining = 0;
    for (ar, api) in namespaced_apis(client, ns) {
        let list = match api.list_metadata(&ListParams::default()).await {
            Ok(l) => l,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => continue,
            Err(e) => return Err(e),
        };
        for obj in &list.items {
            remaining += 1;
            if obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match api
                .delete(&obj.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => {
                    tracing::debug!(kind = %ar.kind, name = %obj.name_any(), error = %e, "delete failed");
                    return Err(e);
                }
            }
        }
    }
    Ok(remaining)
}
