//! The disruption controller (upstream's `pkg/controller/disruption`): the status of every
//! PodDisruptionBudget, which the API server's eviction reads.
//!
//! A reconcile lists the pods of the budget's namespace that its selector matches (policy/v1:
//! an empty selector matches them all) and computes, as upstream's `getExpectedPodCount`:
//! - `minAvailable: N` → desiredHealthy N, expectedPods = the matching pods;
//! - `minAvailable: P%` or `maxUnavailable` → expectedPods = the scale of the pods'
//!   controllers (a ReplicaSet's, or its Deployment's; a ReplicationController's; a
//!   StatefulSet's), desiredHealthy = P% of it rounded up, or the scale minus maxUnavailable
//!   (a percentage rounded up). A pod without a supported controller makes the budget fail
//!   safe: no disruptions allowed, condition `SyncFailed`.
//!
//! currentHealthy counts the Ready pods that are not being deleted and not in
//! `status.disruptedPods` (pods the eviction API let go, kept there for two minutes or until
//! they are deleted); disruptionsAllowed = currentHealthy - desiredHealthy (never below 0);
//! the `DisruptionAllowed` condition says `SufficientPods` or `InsufficientPods`. A budget that
//! fails safe gets a `CalculateExpectedPodCountFailed` warning event.

use crate::informers::PodEvents;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::controller_utils::{controller_of, is_ready};
use crate::deployment::util::scaled_value;

/// How long an evicted pod stays in `disruptedPods` without being deleted (upstream's
/// `DeletionTimeout`).
const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

struct Ctx {
    client: Client,
}

/// The budget's selector, parsed; `None` when it has none (it then selects nothing).
fn selector(pdb: &PodDisruptionBudget) -> Option<api::selector::LabelSelector> {
    let sel: &LabelSelector = pdb.spec.as_ref()?.selector.as_ref()?;
    api::selector::LabelSelector::from_k8s(sel).ok()
}

fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    selector(pdb).is_some_and(|s| s.matches(&labels))
}

/// Runs the controller forever.
pub async fn run(client: Client, pods: PodEvents) {
    let pdbs: Api<PodDisruptionBudget> = Api::all(client.clone());
    let controller = Controller::new(pdbs, watcher::Config::default());
    let store = controller.store();
    controller
        .watches_shared_stream(pods, move |pod| {
            let ns = pod.namespace();
            store
                .state()
                .iter()
                .filter(|b| b.namespace() == ns && selects(b, &pod))
                .map(|b| ObjectRef::from_obj(b.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(Ctx { client }),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "disruption reconcile failed");
            }
        })
        .await;
}

/// Why the expected count could not be worked out.
struct FailSafe(String);

/// The scale of the pods' controllers, each counted once.
async fn expected_scale(client: &Client, ns: &str, pods: &[Pod]) -> Result<i32, FailSafe> {
    let mut seen = HashSet::new();
    let mut total = 0;
    for pod in pods {
        let Some(owner) = controller_of(&pod.metadata) else {
            return Err(FailSafe(format!(
                "found no controller ref for pod \"{}\"",
                pod.name_any()
            )));
        };
        if !seen.insert(owner.uid.clone()) {
            continue;
        }
        let scale = match owner.kind.as_str() {
            "ReplicaSet" => {
                let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                    .get_opt(&owner.name)
                    .await
                    .ok()
                    .flatten();
                let deployment = rs.as_ref().and_then(|rs| {
                    controller_of(&rs.metadata)
                        .filter(|o| o.kind == "Deployment")
                        .cloned()
                });
                match (rs, deployment) {
                    (Some(_), Some(d)) => {
                        if !seen.insert(d.uid.clone()) {
                            continue;
                        }
                        Api::<Deployment>::namespaced(client.clone(), ns)
                            .get_opt(&d.name)
                            .await
                            .ok()
                            .flatten()
                            .map(|d| d.spec.and_then(|s| s.replicas).unwrap_or(1))
                    }
                    (Some(rs), None) => Some(rs.spec.and_then(|s| s.replicas).unwrap_or(1)),
                    (None, _) => None,
                }
            }
            "ReplicationController" => Api::<ReplicationController>::namespaced(client.clone(), ns)
                .get_opt(&owner.name)
                .await
                .ok()
                .flatten()
                .map(|rc| rc.spec.and_then(|s| s.replicas).unwrap_or(1)),
            "StatefulSet" => Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get_opt(&owner.name)
                .await
                .ok()
                .flatten()
                .map(|s| s.spec.and_then(|s| s.replicas).unwrap_or(1)),
            _ => None,
        };
        match scale {
            Some(n) => total += n,
            None => {
                return Err(FailSafe(format!(
                    "could not find the scale of {} \"{}\" of pod \"{}\"",
                    owner.kind,
                    owner.name,
                    pod.name_any()
                )));
            }
        }
    }
    Ok(total)
}

/// `disruptedPods` without the entries of pods that are gone or being deleted, or that are
/// older than [`DELETION_TIMEOUT`]; and when the oldest kept one expires.
fn live_disrupted(
    disrupted: &BTreeMap<String, Time>,
    pods: &[Pod],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Timestamp>) {
    let mut kept = BTreeMap::new();
    let mut next: Option<Timestamp> = None;
    for (name, at) in disrupted {
        let live = pods
            .iter()
            .any(|p| p.name_any() == *name && p.metadata.deletion_timestamp.is_none());
        let expiry = at.0 + DELETION_TIMEOUT;
        if live && expiry > now {
            kept.insert(name.clone(), at.clone());
            next = Some(next.map_or(expiry, |n: Timestamp| n.min(expiry)));
        }
    }
    (kept, next)
}

