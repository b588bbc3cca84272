//! The HorizontalPodAutoscaler controller (upstream's `pkg/controller/podautoscaler`), for
//! autoscaling/v2 HPAs over a Deployment, ReplicaSet, StatefulSet or ReplicationController,
//! through their `scale` subresource.
//!
//! Every HPA is synced every [`SYNC_PERIOD`] (and on its changes), as upstream does:
//! - a target scaled to zero (with `minReplicas` above zero) is left alone: ScalingActive False,
//!   `ScalingDisabled`;
//! - a target above `maxReplicas` or below `minReplicas` is rescaled to the bound
//!   (`SuccessfulRescale` event, `lastScaleTime`), ScalingLimited True (`TooManyReplicas` /
//!   `TooFewReplicas`), as upstream does before it looks at any metric;
//! - within the bounds the desired count comes from the metrics, and corten has no metrics
//!   source yet (no metrics.k8s.io / custom metrics API is served): the controller says so the
//!   way upstream does when its metrics client fails — ScalingActive False,
//!   `FailedGetResourceMetric` (a Warning event too) — and keeps the current count.
//!
//! The decision is [`decide`], a pure function.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
};
use k8s_openapi::api::core::v1::ReplicationController;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::events;

/// How often every HPA is looked at (upstream's `--horizontal-pod-autoscaler-sync-period`).
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// The component named in events.
const COMPONENT: &str = "horizontal-pod-autoscaler";

struct Ctx {
    client: Client,
}

/// Runs the controller forever.
pub async fn run(client: Client) {
    let hpas: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
    Controller::new(hpas, watcher::Config::default())
        .run(
            reconcile,
            |_, _, _| Action::requeue(SYNC_PERIOD),
            Arc::new(Ctx { client }),
        )
        .for_each(|_| async {})
        .await;
}

/// What one sync decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The replica count the target should have.
    pub desired: i32,
    /// Why it is rescaled (None: it is not).
    pub rescale_reason: Option<&'static str>,
    /// The conditions: (type, status, reason, message).
    pub conditions: Vec<(&'static str, &'static str, &'static str, String)>,
}

