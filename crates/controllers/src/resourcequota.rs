//! The resource quota controller (upstream's `pkg/controller/resourcequota`): keeps every
//! ResourceQuota's `status.hard` (= `spec.hard`) and `status.used`, computed from the objects
//! of its namespace with [`api::quota::usage`] — the same accounting the API server's quota
//! admission charges on create.
//!
//! A quota is recomputed when it changes, when a pod of its namespace changes, and every
//! [`RESYNC`] (which gives back what deleted objects of other kinds used). Kinds are listed
//! only when a tracked resource needs them; `count/` of kinds outside [`KINDS`] stays 0.
//! A quota with scopes or a scope selector counts only the pods and PersistentVolumeClaims
//! they select ([`api::quota_scope::covers`]).

use crate::informers::PodEvents;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::quota::{self, Usage};
use api::quota_scope;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

/// How often every quota is recomputed.
pub const RESYNC: Duration = Duration::from_secs(10);

/// The kinds whose objects are counted: (group, version, kind, plural).
pub const KINDS: [(&str, &str, &str, &str); 16] = [
    ("", "v1", "Pod", "pods"),
    ("", "v1", "Service", "services"),
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "Secret", "secrets"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("", "v1", "ReplicationController", "replicationcontrollers"),
    ("", "v1", "ResourceQuota", "resourcequotas"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
    ("networking.k8s.io", "v1", "Ingress", "ingresses"),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    ),
];

struct Ctx {
    client: Client,
}

/// Whether the kind `(group, plural)` can contribute to the resource `name`.
fn contributes(group: &str, plural: &str, name: &str) -> bool {
    if name == quota::count_name(group, plural) || (group.is_empty() && name == plural) {
        return true;
    }
    match (group, plural) {
        ("", "pods") => {
            name.starts_with("requests.") && name != "requests.storage"
                || name.starts_with("limits.")
                || name == "cpu"
                || name == "memory"
        }
        ("", "services") => name.starts_with("services."),
        ("", "persistentvolumeclaims") => {
            name == "requests.storage"
                || name
                    .split_once(quota::STORAGE_CLASS_SUFFIX)
                    .is_some_and(|(class, what)| {
                        !class.is_empty()
                            && matches!(what, "requests.storage" | "persistentvolumeclaims")
                    })
        }
        _ => false,
    }
}

/// Runs the controller forever.
pub async fn run(client: Client, pods: PodEvents) {
    let quotas: Api<ResourceQuota> = Api::all(client.clone());
    let controller = Controller::new(quotas, watcher::Config::default());
    let store = controller.store();
    controller
        .watches_shared_stream(pods, move |pod| {
            let ns = pod.namespace();
            store
                .state()
                .iter()
                .filter(|q| q.namespace() == ns)
                .map(|q| ObjectRef::from_obj(q.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(Ctx { client }),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "resourcequota reconcile failed");
            }
        })
        .await;
}

async fn reconcile(cached: Arc<ResourceQuota>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    if cached.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cached.namespace().unwrap_or_default();
    let hard: BTreeMap<String, Quantity> = cached
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let mut used = Usage::new();
    let quota_json = serde_json::to_value(cached.as_ref()).unwrap_or_default();
    let scoped = quota_scope::is_scoped(&quota_json);
    for (group, version, kind, plural) in KINDS {
        let scopable = matches!(plural, "pods" | "persistentvolumeclaims");
        if !hard.keys().any(|k| contributes(group, plural, k)) || (scoped && !scopable) {
            continue;
        }
        let ar = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
        for obj in api.list(&ListParams::default()).await?.items {
            if obj.metadata.deletion_timestamp.is_some() && plural != "pods" {
                continue;
            }
            let value = serde_json::to_value(&obj).unwrap_or_default();
            if !quota_scope::covers(&quota_json, group, plural, &value) {
                continue;
            }
            for (k, v) in quota::usage(group, plural, &value) {
                if hard.contains_key(&k) {
                    *used.entry(k).or_insert(0) += v;
                }
            }
        }
    }
    let used: BTreeMap<String, Quantity> = hard
        .keys()
        .map(|k| {
            let v = used.get(k).copied().unwrap_or(0);
            (k.clone(), Quantity(quota::format(v)))
        })
        .collect();
    let status = ResourceQuotaStatus {
        hard: Some(hard),
        used: Some(used),
    };
    if cached.status.as_ref() != Some(&status) {
        let mut fresh = cached.as_ref().clone();
        fresh.status = Some(status);
        let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &ns);
        api.replace_status(&cached.name_any(), &PostParams::default(), &fresh)
            .await?;
    }
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_kinds_feed_which_resources() {
        assert!(contributes("", "pods", "pods"));
        assert!(contributes("", "pods", "requests.cpu"));
        assert!(contributes("", "pods", "limits.memory"));
        assert!(!contributes("", "pods", "requests.storage"));
        assert!(contributes(
            "",
            "persistentvolumeclaims",
            "requests.storage"
        ));
        assert!(contributes("apps", "deployments", "count/deployments.apps"));
        assert!(!contributes("apps", "deployments", "deployments"));
        assert!(contributes("", "configmaps", "configmaps"));
        assert!(contributes("", "services", "services.nodeports"));
        assert!(contributes(
            "",
            "persistentvolumeclaims",
            "gold.storageclass.storage.k8s.io/requests.storage"
        ));
        assert!(contributes(
            "",
            "persistentvolumeclaims",
            "gold.storageclass.storage.k8s.io/persistentvolumeclaims"
        ));
        assert!(!contributes(
            "",
            "persistentvolumeclaims",
            "gold.storageclass.storage.k8s.io/limits.cpu"
        ));
    }
}
