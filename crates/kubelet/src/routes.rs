//! Pod routes between nodes, host-gw style (as flannel's host-gw backend): for every other Node
//! with a `spec.podCIDR` and an InternalIP, a route `podCIDR via InternalIP` in the main table,
//! set through rtnetlink and kept in step with a watch on Nodes (replaced when a node's address
//! or CIDR changes, deleted when the node goes). This needs the nodes to share an L2 segment
//! (the gateway must be on-link); where it is not, the kernel refuses the route and the agent
//! logs why. Pod traffic to other nodes' pods keeps its pod source address only where the CNI
//! bridge does not masquerade it (see `network`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use rtnetlink::RouteMessageBuilder;

/// A route to one node's pods: (pod CIDR address, prefix length) via the node's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRoute {
    /// The pod CIDR's network address.
    pub network: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The node's InternalIP.
    pub via: Ipv4Addr,
}

/// The route to `node`'s pods, if it has an IPv4 pod CIDR and an IPv4 InternalIP.
pub fn route_of(node: &Node) -> Option<PodRoute> {
    let cidr = node.spec.as_ref()?.pod_cidr.as_deref()?;
    let (net, len) = cidr.split_once('/')?;
    let via = node
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())?;
    Some(PodRoute {
        network: net.parse().ok()?,
        prefix: len.parse().ok().filter(|l| *l <= 32)?,
        via,
    })
}

/// Keeps the routes to the other nodes' pods until the task is dropped.
pub async fn run(client: Client, own_node: String) {
    let (connection, handle, _) = match rtnetlink::new_connection() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("pod routes: cannot open a netlink socket: {e}");
            return;
        }
    };
    tokio::spawn(connection);
    let message = |route: &PodRoute| {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.network, route.prefix)
            .gateway(route.via)
            .build()
    };
    let mut applied: BTreeMap<String, PodRoute> = BTreeMap::new();
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let stream = watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // A relist builds a fresh view, swapped in whole when it completes.
    let mut relist: Option<BTreeMap<String, Node>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(node)) => {
                nodes.insert(node.name_any(), node);
            }
            Ok(watcher::Event::Delete(node)) => {
                nodes.remove(&node.name_any());
            }
            Ok(watcher::Event::Init) => {
                relist = Some(BTreeMap::new());
                continue;
            }
            Ok(watcher::Event::InitApply(node)) => {
                relist.get_or_insert_default().insert(node.name_any(), node);
                continue;
            }
            Ok(watcher::Event::InitDone) => nodes = relist.take().unwrap_or_default(),
            Err(e) => {
                tracing::debug!("pod routes: node watch: {e}");
                continue;
            }
        }
        let wanted: BTreeMap<String, PodRoute> = nodes
            .iter()
            .filter(|(name, _)| **name != own_node)
            .filter_map(|(name, node)| Some((name.clone(), route_of(node)?)))
            .collect();
        for (name, route) in &applied {
            if wanted.get(name) != Some(route) {
                let msg = message(route);
                match handle.route().del(msg).execute().await {
                    Ok(()) => tracing::info!(node = %name, "pod route removed"),
                    Err(e) => tracing::debug!(node = %name, "pod route removal: {e}"),
                }
            }
        }
        applied.retain(|name, route| wanted.get(name) == Some(route));
        for (name, route) in wanted {
            if applied.contains_key(&name) {
                continue;
            }
            match handle
                .route()
                .add(message(&route))
                .replace()
                .execute()
                .await
            {
                Ok(()) => {
                    tracing::info!(node = %name, cidr = %format!("{}/{}", route.network, route.prefix), via = %route.via, "pod route set");
                    applied.insert(name, route);
                }
                Err(e) => tracing::warn!(
                    node = %name,
                    via = %route.via,
                    "cannot route to the node's pods (host-gw needs the nodes on one L2 segment): {e}"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_with_cidr_and_internal_ip_has_a_route() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b"},
            "spec": {"podCIDR": "10.42.1.0/24"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "b"},
                {"type": "InternalIP", "address": "192.168.5.2"}]}
        }))
        .unwrap();
        assert_eq!(
            route_of(&node),
            Some(PodRoute {
                network: Ipv4Addr::new(10, 42, 1, 0),
                prefix: 24,
                via: Ipv4Addr::new(192, 168, 5, 2)
            })
        );
        let mut no_cidr = node.clone();
        no_cidr.spec = None;
        assert_eq!(route_of(&no_cidr), None);
    }
}
