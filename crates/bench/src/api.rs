//! Measurements through the HTTPS API of a running `corten server`: creates per second with
//! concurrent clients, list and get latency, and watch delivery latency with many watchers.
//!
//! Requests are sent with kube-rs' client (rustls, the admin bearer token) as raw requests with
//! pre-serialized JSON bodies, so the numbers are the server's and the transport's, not the cost
//! of typed (de)serialization in the benchmark itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{AsyncBufReadExt, StreamExt};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::stats::Summary;
use crate::workload::Kind;

/// The outcome of a batch of creates.
#[derive(Debug)]
pub struct Creates {
    /// Objects created.
    pub count: usize,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// Per-request latency.
    pub latency: Summary,
}

/// The name of object number `i`.
pub fn name(i: usize) -> String {
    format!("bench-{i:06}")
}

/// Creates namespace `ns` (an existing one is fine).
pub async fn ensure_namespace(client: &kube::Client, ns: &str) -> Result<()> {
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}
    }))?;
    let request = http::Request::post("/api/v1/namespaces")
        .header("content-type", "application/json")
        .body(body)?;
    match client.request_text(request).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {ns}")),
    }
}

/// Creates objects `range` in `ns` with `clients` concurrent clients, each on its own
/// connection, each sending its next request as soon as the previous one is acknowledged.
pub async fn create_many(
    config: &kube::Config,
    kind: Kind,
    ns: &str,
    range: std::ops::Range<usize>,
    clients: usize,
) -> Result<Creates> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let url = kind.collection(ns);
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..clients.max(1) {
        let client = kube::Client::try_from(config.clone())?;
        let (next, url, ns) = (next.clone(), url.clone(), ns.to_string());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let body = kind.body(&ns, &name(i), i);
                let request = http::Request::post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body)?;
                let sent = Instant::now();
                client
                    .request_text(request)
                    .await
                    .with_context(|| format!("creating {} {}", kind.plural(), name(i)))?;
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(range.len());
    for task in tasks {
        latencies.extend(task.await.context("create task panicked")??);
    }
    let elapsed = started.elapsed();
    Ok(Creates {
        count: latencies.len(),
        elapsed,
        latency: Summary::of(latencies),
    })
}

#[derive(Deserialize)]
struct ListHead {
    #[serde(default)]
    items: Vec<IgnoredAny>,
}

/// The outcome of repeated lists.
#[derive(Debug)]
pub struct Lists {
    /// Latency of each list (request sent to the whole body read).
    pub latency: Summary,
    /// Items in the last answer.
    pub items: usize,
    /// Bytes in the last answer.
    pub bytes: usize,
}

/// Lists `ns` `reps` times (one page of `limit`, or everything), one at a time.
pub async fn list(
    client: &kube::Client,
    kind: Kind,
    ns: &str,
    limit: Option<usize>,
    reps: usize,
) -> Result<Lists> {
    let mut url = kind.collection(ns);
    if let Some(limit) = limit {
        url.push_str(&format!("?limit={limit}"));
    }
    let mut latencies = Vec::new();
    let mut last = String::new();
    for _ in 0..reps.max(1) {
        let request = http::Request::get(url.as_str()).body(Vec::new())?;
        let sent = Instant::now();
        last = client
            .request_text(request)
            .await
            .with_context(|| format!("listing {url}"))?;
        latencies.push(sent.elapsed());
    }
    let head: ListHead = serde_json::from_str(&last).context("parsing the list")?;
    Ok(Lists {
        latency: Summary::of(latencies),
        items: head.items.len(),
        bytes: last.len(),
    })
}

/// Gets `samples` objects out of the first `stored`, spread over the names, one at a time.
pub async fn get(
    client: &kube::Client,
    kind: Kind,
    ns: &str,
    stored: usize,
    samples: usize,
) -> Result<Summary> {
    let base = kind.collection(ns);
    let mut latencies = Vec::with_capacity(samples);
    for s in 0..samples {
        let i = (s * 7919 + 13) % stored.max(1);
        let request = http::Request::get(format!("{base}/{}", name(i))).body(Vec::new())?;
        let sent = Instant::now();
        client
            .request_text(request)
            .await
            .with_context(|| format!("getting {}", name(i)))?;
        latencies.push(sent.elapsed());
    }
    Ok(Summary::of(latencies))
}

