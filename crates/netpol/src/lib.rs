//! corten's NetworkPolicy controller, one per node: the counterpart of the network policy
//! controller k3s takes from kube-router, on nftables.
//!
//! It watches NetworkPolicies, Pods and Namespaces through the API (kube-rs reflectors) and
//! keeps one nftables table (`inet corten-netpol`, [`TABLE`]) in step with them:
//!
//! - [`policy`]: the API objects → for each isolated pod on this node, what it may receive
//!   and send (pure, unit-tested);
//! - [`render`]: that model → one transaction replacing the table whole (pure).
//!
//! Bursts of watch events are coalesced (the service proxy's [`proxy::events`]); a sync whose
//! rendered table equals the one applied last does nothing; otherwise the table is replaced in
//! one atomic `nft -j -f -` transaction ([`proxy::sync::apply`]), so stale rules from a crash
//! go at the first sync; connections already established survive a replacement (conntrack is
//! not in the table). The table is deleted on clean shutdown.

pub mod policy;
pub mod render;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use proxy::events::{Pending, follow};
use proxy::nftables::types::NfFamily;
use tokio::sync::watch;

/// The default table name.
pub const TABLE: &str = "corten-netpol";

/// How the controller runs on a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name (only its pods are enforced here).
    pub node_name: String,
    /// The nftables table (family `inet`).
    pub table: String,
    /// How long to wait after a watch event for more before syncing.
    pub debounce: Duration,
}

impl Config {
    /// The defaults for `node_name`: table [`TABLE`], 50 ms debounce.
    pub fn new(node_name: impl Into<String>) -> Self {
        Config {
            node_name: node_name.into(),
            table: TABLE.into(),
            debounce: Duration::from_millis(50),
        }
    }
}

/// The model for the objects in the stores.
pub fn build(
    policies: &Store<NetworkPolicy>,
    pods: &Store<Pod>,
    namespaces: &Store<Namespace>,
    node: &str,
) -> policy::Model {
    let pods: Vec<policy::PodInfo> = pods
        .state()
        .iter()
        .filter_map(|p| policy::PodInfo::from_pod(p))
        .collect();
    let namespaces: BTreeMap<_, _> = namespaces
        .state()
        .iter()
        .map(|n| policy::namespace_labels(n))
        .collect();
    let cluster = policy::Cluster {
        pods: &pods,
        namespaces: &namespaces,
    };
    let policies = policies.state();
    policy::build(policies.iter().map(|p| &**p), &cluster, node)
}

/// Runs the controller until `shutdown` turns true, then removes its table.
pub async fn run(
    client: Client,
    config: Config,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    // Pod-to-pod traffic on this node is bridged: it reaches the inet hooks only with this.
    proxy::set_sysctl(proxy::BRIDGE_NF_CALL_IPTABLES, "1");
    let pending = Arc::new(Pending::new(3));
    let (policies, policy_writer) = reflector::store::<NetworkPolicy>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (namespaces, ns_writer) = reflector::store::<Namespace>();
    let watches = [
        tokio::spawn(follow(
            reflector::reflector(
                policy_writer,
                watcher(
                    Api::<NetworkPolicy>::all(client.clone()),
                    Default::default(),
                ),
            ),
            pending.clone(),
            0,
        )),
        tokio::spawn(follow(
            reflector::reflector(
                pod_writer,
                // Cached without managedFields (never read here; a good part of each pod).
                watcher(Api::<Pod>::all(client.clone()), Default::default())
                    .modify(|p| p.metadata.managed_fields = None),
            ),
            pending.clone(),
            1,
        )),
        tokio::spawn(follow(
            reflector::reflector(
                ns_writer,
                watcher(Api::<Namespace>::all(client), Default::default()),
            ),
            pending.clone(),
            2,
        )),
    ];
    let stores = (policies, pods, namespaces);
    let result = sync_loop(&config, &pending, &stores, &mut shutdown).await;
    for w in watches {
        w.abort();
    }
    let remove = proxy::batch::remove_table(NfFamily::INet, &config.table);
    match proxy::sync::apply(&remove).await {
        Ok(()) => tracing::info!(table = %config.table, "network policy: stopped; table removed"),
        Err(e) => tracing::warn!("network policy: removing the table: {e:#}"),
    }
    result
}

type Stores = (Store<NetworkPolicy>, Store<Pod>, Store<Namespace>);

async fn sync_loop(
    config: &Config,
    pending: &Pending,
    (policies, pods, namespaces): &Stores,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let mut applied: Option<String> = None;
    loop {
        tokio::select! {
            _ = pending.notify.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
        if !pending.all_ready() {
            continue; // every initial list first: a partial view would deny too much
        }
        tokio::time::sleep(config.debounce).await;
        let since = pending.take().unwrap_or_else(Instant::now);
        let model = build(policies, pods, namespaces, &config.node_name);
        let batch = render::full(&config.table, &model);
        let json = batch.to_json();
        if applied.as_ref() == Some(&json) {
            continue;
        }
        let t = Instant::now();
        match proxy::sync::apply(&batch).await {
            Ok(()) => {
                tracing::info!(
                    table = %config.table,
                    ingress_isolated = model.ingress.len(),
                    egress_isolated = model.egress.len(),
                    commands = batch.len(),
                    apply_ms = t.elapsed().as_secs_f64() * 1e3,
                    latency_ms = since.elapsed().as_secs_f64() * 1e3,
                    "network policy: table replaced"
                );
                applied = Some(json);
            }
            Err(e) => {
                tracing::warn!("network policy: sync failed (retrying): {e:#}");
                applied = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
                pending.mark();
            }
        }
    }
}
