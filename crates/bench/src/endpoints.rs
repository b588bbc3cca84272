//! `corten-bench endpoints`: how fast a change in a pod's readiness reaches its Service's
//! EndpointSlice and Endpoints (issue 4's "within 100 ms").
//!
//! A `corten server` with its controllers (no scheduler, no node agent) holds one Service
//! selecting `--endpoint-pods` pods on one node. This tool plays that node's agent: it
//! registers the Node, renews its Lease, and writes the pods' status (Running, an IP, Ready)
//! through `pods/status` as a kubelet does. Two watches (the Service's EndpointSlices, and its
//! Endpoints) record when each address's readiness changes. Then `--flips` times, 20-60 ms
//! apart, one pod's Ready condition is flipped; the sample is the time from just before that
//! status write to the watch event that shows the address with its new readiness. The
//! EndpointSlice and Endpoints controllers are the in-process ones, API clients like any other,
//! so the path measured is: API write → store → watch → controller → API write → store →
//! watch.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::mpsc;

use crate::report::{Report, Table, verdict};
use crate::stats::Summary;
use crate::{machine, progress, server};

const NS: &str = "bench-endpoints";
const NODE: &str = "bench-endpoints-node";
const SERVICE: &str = "web";
/// The target for readiness → Endpoints, p99.
const TARGET: Duration = Duration::from_millis(100);

/// Which object showed a change.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Source {
    Slice,
    Endpoints,
}

/// One address seen with a readiness, at a time.
struct Seen {
    source: Source,
    ip: String,
    ready: bool,
    at: Instant,
}

/// Runs the benchmark and adds its table; returns the server's CPU ticks.
pub async fn run(
    bin: &Path,
    work_dir: &Path,
    pods: usize,
    flips: usize,
    report: &mut Report,
) -> Result<u64> {
    if pods == 0 || pods > 250 {
        bail!("--endpoint-pods must be 1..=250 (one /24 of pod addresses)");
    }
    progress("endpoints: starting corten server (API server and controllers)");
    let (mut srv, config) =
        server::Corten::start_with(bin, work_dir, &["--disable-scheduler", "--disable-agent"])
            .await?;
    let measured = measure(&config, pods, flips).await;
    let ticks = machine::process_ticks(&srv.proc.pid().to_string());
    srv.proc.stop();
    let (slices, endpoints) = measured?;
    let mut table = Table::new(
        &format!("Pod readiness → Endpoints ({pods} pods behind one Service, {flips} Ready flips)"),
        &[
            "Object",
            "Status write → watch shows the change",
            "Target",
            "",
        ],
    );
    for (name, s) in [
        ("EndpointSlice (discovery.k8s.io/v1)", slices),
        ("Endpoints (v1)", endpoints),
    ] {
        table.row(&[
            name.into(),
            s.describe(),
            "p99 ≤ 100 ms".into(),
            verdict(s.p99 <= TARGET),
        ]);
    }
    report.tables.push(table);
    report.notes.push(
        "Readiness → Endpoints: the sample starts just before the pod's status write (the write \
         itself, durable, is included) and ends when a watch on the Service's EndpointSlices \
         (or Endpoints) delivers the address with its new readiness. There is no peer process \
         for this path on this machine; the target is the issue's absolute one."
            .into(),
    );
    Ok(ticks)
}

async fn measure(config: &kube::Config, pods: usize, flips: usize) -> Result<(Summary, Summary)> {
    let client = kube::Client::try_from(config.clone())?;
    setup(&client, pods).await?;
    let lease = tokio::spawn(renew_lease(client.clone()));
    let result = flip_and_time(&client, pods, flips).await;
    lease.abort();
    result
}

/// The namespace, the node (Ready, with a Lease), the Service and `pods` Ready pods.
async fn setup(client: &kube::Client, pods: usize) -> Result<()> {
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": NS}}))?,
        )
        .await
        .context("creating the namespace")?;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": NODE}}))?,
        )
        .await
        .context("creating the node")?;
    let now = jiff::Timestamp::now().to_string();
    nodes
        .patch_status(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
            }})),
        )
        .await
        .context("node status")?;
    Api::<Lease>::namespaced(client.clone(), "kube-node-lease")
        .create(
            &pp,
            &serde_json::from_value(json!({
                "metadata": {"name": NODE},
                "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40, "renewTime": now_micro()},
            }))?,
        )
        .await
        .context("creating the node's lease")?;
    Api::<Service>::namespaced(client.clone(), NS)
        .create(
            &pp,
            &serde_json::from_value(json!({
                "metadata": {"name": SERVICE},
                "spec": {"selector": {"app": SERVICE},
                         "ports": [{"port": 80, "targetPort": 8080}]},
            }))?,
        )
        .await
        .context("creating the service")?;
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    for i in 0..pods {
        let name = format!("{SERVICE}-{i}");
        api.create(
            &pp,
            &serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"app": SERVICE}},
                "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "bench/none"}]},
            }))?,
        )
        .await
        .with_context(|| format!("creating pod {name}"))?;
        set_ready(&api, i, true).await?;
    }
    progress(&format!(
        "endpoints: {pods} pods Ready; waiting for the endpoints"
    ));
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = slices
            .list(
                &kube::api::ListParams::default()
                    .labels(&format!("kubernetes.io/service-name={SERVICE}")),
            )
            .await?;
        let ready = list
            .items
            .iter()
            .flat_map(|s| &s.endpoints)
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .count();
        if ready == pods {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the EndpointSlices show {ready} of {pods} ready endpoints after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pod_ip(i: usize) -> String {
    format!("10.42.200.{}", i + 2)
}

fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// Writes pod `i`'s status as its node agent would: Running, its IP, Ready or not.
async fn set_ready(api: &Api<Pod>, i: usize, ready: bool) -> Result<()> {
    let ip = pod_ip(i);
    let status = if ready { "True" } else { "False" };
    let now = jiff::Timestamp::now().to_string();
    api.patch_status(
        &format!("{SERVICE}-{i}"),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": "10.0.0.1",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
                {"type": "Ready", "status": status, "lastTransitionTime": now},
            ],
        }})),
    )
    .await
    .with_context(|| format!("pod {i} status"))?;
    Ok(())
}

