//! `corten-bench sched`: the scheduler and controllers at scale on simulated nodes (issue 4's
//! benchmarks), with the API server and its store in the loop.
//!
//! 1. **Scheduler throughput**: `corten server` (API server, store, controllers, scheduler;
//!    no node agent) and `corten sim-nodes --count 5000`; once all 5,000 nodes are Ready and
//!    have their Leases (renewed every 10 s from then on, as kubelets do), a watch on the
//!    namespace records when each pod is first seen bound, and 16 clients create 10,000 pods
//!    (the API benchmark's pod, 100m cpu / 128Mi requested). Throughput is pods divided by
//!    the time from the first create sent to the last pod seen bound: creation to bound, the
//!    shape of upstream scheduler_perf's SchedulingBasic (5,000 nodes, 10,000 pods). The
//!    create rate alone is reported beside it.
//! 2. **Control-plane memory**: VmRSS of that `corten server` (API server, store, controllers
//!    and scheduler are one process) 5 s after the last pod was bound, with the 5,000 nodes and
//!    10,000 pods; the sim-nodes process is reported apart (it stands in for kubelets).
//! 3. **Deployment**: a fresh server with `corten sim-nodes --count 100`; a Deployment of 1,000
//!    replicas (default RollingUpdate 25%/25%): time from the create to `availableReplicas`
//!    1,000; then a new image: time until the rollout is complete (all 1,000 updated and
//!    available, no old pods left, as `kubectl rollout status` decides).

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

use crate::api::{create_many, ensure_namespace};
use crate::progress;
use crate::report::{Report, Table, verdict};
use crate::server::{Corten, Proc, memory};
use crate::stats::{mb, rate};
use crate::workload::Kind;

/// What to run.
pub struct Params<'a> {
    /// The corten binary.
    pub corten_bin: &'a Path,
    /// Where temp data dirs go.
    pub work_dir: &'a Path,
    /// Simulated nodes of the throughput run.
    pub nodes: usize,
    /// Pods of the throughput run.
    pub pods: usize,
    /// Concurrent creating clients.
    pub clients: usize,
    /// Simulated nodes of the Deployment run.
    pub deployment_nodes: usize,
    /// Replicas of the Deployment.
    pub replicas: i32,
}

