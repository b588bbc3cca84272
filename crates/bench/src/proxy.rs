//! The service proxy benchmark (`corten-bench proxy`):
//!
//! 1. **nft transaction time as services grow**: for 100, 250, 500 and 1,000 services of 10
//!    endpoints each, the proxy's renderer writes the whole table through the real `nft`
//!    (a table of the benchmark's own), then 20 incremental syncs each move one endpoint of
//!    one service; times of render+diff and of the `nft -j -f -` transaction.
//! 2. **EndpointSlice change → rule live**: `corten server` (API server only) with 1,000
//!    selectorless Services and 1,000 EndpointSlices of 10 endpoints (10,000 endpoints), and
//!    the proxy (`proxy::run`, in this process, its own table) watching them. `nft monitor
//!    rules` runs beside it; each sample replaces one endpoint address of one slice through
//!    the API and measures from just before the write to `nft monitor` printing a DNAT rule
//!    with the new address among its targets (the kernel has committed it). Changes are
//!    30-80 ms apart.
//!
//! Only rules are written: the endpoint addresses receive no traffic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use proxy::{Config, Syncer, model};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::report::{Report, Table, verdict};
use crate::stats::{Summary, ms};

const TABLE: &str = "corten-bench-proxy";
const NS: &str = "default";

fn service(i: usize, ip: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": NS},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    }))
    .expect("service")
}

fn endpoint_ip(service: usize, j: usize) -> String {
    let n = service * 10 + j;
    format!("10.244.{}.{}", n / 250, n % 250 + 1)
}

fn slice(i: usize, ips: &[String]) -> EndpointSlice {
    let eps: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "nodeName": "bench-node", "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}-x"), "namespace": NS,
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .expect("slice")
}

struct TableGuard;

impl Drop for TableGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "ip", TABLE])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Runs both parts and adds their tables to `report`.
pub async fn run(
    corten_bin: &std::path::Path,
    work_dir: &std::path::Path,
    report: &mut Report,
) -> Result<()> {
    let _guard = TableGuard;
    transactions(report).await?;
    change_to_rule(corten_bin, work_dir, report).await
}

async fn transactions(report: &mut Report) -> Result<()> {
    let mut table = Table::new(
        "Service proxy: nft transaction time as services grow (10 endpoints each)",
        &[
            "Services",
            "Endpoints",
            "Full table: nft",
            "Incremental: render+diff p50",
            "Incremental: nft p50 / p99",
        ],
    );
    for n in [100usize, 250, 500, 1000] {
        crate::progress(&format!(
            "proxy: full table and incremental syncs with {n} services"
        ));
        let mut config = Config::new("bench-node");
        config.table = TABLE.into();
        let mut syncer = Syncer::new(config.render_config()?);
        let services: Vec<Service> = (0..n)
            .map(|i| service(i, &format!("10.43.{}.{}", 100 + i / 250, i % 250 + 1)))
            .collect();
        let mut slices: Vec<EndpointSlice> = (0..n)
            .map(|i| slice(i, &(0..10).map(|j| endpoint_ip(i, j)).collect::<Vec<_>>()))
            .collect();
        let m = model::build(services.iter(), slices.iter(), "bench-node");
        let full = syncer.sync(&m).await.context("full sync")?;
        let (mut render, mut apply) = (vec![], vec![]);
        for k in 0..20 {
            let i = (k * 37) % n;
            let mut ips: Vec<String> = (1..10).map(|j| endpoint_ip(i, j)).collect();
            ips.push(format!("10.245.{}.{}", k / 250, k % 250 + 1));
            slices[i] = slice(i, &ips);
            let m = model::build(services.iter(), slices.iter(), "bench-node");
            let stats = syncer.sync(&m).await.context("incremental sync")?;
            render.push(stats.render);
            apply.push(stats.apply);
        }
        let (r, a) = (Summary::of(render), Summary::of(apply));
        table.row(&[
            n.to_string(),
            (n * 10).to_string(),
            ms(full.apply),
            ms(r.p50),
            format!("{} / {}", ms(a.p50), ms(a.p99)),
        ]);
        syncer.remove().await?;
    }
    report.tables.push(table);
    Ok(())
}

