//! `corten-bench`: measures corten against the targets of its performance issue, with real
//! parts only — the release `corten server` binary over HTTPS, its SQLite store, and etcd 3.4.
//!
//! `corten-bench all` (what `scripts/bench.sh` runs) does, in order:
//! 1. starts `corten server` on a free loopback port in a temp data dir and reads its admin
//!    kubeconfig; records its idle RSS (VmRSS from /proc/PID/status);
//! 2. creates `--objects` pods (default 10,000) with `--clients` concurrent clients (default 16),
//!    each on its own HTTPS connection, each sending its next create when the previous one is
//!    acknowledged (acknowledged = durable: the store fsyncs before answering); RSS;
//! 3. list latency (the whole collection, and one page of 500), get latency;
//! 4. watch latency: `--watchers` watches (default 100) on another namespace, then one writer
//!    creates `--watch-writes` pods there, one every `--watch-interval-ms`; for every
//!    (watcher, event) the time from the writer's acknowledgement to the watcher reading the
//!    event (events that arrive before the acknowledgement count as 0, and are counted);
//! 5. fills up to `--large-objects` (default 100,000), then list, get and RSS again;
//! 6. stops the server, then puts of new keys with 1 KB values into corten's `SqliteStore`
//!    (in process) and into etcd 3.4 (started on loopback with a temp data dir and its default
//!    durability, driven over gRPC with the `etcd-client` crate), with 1 and with 64 concurrent
//!    writers, interleaved; reports puts/s and the corten/etcd ratio.
//!
//! `corten-bench datastore` runs the API server on its embedded store and on etcd in one run
//! (pod creates/s, watch latency); see the `backends` module.
//!
//! `corten-bench endpoints` times a pod readiness change until the Service's EndpointSlice and
//! Endpoints show it; see the `endpoints` module.
//!
//! `corten-bench sched` measures the scheduler and controllers on simulated nodes (scheduler
//! throughput for 10,000 pods on 5,000 nodes, control-plane memory there, a Deployment of
//! 1,000 replicas and its rollout); see the `sched` module.
//!
//! `corten-bench dns` measures cluster DNS (queries/s, p99, propagation of a new service)
//! against dnsmasq; see the `dns` module.
//!
//! The results go to stdout as markdown, and into a dated section of `docs/benchmarks.md`.
//! Child processes are killed when the tool ends, also on errors and Ctrl-C.

mod api;
mod backends;
mod dns;
mod endpoints;
mod kv;
mod machine;
mod pods;
mod proxy;
mod report;
mod sched;
mod server;
mod stats;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;

use report::{Report, Table, verdict};
use stats::{Summary, mb, ms, rate};
use workload::Kind;

