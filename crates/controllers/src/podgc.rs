//! Pod garbage collection of terminating pods that were never scheduled (upstream's
//! `pkg/controller/podgc`, `gcUnscheduledTerminating`).
//!
//! A pod deleted before it was bound to a node has no node agent to finish it: kept by a
//! finalizer (a Job's `batch.kubernetes.io/job-tracking`), it would stay `Pending` and
//! terminating for good, and a Job with `podReplacementPolicy: Failed` would neither count
//! nor replace it. As upstream, such a pod is marked `Failed` (through `pods/status`, unless
//! it already finished) and then deleted with a grace period of 0. Upstream scans every 20 s;
//! here each change from the shared pod informer is looked at as it comes.
//!
//! Not done: upstream's other passes (pods of deleted nodes, terminated pods above a
//! threshold, terminating pods on out-of-service nodes).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};

use crate::informers::PodEvents;

/// Whether the pod is terminating without ever having been scheduled.
pub fn unscheduled_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        && pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_none_or(str::is_empty)
}

/// Whether the pod has already finished (Succeeded or Failed).
fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Runs the collector forever on `pods`, a subscription to the shared pod informer.
pub async fn run(client: Client, mut pods: PodEvents) {
    // Pods (by uid) being collected, so that the events the collection itself causes do not
    // start it again.
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    while let Some(pod) = pods.next().await {
        if !unscheduled_terminating(&pod) {
            continue;
        }
        let uid = pod.uid().unwrap_or_default();
        if !busy.lock().is_ok_and(|mut b| b.insert(uid.clone())) {
            continue;
        }
        let (client, busy) = (client.clone(), busy.clone());
        tokio::spawn(async move {
            if let Err(e) = mark_failed_and_delete(&client, &pod).await {
                tracing::debug!(pod = %pod.name_any(), error = %e, "pod gc failed");
            }
            if let Ok(mut b) = busy.lock() {
                b.remove(&uid);
            }
        });
    }
}

/// Upstream's `markFailedAndDeletePod`: phase Failed unless finished, then a delete with a
/// grace period of 0 (preconditioned on the uid).
async fn mark_failed_and_delete(client: &Client, pod: &Pod) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let name = pod.name_any();
    if !finished(pod) {
        let patch = serde_json::json!({"status": {"phase": "Failed"}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(node: Option<&str>, deleted: bool, phase: &str) -> Pod {
        let mut v = json!({"metadata": {"name": "p"}, "spec": {"containers": []},
            "status": {"phase": phase}});
        if let Some(n) = node {
            v["spec"]["nodeName"] = json!(n);
        }
        if deleted {
            v["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_unscheduled_terminating_pods_are_collected() {
        assert!(unscheduled_terminating(&pod(None, true, "Pending")));
        assert!(unscheduled_terminating(&pod(Some(""), true, "Pending")));
        assert!(
            !unscheduled_terminating(&pod(Some("n1"), true, "Running")),
            "its node agent finishes it"
        );
        assert!(!unscheduled_terminating(&pod(None, false, "Pending")));
        assert!(finished(&pod(None, true, "Failed")));
        assert!(!finished(&pod(None, true, "Pending")));
    }
}