/// Upstream's `reconcileAutoscaler` for a target at `current` replicas, with no metrics
/// source available (`metrics` names the first metric, e.g. `cpu`, for the message).
pub fn decide(current: i32, min: i32, max: i32, metric: &str) -> Decision {
    let able = (
        "AbleToScale",
        "True",
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".to_string(),
    );
    if current == 0 && min != 0 {
        return Decision {
            desired: 0,
            rescale_reason: None,
            conditions: vec![
                able,
                (
                    "ScalingActive",
                    "False",
                    "ScalingDisabled",
                    "scaling is disabled since the replica count of the target is zero".to_string(),
                ),
            ],
        };
    }
    if current > max || current < min {
        let (desired, reason, limited, message) = if current > max {
            (
                max,
                "Current number of replicas above Spec.MaxReplicas",
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        } else {
            (
                min,
                "Current number of replicas below Spec.MinReplicas",
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        };
        return Decision {
            desired,
            rescale_reason: Some(reason),
            conditions: vec![
                (
                    "AbleToScale",
                    "True",
                    "SucceededRescale",
                    format!("the HPA controller was able to update the target scale to {desired}"),
                ),
                ("ScalingLimited", "True", limited, message.to_string()),
            ],
        };
    }
    Decision {
        desired: current,
        rescale_reason: None,
        conditions: vec![
            able,
            (
                "ScalingActive",
                "False",
                "FailedGetResourceMetric",
                format!(
                    "the HPA was unable to compute the replica count: unable to get metrics for \
                     resource {metric}: no metrics returned from resource metrics API"
                ),
            ),
        ],
    }
}

/// The target's current replicas, through its scale subresource.
async fn get_scale(client: &Client, ns: &str, kind: &str, name: &str) -> kube::Result<Option<i32>> {
    let scale = match kind {
        "Deployment" => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .get_scale(name)
                .await
        }
        "ReplicaSet" => {
            Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .get_scale(name)
                .await
        }
        "StatefulSet" => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get_scale(name)
                .await
        }
        "ReplicationController" => {
            Api::<ReplicationController>::namespaced(client.clone(), ns)
                .get_scale(name)
                .await
        }
        _ => return Ok(None),
    };
    match scale {
        Ok(s) => Ok(Some(s.spec.and_then(|s| s.replicas).unwrap_or(0))),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets the target's replicas through its scale subresource.
async fn set_scale(client: &Client, ns: &str, kind: &str, name: &str, n: i32) -> kube::Result<()> {
    let patch = Patch::Merge(json!({"spec": {"replicas": n}}));
    let pp = PatchParams::default();
    match kind {
        "Deployment" => {
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch_scale(name, &pp, &patch)
                .await?;
        }
        "ReplicaSet" => {
            Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .patch_scale(name, &pp, &patch)
                .await?;
        }
        "StatefulSet" => {
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .patch_scale(name, &pp, &patch)
                .await?;
        }
        _ => {
            Api::<ReplicationController>::namespaced(client.clone(), ns)
                .patch_scale(name, &pp, &patch)
                .await?;
        }
    }
    Ok(())
}

async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> kube::Result<Action> {
    if hpa.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = hpa.namespace().unwrap_or_default();
    let name = hpa.name_any();
    let Some(spec) = hpa.spec.as_ref() else {
        return Ok(Action::requeue(SYNC_PERIOD));
    };
    let target = &spec.scale_target_ref;
    let status = hpa.status.clone().unwrap_or_default();
    let now = Time(Timestamp::now());
    let mut new_status = HorizontalPodAutoscalerStatus {
        current_replicas: status.current_replicas,
        desired_replicas: status.desired_replicas,
        last_scale_time: status.last_scale_time.clone(),
        observed_generation: hpa.metadata.generation,
        current_metrics: None,
        conditions: None,
    };
    let decision = match get_scale(&ctx.client, &ns, &target.kind, &target.name).await? {
        None => {
            let message = format!(
                "the HPA controller was unable to get the target's current scale: {} {:?} not found",
                target.kind, target.name
            );
            events::record(
                &ctx.client,
                COMPONENT,
                hpa.as_ref(),
                events::WARNING,
                "FailedGetScale",
                message.clone(),
            )
            .await;
            Decision {
                desired: status.desired_replicas,
                rescale_reason: None,
                conditions: vec![("AbleToScale", "False", "FailedGetScale", message)],
            }
        }
        Some(current) => {
            let metric = spec
                .metrics
                .iter()
                .flatten()
                .find_map(|m| m.resource.as_ref().map(|r| r.name.clone()))
                .unwrap_or_else(|| "cpu".to_string());
            let min = spec.min_replicas.unwrap_or(1);
            let decision = decide(current, min, spec.max_replicas, &metric);
            new_status.current_replicas = Some(current);
            if let Some(reason) = decision.rescale_reason {
                set_scale(
                    &ctx.client,
                    &ns,
                    &target.kind,
                    &target.name,
                    decision.desired,
                )
                .await?;
                new_status.last_scale_time = Some(now.clone());
                events::record(
                    &ctx.client,
                    COMPONENT,
                    hpa.as_ref(),
                    events::NORMAL,
                    "SuccessfulRescale",
                    format!("New size: {}; reason: {reason}", decision.desired),
                )
                .await;
            } else if decision
                .conditions
                .iter()
                .any(|c| c.2 == "FailedGetResourceMetric")
                && !condition_is(&status, "ScalingActive", "FailedGetResourceMetric")
            {
                events::record(
                    &ctx.client,
                    COMPONENT,
                    hpa.as_ref(),
                    events::WARNING,
                    "FailedGetResourceMetric",
                    decision.conditions[1].3.clone(),
                )
                .await;
            }
            decision
        }
    };
    new_status.desired_replicas = decision.desired;
    new_status.conditions = Some(
        decision
            .conditions
            .iter()
            .map(|(type_, st, reason, message)| {
                // lastTransitionTime moves only when the status flips.
                let since = status
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == *type_ && c.status == *st)
                    .and_then(|c| c.last_transition_time.clone())
                    .unwrap_or_else(|| now.clone());
                HorizontalPodAutoscalerCondition {
                    type_: type_.to_string(),
                    status: st.to_string(),
                    reason: Some(reason.to_string()),
                    message: Some(message.clone()),
                    last_transition_time: Some(since),
                }
            })
            .collect(),
    );
    if hpa.status.as_ref() != Some(&new_status) {
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), &ns);
        let body = json!({"status": new_status});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(body))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Action::requeue(SYNC_PERIOD))
}

fn condition_is(status: &HorizontalPodAutoscalerStatus, type_: &str, reason: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.reason.as_deref() == Some(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_first_then_metrics() {
        let d = decide(1, 3, 5, "cpu");
        assert_eq!(d.desired, 3);
        assert_eq!(
            d.rescale_reason,
            Some("Current number of replicas below Spec.MinReplicas")
        );
        assert!(d.conditions.iter().any(|c| c.2 == "TooFewReplicas"));
        let d = decide(8, 3, 5, "cpu");
        assert_eq!(d.desired, 5);
        assert!(d.conditions.iter().any(|c| c.2 == "TooManyReplicas"));
        let d = decide(4, 3, 5, "memory");
        assert_eq!((d.desired, d.rescale_reason), (4, None));
        assert!(d.conditions[1].3.contains("resource memory"));
        assert_eq!(d.conditions[1].0, "ScalingActive");
        assert_eq!(d.conditions[1].1, "False");
    }

    #[test]
    fn a_target_scaled_to_zero_is_left_alone() {
        let d = decide(0, 2, 5, "cpu");
        assert_eq!((d.desired, d.rescale_reason), (0, None));
        assert_eq!(d.conditions[1].2, "ScalingDisabled");
        // minReplicas 0 (HPAScaleToZero): zero is within the bounds.
        let d = decide(0, 0, 5, "cpu");
        assert_eq!(d.conditions[1].2, "FailedGetResourceMetric");
    }
}