/// Benchmarks corten's API server and store (and etcd 3.4 as the peer).
#[derive(Parser, Debug, Clone)]
#[command(name = "corten-bench", version, about)]
struct Cli {
    /// What to run: everything, only the API server, or only store-vs-etcd.
    #[arg(value_enum, default_value = "all")]
    part: Part,
    /// The resource the API benchmark writes.
    #[arg(long, value_enum, default_value = "pod")]
    kind: Kind,
    /// Objects for the create-rate measurement (and the first list/get/RSS point).
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Objects stored for the second list/get/RSS point (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    large_objects: usize,
    /// Concurrent API clients creating objects.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Objects the watch benchmark creates.
    #[arg(long, default_value_t = 300)]
    watch_writes: usize,
    /// Milliseconds between the watch benchmark's creates.
    #[arg(long, default_value_t = 10)]
    watch_interval_ms: u64,
    /// Full lists per measurement point (at most 3 above 20,000 objects).
    #[arg(long, default_value_t = 5)]
    list_reps: usize,
    /// Gets per measurement point.
    #[arg(long, default_value_t = 1000)]
    gets: usize,
    /// Puts with one writer, per store.
    #[arg(long, default_value_t = 2000)]
    puts_serial: usize,
    /// Puts with 64 writers, per store.
    #[arg(long, default_value_t = 20_000)]
    puts_parallel: usize,
    /// Concurrent writers of the parallel put run.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Simulated nodes of the scheduler throughput run (sched).
    #[arg(long, default_value_t = 5000)]
    sim_nodes: usize,
    /// Simulated nodes of the Deployment run (sched).
    #[arg(long, default_value_t = 100)]
    deployment_nodes: usize,
    /// Replicas of the Deployment run (sched).
    #[arg(long, default_value_t = 1000)]
    replicas: i32,
    /// The corten binary.
    #[arg(long, default_value = "target/release/corten")]
    corten_bin: PathBuf,
    /// Pods the node agent benchmark starts (one at a time, then all at once).
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Where `scripts/images.sh` left the test images (pods benchmark).
    #[arg(long, default_value = "target/images")]
    images_dir: PathBuf,
    /// Services in the zone of the DNS benchmark.
    #[arg(long, default_value_t = 1000)]
    dns_services: usize,
    /// Services the DNS benchmark creates one at a time (time until resolvable).
    #[arg(long, default_value_t = 100)]
    dns_fresh: usize,
    /// Concurrent UDP clients of the DNS load.
    #[arg(long, default_value_t = 32)]
    dns_clients: usize,
    /// Seconds of DNS load per server.
    #[arg(long, default_value_t = 10)]
    dns_seconds: u64,
    /// The dnsmasq binary (the DNS benchmark's peer; Debian's dnsmasq-base).
    #[arg(long, default_value = "dnsmasq")]
    dnsmasq_bin: PathBuf,
    /// Pods behind the Service of the endpoints benchmark.
    #[arg(long, default_value_t = 100)]
    endpoint_pods: usize,
    /// Readiness flips the endpoints benchmark times.
    #[arg(long, default_value_t = 200)]
    flips: usize,
    /// The etcd binary (3.4).
    #[arg(long, default_value = "etcd")]
    etcd_bin: PathBuf,
    /// Where temp data dirs go (same disk for corten and etcd).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
    /// The markdown file that gets a dated section with the results.
    #[arg(long, default_value = "docs/benchmarks.md")]
    docs: PathBuf,
    /// Print the results only; do not touch the docs file.
    #[arg(long)]
    no_docs: bool,
    /// A note added to the run's section (e.g. what else ran on the machine).
    #[arg(long)]
    note: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    All,
    Api,
    Store,
    /// The node agent: pod startup latency against the raw CRI floor, agent memory.
    Pods,
    /// The service proxy (needs root and `nft`; not part of `all`).
    Proxy,
    /// Cluster DNS against dnsmasq (not part of `all`).
    Dns,
    /// The scheduler and controllers on simulated nodes (not part of `all`).
    Sched,
    /// The API server on its embedded store vs on etcd: pod creates/s and watch latency,
    /// same run (not part of `all`).
    Datastore,
    /// Pod readiness → EndpointSlice/Endpoints latency through the controllers (not part of
    /// `all`).
    Endpoints,
}

/// CPU ticks used by the processes this tool started (read before they stop).
#[derive(Default)]
struct OwnTicks(u64);

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("corten-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(cli) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Child processes are owned by guards inside `run`; they are stopped by now.
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corten-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

pub(crate) fn progress(msg: &str) {
    eprintln!("[corten-bench] {msg}");
}

async fn run(cli: Cli) -> Result<()> {
    let machine = machine::Machine::detect();
    let sampler = machine::LoadSampler::start();
    let (busy0, total0) = machine::machine_ticks();
    let self_ticks0 = machine::process_ticks("self");
    let started = Instant::now();
    let date = jiff::Timestamp::now();
    let mut own = OwnTicks::default();
    let mut report = Report {
        heading: format!(
            "Run: {} ({})",
            date.strftime("%Y-%m-%d"),
            match cli.part {
                Part::All => "all",
                Part::Api => "API server only",
                Part::Store => "store vs etcd only",
                Part::Pods => "node agent: pod startup and memory",
                Part::Proxy => "service proxy",
                Part::Dns => "cluster DNS",
                Part::Sched => "scheduler and controllers on simulated nodes",
                Part::Datastore => "API server on the embedded store vs on etcd",
                Part::Endpoints => "pod readiness to Endpoints",
            }
        ),
        ..Default::default()
    };
    report.facts.push((
        "Date".into(),
        date.strftime("%Y-%m-%d %H:%M UTC").to_string(),
    ));
    report.facts.push((
        "Machine".into(),
        format!(
            "{}, {} cores, {} RAM, Linux {}",
            machine.cpu, machine.cores, machine.ram, machine.kernel
        ),
    ));
    report.facts.push((
        "Build".into(),
        format!(
            "`{}` ({}); corten-bench {} build",
            cli.corten_bin.display(),
            if cli.corten_bin.to_string_lossy().contains("/debug/") {
                "cargo dev profile: workspace crates unoptimised, dependencies opt-level 1"
            } else {
                "cargo --release: opt-level 3, line-table debug info"
            },
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        ),
    ));
    report.facts.push((
        "Temp data dirs".into(),
        format!("under {}", cli.work_dir.display()),
    ));

    if matches!(cli.part, Part::All | Part::Api) {
        api_part(&cli, &mut report, &mut own).await?;
    }
    if matches!(cli.part, Part::All | Part::Store) {
        store_part(&cli, &mut report, &mut own).await?;
    }
    if cli.part == Part::Pods {
        let bin = std::fs::canonicalize(&cli.corten_bin).with_context(|| {
            format!(
                "{} (cargo build --release -p corten)",
                cli.corten_bin.display()
            )
        })?;
        pods::run(&bin, &cli.images_dir, &cli.work_dir, cli.pods, &mut report).await?;
    }
    if cli.part == Part::Proxy {
        let bin = std::fs::canonicalize(&cli.corten_bin)
            .with_context(|| format!("{} (build it first)", cli.corten_bin.display()))?;
        proxy::run(&bin, &cli.work_dir, &mut report).await?;
    }
    if cli.part == Part::Dns {
        let params = dns::Params {
            corten_bin: cli.corten_bin.clone(),
            dnsmasq_bin: cli.dnsmasq_bin.clone(),
            work_dir: cli.work_dir.clone(),
            services: cli.dns_services,
            fresh: cli.dns_fresh,
            clients: cli.dns_clients,
            seconds: cli.dns_seconds,
        };
        own.0 += dns::run(&params, &mut report).await?;
    }
    if cli.part == Part::Sched {
        let bin = std::fs::canonicalize(&cli.corten_bin)
            .with_context(|| format!("{} (build it first)", cli.corten_bin.display()))?;
        let params = sched::Params {
            corten_bin: &bin,
            work_dir: &cli.work_dir,
            nodes: cli.sim_nodes,
            pods: cli.objects,
            clients: cli.clients,
            deployment_nodes: cli.deployment_nodes,
            replicas: cli.replicas,
        };
        own.0 += sched::run(&params, &mut report).await?;
    }
    if cli.part == Part::Datastore {
        let params = backends::Params {
            corten_bin: &cli.corten_bin,
            etcd_bin: &cli.etcd_bin,
            work_dir: &cli.work_dir,
            objects: cli.objects,
            clients: cli.clients,
            watchers: cli.watchers,
            watch_writes: cli.watch_writes,
            watch_interval: Duration::from_millis(cli.watch_interval_ms),
        };
        own.0 += backends::run(&params, &mut report).await?;
    }

    if cli.part == Part::Endpoints {
        let bin = std::fs::canonicalize(&cli.corten_bin)
            .with_context(|| format!("{} (build it first)", cli.corten_bin.display()))?;
        own.0 += endpoints::run(
            &bin,
            &cli.work_dir,
            cli.endpoint_pods,
            cli.flips,
            &mut report,
        )
        .await?;
    }

    let (busy1, total1) = machine::machine_ticks();
    let ours = own.0 + machine::process_ticks("self").saturating_sub(self_ticks0);
    let machine_busy = busy1.saturating_sub(busy0);
    let span = total1.saturating_sub(total0).max(1);
    let (sampled_busy, samples, most) = sampler.finish();
    report.facts.push((
        "Duration".into(),
        format!("{:.0} s", started.elapsed().as_secs_f64()),
    ));
    report.facts.push((
        "Machine load during the run".into(),
        format!(
            "CPUs {:.0}% busy overall; this tool and the servers it started used {:.0}% of the \
             machine, other processes {:.0}%; compiler processes (rustc, cc, ld) were running in \
             {sampled_busy} of {samples} samples (up to {most} at once)",
            100.0 * machine_busy as f64 / span as f64,
            100.0 * ours.min(machine_busy) as f64 / span as f64,
            100.0 * machine_busy.saturating_sub(ours) as f64 / span as f64,
        ),
    ));
    for n in &cli.note {
        report.notes.push(n.clone());
    }

    let markdown = report.markdown();
    println!("{markdown}");
    if !cli.no_docs {
        report::update_doc(&cli.docs, &markdown)?;
        progress(&format!("results written to {}", cli.docs.display()));
    }
    Ok(())
}

async fn api_part(cli: &Cli, report: &mut Report, own: &mut OwnTicks) -> Result<()> {
    let bin = std::fs::canonicalize(&cli.corten_bin).with_context(|| {
        format!(
            "{} (build it with cargo build --release -p corten)",
            cli.corten_bin.display()
        )
    })?;
    progress(&format!("starting {} server", bin.display()));
    let (mut server, config) = server::Corten::start(&bin, &cli.work_dir).await?;
    let result = api_measure(cli, report, &server, &config).await;
    own.0 += machine::process_ticks(&server.proc.pid().to_string());
    server.proc.stop();
    result
}

async fn api_measure(
    cli: &Cli,
    report: &mut Report,
    server: &server::Corten,
    config: &kube::Config,
) -> Result<()> {
    let kind = cli.kind;
    let noun = kind.noun();
    let client = kube::Client::try_from(config.clone())?;
    let mut t = Table::new(
        &format!(
            "API server (HTTPS, {noun} of {} bytes of JSON, kube-rs client on the same machine)",
            kind.body("bench", &api::name(0), 0).len()
        ),
        &["Measurement", "Result", "Target", ""],
    );
    let settle = Duration::from_secs(2);

    tokio::time::sleep(settle).await;
    let idle = server.memory()?;
    t.row(&[
        "Server RSS, idle (after start)".into(),
        mb(idle.rss_kib),
        "≤ 50 MB".into(),
        verdict(idle.rss_kib * 1024 <= 50_000_000),
    ]);

    api::ensure_namespace(&client, "bench").await?;
    api::ensure_namespace(&client, "bench-watch").await?;

    progress(&format!(
        "creating {} {noun} with {} clients",
        cli.objects, cli.clients
    ));
    let creates = api::create_many(config, kind, "bench", 0..cli.objects, cli.clients).await?;
    let per_s = rate(creates.count, creates.elapsed);
    t.row(&[
        format!(
            "Creates/s, {} {noun}, {} clients, durable",
            creates.count, cli.clients
        ),
        format!("{per_s:.0}/s ({:.1} s)", creates.elapsed.as_secs_f64()),
        "≥ 2,000/s".into(),
        verdict(per_s >= 2000.0),
    ]);
    t.row(&[
        "Create latency per request".into(),
        creates.latency.describe(),
        String::new(),
        String::new(),
    ]);
    tokio::time::sleep(settle).await;
    let mem = server.memory()?;
    t.row(&[
        format!("Server RSS, {} {noun} stored", cli.objects),
        format!("{} (peak so far {})", mb(mem.rss_kib), mb(mem.peak_kib)),
        String::new(),
        String::new(),
    ]);
    read_latencies(cli, &client, &mut t, cli.objects).await?;

    progress(&format!(
        "watch latency: {} watchers, {} creates",
        cli.watchers, cli.watch_writes
    ));
    let w = api::watch(
        config,
        kind,
        "bench-watch",
        cli.watchers,
        cli.watch_writes,
        Duration::from_millis(cli.watch_interval_ms),
    )
    .await?;
    t.row(&[
        format!(
            "Watch latency, write ack → receipt, {} watchers × {} creates ({} ms apart)",
            cli.watchers, cli.watch_writes, cli.watch_interval_ms
        ),
        format!(
            "p50 {}, p99 {}, max {}",
            ms(w.from_ack.p50),
            ms(w.from_ack.p99),
            ms(w.from_ack.max)
        ),
        "p99 ≤ 50 ms".into(),
        verdict(w.from_ack.p99 <= Duration::from_millis(50) && w.received == w.expected),
    ]);
    t.row(&[
        "Watch latency, write sent → receipt (includes the durable write)".into(),
        format!(
            "p50 {}, p99 {}, max {}; {} of {} events received, {} before the ack",
            ms(w.from_send.p50),
            ms(w.from_send.p99),
            ms(w.from_send.max),
            w.received,
            w.expected,
            w.before_ack
        ),
        String::new(),
        String::new(),
    ]);

    if cli.large_objects > cli.objects {
        progress(&format!("filling up to {} {noun}", cli.large_objects));
        let fill = api::create_many(
            config,
            kind,
            "bench",
            cli.objects..cli.large_objects,
            cli.clients,
        )
        .await?;
        t.row(&[
            format!(
                "Creates/s, {noun} {} → {}, {} clients",
                cli.objects, cli.large_objects, cli.clients
            ),
            format!(
                "{:.0}/s ({:.1} s); latency {}",
                rate(fill.count, fill.elapsed),
                fill.elapsed.as_secs_f64(),
                fill.latency.describe()
            ),
            String::new(),
            String::new(),
        ]);
        tokio::time::sleep(settle).await;
        let mem = server.memory()?;
        t.row(&[
            format!("Server RSS, {} {noun} stored", cli.large_objects),
            format!("{} (peak so far {})", mb(mem.rss_kib), mb(mem.peak_kib)),
            "≤ 1 GB".into(),
            verdict(mem.rss_kib * 1024 <= 1_000_000_000),
        ]);
        read_latencies(cli, &client, &mut t, cli.large_objects).await?;
        let after = server.memory()?;
        t.row(&[
            format!("Server RSS after the lists of {} {noun}", cli.large_objects),
            format!("{} (peak {})", mb(after.rss_kib), mb(after.peak_kib)),
            "≤ 1 GB".into(),
            verdict(after.peak_kib * 1024 <= 1_000_000_000),
        ]);
    }
    report.tables.push(t);
    Ok(())
}

async fn read_latencies(
    cli: &Cli,
    client: &kube::Client,
    t: &mut Table,
    stored: usize,
) -> Result<()> {
    let kind = cli.kind;
    progress(&format!("list and get latency with {stored} stored"));
    // Whole lists of 100,000 objects take seconds each: fewer repetitions there.
    let reps = if stored > 20_000 {
        cli.list_reps.min(3)
    } else {
        cli.list_reps
    };
    let full = api::list(client, kind, "bench", None, reps).await?;
    t.row(&[
        format!("List all, {stored} stored"),
        format!(
            "p50 {}, max {} (n={}; {} items, {:.1} MB)",
            ms(full.latency.p50),
            ms(full.latency.max),
            full.latency.n,
            full.items,
            full.bytes as f64 / 1e6
        ),
        String::new(),
        String::new(),
    ]);
    let page = api::list(client, kind, "bench", Some(500), 20).await?;
    t.row(&[
        format!("List one page (limit=500), {stored} stored"),
        page.latency.describe(),
        String::new(),
        String::new(),
    ]);
    let gets: Summary = api::get(client, kind, "bench", stored, cli.gets).await?;
    t.row(&[
        format!("Get, {stored} stored (one client, sequential)"),
        gets.describe(),
        String::new(),
        String::new(),
    ]);
    Ok(())
}

async fn store_part(cli: &Cli, report: &mut Report, own: &mut OwnTicks) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("corten-bench-store-")
        .tempdir_in(&cli.work_dir)
        .context("creating the store's temp dir")?;
    let sqlite = Arc::new(store::sqlite::SqliteStore::open(
        &dir.path().join("state.db"),
    )?);
    progress(&format!("starting {}", cli.etcd_bin.display()));
    let etcd_version = server::Etcd::version(&cli.etcd_bin);
    let (mut etcd, etcd_client) = server::Etcd::start(&cli.etcd_bin, &cli.work_dir).await?;
    let result = async {
        let mut t = Table::new(
            &format!(
                "Store vs etcd {etcd_version} (puts of new keys, {} B values, durable, same disk)",
                kv::VALUE_BYTES
            ),
            &["Writers", "corten store (SQLite)", "etcd", "corten / etcd"],
        );
        for (writers, total) in [(1, cli.puts_serial), (cli.writers, cli.puts_parallel)] {
            progress(&format!("store: {total} puts with {writers} writers"));
            let s = kv::sqlite_puts(sqlite.clone(), &format!("w{writers}"), total, writers).await?;
            progress(&format!("etcd: {total} puts with {writers} writers"));
            let e = kv::etcd_puts(&etcd_client, &format!("w{writers}"), total, writers).await?;
            let (sr, er) = (rate(s.count, s.elapsed), rate(e.count, e.elapsed));
            t.row(&[
                format!("{writers} ({total} puts)"),
                format!("{sr:.0}/s (p50 {}, p99 {})", ms(s.latency.p50), ms(s.latency.p99)),
                format!("{er:.0}/s (p50 {}, p99 {})", ms(e.latency.p50), ms(e.latency.p99)),
                format!("{:.2}×", sr / er.max(1e-9)),
            ]);
        }
        report.tables.push(t);
        report.notes.push(format!(
            "Store vs etcd: corten's SqliteStore runs in the benchmark process (as it is embedded \
             in the API server; WAL, synchronous=FULL, group commit); etcd {etcd_version} runs as a \
             single member on loopback with default settings (WAL fsync before acknowledging) and \
             is driven over gRPC with the etcd-client crate, all writers sharing one client \
             connection. Both write to the same disk, in the same run, interleaved."
        ));
        Ok::<_, anyhow::Error>(())
    }
    .await;
    own.0 += machine::process_ticks(&etcd.proc.pid().to_string());
    etcd.proc.stop();
    result
}