/// Starts `corten sim-nodes` against `server` and waits until `count` nodes are Ready and have
/// their Leases (so that the measurement sees the nodes' steady renewals, not their start).
async fn sim_nodes(
    bin: &Path,
    server: &Corten,
    client: &kube::Client,
    count: usize,
) -> Result<Proc> {
    let mut cmd = Command::new(bin);
    cmd.args(["sim-nodes", "--count", &count.to_string(), "--kubeconfig"])
        .arg(server.dir.path().join("kubeconfig.yaml"))
        .env("CORTEN_LOG", "warn");
    let mut proc = Proc::spawn(
        "corten sim-nodes",
        cmd,
        server.dir.path().join("sim-nodes.log"),
    )?;
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        proc.check_alive()?;
        let list = nodes.list(&ListParams::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= count {
            let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
            let leased = leases
                .list_metadata(&ListParams::default())
                .await?
                .items
                .len();
            if leased >= count {
                return Ok(proc);
            }
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {count} sim nodes Ready (with their Leases) after 600 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs the three measurements; returns the CPU ticks of the processes it started.
pub async fn run(p: &Params<'_>, report: &mut Report) -> Result<u64> {
    let mut ticks = 0;
    let mut table = Table::new(
        "Scheduler and controllers on simulated nodes (API server and store in the loop)",
        &["Measurement", "Result", "Target / upstream", ""],
    );

    // 1 + 2: throughput and memory.
    let (mut server, config) =
        Corten::start_with(p.corten_bin, p.work_dir, &["--disable-agent"]).await?;
    let client = kube::Client::try_from(config.clone())?;
    progress(&format!("starting {} simulated nodes", p.nodes));
    let started = Instant::now();
    let mut sims = sim_nodes(p.corten_bin, &server, &client, p.nodes).await?;
    progress(&format!(
        "{} nodes Ready in {:.0} s",
        p.nodes,
        started.elapsed().as_secs_f64()
    ));
    ensure_namespace(&client, "bench").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let want = p.pods;
    let watch = tokio::spawn(async move {
        let mut bound = HashSet::new();
        let mut ready_tx = Some(ready_tx);
        let mut stream = std::pin::pin!(watcher(pods, watcher::Config::default()));
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    let on_node = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .is_some();
                    if on_node
                        && bound.insert(pod.metadata.name.unwrap_or_default())
                        && bound.len() >= want
                    {
                        return Instant::now();
                    }
                }
                _ => {}
            }
        }
        Instant::now()
    });
    ready_rx.await.context("pod watch ended before syncing")?;
    progress(&format!(
        "creating {} pods with {} clients",
        p.pods, p.clients
    ));
    let t0 = Instant::now();
    let creates = create_many(&config, Kind::Pod, "bench", 0..p.pods, p.clients).await?;
    let last_bound = tokio::time::timeout(Duration::from_secs(600), watch)
        .await
        .context("not all pods bound within 600 s")??;
    let elapsed = last_bound.duration_since(t0);
    let throughput = rate(p.pods, elapsed);
    table.row(&[
        format!(
            "Scheduler throughput, creation → bound, {} pods on {} nodes",
            p.pods, p.nodes
        ),
        format!("{throughput:.0} pods/s ({:.1} s)", elapsed.as_secs_f64()),
        "≥ 1,000/s; upstream scheduler_perf SchedulingBasic CI floor 680 pods/s".into(),
        verdict(throughput >= 1000.0),
    ]);
    table.row(&[
        format!("… of which creates alone ({} clients)", p.clients),
        format!(
            "{:.0}/s ({:.1} s)",
            rate(creates.count, creates.elapsed),
            creates.elapsed.as_secs_f64()
        ),
        String::new(),
        String::new(),
    ]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let server_mem = server.memory()?;
    let sims_mem = memory(sims.pid())?;
    table.row(&[
        format!(
            "Control-plane RSS with {} sim nodes and {} pods",
            p.nodes, p.pods
        ),
        format!(
            "{} (peak {})",
            mb(server_mem.rss_kib),
            mb(server_mem.peak_kib)
        ),
        "API server + store + controllers + scheduler, one process".into(),
        String::new(),
    ]);
    table.row(&[
        format!("sim-nodes process RSS ({} nodes)", p.nodes),
        mb(sims_mem.rss_kib),
        "stands in for the kubelets; not control plane".into(),
        String::new(),
    ]);
    ticks += crate::machine::process_ticks(&server.proc.pid().to_string())
        + crate::machine::process_ticks(&sims.pid().to_string());
    sims.stop();
    server.proc.stop();
    drop(server);

    // 3: a Deployment of 1,000 replicas, then a rollout.
    let (mut server, config) =
        Corten::start_with(p.corten_bin, p.work_dir, &["--disable-agent"]).await?;
    let client = kube::Client::try_from(config)?;
    progress(&format!("starting {} simulated nodes", p.deployment_nodes));
    let mut sims = sim_nodes(p.corten_bin, &server, &client, p.deployment_nodes).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": p.replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "web",
                    "image": "nginx:1.22",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}
                }]}
            }
        }
    }))?;
    progress(&format!("Deployment of {} replicas", p.replicas));
    let t0 = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    wait_rollout(&deployments, p.replicas, 1).await?;
    let up = t0.elapsed();
    table.row(&[
        format!(
            "Deployment of {} replicas on {} sim nodes: create → all available",
            p.replicas, p.deployment_nodes
        ),
        format!("{:.1} s", up.as_secs_f64()),
        "no upstream number on this shape".into(),
        String::new(),
    ]);
    progress("rolling out a new image");
    let t1 = Instant::now();
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "nginx:1.23"}
    ]}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    wait_rollout(&deployments, p.replicas, 2).await?;
    let rolled = t1.elapsed();
    table.row(&[
        format!(
            "Rollout of a new image across the {} replicas (maxSurge/maxUnavailable 25%)",
            p.replicas
        ),
        format!("{:.1} s", rolled.as_secs_f64()),
        "no upstream number on this shape".into(),
        String::new(),
    ]);
    ticks += crate::machine::process_ticks(&server.proc.pid().to_string())
        + crate::machine::process_ticks(&sims.pid().to_string());
    sims.stop();
    server.proc.stop();
    report.tables.push(table);
    Ok(ticks)
}

/// Waits until generation `generation` of the Deployment is rolled out: observed, all
/// `replicas` updated and available, no old replicas left.
async fn wait_rollout(api: &Api<Deployment>, replicas: i32, generation: i64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let d = api.get("web").await?;
        let s = d.status.unwrap_or_default();
        if s.observed_generation.unwrap_or(0) >= generation
            && s.updated_replicas.unwrap_or(0) == replicas
            && s.available_replicas.unwrap_or(0) == replicas
            && s.replicas.unwrap_or(0) == replicas
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Deployment not rolled out in 900 s: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
