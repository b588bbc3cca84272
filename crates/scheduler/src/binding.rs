//! What the scheduler writes: bindings through `pods/binding` (run as tasks, so that the next
//! pod is scheduled while the API server persists the last binding, as upstream's binding
//! cycle goroutines) and core/v1 events, with a repeated FailedScheduling message counted on
//! the last event instead of adding one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Binding, Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::Semaphore;

use crate::SCHEDULER_NAME;
use crate::cache::key_of;
use crate::cycle::{Shared, fingerprint, needs_scheduling};
use crate::framework::pod_priority;
use crate::queue::Key;

/// How many bindings may be in flight at once.
pub const MAX_BINDINGS_IN_FLIGHT: usize = 64;

/// The last FailedScheduling event written for a pod.
struct LastEvent {
    name: String,
    count: i32,
    message: String,
}

/// Writes bindings and events.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    shared: Arc<Shared>,
    last: Arc<Mutex<HashMap<Key, LastEvent>>>,
    in_flight: Arc<Semaphore>,
}

impl Writer {
    /// A writer through `client`.
    pub fn new(client: Client, shared: Arc<Shared>) -> Self {
        Writer {
            client,
            shared,
            last: Arc::default(),
            in_flight: Arc::new(Semaphore::new(MAX_BINDINGS_IN_FLIGHT)),
        }
    }

    /// Forgets the FailedScheduling event of a pod that is gone.
    pub fn forget(&self, key: &str) {
        if let Ok(mut l) = self.last.lock() {
            l.remove(key);
        }
    }

    /// Binds `pod` (already assumed on `node` in the cache) in a task; waits only while
    /// [`MAX_BINDINGS_IN_FLIGHT`] bindings are pending.
    pub async fn bind(&self, key: Key, pod: Arc<Pod>, node: String) {
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let w = self.clone();
        tokio::spawn(async move {
            w.bind_now(&key, &pod, &node).await;
            drop(permit);
        });
    }

    fn requeue(&self, key: &str, pod: &Pod) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.failed(key, &fingerprint(pod), pod_priority(pod), Instant::now());
        }
        self.shared.wake.notify_one();
    }

    fn unassume(&self, key: &str) {
        if let Ok(mut c) = self.shared.cache.lock() {
            c.forget(key);
        }
    }

    async fn bind_now(&self, key: &str, pod: &Arc<Pod>, node: &str) {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                uid: pod.uid(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        let result = api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await;
        match result {
            Ok(_) => {
                tracing::debug!(pod = %key, node, "bound");
                self.forget(key);
                if let Ok(mut q) = self.shared.queue.lock() {
                    q.forget(key);
                }
                let message = format!("Successfully assigned {key} to {node}");
                self.emit(pod, "Scheduled", "Normal", &message).await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                self.unassume(key);
                let bound = match api.get_opt(&name).await {
                    Ok(Some(p)) => !needs_scheduling(&p),
                    Ok(None) => true,
                    Err(_) => false,
                };
                if bound {
                    tracing::debug!(pod = %key, "already bound or gone");
                    if let Ok(mut q) = self.shared.queue.lock() {
                        q.forget(key);
                    }
                } else {
                    self.requeue(key, pod);
                }
            }
            Err(e) => {
                tracing::warn!(pod = %key, node, error = %e, "binding failed");
                self.unassume(key);
                self.requeue(key, pod);
            }
        }
    }

    /// Writes a core/v1 event about `pod`; a repeat of the last FailedScheduling message
    /// bumps that event's count instead of adding one.
    pub async fn emit(&self, pod: &Pod, reason: &str, type_: &str, message: &str) {
        let key = key_of(pod);
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let now = Time(jiff::Timestamp::now());
        let repeat = if reason == "FailedScheduling" {
            self.last.lock().ok().and_then(|mut l| {
                let last = l.get_mut(&key).filter(|l| l.message == message)?;
                last.count += 1;
                Some((last.name.clone(), last.count))
            })
        } else {
            None
        };
        if let Some((name, count)) = repeat {
            let patch = serde_json::json!({"count": count, "lastTimestamp": now});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                Err(e) => tracing::debug!(error = %e, "event update failed; creating one"),
            }
        }
        let name = format!(
            "{}.{:x}",
            pod.name_any(),
            jiff::Timestamp::now().as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                namespace: Some(ns),
                uid: pod.uid(),
                resource_version: pod.resource_version(),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.into()),
            source: Some(EventSource {
                component: Some(SCHEDULER_NAME.into()),
                host: None,
            }),
            reporting_component: Some(SCHEDULER_NAME.into()),
            reporting_instance: Some(SCHEDULER_NAME.into()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) if reason == "FailedScheduling" => {
                if let Ok(mut l) = self.last.lock() {
                    l.insert(
                        key,
                        LastEvent {
                            name,
                            count: 1,
                            message: message.into(),
                        },
                    );
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "event create failed"),
        }
    }
}
