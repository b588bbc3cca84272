//! LoadBalancer pool addresses this node binds (MetalLB's L2 mode): every address in a
//! LoadBalancer Service's `status.loadBalancer.ingress` that is not a node's own address
//! (so: one from `corten server --lb-pool`) is bound by exactly one node, on the dummy
//! interface [`INTERFACE`]; the kernel then answers ARP for it on the node's links, and the
//! service proxy (on every node) DNATs it like any LoadBalancer address. A node that newly
//! binds an address announces it with gratuitous ARP ([`crate::garp`], [`garp::ROUNDS`]
//! rounds, stopping early if it gives the address up), so that neighbours that cached the
//! previous holder's MAC switch at once. The node is chosen
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
use crate::garp;

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
    // What is bound now, for the announcements in flight (they stop for an address given up).
    let (bound_now, _) = watch::channel(BTreeSet::new());
    let mut announcers = tokio::task::JoinSet::new();
    loop {
        while announcers.try_join_next().is_some() {}
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
                // After a failed attempt what is bound is unknown: everything is announced.
                let before = bound.take().unwrap_or_default();
                let new: Vec<Ipv4Addr> = want.difference(&before).copied().collect();
                bound_now.send_replace(want.clone());
                if !new.is_empty() {
                    announcers.spawn(announce(new, bound_now.subscribe()));
                }
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
    announcers.abort_all();
    if bound.is_some_and(|b| !b.is_empty())
        && let Err(e) = crate::iface::remove(INTERFACE)
    {
        tracing::warn!("removing {INTERFACE}: {e:#}");
    }
}

/// Gratuitous ARP for newly bound `addrs`: [`garp::ROUNDS`] rounds, [`garp::INTERVAL`] apart,
/// each for the addresses still bound.
async fn announce(addrs: Vec<Ipv4Addr>, bound: watch::Receiver<BTreeSet<Ipv4Addr>>) {
    for round in 0..garp::ROUNDS {
        if round > 0 {
            tokio::time::sleep(garp::INTERVAL).await;
        }
        let still: Vec<Ipv4Addr> = {
            let bound = bound.borrow();
            addrs
                .iter()
                .copied()
                .filter(|a| bound.contains(a))
                .collect()
        };
        if still.is_empty() {
            return;
        }
        let sent = tokio::task::spawn_blocking(move || {
            still
                .into_iter()
                .map(|a| (a, garp::announce(a)))
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(sent) = sent else { return };
        for (address, result) in sent {
            match result {
                Ok(interfaces) if round == 0 && interfaces.is_empty() => tracing::warn!(
                    %address,
                    "gratuitous ARP: no interface has a subnet or default route for the address"
                ),
                Ok(interfaces) if round == 0 => {
                    tracing::info!(%address, ?interfaces, "gratuitous ARP sent")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%address, "gratuitous ARP: {e:#}"),
            }
        }
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
