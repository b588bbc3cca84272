//! NoExecute taint eviction (upstream's `pkg/controller/tainteviction`, the old taint manager).
//!
//! Reflectors on Pods and Nodes; every second the pods on nodes with NoExecute taints are
//! checked. A pod that does not tolerate one of them is deleted at once; one that tolerates
//! them all is deleted when the smallest `tolerationSeconds` of the tolerations used has
//! passed since this controller first saw it there (never, if none of them has
//! `tolerationSeconds`). Before the delete the pod gets the `DisruptionTarget` condition
//! (reason `DeletionByTaintManager`), as upstream. A pod whose taints go away before its time
//! stays. Each eviction is recorded as a `TaintManagerEviction` event on the pod.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use scheduler::plugins::tainttoleration::tolerates;

/// How often pods on tainted nodes are checked.
const PERIOD: Duration = Duration::from_secs(1);

/// How long a pod may stay on a node with `taints` (only NoExecute ones count): `Some(ZERO)`
/// when it does not tolerate one of them, the smallest `tolerationSeconds` of the first
/// toleration matching each taint, or `None` (forever) when none of those has a limit.
/// Upstream's `getMinTolerationTime` over `GetMatchingTolerations`.
pub fn toleration_time(tolerations: &[Toleration], taints: &[Taint]) -> Option<Duration> {
    let mut min: Option<i64> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let Some(tol) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Some(Duration::ZERO);
        };
        if let Some(secs) = tol.toleration_seconds {
            let secs = secs.max(0);
            min = Some(min.map_or(secs, |m| m.min(secs)));
        }
    }
    min.map(|s| Duration::from_secs(s.unsigned_abs()))
}

/// Runs the controller forever.
/// `pods` is the shared pod informer's cache.
pub async fn run(client: Client, pods: Store<Pod>) {
    let (nodes, node_writer) = reflector::store::<Node>();
    tokio::spawn(
        reflector(
            node_writer,
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .for_each(|_| async {}),
    );
    if pods.wait_until_ready().await.is_err() || nodes.wait_until_ready().await.is_err() {
        return;
    }
    // Pod uid → when it was first seen on a NoExecute-tainted node it tolerates for a while.
    let mut since: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tick.tick().await;
        let tainted: HashMap<String, Vec<Taint>> = nodes
            .state()
            .iter()
            .filter_map(|n| {
                let taints: Vec<Taint> = n
                    .spec
                    .as_ref()?
                    .taints
                    .iter()
                    .flatten()
                    .filter(|t| t.effect == "NoExecute")
                    .cloned()
                    .collect();
                (!taints.is_empty()).then(|| (n.name_any(), taints))
            })
            .collect();
        let mut waiting = HashSet::new();
        if !tainted.is_empty() {
            for pod in pods.state() {
                let Some(taints) = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .and_then(|n| tainted.get(n))
                else {
                    continue;
                };
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let tolerations = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.tolerations.as_deref())
                    .unwrap_or_default();
                let Some(limit) = toleration_time(tolerations, taints) else {
                    continue;
                };
                let uid = pod.uid().unwrap_or_default();
                let first = *since.entry(uid.clone()).or_insert_with(Instant::now);
                if first.elapsed() >= limit {
                    evict(&client, &pod).await;
                } else {
                    waiting.insert(uid);
                }
            }
        }
        since.retain(|uid, _| waiting.contains(uid));
    }
}

/// Marks the pod as a disruption target, then deletes it (its own grace period).
async fn evict(client: &Client, pod: &Pod) {
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut conds = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conds.retain(|c| c.type_ != "DisruptionTarget");
    conds.push(k8s_openapi::api::core::v1::PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByTaintManager".into()),
        message: Some("Taint manager: deleting due to NoExecute taint".into()),
        last_transition_time: Some(Time(Timestamp::now())),
        ..Default::default()
    });
    let patch = serde_json::json!({"status": {"conditions": conds}});
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(pod = %name, error = %e, "DisruptionTarget condition not set");
    }
    crate::events::record(
        client,
        "taint-eviction-controller",
        pod,
        crate::events::NORMAL,
        "TaintManagerEviction",
        format!("Marking for deletion Pod {ns}/{name}"),
    )
    .await;
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!(namespace = %ns, pod = %name, "pod evicted by NoExecute taint"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => tracing::warn!(pod = %name, error = %e, "taint eviction failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taints(v: serde_json::Value) -> Vec<Taint> {
        serde_json::from_value(v).unwrap()
    }
    fn tols(v: serde_json::Value) -> Vec<Toleration> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn untolerated_taint_evicts_at_once() {
        let t = taints(json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]));
        assert_eq!(toleration_time(&[], &t), Some(Duration::ZERO));
        let other = tols(json!([{"key": "x", "operator": "Exists"}]));
        assert_eq!(toleration_time(&other, &t), Some(Duration::ZERO));
    }

    #[test]
    fn smallest_toleration_seconds_wins_and_no_limit_is_forever() {
        let t = taints(json!([
            {"key": "a", "effect": "NoExecute"},
            {"key": "b", "effect": "NoExecute"},
            {"key": "c", "effect": "NoSchedule"},
        ]));
        let limited = tols(json!([
            {"key": "a", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "b", "operator": "Exists", "tolerationSeconds": 5},
        ]));
        assert_eq!(toleration_time(&limited, &t), Some(Duration::from_secs(5)));
        let forever = tols(json!([{"operator": "Exists"}]));
        assert_eq!(toleration_time(&forever, &t), None);
        let negative = tols(json!([{"operator": "Exists", "tolerationSeconds": -3}]));
        assert_eq!(toleration_time(&negative, &t), Some(Duration::ZERO));
        assert_eq!(toleration_time(&[], &[]), None);
    }
}
