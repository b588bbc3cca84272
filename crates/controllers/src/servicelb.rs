//! The built-in service load balancer (k3s's ServiceLB counterpart): every Service of type
//! LoadBalancer without a `loadBalancerClass` gets the InternalIP of every Ready, schedulable
//! node as `status.loadBalancer.ingress` (`ipMode: VIP`); the service proxy on each node
//! answers on those addresses. When a Service stops being a LoadBalancer its ingress is
//! cleared. An address pool bound on a node (MetalLB's L2 mode, `--lb-pool`) is not done yet.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

struct Ctx {
    client: Client,
    nodes: Store<Node>,
}

/// Runs the controller forever.
pub async fn run(client: Client) {
    let services: Api<Service> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let (node_store, writer) = kube::runtime::reflector::store();
    let node_stream = kube::runtime::reflector(writer, watcher(nodes, watcher::Config::default()))
        .map(|e| e.map(|_| ()));
    let controller = Controller::new(services, watcher::Config::default());
    controller
        // Any node change may change every LoadBalancer's addresses.
        .reconcile_all_on(node_stream.filter_map(|r| async move { r.ok() }))
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(Ctx {
                client,
                nodes: node_store,
            }),
        )
        .for_each(|_| async {})
        .await;
}

/// The ingress addresses for LoadBalancer services: the InternalIP of every Ready,
/// schedulable node, sorted.
pub fn node_ingress(nodes: &[Arc<Node>]) -> Vec<LoadBalancerIngress> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .filter_map(|n| n.status.as_ref())
        .filter(|s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP" && !a.address.contains(':'))
        .map(|a| a.address.clone())
        .collect();
    ips.sort();
    ips.dedup();
    ips.into_iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip),
            ip_mode: Some("VIP".into()),
            ..Default::default()
        })
        .collect()
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let spec = svc.spec.clone().unwrap_or_default();
    let ours = spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.is_none();
    let current = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default();
    let want = if ours {
        node_ingress(&ctx.nodes.state())
    } else if spec.type_.as_deref() == Some("LoadBalancer") {
        // Another implementation's class: not ours to touch.
        return Ok(Action::await_change());
    } else {
        vec![]
    };
    if current == want || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<Service> =
        Api::namespaced(ctx.client.clone(), &svc.namespace().unwrap_or_default());
    let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": want}}});
    api.patch_status(
        &svc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    tracing::debug!(service = %ObjectRef::from_obj(&*svc), "load balancer ingress set");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(ip: &str, ready: &str, unschedulable: bool) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": ip},
                "spec": {"unschedulable": unschedulable},
                "status": {
                    "conditions": [{"type": "Ready", "status": ready}],
                    "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": "h"}],
                },
            }))
            .unwrap(),
        )
    }

    #[test]
    fn ready_schedulable_node_addresses() {
        let nodes = [
            node("10.0.0.2", "True", false),
            node("10.0.0.1", "True", false),
            node("10.0.0.3", "False", false),
            node("10.0.0.4", "True", true),
        ];
        let ing = node_ingress(&nodes);
        let ips: Vec<_> = ing.iter().map(|i| i.ip.clone().unwrap()).collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(ing[0].ip_mode.as_deref(), Some("VIP"));
    }
}
