//! `corten-bench dns`: cluster DNS under load, against dnsmasq serving the same names.
//!
//! 1. starts `corten server --disable-agent --dns-listen 127.0.0.1:PORT` (the API server and
//!    the DNS server in one process, as on a node; no controllers, scheduler or agent) and creates `--dns-services` ClusterIP
//!    services in namespace `bench`;
//! 2. propagation: creates `--dns-fresh` more services one at a time; for each, the time from
//!    the create's acknowledgement to the first query (polled every millisecond) that
//!    resolves it;
//! 3. load: `--dns-clients` concurrent clients in this process (each its own UDP socket, each
//!    sending its next query when the previous one is answered) for `--dns-seconds`, asking
//!    for the A records of random services (3 in 4 queries) and for names that do not exist
//!    (1 in 4: what the search path of a pod with ndots:5 produces); a query unanswered after
//!    1 s counts as lost;
//! 4. the same load against dnsmasq (Debian's dnsmasq-base: one process, its cache, no
//!    upstream), started on loopback with the same names in a hosts file and `local=/cluster.local/`
//!    (so it answers NXDOMAIN itself, as an authoritative server would), TTL 5 s.
//!
//! Queries are encoded by hand (a 12-byte header and the question) and answers checked by
//! their header alone (id, rcode, answer count), so the load generator stays cheap.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use tokio::net::UdpSocket;

use crate::report::{Report, Table};
use crate::server::{self, Proc};
use crate::stats::{Summary, ms, rate};

/// What the DNS benchmark runs with.
pub struct Params {
    /// The corten binary.
    pub corten_bin: PathBuf,
    /// The dnsmasq binary.
    pub dnsmasq_bin: PathBuf,
    /// Where temp dirs go.
    pub work_dir: PathBuf,
    /// Services in the zone.
    pub services: usize,
    /// Services created one at a time for the propagation measurement.
    pub fresh: usize,
    /// Concurrent load clients.
    pub clients: usize,
    /// Seconds of load per server.
    pub seconds: u64,
}

/// The outcome of one load run.
pub struct Load {
    /// Queries answered as expected.
    pub ok: usize,
    /// Answers with an unexpected rcode or answer count.
    pub wrong: usize,
    /// Queries without an answer within 1 s.
    pub lost: usize,
    /// How long the load ran.
    pub elapsed: Duration,
    /// Latency of the answered queries.
    pub latency: Summary,
}

/// One prepared query: its wire form (id 0) and whether it should resolve.
struct Question {
    wire: Vec<u8>,
    exists: bool,
}

fn encode(name: &str) -> Vec<u8> {
    let mut q = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn questions(services: usize) -> Vec<Question> {
    let mut out = Vec::new();
    for i in 0..services {
        let name = format!("svc-{i}.bench.svc.cluster.local");
        out.push(Question {
            wire: encode(&name),
            exists: true,
        });
        if i % 3 == 0 {
            out.push(Question {
                wire: encode(&format!("{name}.bench.svc.cluster.local")),
                exists: false,
            });
        }
    }
    out
}

/// Closed-loop load from `clients` UDP sockets for `duration`.
pub async fn load(server: SocketAddr, services: usize, clients: usize, duration: Duration) -> Load {
    let questions = Arc::new(questions(services));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let questions = questions.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let (mut wrong, mut lost) = (0usize, 0usize);
            let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
                return (latencies, wrong, clients);
            };
            if socket.connect(server).await.is_err() {
                return (latencies, wrong, clients);
            }
            let mut buf = vec![0u8; 4096];
            let mut n = c * 7919;
            let mut id: u16 = (c as u16).wrapping_mul(1000);
            while start.elapsed() < duration {
                n = n.wrapping_mul(1_103_515_245).wrapping_add(12345) % (1 << 31);
                let q = &questions[n % questions.len()];
                id = id.wrapping_add(1);
                let mut wire = q.wire.clone();
                wire[..2].copy_from_slice(&id.to_be_bytes());
                let sent = Instant::now();
                if socket.send(&wire).await.is_err() {
                    lost += 1;
                    continue;
                }
                let answer = tokio::time::timeout(Duration::from_secs(1), async {
                    loop {
                        match socket.recv(&mut buf).await {
                            Ok(len) if len >= 12 && buf[..2] == id.to_be_bytes() => {
                                return Some(len);
                            }
                            Ok(_) => continue,
                            Err(_) => return None,
                        }
                    }
                })
                .await;
                match answer {
                    Ok(Some(_)) => {
                        latencies.push(sent.elapsed());
                        let rcode = buf[3] & 0x0f;
                        let answers = u16::from_be_bytes([buf[6], buf[7]]);
                        let expected = if q.exists {
                            rcode == 0 && answers >= 1
                        } else {
                            rcode == 3
                        };
                        if !expected {
                            wrong += 1;
                        }
                    }
                    _ => lost += 1,
                }
            }
            (latencies, wrong, lost)
        });
    }
    let (mut all, mut wrong, mut lost) = (Vec::new(), 0, 0);
    while let Some(Ok((l, w, x))) = tasks.join_next().await {
        all.extend(l);
        wrong += w;
        lost += x;
    }
    let elapsed = start.elapsed();
    let ok = all.len() - wrong.min(all.len());
    Load {
        ok,
        wrong,
        lost,
        elapsed,
        latency: Summary::of(all),
    }
}

