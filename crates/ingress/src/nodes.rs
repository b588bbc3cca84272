//! Which nodes serve ingress, and so which addresses go into the Ingresses' status.
//!
//! Every node that runs the ingress controller marks its Node with [`SERVING_LABEL`]`=true`
//! (the controller patches it through the API at start, retrying until the Node is
//! registered); a node whose ingress is disabled has the label removed ([`unmark`]). Every
//! controller instance then computes the same status from the Node watch —
//! [`status_addresses`]: the InternalIPs of the Ready nodes carrying the mark, sorted — and
//! writes an Ingress's status only when it differs, so several controllers converge on one
//! value instead of taking turns.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

/// The Node label saying that the node's ingress controller serves (value `true`).
pub const SERVING_LABEL: &str = "ingress.corten.io/serving";

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn serving(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVING_LABEL))
        .is_some_and(|v| v == "true")
}

/// The addresses every controller writes to `status.loadBalancer.ingress` (pure): the
/// InternalIP addresses of the Ready nodes marked [`SERVING_LABEL`], sorted, without repeats.
pub fn status_addresses<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = nodes
        .into_iter()
        .filter(|n| ready(n) && serving(n))
        .filter_map(|n| n.status.as_ref()?.addresses.as_ref())
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn label_patch(value: Option<&str>) -> serde_json::Value {
    serde_json::json!({"metadata": {"labels": {SERVING_LABEL: value}}})
}

/// Marks Node `node` as serving ingress; retries (every second) until the Node exists and the
/// patch succeeds. Runs until done or dropped.
pub async fn mark(client: Client, node: String) {
    let api = Api::<Node>::all(client);
    let patch = label_patch(Some("true"));
    let mut logged = false;
    loop {
        match api
            .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(%node, label = SERVING_LABEL, "ingress: node marked as serving");
                return;
            }
            Err(e) => {
                // A Node not yet registered is the usual case at start: quiet until it lasts.
                if !logged && !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    tracing::warn!(%node, "ingress: marking the node (retrying): {e}");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Removes the mark from Node `node` (ingress disabled there). A Node that does not exist has
/// no mark; other failures are retried for a while, then logged.
pub async fn unmark(client: Client, node: String) {
    let api = Api::<Node>::all(client);
    let patch = label_patch(None);
    for attempt in 0..30 {
        match api
            .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(e) if attempt < 29 => {
                tracing::debug!(%node, "ingress: unmarking the node (retrying): {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => tracing::warn!(%node, "ingress: cannot remove {SERVING_LABEL}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ips: &[&str], ready: &str, mark: Option<&str>) -> Node {
        let mut labels = serde_json::Map::new();
        if let Some(v) = mark {
            labels.insert(SERVING_LABEL.into(), json!(v));
        }
        let mut addresses: Vec<_> = ips
            .iter()
            .map(|ip| json!({"type": "InternalIP", "address": ip}))
            .collect();
        addresses.push(json!({"type": "Hostname", "address": name}));
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {
                "conditions": [{"type": "Ready", "status": ready}],
                "addresses": addresses,
            },
        }))
        .unwrap()
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ready_marked_nodes_internal_ips_sorted() {
        let nodes = [
            node("c", &["10.0.0.30"], "True", Some("true")),
            node("a", &["10.0.0.9", "10.0.0.10"], "True", Some("true")),
            // Not Ready (False or Unknown), unmarked, or marked otherwise: left out.
            node("d", &["10.0.0.40"], "False", Some("true")),
            node("e", &["10.0.0.50"], "Unknown", Some("true")),
            node("f", &["10.0.0.60"], "True", None),
            node("g", &["10.0.0.70"], "True", Some("false")),
            // The same address twice (a misconfigured pair) is listed once.
            node("h", &["10.0.0.30"], "True", Some("true")),
        ];
        let want = ips(&["10.0.0.9", "10.0.0.10", "10.0.0.30"]);
        assert_eq!(status_addresses(&nodes), want, "numeric order, not text");
        // Every controller computes the same, whatever order its watch lists the nodes in.
        let mut reversed: Vec<&Node> = nodes.iter().collect();
        reversed.reverse();
        assert_eq!(status_addresses(reversed), want);
        assert!(status_addresses(&nodes[2..6]).is_empty());
    }

    #[test]
    fn mark_and_unmark_patches() {
        assert_eq!(
            label_patch(Some("true")),
            json!({"metadata": {"labels": {"ingress.corten.io/serving": "true"}}})
        );
        // JSON merge patch: null removes the label.
        assert_eq!(
            label_patch(None),
            json!({"metadata": {"labels": {"ingress.corten.io/serving": null}}})
        );
    }
}