/// Renews the node's Lease every 5 s, as its agent would (so that nothing takes the node
/// for dead during the run).
async fn renew_lease(client: kube::Client) {
    let api: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let _ = api
            .patch(
                NODE,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"renewTime": now_micro()}})),
            )
            .await;
    }
}

/// Flips readiness `flips` times and times each change on both watches.
async fn flip_and_time(
    client: &kube::Client,
    pods: usize,
    flips: usize,
) -> Result<(Summary, Summary)> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watches = [
        tokio::spawn(watch_slices(client.clone(), tx.clone())),
        tokio::spawn(watch_endpoints(client.clone(), tx)),
    ];
    // Let both watches deliver their initial state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while rx.try_recv().is_ok() {}
    let api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut ready = vec![true; pods];
    let (mut slice_samples, mut endpoint_samples) = (vec![], vec![]);
    progress(&format!("endpoints: {flips} readiness flips"));
    for k in 0..flips {
        let i = (k * 7) % pods;
        ready[i] = !ready[i];
        let ip = pod_ip(i);
        let start = Instant::now();
        set_ready(&api, i, ready[i]).await?;
        let (mut slice_at, mut endpoints_at) = (None, None);
        let deadline = start + Duration::from_secs(10);
        while slice_at.is_none() || endpoints_at.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(seen)) = tokio::time::timeout(left, rx.recv()).await else {
                bail!(
                    "flip {k}: pod {i} ready={} not shown by both watches within 10 s",
                    ready[i]
                );
            };
            if seen.ip != ip || seen.ready != ready[i] {
                continue;
            }
            match seen.source {
                Source::Slice => slice_at = slice_at.or(Some(seen.at)),
                Source::Endpoints => endpoints_at = endpoints_at.or(Some(seen.at)),
            }
        }
        if let (Some(s), Some(e)) = (slice_at, endpoints_at) {
            slice_samples.push(s.saturating_duration_since(start));
            endpoint_samples.push(e.saturating_duration_since(start));
        }
        tokio::time::sleep(Duration::from_millis(20 + (k as u64 * 13) % 40)).await;
    }
    for w in watches {
        w.abort();
    }
    Ok((Summary::of(slice_samples), Summary::of(endpoint_samples)))
}

/// Reports every readiness change of an address in the Service's EndpointSlices.
async fn watch_slices(client: kube::Client, tx: mpsc::UnboundedSender<Seen>) {
    let api: Api<EndpointSlice> = Api::namespaced(client, NS);
    let config =
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={SERVICE}"));
    let mut known: HashMap<String, bool> = HashMap::new();
    let mut stream = watcher::watcher(api, config).boxed();
    while let Some(event) = stream.next().await {
        let at = Instant::now();
        let slice = match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => s,
            _ => continue,
        };
        for e in &slice.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready) == Some(true);
            for ip in &e.addresses {
                if known.insert(ip.clone(), ready) != Some(ready) {
                    let seen = Seen {
                        source: Source::Slice,
                        ip: ip.clone(),
                        ready,
                        at,
                    };
                    if tx.send(seen).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Reports every readiness change of an address in the Service's Endpoints.
async fn watch_endpoints(client: kube::Client, tx: mpsc::UnboundedSender<Seen>) {
    let api: Api<Endpoints> = Api::namespaced(client, NS);
    let config = watcher::Config::default().fields(&format!("metadata.name={SERVICE}"));
    let mut known: HashMap<String, bool> = HashMap::new();
    let mut stream = watcher::watcher(api, config).boxed();
    while let Some(event) = stream.next().await {
        let at = Instant::now();
        let endpoints = match event {
            Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)) => e,
            _ => continue,
        };
        for subset in endpoints.subsets.iter().flatten() {
            let ready = subset.addresses.iter().flatten().map(|a| (a, true));
            let not_ready = subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, false));
            for (address, ready) in ready.chain(not_ready) {
                if known.insert(address.ip.clone(), ready) != Some(ready) {
                    let seen = Seen {
                        source: Source::Endpoints,
                        ip: address.ip.clone(),
                        ready,
                        at,
                    };
                    if tx.send(seen).is_err() {
                        return;
                    }
                }
            }
        }
    }
}