fn service(i: usize) -> Result<Service> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }))?)
}

/// Asks `server` for `name` once (200 ms timeout): whether it resolved.
async fn resolves(socket: &UdpSocket, name: &str) -> bool {
    let mut wire = encode(name);
    wire[..2].copy_from_slice(&0x4242u16.to_be_bytes());
    if socket.send(&wire).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 1024];
    matches!(
        tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await,
        Ok(Ok(n)) if n >= 12 && buf[3] & 0x0f == 0 && u16::from_be_bytes([buf[6], buf[7]]) >= 1
    )
}

/// Runs the DNS benchmark; adds its tables and notes to `report`; returns the CPU ticks of
/// the servers it started.
pub async fn run(p: &Params, report: &mut Report) -> Result<u64> {
    let bin = std::fs::canonicalize(&p.corten_bin).with_context(|| {
        format!(
            "{} (build it with cargo build -p corten)",
            p.corten_bin.display()
        )
    })?;
    let port = server::free_port()?;
    let dns: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    crate::progress(&format!(
        "starting {} server with DNS on {dns}",
        bin.display()
    ));
    let listen = dns.to_string();
    let (mut corten, config) = server::Corten::start_with(
        &bin,
        &p.work_dir,
        &[
            "--disable-agent",
            "--dns-listen",
            &listen,
            "--dns-upstream",
            "127.0.0.1:9",
        ],
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    crate::api::ensure_namespace(&client, "bench").await?;
    let api: Api<Service> = Api::namespaced(client, "bench");
    crate::progress(&format!("creating {} services", p.services));
    for i in 0..p.services {
        api.create(&PostParams::default(), &service(i)?).await?;
    }
    let probe = UdpSocket::bind("127.0.0.1:0").await?;
    probe.connect(dns).await?;
    let last = format!(
        "svc-{}.bench.svc.cluster.local",
        p.services.saturating_sub(1)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !resolves(&probe, &last).await {
        if Instant::now() > deadline {
            bail!(
                "{last} does not resolve; log tail:\n{}",
                corten.proc.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    crate::progress(&format!("propagation: {} services, one at a time", p.fresh));
    let mut propagation = Vec::new();
    for i in p.services..p.services + p.fresh {
        api.create(&PostParams::default(), &service(i)?).await?;
        let acked = Instant::now();
        let name = format!("svc-{i}.bench.svc.cluster.local");
        while !resolves(&probe, &name).await {
            if acked.elapsed() > Duration::from_secs(10) {
                bail!("{name} not resolvable 10 s after its creation");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        propagation.push(acked.elapsed());
    }
    let propagation = Summary::of(propagation);

    let duration = Duration::from_secs(p.seconds);
    crate::progress(&format!(
        "load on corten: {} clients, {duration:?}",
        p.clients
    ));
    let ticks0 = crate::machine::process_ticks(&corten.proc.pid().to_string());
    let ours = load(dns, p.services, p.clients, duration).await;
    let corten_ticks = crate::machine::process_ticks(&corten.proc.pid().to_string()) - ticks0;
    let rss = corten.memory()?;
    corten.proc.stop();

    crate::progress("load on dnsmasq");
    let (peer, peer_version, peer_ticks) =
        with_dnsmasq(&p.dnsmasq_bin, &p.work_dir, p.services, |addr| {
            load(addr, p.services, p.clients, duration)
        })
        .await?;

    let mut t = Table::new(
        &format!(
            "Cluster DNS ({} services; {} UDP clients, closed loop, {} s each; 1 in 4 queries NXDOMAIN)",
            p.services, p.clients, p.seconds
        ),
        &[
            "Measurement",
            "corten dns",
            &format!("dnsmasq {peer_version}"),
        ],
    );
    let row = |l: &Load| {
        (
            format!("{:.0}/s", rate(l.ok + l.wrong, l.elapsed)),
            format!(
                "p50 {}, p99 {}, max {}",
                ms(l.latency.p50),
                ms(l.latency.p99),
                ms(l.latency.max)
            ),
            format!(
                "{} wrong, {} lost of {}",
                l.wrong,
                l.lost,
                l.ok + l.wrong + l.lost
            ),
        )
    };
    let (a, b) = (row(&ours), row(&peer));
    t.row(&["Queries/s".into(), a.0, b.0]);
    t.row(&["Latency".into(), a.1, b.1]);
    t.row(&["Errors".into(), a.2, b.2]);
    let cpu = |ticks: u64| {
        format!(
            "{:.0}% of one core",
            100.0 * ticks as f64 / 100.0 / p.seconds as f64
        )
    };
    t.row(&[
        "Server CPU during the load".into(),
        cpu(corten_ticks),
        cpu(peer_ticks),
    ]);
    t.row(&[
        format!(
            "New service → resolvable (after the create's ack, {} services)",
            p.fresh
        ),
        format!(
            "p50 {}, p99 {}, max {}",
            ms(propagation.p50),
            ms(propagation.p99),
            ms(propagation.max)
        ),
        "(static hosts file)".into(),
    ]);
    t.row(&[
        "Server RSS after the load".into(),
        format!(
            "{} (API server and store included)",
            crate::stats::mb(rss.rss_kib)
        ),
        String::new(),
    ]);
    report.tables.push(t);
    report.notes.push(format!(
        "DNS: the load generator is this tool (another process), on the same 2 cores as the \
         server; corten serves from its watch-fed zone through hickory-server; dnsmasq serves \
         the same {} names from a hosts file with its cache ({}).",
        p.services, "--no-resolv --local=/cluster.local/ --local-ttl=5"
    ));
    Ok(corten_ticks + peer_ticks)
}

/// Starts dnsmasq on a free loopback port with the benchmark's names, runs `f` against it,
/// stops it; returns `f`'s result, dnsmasq's version and its CPU ticks during `f`.
async fn with_dnsmasq<F, Fut>(
    bin: &Path,
    work_dir: &Path,
    services: usize,
    f: F,
) -> Result<(Load, String, u64)>
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Load>,
{
    let dir = tempfile::Builder::new()
        .prefix("corten-bench-dnsmasq-")
        .tempdir_in(work_dir)?;
    let hosts = dir.path().join("hosts");
    let mut body = String::new();
    for i in 0..services {
        body.push_str(&format!(
            "10.43.{}.{} svc-{i}.bench.svc.cluster.local\n",
            10 + i / 250,
            i % 250 + 1
        ));
    }
    std::fs::write(&hosts, body)?;
    let version = Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(2)
                .map(String::from)
        })
        .unwrap_or_else(|| "?".into());
    let port = server::free_port()?;
    let mut cmd = Command::new(bin);
    cmd.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        "--local=/cluster.local/",
        "--local-ttl=5",
        "--cache-size=10000",
        "--pid-file=",
        "--user=root",
        &format!("--port={port}"),
        &format!("--addn-hosts={}", hosts.display()),
        &format!(
            "--log-facility={}",
            dir.path().join("dnsmasq.log").display()
        ),
    ]);
    let mut proc = Proc::spawn("dnsmasq", cmd, dir.path().join("stderr.log"))
        .context("dnsmasq (Debian: apt-get install dnsmasq-base)")?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let probe = UdpSocket::bind("127.0.0.1:0").await?;
    probe.connect(addr).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !resolves(&probe, "svc-0.bench.svc.cluster.local").await {
        proc.check_alive()?;
        if Instant::now() > deadline {
            bail!("dnsmasq does not answer: {}", proc.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ticks0 = crate::machine::process_ticks(&proc.pid().to_string());
    let out = f(addr).await;
    let ticks = crate::machine::process_ticks(&proc.pid().to_string()) - ticks0;
    proc.stop();
    Ok((out, version, ticks))
}
