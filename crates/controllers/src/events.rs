//! Events from the controllers: core/v1 Events (what `kubectl describe` and `kubectl get
//! events` show) with source component `COMPONENT`, one per call (no aggregation of repeats
//! yet). Best effort: a failed write is logged, never an error of the controller.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};

/// Event type Normal.
pub const NORMAL: &str = "Normal";
/// Event type Warning.
pub const WARNING: &str = "Warning";

/// Records an event about `obj` from `component` (e.g. `node-controller`).
pub async fn record<K>(
    client: &Client,
    component: &str,
    obj: &K,
    type_: &str,
    reason: &str,
    message: String,
) where
    K: Resource<DynamicType = ()>,
{
    let reference: ObjectReference = obj.object_ref(&());
    // Events of cluster-scoped objects live in `default`, as upstream records them.
    let ns = reference
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let now = Time(Timestamp::now());
    let base = reference.name.clone().unwrap_or_default();
    let suffix = format!("{:x}", now.0.as_nanosecond() & 0xffff_ffff_ffff);
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{base}.{suffix}")),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: reference,
        reason: Some(reason.to_string()),
        message: Some(message),
        type_: Some(type_.to_string()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: Some(component.to_string()),
            host: None,
        }),
        reporting_component: Some(component.to_string()),
        reporting_instance: Some(component.to_string()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(reason, error = %e, "event not recorded");
    }
}
