//! LoadBalancer pool addresses this node binds (MetalLB's L2 mode): every address in a
//! LoadBalancer Service's `status.loadBalancer.ingress` that is not a node's own address
//! (so: one from `corten server --lb-pool`) is bound by exactly one node, on the dummy
//! interface [`INTERFACE`]; the kernel then answers ARP for it on the node's links, and the
//! service proxy (on every node) DNATs it like any LoadBalancer address. The node is chosen
//! among the Ready nodes sorted by name: the one at index `address mod count`, so every
//! node computes the same answer and a node that goes NotReady hands its addresses on.
//! [`announced`] is the pure choice; [`run`] keeps the interface in step (watches on Services
//! and Nodes, bursts coalesced) and removes it on clean shutdown.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::events::{Pending, follow};

/// The interface pool addresses are bound to.
pub const INTERFACE: &str = "corten-lb0";

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_addresses(node: &Node) -> impl Iterator<Item = Ipv4Addr> + '_ {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|a| a.address.parse().ok())
}

/// The pool addresses `node_name` should bind, given every Service and Node.
pub fn announced<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    nodes: &[&Node],
    node_name: &str,
) -> BTreeSet<Ipv4Addr> {
    let own: BTreeSet<Ipv4Addr> = nodes.iter().flat_map(|n| node_addresses(n)).collect();
    let mut ready_nodes: Vec<&str> = nodes
        .iter()
        .filter(|n| ready(n))
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    ready_nodes.sort();
    if ready_nodes.is_empty() {
        return BTreeSet::new();
    }
    services
        .into_iter()
        .filter(|s| s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer"))
        .filter_map(|s| s.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref())
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok())
        .filter(|ip| !own.contains(ip))
        .filter(|ip| {
            let i = u32::from(*ip) as usize % ready_nodes.len();
            ready_nodes[i] == node_name
        })
        .collect()
}

/// Binds this node's pool addresses on [`INTERFACE`] until `shutdown`, then removes it.
pub async fn run(client: Client, node_name: String, mut shutdown: watch::Receiver<bool>) {
    let pending = Arc::new(Pending::new(2));
    let (services, svc_writer) = reflector::store::<Service>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let watches = [
        tokio::spawn(follow(
            reflector::reflector(
                svc_writer,
                watcher(Api::<Service>::all(client.clone()), Default::default()),
            ),
            pending.clone(),
            0,
        )),
        tokio::spawn(follow(
            reflector::reflector(
                node_writer,
                watcher(Api::<Node>::all(client), Default::default()),
            ),
            pending.clone(),
            1,
        )),
    ];
    let mut bound: Option<BTreeSet<Ipv4Addr>> = None;
    loop {
        tokio::select! {
            _ = pending.notify.notified() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        if !pending.all_ready() {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        pending.take();
        let want = want(&services, &nodes, &node_name);
        if bound.as_ref() == Some(&want) {
            continue;
        }
        let w = want.clone();
        let result =
            tokio::task::spawn_blocking(move || crate::iface::set_addresses(INTERFACE, &w))
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r);
        match result {
            Ok(()) => {
                tracing::info!(addresses = ?want, "load balancer addresses bound");
                bound = Some(want);
            }
            Err(e) => {
                tracing::warn!("binding load balancer addresses (retrying): {e:#}");
                bound = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
                pending.mark();
            }
        }
    }
    for w in watches {
        w.abort();
    }
    if bound.is_some_and(|b| !b.is_empty())
        && let Err(e) = crate::iface::remove(INTERFACE)
    {
        tracing::warn!("removing {INTERFACE}: {e:#}");
    }
}

fn want(services: &Store<Service>, nodes: &Store<Node>, node_name: &str) -> BTreeSet<Ipv4Addr> {
    let nodes = nodes.state();
    let refs: Vec<&Node> = nodes.iter().map(|n| &**n).collect();
    let services = services.state();
    announced(services.iter().map(|s| &**s), &refs, node_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ip: &str, ready: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "addresses": [{"type": "InternalIP", "address": ip}],
            },
        }))
        .unwrap()
    }

    fn lb(ips: &[&str]) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "d"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": ips.iter().map(|i| json!({"ip": i})).collect::<Vec<_>>()}},
        }))
        .unwrap()
    }

    #[test]
    fn each_pool_address_on_exactly_one_ready_node() {
        let nodes = [node("a", "10.0.0.1", true), node("b", "10.0.0.2", true)];
        let refs: Vec<&Node> = nodes.iter().collect();
        let svcs = [lb(&["10.9.0.4", "10.9.0.5"]), lb(&["10.0.0.1", "10.0.0.2"])];
        let a = announced(&svcs, &refs, "a");
        let b = announced(&svcs, &refs, "b");
        // Node addresses (no pool) are never bound; each pool address goes to one node.
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(a, BTreeSet::from([ip("10.9.0.4")]));
        assert_eq!(b, BTreeSet::from([ip("10.9.0.5")]));
        // A NotReady node hands its addresses on.
        let nodes = [node("a", "10.0.0.1", true), node("b", "10.0.0.2", false)];
        let refs: Vec<&Node> = nodes.iter().collect();
        assert_eq!(announced(&svcs, &refs, "a").len(), 2);
        assert!(announced(&svcs, &refs, "b").is_empty());
    }
}