async fn change_to_rule(
    corten_bin: &std::path::Path,
    work_dir: &std::path::Path,
    report: &mut Report,
) -> Result<()> {
    const SERVICES: usize = 1000;
    const SAMPLES: usize = 200;
    crate::progress("proxy: starting corten server for the change-to-rule measurement");
    let (mut server, kube_config) = crate::server::Corten::start(corten_bin, work_dir).await?;
    let client = kube::Client::try_from(kube_config)?;
    let svc_api: Api<Service> = Api::namespaced(client.clone(), NS);
    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    crate::progress("proxy: creating 1,000 services and 10,000 endpoints");
    futures::stream::iter(0..SERVICES)
        .map(|i| {
            let (svc_api, slice_api) = (svc_api.clone(), slice_api.clone());
            async move {
                let mut svc = service(i, "");
                if let Some(spec) = svc.spec.as_mut() {
                    spec.cluster_ip = None;
                }
                svc_api.create(&PostParams::default(), &svc).await?;
                let ips: Vec<String> = (0..10).map(|j| endpoint_ip(i, j)).collect();
                slice_api
                    .create(&PostParams::default(), &slice(i, &ips))
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut config = Config::new("bench-node");
    config.table = TABLE.into();
    let proxy_task = tokio::spawn(proxy::run(client.clone(), config, stop_rx));
    let t = Instant::now();
    loop {
        let out = tokio::process::Command::new("nft")
            .args(["list", "map", "ip", TABLE, "service-ips"])
            .output()
            .await?;
        if String::from_utf8_lossy(&out.stdout)
            .matches(": goto service-")
            .count()
            >= SERVICES
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("the proxy did not program 1,000 services in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let initial = t.elapsed();

    // nft monitor: when each DNAT target first shows up.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut monitor = tokio::process::Command::new("nft")
        .args(["monitor", "rules"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("nft monitor")?;
    let stdout = monitor.stdout.take().context("nft monitor stdout")?;
    let seen_w = seen.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let targets = dnat_targets(&line);
            if !targets.is_empty()
                && let Ok(mut s) = seen_w.lock()
            {
                for target in targets {
                    s.entry(target).or_insert_with(Instant::now);
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    crate::progress(&format!("proxy: {SAMPLES} EndpointSlice changes"));
    let mut samples = vec![];
    for k in 0..SAMPLES {
        let i = (k * 7919) % SERVICES;
        let new_ip = format!("10.246.{}.{}", k / 250, k % 250 + 1);
        let target = format!("{new_ip}:8080");
        let mut current = slice_api.get(&format!("svc-{i}-x")).await?;
        if let Some(e) = current.endpoints.first_mut() {
            e.addresses = vec![new_ip.clone()];
        }
        let t0 = Instant::now();
        slice_api
            .replace(&format!("svc-{i}-x"), &PostParams::default(), &current)
            .await?;
        loop {
            if let Some(at) = seen.lock().ok().and_then(|s| s.get(&target).copied()) {
                samples.push(at.saturating_duration_since(t0));
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("rule for {target} not live after 10 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(30 + (k as u64 * 13) % 50)).await;
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), proxy_task).await;
    drop(monitor);
    server.proc.stop();

    let s = Summary::of(samples);
    let mut table = Table::new(
        "Service proxy: EndpointSlice change → rule live (1,000 services, 10,000 endpoints)",
        &["Measurement", "Result", "Target", ""],
    );
    table.row(&[
        "Initial sync (proxy start → 1,000 services programmed)".into(),
        ms(initial),
        String::new(),
        String::new(),
    ]);
    table.row(&[
        "API write → DNAT rule committed (nft monitor)".into(),
        s.describe(),
        "p99 ≤ 100 ms".into(),
        verdict(s.p99 <= Duration::from_millis(100)),
    ]);
    report.tables.push(table);
    Ok(())
}

/// The `ADDR:PORT` targets of a DNAT rule as `nft monitor` prints it: `dnat ip to A:P` for one
/// endpoint, `dnat ip to numgen random mod N map { 0 : A . P, ... }` for several.
fn dnat_targets(line: &str) -> Vec<String> {
    let Some((_, rest)) = line.split_once("dnat ") else {
        return vec![];
    };
    let rest = rest.trim_start_matches("ip ").trim_start_matches("to ");
    if let Some((_, map)) = rest.split_once("map {") {
        let map = map.split('}').next().unwrap_or("");
        return map
            .split(',')
            .filter_map(|item| {
                let (_, target) = item.split_once(':')?;
                let (addr, port) = target.split_once(" . ")?;
                Some(format!("{}:{}", addr.trim(), port.trim()))
            })
            .collect();
    }
    rest.split_whitespace()
        .next()
        .map(str::to_string)
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::dnat_targets;

    #[test]
    fn dnat_targets_of_monitor_lines() {
        assert_eq!(
            dnat_targets("add rule ip t service-x meta l4proto tcp dnat ip to 10.0.0.1:8080"),
            ["10.0.0.1:8080"]
        );
        assert_eq!(
            dnat_targets(
                "add rule ip t s meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 10.0.0.1 . 8080, 1 : 10.0.0.2 . 80 }"
            ),
            ["10.0.0.1:8080", "10.0.0.2:80"]
        );
        assert!(dnat_targets("add rule ip t s jump mark-for-masquerade").is_empty());
    }
}
