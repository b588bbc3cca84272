//! corten's service proxy (kube-proxy's counterpart, nftables mode), one per node.
//!
//! It watches Services and EndpointSlices through the API (kube-rs reflectors) and keeps one
//! nftables table (`ip corten-proxy`) in step with them:
//!
//! - [`model`]: Services + EndpointSlices → the service ports this node serves, with their
//!   usable endpoints (readiness, terminating fallback, traffic policies);
//! - [`render`]: the model → chains, sets and map elements (DNAT for ClusterIP, NodePort,
//!   externalIPs and LoadBalancer ingress; session affinity; hairpin and masquerading; reject
//!   for services without endpoints);
//! - [`batch`]: rendered rulesets → one nft JSON transaction, the whole table or only the
//!   difference;
//! - [`sync`]: applies transactions with `nft -j -f -` (the `nftables` crate);
//! - [`nft`]: constructors for the `nftables` crate's schema types;
//! - [`lb`]: binds the LoadBalancer pool addresses this node announces (`corten-lb0`, through
//!   [`iface`], which also holds the cluster DNS address) and announces each newly bound one
//!   with gratuitous ARP ([`garp`]).
//!
//! Bursts of watch events are coalesced ([`Config::min_sync_interval`]); each sync is one atomic
//! transaction. The first sync replaces the table whole (stale rules from a crash go); the
//! table is deleted on clean shutdown. At debug level every sync logs the time from the
//! first watch event it covers to its rules being live (`latency_ms`).

pub mod batch;
pub mod events;
pub mod garp;
pub mod iface;
pub mod lb;
pub mod model;
pub mod nft;
pub mod render;
pub mod sync;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use tokio::sync::watch;

use events::{Pending, follow};

/// The `nftables` crate, re-exported for the other nft users (masquerading, NetworkPolicy).
pub use nftables;
pub use render::RenderConfig;
pub use sync::Syncer;

/// The default table name.
pub const TABLE: &str = "corten-proxy";

/// How the proxy runs on a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name (endpoints on it are local).
    pub node_name: String,
    /// Addresses NodePorts answer on (127.0.0.1 always added); empty: every local address.
    pub node_ips: Vec<IpAddr>,
    /// The pod network of the cluster, e.g. `10.42.0.0/16`.
    pub cluster_cidr: String,
    /// The service network, e.g. `10.43.0.0/16`.
    pub service_cidr: String,
    /// The nftables table (family `ip`).
    pub table: String,
    /// The least time between the starts of two syncs: the first change after a quiet
    /// period is synced at once, later ones wait for the interval to pass, so a burst of
    /// changes becomes one sync per interval (kube-proxy's minSyncPeriod).
    pub min_sync_interval: Duration,
}

impl Config {
    /// The defaults for `node_name`: corten's cluster and service CIDRs, table
    /// [`TABLE`], NodePorts on every local address, syncs at least 20 ms apart.
    pub fn new(node_name: impl Into<String>) -> Self {
        Config {
            node_name: node_name.into(),
            node_ips: vec![],
            cluster_cidr: "10.42.0.0/16".into(),
            service_cidr: "10.43.0.0/16".into(),
            table: TABLE.into(),
            min_sync_interval: Duration::from_millis(20),
        }
    }

    /// The renderer's view of this configuration.
    pub fn render_config(&self) -> Result<RenderConfig> {
        Ok(RenderConfig {
            table: self.table.clone(),
            cluster_cidr: parse_cidr(&self.cluster_cidr)?,
            service_cidr: parse_cidr(&self.service_cidr)?,
            nodeport_ips: self
                .node_ips
                .iter()
                .filter_map(|ip| match ip {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                })
                .collect(),
        })
    }
}

