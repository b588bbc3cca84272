//! The node IPAM controller: gives every Node a pod CIDR (`spec.podCIDR` / `spec.podCIDRs`), a
//! /24 out of the cluster CIDR (10.42.0.0/16 by default), as upstream's range allocator does.
//! Node agents build their pod network from it.
//!
//! The allocator is rebuilt from the Nodes themselves on every reconcile (the CIDRs in use are
//! exactly the ones Nodes carry), so nothing needs to be stored elsewhere and a restart loses
//! nothing. Two Nodes can never get the same block: the write is an update at the Node's
//! resourceVersion, and allocation is serialised by the controller (one reconcile at a time).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;

/// The cluster CIDR pods get their addresses from (k3s's default).
pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";

/// An IPv4 network: base address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    /// The network address.
    pub addr: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Ipv4Net {
    /// Parses `a.b.c.d/n`; the address is masked to the network address.
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = s.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        if prefix > 32 {
            return None;
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Some(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// The `i`-th subnet of length `len` inside this network, if there is one.
    pub fn subnet(&self, len: u8, i: u32) -> Option<Self> {
        if len < self.prefix || len > 32 {
            return None;
        }
        let count = 1u64 << (len - self.prefix);
        if u64::from(i) >= count {
            return None;
        }
        let step = 1u64 << (32 - len);
        let base = u64::from(u32::from(self.addr)) + u64::from(i) * step;
        Some(Self {
            addr: Ipv4Addr::from(base as u32),
            prefix: len,
        })
    }

    /// How many subnets of length `len` this network holds.
    pub fn subnet_count(&self, len: u8) -> u32 {
        if len < self.prefix {
            return 0;
        }
        (1u64 << (len - self.prefix)).min(u64::from(u32::MAX)) as u32
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The first free /24 of `cluster` that none of `used` holds.
pub fn next_free(cluster: Ipv4Net, used: &BTreeSet<String>) -> Option<Ipv4Net> {
    (0..cluster.subnet_count(24))
        .filter_map(|i| cluster.subnet(24, i))
        .find(|net| !used.contains(&net.to_string()))
}

struct Ctx {
    client: Client,
    nodes: Store<Node>,
    cluster: Ipv4Net,
    lock: Mutex<()>,
}

/// Runs the controller forever, allocating from `cluster_cidr`.
pub async fn run(client: Client, cluster_cidr: Ipv4Net) {
    let nodes: Api<Node> = Api::all(client.clone());
    let controller = Controller::new(nodes, watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(1));
    let store = controller.store();
    controller
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(Ctx {
                client,
                nodes: store,
                cluster: cluster_cidr,
                lock: Mutex::new(()),
            }),
        )
        .for_each(|_| async {})
        .await;
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let has_cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some_and(|c| !c.is_empty());
    if has_cidr || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let _guard = ctx.lock.lock().await;
    let used: BTreeSet<String> = ctx
        .nodes
        .state()
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
        .collect();
    let Some(cidr) = next_free(ctx.cluster, &used) else {
        tracing::warn!(node = %node.name_any(), cluster = %ctx.cluster, "no pod CIDR left");
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let api: Api<Node> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": node.resource_version()},
        "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]},
    });
    api.patch(
        &node.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    tracing::info!(node = %node.name_any(), %cidr, "allocated pod CIDR");
    // The reflector must see this write before the next allocation reads it.
    wait_until_seen(&ctx.nodes, &node.name_any(), &cidr.to_string()).await;
    Ok(Action::await_change())
}

async fn wait_until_seen(nodes: &Store<Node>, name: &str, cidr: &str) {
    for _ in 0..100 {
        let seen = nodes.state().iter().any(|n| {
            n.name_any() == name
                && n.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) == Some(cidr)
        });
        if seen {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let n = Ipv4Net::parse("10.42.7.9/16").unwrap();
        assert_eq!(n.to_string(), "10.42.0.0/16");
        assert!(Ipv4Net::parse("10.42.0.0/33").is_none());
        assert!(Ipv4Net::parse("nonsense").is_none());
    }

    #[test]
    fn allocates_first_free_block() {
        let cluster = Ipv4Net::parse(DEFAULT_CLUSTER_CIDR).unwrap();
        let mut used = BTreeSet::new();
        assert_eq!(
            next_free(cluster, &used).unwrap().to_string(),
            "10.42.0.0/24"
        );
        used.insert("10.42.0.0/24".to_string());
        used.insert("10.42.2.0/24".to_string());
        assert_eq!(
            next_free(cluster, &used).unwrap().to_string(),
            "10.42.1.0/24"
        );
        used.insert("10.42.1.0/24".to_string());
        assert_eq!(
            next_free(cluster, &used).unwrap().to_string(),
            "10.42.3.0/24"
        );
    }

    #[test]
    fn exhausts() {
        let cluster = Ipv4Net::parse("10.42.0.0/23").unwrap();
        let used: BTreeSet<String> = ["10.42.0.0/24", "10.42.1.0/24"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(next_free(cluster, &used).is_none());
    }
}
