//! The built-in service load balancer (k3s's ServiceLB counterpart): every Service of type
//! LoadBalancer without a `loadBalancerClass` gets the InternalIP of every Ready, schedulable
//! node as `status.loadBalancer.ingress` (`ipMode: VIP`); the service proxy on each node
//! answers on those addresses. When a Service stops being a LoadBalancer its ingress is
//! cleared.
//!
//! With an address pool (`corten server --lb-pool CIDR`, MetalLB's L2 mode) each such Service
//! gets one address of the pool instead ([`pick`]: the one it has, else its
//! `spec.loadBalancerIP` when free, else the lowest free one); one node binds it
//! (`proxy::lb`) and every node's proxy answers on it. Allocation is serialised (one reconcile
//! at a time) and remembers its own recent choices, so two Services never get one address
//! even before the watch shows the first write. An exhausted pool leaves the Service without
//! an address (retried every 30 s).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::nodeipam::Ipv4Net;

struct Ctx {
    client: Client,
    nodes: Store<Node>,
    services: Store<Service>,
    pool: Option<Ipv4Net>,
    /// Pool addresses this controller gave out, by service (namespace/name).
    allocated: Mutex<BTreeMap<String, Ipv4Addr>>,
}

/// The usable addresses of `pool`, lowest first (network and broadcast addresses left out
/// for prefixes under /31).
pub fn pool_addresses(pool: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let base = u64::from(u32::from(pool.addr));
    let size = 1u64 << (32 - u32::from(pool.prefix));
    let (first, last) = if pool.prefix < 31 {
        (base + 1, base + size - 2)
    } else {
        (base, base + size - 1)
    };
    (first..=last).map(|a| Ipv4Addr::from(a as u32))
}

fn in_pool(pool: Ipv4Net, ip: Ipv4Addr) -> bool {
    Ipv4Net::parse(&format!("{ip}/{}", pool.prefix)).is_some_and(|n| n.addr == pool.addr)
}

/// The pool address for a Service: the one it has (`current`) if still its own, else the one
/// it asks for (`requested`, `spec.loadBalancerIP`) if free, else the lowest free one.
/// `used`: addresses other Services hold.
pub fn pick(
    pool: Ipv4Net,
    current: &[Ipv4Addr],
    requested: Option<Ipv4Addr>,
    used: &BTreeSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let free = |ip: &Ipv4Addr| in_pool(pool, *ip) && !used.contains(ip);
    if let Some(ip) = current.iter().find(|ip| free(ip)) {
        return Some(*ip);
    }
    if let Some(ip) = requested {
        // A requested address outside the pool or taken: none (as MetalLB), not another.
        return free(&ip).then_some(ip);
    }
    pool_addresses(pool).find(|ip| !used.contains(ip))
}

/// Runs the controller forever; with `pool`, LoadBalancer Services get addresses from it.
pub async fn run(client: Client, pool: Option<Ipv4Net>) {
    let services: Api<Service> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let (node_store, writer) = kube::runtime::reflector::store();
    let node_stream = kube::runtime::reflector(writer, watcher(nodes, watcher::Config::default()))
        .map(|e| e.map(|_| ()));
    let controller = Controller::new(services, watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(1));
    let services = controller.store();
    controller
        // Any node change may change every LoadBalancer's addresses.
        .reconcile_all_on(node_stream.filter_map(|r| async move { r.ok() }))
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(Ctx {
                client,
                nodes: node_store,
                services,
                pool,
                allocated: Mutex::new(BTreeMap::new()),
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
    let key = format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any());
    let want = if let (true, Some(pool)) = (ours, ctx.pool) {
        match pool_ingress(&svc, &key, pool, &ctx) {
            Some(ingress) => ingress,
            None => {
                tracing::warn!(service = %key, %pool, "load balancer pool exhausted");
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
        }
    } else if ours {
        node_ingress(&ctx.nodes.state())
    } else if spec.type_.as_deref() == Some("LoadBalancer") {
        // Another implementation's class: not ours to touch.
        return Ok(Action::await_change());
    } else {
        vec![]
    };
    if !ours && let Ok(mut allocated) = ctx.allocated.lock() {
        allocated.remove(&key);
    }
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

/// The one-address ingress for `svc` from `pool`, recording the choice; None: pool exhausted
/// (or the requested address is not available).
fn pool_ingress(
    svc: &Service,
    key: &str,
    pool: Ipv4Net,
    ctx: &Ctx,
) -> Option<Vec<LoadBalancerIngress>> {
    let ips_of = |s: &Service| -> Vec<Ipv4Addr> {
        s.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect()
    };
    let services = ctx.services.state();
    let live: BTreeSet<String> = services
        .iter()
        .map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()))
        .collect();
    let mut allocated = ctx.allocated.lock().ok()?;
    // Forget choices for Services that are gone.
    allocated.retain(|k, _| live.contains(k));
    let mut used: BTreeSet<Ipv4Addr> = services
        .iter()
        .filter(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()) != key)
        .flat_map(|s| ips_of(s))
        .collect();
    used.extend(
        allocated
            .iter()
            .filter(|(k, _)| k.as_str() != key)
            .map(|(_, ip)| *ip),
    );
    let mut current = ips_of(svc);
    if let Some(mine) = allocated.get(key) {
        current.insert(0, *mine);
    }
    let requested = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    let ip = pick(pool, &current, requested, &used)?;
    allocated.insert(key.to_string(), ip);
    Some(vec![LoadBalancerIngress {
        ip: Some(ip.to_string()),
        ip_mode: Some("VIP".into()),
        ..Default::default()
    }])
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

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn pool_picks_keep_request_or_lowest_free() {
        let pool = Ipv4Net::parse("10.0.5.0/29").unwrap();
        let all: Vec<_> = pool_addresses(pool).collect();
        assert_eq!(all.first(), Some(&ip("10.0.5.1")));
        assert_eq!(all.last(), Some(&ip("10.0.5.6")));
        let used = BTreeSet::from([ip("10.0.5.1"), ip("10.0.5.2")]);
        // Lowest free.
        assert_eq!(pick(pool, &[], None, &used), Some(ip("10.0.5.3")));
        // Keeps what it has; an address outside the pool (a node IP before) is replaced.
        assert_eq!(
            pick(pool, &[ip("10.0.5.5")], None, &used),
            Some(ip("10.0.5.5"))
        );
        assert_eq!(
            pick(pool, &[ip("192.168.1.1")], None, &used),
            Some(ip("10.0.5.3"))
        );
        // Another service's address is never kept.
        assert_eq!(
            pick(pool, &[ip("10.0.5.2")], None, &used),
            Some(ip("10.0.5.3"))
        );
        // spec.loadBalancerIP: given when free, nothing when taken or outside the pool.
        assert_eq!(
            pick(pool, &[], Some(ip("10.0.5.6")), &used),
            Some(ip("10.0.5.6"))
        );
        assert_eq!(pick(pool, &[], Some(ip("10.0.5.2")), &used), None);
        assert_eq!(pick(pool, &[], Some(ip("10.0.6.1")), &used), None);
        // Exhausted.
        let full: BTreeSet<_> = pool_addresses(pool).collect();
        assert_eq!(pick(pool, &[], None, &full), None);
        // /32 and /31 pools use every address.
        let one = Ipv4Net::parse("10.0.5.9/32").unwrap();
        assert_eq!(pool_addresses(one).collect::<Vec<_>>(), [ip("10.0.5.9")]);
    }
}