/// The outcome of the watch benchmark.
#[derive(Debug)]
pub struct Watches {
    /// From the writer's acknowledgement to a watcher reading the event (events that arrived
    /// before the acknowledgement count as 0).
    pub from_ack: Summary,
    /// From the writer sending the create to a watcher reading the event.
    pub from_send: Summary,
    /// Events read before the writer had its acknowledgement.
    pub before_ack: usize,
    /// Events expected (watchers x writes).
    pub expected: usize,
    /// Events received.
    pub received: usize,
}

#[derive(Deserialize)]
struct WatchLine {
    #[serde(rename = "type")]
    kind: String,
    object: WatchObject,
}

#[derive(Deserialize)]
struct WatchObject {
    metadata: WatchMeta,
}

#[derive(Deserialize)]
struct WatchMeta {
    #[serde(default)]
    name: String,
}

/// Starts `watchers` watches on `ns` (each on its own connection), then creates `writes`
/// objects there one at a time, one every `interval`, and measures when each watcher reads each
/// ADDED event.
pub async fn watch(
    config: &kube::Config,
    kind: Kind,
    ns: &str,
    watchers: usize,
    writes: usize,
    interval: Duration,
) -> Result<Watches> {
    let client = kube::Client::try_from(config.clone())?;
    let url = kind.collection(ns);
    // Watch from the current revision so no write is missed, whenever a watch is established.
    let request = http::Request::get(format!("{url}?limit=1")).body(Vec::new())?;
    let head: serde_json::Value = serde_json::from_str(&client.request_text(request).await?)?;
    let rv = head["metadata"]["resourceVersion"]
        .as_str()
        .context("no resourceVersion in the list")?
        .to_string();

    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<()>>(watchers.max(1));
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let client = kube::Client::try_from(config.clone())?;
        let watch_url = format!("{url}?watch=true&resourceVersion={rv}&timeoutSeconds=600");
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let request = http::Request::get(watch_url.as_str()).body(Vec::new())?;
            let stream = match client.request_stream(request).await {
                Ok(s) => {
                    let _ = ready.send(Ok(())).await;
                    s
                }
                Err(e) => {
                    let _ = ready
                        .send(Err(anyhow::anyhow!("starting a watch: {e}")))
                        .await;
                    return Err(e.into());
                }
            };
            let mut lines = Box::pin(stream).lines();
            let mut seen: Vec<(usize, Instant)> = Vec::with_capacity(writes);
            while seen.len() < writes {
                let Some(line) = lines.next().await else {
                    break;
                };
                let at = Instant::now();
                let line = line.context("reading the watch stream")?;
                let event: WatchLine =
                    serde_json::from_str(&line).context("parsing a watch event")?;
                if event.kind != "ADDED" {
                    continue;
                }
                if let Some(j) = event
                    .object
                    .metadata
                    .name
                    .strip_prefix("watch-")
                    .and_then(|s| s.parse().ok())
                {
                    seen.push((j, at));
                }
            }
            Ok::<_, anyhow::Error>(seen)
        }));
    }
    drop(ready_tx);
    for _ in 0..watchers {
        match tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => bail!("a watcher ended before it started"),
            Err(_) => bail!("watchers not established in 60 s"),
        }
    }
    // Let the server finish registering the last watches before the first write.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut sent_at = Vec::with_capacity(writes);
    let mut acked_at = Vec::with_capacity(writes);
    let mut ticks = tokio::time::interval(interval);
    for j in 0..writes {
        ticks.tick().await;
        let name = format!("watch-{j:05}");
        let request = http::Request::post(url.as_str())
            .header("content-type", "application/json")
            .body(kind.body(ns, &name, j))?;
        let sent = Instant::now();
        client
            .request_text(request)
            .await
            .with_context(|| format!("creating {name}"))?;
        sent_at.push(sent);
        acked_at.push(Instant::now());
    }

    let mut from_ack = Vec::new();
    let mut from_send = Vec::new();
    let mut before_ack = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    for task in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = match tokio::time::timeout(left, task).await {
            Ok(joined) => joined.context("watcher panicked")??,
            Err(_) => {
                bail!("watchers did not receive all {writes} events within 60 s of the last write")
            }
        };
        for (j, at) in seen {
            let (Some(sent), Some(acked)) = (sent_at.get(j), acked_at.get(j)) else {
                continue;
            };
            from_send.push(at.saturating_duration_since(*sent));
            if at < *acked {
                before_ack += 1;
            }
            from_ack.push(at.saturating_duration_since(*acked));
        }
    }
    Ok(Watches {
        received: from_ack.len(),
        expected: watchers * writes,
        from_ack: Summary::of(from_ack),
        from_send: Summary::of(from_send),
        before_ack,
    })
}