/// Parses `a.b.c.d/len`.
pub fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u32)> {
    let (addr, len) = cidr
        .split_once('/')
        .ok_or_else(|| anyhow!("{cidr}: not a CIDR"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .with_context(|| format!("{cidr}: bad address"))?;
    let len: u32 = len
        .parse()
        .with_context(|| format!("{cidr}: bad prefix length"))?;
    if len > 32 {
        return Err(anyhow!("{cidr}: prefix length over 32"));
    }
    Ok((addr, len))
}

/// Sets the kernel switches the rules rely on: `route_localnet` (NodePorts on 127.0.0.1)
/// and `bridge-nf-call-iptables` (same-node pod → service → pod replies pass conntrack).
fn sysctls() {
    for (path, value) in [
        ("/proc/sys/net/ipv4/conf/all/route_localnet", "1"),
        (BRIDGE_NF_CALL_IPTABLES, "1"),
        ("/proc/sys/net/ipv4/ip_forward", "1"),
    ] {
        set_sysctl(path, value);
    }
}

/// The switch that sends bridged IPv4 traffic (pod to pod on one node) through the ip/inet
/// hooks (br_netfilter).
pub const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Writes `value` to the sysctl file `path` unless it holds it already (a warning if it cannot).
pub fn set_sysctl(path: &str, value: &str) {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return;
    }
    if let Err(e) = std::fs::write(path, value) {
        tracing::warn!("cannot set {path}: {e}");
    }
}

/// Runs the proxy until `shutdown` turns true, then removes its table.
pub async fn run(
    client: Client,
    config: Config,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let mut syncer = Syncer::new(config.render_config()?);
    sysctls();
    let pending = Arc::new(Pending::new(2));
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let svc_stream = reflector::reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    );
    let slice_stream = reflector::reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        ),
    );
    let watches = [
        tokio::spawn(follow(svc_stream, pending.clone(), 0)),
        tokio::spawn(follow(slice_stream, pending.clone(), 1)),
    ];
    // The LoadBalancer pool addresses this node announces (see `lb`).
    let lb = tokio::spawn(lb::run(
        client.clone(),
        config.node_name.clone(),
        shutdown.clone(),
    ));
    let result = sync_loop(
        &mut syncer,
        &config,
        &pending,
        &services,
        &slices,
        &mut shutdown,
    )
    .await;
    for w in watches {
        w.abort();
    }
    if result.is_err() {
        lb.abort(); // it stops with `shutdown` otherwise
    }
    let _ = lb.await;
    match syncer.remove().await {
        Ok(()) => tracing::info!(table = %config.table, "service proxy stopped; table removed"),
        Err(e) => tracing::warn!("service proxy: removing the table: {e:#}"),
    }
    result
}

async fn sync_loop(
    syncer: &mut Syncer,
    config: &Config,
    pending: &Pending,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<()> {
    let mut first = true;
    let mut last_sync: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = pending.notify.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
        if !pending.all_ready() {
            continue; // wait for both initial lists before touching the table
        }
        events::pace(last_sync, config.min_sync_interval).await;
        let since = pending.take().unwrap_or_else(Instant::now);
        let t = Instant::now();
        last_sync = Some(t);
        let svcs = services.state();
        let eps = slices.state();
        let model = model::build(
            svcs.iter().map(|s| &**s),
            eps.iter().map(|s| &**s),
            &config.node_name,
        );
        let model_time = t.elapsed();
        match syncer.sync(&model).await {
            Ok(stats) => {
                let latency = since.elapsed();
                if first || stats.full {
                    tracing::info!(
                        table = %config.table,
                        service_ports = model.ports.len(),
                        commands = stats.commands,
                        apply_ms = stats.apply.as_secs_f64() * 1e3,
                        "service proxy: table replaced"
                    );
                }
                first = false;
                tracing::debug!(
                    latency_ms = latency.as_secs_f64() * 1e3,
                    model_ms = model_time.as_secs_f64() * 1e3,
                    render_ms = stats.render.as_secs_f64() * 1e3,
                    apply_ms = stats.apply.as_secs_f64() * 1e3,
                    commands = stats.commands,
                    full = stats.full,
                    "service proxy: rules live"
                );
            }
            Err(e) => {
                tracing::warn!("service proxy: sync failed (retrying with a full sync): {e:#}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                pending.mark();
            }
        }
    }
}
