//! The store against etcd 3.4, same workload, same machine, same run: `total` puts of new keys
//! with ~1 KB values from `writers` concurrent writers, each waiting for its acknowledgement
//! (a durable commit in both) before its next put.
//!
//! corten's `SqliteStore` runs in this process (the API server embeds it the same way); etcd is
//! a separate process driven over gRPC on loopback with the `etcd-client` crate.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use store::Store;

use crate::stats::Summary;

/// The value size of each put.
pub const VALUE_BYTES: usize = 1024;

/// The outcome of one put run.
#[derive(Debug)]
pub struct Puts {
    /// Puts acknowledged.
    pub count: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Per-put latency.
    pub latency: Summary,
}

fn value(i: usize) -> Vec<u8> {
    // Varied bytes so nothing downstream can shortcut a run of identical values.
    (0..VALUE_BYTES)
        .map(|b| b"abcdefghijklmnopqrstuvwxyz0123456789"[(b * 7 + i) % 36])
        .collect()
}

fn key(run: &str, i: usize) -> String {
    format!("/registry/bench/{run}/{i:08}")
}

async fn run_writers<F, Fut>(total: usize, writers: usize, put: F) -> Result<Puts>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers.max(1) {
        let (next, put) = (next.clone(), put.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let sent = Instant::now();
                put(i).await?;
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await.context("writer panicked")??);
    }
    Ok(Puts {
        count: latencies.len(),
        elapsed: started.elapsed(),
        latency: Summary::of(latencies),
    })
}

/// `total` creates into corten's SQLite store from `writers` writers. `run` names the key range.
pub async fn sqlite_puts(
    store: Arc<store::sqlite::SqliteStore>,
    run: &str,
    total: usize,
    writers: usize,
) -> Result<Puts> {
    let run = run.to_string();
    run_writers(total, writers, move |i| {
        let (store, key) = (store.clone(), key(&run, i));
        async move {
            store
                .create(&key, Bytes::from(value(i)))
                .await
                .with_context(|| format!("store create {key}"))?;
            Ok(())
        }
    })
    .await
}

/// `total` puts of new keys into etcd from `writers` writers sharing one client (one HTTP/2
/// connection, as an etcd client library uses it).
pub async fn etcd_puts(
    client: &etcd_client::Client,
    run: &str,
    total: usize,
    writers: usize,
) -> Result<Puts> {
    let kv = client.kv_client();
    let run = run.to_string();
    run_writers(total, writers, move |i| {
        let (mut kv, key) = (kv.clone(), key(&run, i));
        async move {
            kv.put(key.as_str(), value(i), None)
                .await
                .with_context(|| format!("etcd put {key}"))?;
            Ok(())
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_keys() {
        assert_eq!(value(3).len(), VALUE_BYTES);
        assert_ne!(value(1), value(2));
        assert_eq!(key("w1", 5), "/registry/bench/w1/00000005");
    }
}
