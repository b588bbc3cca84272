//! Pod events as the kubelet writes them (core/v1 Events from component `kubelet` on this
//! host): Pulling, Pulled, Created, Started, Killing, BackOff, Unhealthy, FailedMount...
//! A repeat of the same reason and message for the same object bumps the event's count
//! instead of adding one, as upstream's event correlator does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

/// Writes events about pods; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    host: String,
    seen: Arc<Mutex<HashMap<EventKey, (String, i32)>>>,
}

/// (object UID, reason, message): events with the same key are one event with a count.
type EventKey = (String, String, String);

/// Event types.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Type Normal.
    Normal,
    /// Type Warning.
    Warning,
}

impl Recorder {
    /// A recorder for the agent of node `host`.
    pub fn new(client: Client, host: &str) -> Self {
        Self {
            client,
            host: host.to_string(),
            seen: Default::default(),
        }
    }

    /// Records an event about `pod` (in the background: events never hold up pod work).
    /// `field_path` names the container (`spec.containers{NAME}`) when the event is about one.
    pub fn pod(
        &self,
        pod: &Pod,
        field_path: Option<String>,
        kind: Kind,
        reason: &str,
        message: String,
    ) {
        let this = self.clone();
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.name_any()),
            namespace: pod.namespace(),
            uid: pod.uid(),
            field_path,
            ..Default::default()
        };
        let reason = reason.to_string();
        tokio::spawn(async move { this.write(reference, kind, &reason, &message).await });
    }

    async fn write(&self, reference: ObjectReference, kind: Kind, reason: &str, message: &str) {
        let ns = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let now = Time(jiff::Timestamp::now());
        let key = (
            reference.uid.clone().unwrap_or_default(),
            reason.to_string(),
            message.to_string(),
        );
        let previous = self.seen.lock().ok().and_then(|m| m.get(&key).cloned());
        if let Some((name, count)) = previous {
            let patch = serde_json::json!({"count": count + 1, "lastTimestamp": now});
            if api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                if let Ok(mut m) = self.seen.lock() {
                    m.insert(key, (name, count + 1));
                }
                return;
            }
        }
        let name = format!(
            "{}.{:x}",
            reference.name.clone().unwrap_or_default(),
            jiff::Timestamp::now().as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns),
                ..Default::default()
            },
            involved_object: reference,
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(
                match kind {
                    Kind::Normal => "Normal",
                    Kind::Warning => "Warning",
                }
                .into(),
            ),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(self.host.clone()),
            }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.host.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                if let Ok(mut m) = self.seen.lock() {
                    if m.len() > 10_000 {
                        m.clear();
                    }
                    m.insert(key, (name, 1));
                }
            }
            Err(e) => tracing::debug!(error = %e, "event create failed"),
        }
    }
}

/// The field path of container `name` (init containers are `spec.initContainers{NAME}`).
pub fn container_path(name: &str, init: bool) -> Option<String> {
    Some(if init {
        format!("spec.initContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    })
}