/// Ready pods that are not being deleted nor disrupted.
fn current_healthy(pods: &[Pod], disrupted: &BTreeMap<String, Time>) -> i32 {
    let n = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(&p.name_any()))
        .filter(|p| is_ready(p))
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The budget's status (without conditions): expected pods and desired healthy ones.
async fn counts(
    client: &Client,
    pdb: &PodDisruptionBudget,
    ns: &str,
    pods: &[Pod],
) -> Result<(i32, i32), FailSafe> {
    let spec = pdb.spec.clone().unwrap_or_default();
    if let Some(max) = &spec.max_unavailable {
        let expected = expected_scale(client, ns, pods).await?;
        let unavailable = scaled_value(Some(max), expected, true);
        return Ok((expected, (expected - unavailable).max(0)));
    }
    match &spec.min_available {
        Some(min @ k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(_)) => {
            let expected = expected_scale(client, ns, pods).await?;
            Ok((expected, scaled_value(Some(min), expected, true)))
        }
        Some(min) => Ok((
            i32::try_from(pods.len()).unwrap_or(i32::MAX),
            scaled_value(Some(min), 0, true),
        )),
        None => Ok((0, 0)),
    }
}

/// The `DisruptionAllowed` condition, keeping the transition time when the status stays.
fn allowed_condition(
    old: Option<&PodDisruptionBudgetStatus>,
    allowed: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if allowed { "True" } else { "False" };
    let since = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionAllowed"))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pdb.namespace().unwrap_or_default();
    let pods: Vec<Pod> = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| selects(&pdb, p))
        .collect();
    let now = Timestamp::now();
    let now_time = Time(now);
    let old = pdb.status.as_ref();
    let generation = pdb.metadata.generation;
    let disrupted = old
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    let (disrupted, next) = live_disrupted(&disrupted, &pods, now);
    let healthy = current_healthy(&pods, &disrupted);
    let status = match counts(&ctx.client, &pdb, &ns, &pods).await {
        Ok((expected, desired)) => {
            let allowed = if expected <= 0 {
                0
            } else {
                (healthy - desired).max(0)
            };
            let (reason, ok) = if allowed > 0 {
                ("SufficientPods", true)
            } else {
                ("InsufficientPods", false)
            };
            PodDisruptionBudgetStatus {
                current_healthy: healthy,
                desired_healthy: desired,
                expected_pods: expected,
                disruptions_allowed: allowed,
                disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
                observed_generation: generation,
                conditions: Some(vec![allowed_condition(
                    old,
                    ok,
                    reason,
                    String::new(),
                    generation,
                    &now_time,
                )]),
            }
        }
        Err(FailSafe(why)) => {
            if old.and_then(|s| s.conditions.as_ref()).is_none_or(|cs| {
                !cs.iter()
                    .any(|c| c.reason == "SyncFailed" && c.message == why)
            }) {
                crate::events::record(
                    &ctx.client,
                    "controllermanager",
                    pdb.as_ref(),
                    crate::events::WARNING,
                    "CalculateExpectedPodCountFailed",
                    format!("Failed to calculate the number of expected pods: {why}"),
                )
                .await;
            }
            tracing::info!(pdb = %pdb.name_any(), namespace = %ns, reason = %why, "disruption budget fails safe");
            PodDisruptionBudgetStatus {
                current_healthy: healthy,
                desired_healthy: 0,
                expected_pods: 0,
                disruptions_allowed: 0,
                disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
                observed_generation: generation,
                conditions: Some(vec![allowed_condition(
                    old,
                    false,
                    "SyncFailed",
                    why,
                    generation,
                    &now_time,
                )]),
            }
        }
    };
    if old != Some(&status) {
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        // The whole status replaces the old one (disruptedPods entries must be able to go); a
        // stale cached object is a conflict, retried.
        let mut fresh = pdb.as_ref().clone();
        fresh.status = Some(status);
        api.replace_status(&pdb.name_any(), &Default::default(), &fresh)
            .await?;
    }
    Ok(match next {
        Some(at) => Action::requeue(
            Duration::try_from(at.duration_since(now)).unwrap_or_default()
                + Duration::from_millis(100),
        ),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ready: bool, deleting: bool) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        });
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn healthy_pods_exclude_unready_deleting_and_disrupted() {
        let pods = [
            pod("a", true, false),
            pod("b", true, false),
            pod("c", false, false),
            pod("d", true, true),
        ];
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let disrupted = BTreeMap::from([
            (
                "b".to_string(),
                Time("2026-01-01T00:00:30Z".parse().unwrap()),
            ),
            (
                "d".to_string(),
                Time("2026-01-01T00:00:30Z".parse().unwrap()),
            ),
            (
                "gone".to_string(),
                Time("2026-01-01T00:00:30Z".parse().unwrap()),
            ),
            (
                "a".to_string(),
                Time("2025-12-31T23:00:00Z".parse().unwrap()),
            ),
        ]);
        let (live, next) = live_disrupted(&disrupted, &pods, now);
        assert_eq!(live.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(next, Some("2026-01-01T00:02:30Z".parse().unwrap()));
        assert_eq!(current_healthy(&pods, &live), 1);
        assert_eq!(current_healthy(&pods, &BTreeMap::new()), 2);
    }

    #[test]
    fn empty_selector_selects_all_and_missing_none() {
        let p = pod("a", true, false);
        let mut pdb: PodDisruptionBudget =
            serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {"selector": {}}}))
                .unwrap();
        assert!(selects(&pdb, &p));
        pdb.spec.as_mut().unwrap().selector = None;
        assert!(!selects(&pdb, &p));
    }
}
