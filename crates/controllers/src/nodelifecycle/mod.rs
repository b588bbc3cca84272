//! The node lifecycle controller (upstream's `pkg/controller/nodelifecycle`).
//!
//! Reflectors on Nodes and on the node Leases in `kube-node-lease`; every monitor period each
//! node's health is checked. A node's last sign of life is the later change of its Ready
//! condition's `lastHeartbeatTime` or its Lease's `renewTime`, as this controller observed it
//! (its own clock, so the kubelet's clock does not matter). When none came for the grace
//! period (`--node-monitor-grace-period`, 40 s by default) its Ready, MemoryPressure,
//! DiskPressure and PIDPressure conditions are set Unknown (`NodeStatusUnknown`, "Kubelet
//! stopped posting node status.") and the Ready condition of its pods turns False; events
//! `NodeNotReady` are recorded on the node and its pods.
//!
//! Taints follow the conditions ([`conditions::wanted_taints`]): Ready Unknown →
//! `node.kubernetes.io/unreachable` NoSchedule and NoExecute, Ready False →
//! `node.kubernetes.io/not-ready` NoSchedule and NoExecute, `spec.unschedulable` →
//! `node.kubernetes.io/unschedulable` NoSchedule; they go again once the condition clears.
//! Pressure conditions do not taint (see [`conditions`]).
//! The pods themselves are evicted by [`crate::tainteviction`]. Upstream's zone-based rate
//! limiting of evictions (and its full-disruption mode) is not done.

pub mod conditions;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};

use conditions::{condition_status, mark_unknown, reconcile_taints};

/// The namespace of node leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The source component of the controller's events.
const COMPONENT: &str = "node-controller";

/// Upstream's `--node-monitor-grace-period` default.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(40);

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a node may stay silent before it is marked Unknown.
    pub grace_period: Duration,
    /// How often node health is checked (upstream's `--node-monitor-period`).
    pub monitor_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grace_period: DEFAULT_GRACE_PERIOD,
            monitor_period: Duration::from_secs(1),
        }
    }
}

/// What the controller last saw of a node's signs of life.
struct Health {
    heartbeat: Option<Time>,
    renew: Option<String>,
    /// When a sign of life last changed (this controller's clock).
    probe: Instant,
}

/// Runs the controller forever.
pub async fn run(client: Client, config: Config) {
    let (nodes, node_writer) = reflector::store::<Node>();
    let (leases, lease_writer) = reflector::store::<Lease>();
    let node_watch = reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .for_each(|_| async {});
    let lease_watch = reflector(
        lease_writer,
        watcher(
            Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|_| async {});
    tokio::spawn(node_watch);
    tokio::spawn(lease_watch);
    if nodes.wait_until_ready().await.is_err() || leases.wait_until_ready().await.is_err() {
        return;
    }
    let mut health: HashMap<String, Health> = HashMap::new();
    let mut tick = tokio::time::interval(config.monitor_period);
    loop {
        tick.tick().await;
        monitor(&client, &config, &nodes, &leases, &mut health).await;
    }
}

/// One pass over every node.
async fn monitor(
    client: &Client,
    config: &Config,
    nodes: &Store<Node>,
    leases: &Store<Lease>,
    health: &mut HashMap<String, Health>,
) {
    let all = nodes.state();
    {
        let names: HashSet<&str> = all
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        health.retain(|name, _| names.contains(name.as_str()));
    }
    for node in all {
        let name = node.name_any();
        let heartbeat = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_heartbeat_time.clone());
        let renew = leases
            .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE))
            .and_then(|l| {
                l.spec
                    .as_ref()?
                    .renew_time
                    .as_ref()
                    .map(|t| t.0.to_string())
            });
        let now = Instant::now();
        let h = health.entry(name.clone()).or_insert_with(|| Health {
            heartbeat: heartbeat.clone(),
            renew: renew.clone(),
            probe: now,
        });
        if h.heartbeat != heartbeat || h.renew != renew {
            h.heartbeat = heartbeat;
            h.renew = renew;
            h.probe = now;
        }
        let silent = now.duration_since(h.probe) > config.grace_period;
        let all_unknown = conditions::KUBELET_CONDITIONS
            .iter()
            .all(|c| condition_status(&node, c) == Some("Unknown"));
        let result = if silent && !all_unknown {
            match mark_node_unknown(client, &name).await {
                Ok(()) => update_taints(client, &name).await,
                Err(e) => Err(e),
            }
        } else if reconcile_taints(&node, &Time(Timestamp::now())).is_some() {
            // Most passes change nothing: the cached node decides whether to look closer.
            update_taints(client, &name).await
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(node = %name, error = %e, "node lifecycle update failed");
        }
    }
}

/// Sets the node's kubelet conditions Unknown and its pods not ready.
async fn mark_node_unknown(client: &Client, name: &str) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let mut node = api.get_status(name).await?;
    let now = Time(Timestamp::now());
    let created = node.metadata.creation_timestamp.clone();
    let status = node.status.get_or_insert_with(Default::default);
    if !mark_unknown(status, created.as_ref(), &now) {
        return Ok(());
    }
    api.replace_status(name, &PostParams::default(), &node)
        .await?;
    tracing::info!(node = %name, "node stopped posting status: conditions set Unknown");
    crate::events::record(
        client,
        COMPONENT,
        &node,
        crate::events::NORMAL,
        "NodeNotReady",
        format!("Node {name} status is now: NodeNotReady"),
    )
    .await;
    mark_pods_not_ready(client, name, &now).await
}

/// Sets the Ready condition of every pod on the node to False (upstream's
/// `MarkPodsNotReady`).
async fn mark_pods_not_ready(client: &Client, node: &str, now: &Time) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    for pod in pods.list(&lp).await? {
        let Some(mut conds) = pod.status.as_ref().and_then(|s| s.conditions.clone()) else {
            continue;
        };
        let Some(ready) = conds
            .iter_mut()
            .find(|c| c.type_ == "Ready" && c.status != "False")
        else {
            continue;
        };
        ready.status = "False".into();
        ready.last_transition_time = Some(now.clone());
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let patch = serde_json::json!({"status": {"conditions": conds}});
        if let Err(e) = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!(pod = %pod.name_any(), error = %e, "marking pod not ready failed");
        }
        crate::events::record(
            client,
            COMPONENT,
            &pod,
            crate::events::WARNING,
            "NodeNotReady",
            "Node is not ready".into(),
        )
        .await;
    }
    Ok(())
}

/// Brings the node's managed taints in line with its conditions (read fresh, so that the
/// conditions just set Unknown count).
async fn update_taints(client: &Client, name: &str) -> Result<(), kube::Error> {
    let now = Time(Timestamp::now());
    let api: Api<Node> = Api::all(client.clone());
    let mut node = api.get(name).await?;
    let Some(taints) = reconcile_taints(&node, &now) else {
        return Ok(());
    };
    node.spec.get_or_insert_with(Default::default).taints = Some(taints);
    api.replace(name, &PostParams::default(), &node).await?;
    tracing::info!(node = %name, "node taints updated from its conditions");
    Ok(())
}
