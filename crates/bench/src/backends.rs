//! `corten-bench datastore`: the API server on its embedded store against the same API server
//! on etcd 3.4, in one run on one machine. For each backend a fresh `corten server` (the API
//! server alone: no controllers, scheduler or agent) is started — the embedded one in a temp
//! data dir, the etcd one with `--datastore-endpoint` pointing at a single-member etcd on
//! loopback (default durability) — then the same workload runs through HTTPS with kube-rs:
//! `--objects` pod creates with `--clients` concurrent clients (creates/s, latency), and the
//! watch benchmark of the `api` module (`--watchers` watchers, `--watch-writes` creates;
//! latency from the write's acknowledgement, and from its sending, to each watcher's receipt).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::report::{Report, Table};
use crate::stats::{ms, rate};
use crate::workload::Kind;
use crate::{api, machine, progress, server};

/// What one backend measured.
struct Measured {
    creates_per_s: f64,
    create: crate::stats::Summary,
    watch: api::Watches,
}

/// The workload's size.
pub struct Params<'a> {
    /// The corten binary.
    pub corten_bin: &'a Path,
    /// The etcd binary.
    pub etcd_bin: &'a Path,
    /// Where temp data dirs go.
    pub work_dir: &'a Path,
    /// Pods created for the create rate.
    pub objects: usize,
    /// Concurrent creating clients.
    pub clients: usize,
    /// Watchers.
    pub watchers: usize,
    /// Creates the watch benchmark makes.
    pub watch_writes: usize,
    /// Time between them.
    pub watch_interval: Duration,
}

/// Runs both backends and adds the table; returns the CPU ticks of the processes started.
pub async fn run(p: &Params<'_>, report: &mut Report) -> Result<u64> {
    let bin = std::fs::canonicalize(p.corten_bin)
        .with_context(|| format!("{} (build it first)", p.corten_bin.display()))?;
    let mut ticks = 0;
    let base = [
        "--disable-controller-manager",
        "--disable-scheduler",
        "--disable-agent",
    ];

    progress("datastore: API server on the embedded store");
    let (mut srv, config) = server::Corten::start_with(&bin, p.work_dir, &base).await?;
    let embedded = measure(p, &config).await;
    ticks += machine::process_ticks(&srv.proc.pid().to_string());
    srv.proc.stop();
    let embedded = embedded?;

    progress(&format!("datastore: starting {}", p.etcd_bin.display()));
    let version = server::Etcd::version(p.etcd_bin);
    let (mut etcd, _client) = server::Etcd::start(p.etcd_bin, p.work_dir).await?;
    let mut flags = base.to_vec();
    flags.extend(["--datastore-endpoint", etcd.endpoint.as_str()]);
    progress("datastore: API server on etcd");
    let on_etcd = async {
        let (mut srv, config) = server::Corten::start_with(&bin, p.work_dir, &flags).await?;
        let m = measure(p, &config).await;
        let t = machine::process_ticks(&srv.proc.pid().to_string());
        srv.proc.stop();
        Ok::<_, anyhow::Error>((m?, t))
    }
    .await;
    ticks += machine::process_ticks(&etcd.proc.pid().to_string());
    etcd.proc.stop();
    let (on_etcd, t) = on_etcd?;
    ticks += t;

    let mut t = Table::new(
        &format!(
            "API server on the embedded store vs on etcd {version} (pods, {} clients, HTTPS, kube-rs)",
            p.clients
        ),
        &[
            "Measurement",
            "embedded (SQLite)",
            "etcd",
            "embedded / etcd",
        ],
    );
    t.row(&[
        format!("Pod creates/s ({} pods, durable)", p.objects),
        format!("{:.0}/s", embedded.creates_per_s),
        format!("{:.0}/s", on_etcd.creates_per_s),
        format!(
            "{:.2}×",
            embedded.creates_per_s / on_etcd.creates_per_s.max(1e-9)
        ),
    ]);
    t.row(&[
        "Create latency p50 / p99".into(),
        format!("{} / {}", ms(embedded.create.p50), ms(embedded.create.p99)),
        format!("{} / {}", ms(on_etcd.create.p50), ms(on_etcd.create.p99)),
        String::new(),
    ]);
    let watch_row = |w: &api::Watches| {
        format!(
            "p50 {}, p99 {} ({} of {} events)",
            ms(w.from_ack.p50),
            ms(w.from_ack.p99),
            w.received,
            w.expected
        )
    };
    t.row(&[
        format!(
            "Watch latency, write ack → receipt ({} watchers × {} creates, {} ms apart)",
            p.watchers,
            p.watch_writes,
            p.watch_interval.as_millis()
        ),
        watch_row(&embedded.watch),
        watch_row(&on_etcd.watch),
        format!(
            "p99 {:.2}×",
            embedded.watch.from_ack.p99.as_secs_f64()
                / on_etcd.watch.from_ack.p99.as_secs_f64().max(1e-9)
        ),
    ]);
    t.row(&[
        "Watch latency, write sent → receipt, p50 / p99".into(),
        format!(
            "{} / {}",
            ms(embedded.watch.from_send.p50),
            ms(embedded.watch.from_send.p99)
        ),
        format!(
            "{} / {}",
            ms(on_etcd.watch.from_send.p50),
            ms(on_etcd.watch.from_send.p99)
        ),
        format!(
            "p99 {:.2}×",
            embedded.watch.from_send.p99.as_secs_f64()
                / on_etcd.watch.from_send.p99.as_secs_f64().max(1e-9)
        ),
    ]);
    report.tables.push(t);
    report.notes.push(format!(
        "Datastore: the same corten server binary and workload, first on its embedded store, \
         then with `--datastore-endpoint` on etcd {version} (single member on loopback, default \
         durability, same disk); the API server reads and watches etcd directly (no watch \
         cache), so every list, write and watch event crosses gRPC."
    ));
    Ok(ticks)
}

async fn measure(p: &Params<'_>, config: &kube::Config) -> Result<Measured> {
    let client = kube::Client::try_from(config.clone())?;
    api::ensure_namespace(&client, "bench").await?;
    api::ensure_namespace(&client, "bench-watch").await?;
    progress(&format!(
        "creating {} pods with {} clients",
        p.objects, p.clients
    ));
    let creates = api::create_many(config, Kind::Pod, "bench", 0..p.objects, p.clients).await?;
    progress(&format!(
        "watch latency: {} watchers, {} creates",
        p.watchers, p.watch_writes
    ));
    let watch = api::watch(
        config,
        Kind::Pod,
        "bench-watch",
        p.watchers,
        p.watch_writes,
        p.watch_interval,
    )
    .await?;
    Ok(Measured {
        creates_per_s: rate(creates.count, creates.elapsed),
        create: creates.latency,
        watch,
    })
}
