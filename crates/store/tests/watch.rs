//! Watches on both backends: order, gap-freedom, replay from a past revision, closing; on etcd,
//! resuming across an etcd restart.

mod common;

use std::time::Duration;

use futures::StreamExt;
use store::{Error, EventKind, KeyValue, Revision};

use common::*;

crate::backends!(
    watch_is_ordered_and_gap_free_with_concurrent_writers,
    watch_from_past_revision_replays_history_then_live,
    watch_ends_when_the_store_closes,
);

async fn watch_is_ordered_and_gap_free_with_concurrent_writers(f: &mut Fixture) {
    let s = f.open().await;
    let o = f.base;
    s.create("/w/seed", b("0")).await.unwrap();
    let mut from_start = s.watch("/w/", 0).await.unwrap();
    let mut all_keys = s.watch("", 0).await.unwrap();

    const WRITERS: usize = 8;
    const EACH: usize = 100;
    let mut handles = Vec::new();
    for t in 0..WRITERS {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..EACH {
                let kv = s.create(&format!("/w/{t}/{i}"), b("x")).await.unwrap();
                revs.push(kv.mod_revision);
                let kv = s
                    .update(&format!("/w/{t}/{i}"), b("y"), kv.mod_revision)
                    .await
                    .unwrap();
                revs.push(kv.mod_revision);
                s.create(&format!("/other/{t}/{i}"), b("z")).await.unwrap();
            }
            revs
        }));
    }
    // A watcher that starts while the writers run, from whatever revision is current then.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mid = s.current_revision().await.unwrap();
    let mut from_mid = s.watch("/w/", mid).await.unwrap();

    let mut want: Vec<Revision> = vec![o + 1];
    for h in handles {
        want.extend(h.await.unwrap());
    }
    want.sort_unstable();
    let mut got = Vec::new();
    for _ in 0..want.len() {
        got.push(next(&mut from_start).await.revision());
    }
    assert_eq!(got, want, "every revision under /w/ exactly once, in order");
    let want_mid: Vec<Revision> = want.iter().copied().filter(|&r| r > mid).collect();
    let mut got = Vec::new();
    for _ in 0..want_mid.len() {
        got.push(next(&mut from_mid).await.revision());
    }
    assert_eq!(got, want_mid);
    let total = s.current_revision().await.unwrap();
    for r in o + 1..=total {
        assert_eq!(next(&mut all_keys).await.revision(), r);
    }
}

async fn watch_from_past_revision_replays_history_then_live(f: &mut Fixture) {
    let s = f.open().await;
    let o = f.base;
    for i in 1..=5 {
        s.create(&format!("/p/{i}"), b(&format!("v{i}")))
            .await
            .unwrap();
    }
    s.create("/q/1", b("other")).await.unwrap(); // rev o+6, not under /p/
    let mut w = s.watch("/p/", o + 2).await.unwrap();
    for r in o + 3..=o + 5 {
        let e = next(&mut w).await;
        assert_eq!((e.kind, e.revision(), e.prev), (EventKind::Put, r, None));
    }
    let up = s.update("/p/1", b("v1b"), o + 1).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!((e.kind, &e.kv), (EventKind::Put, &up));
    assert_eq!(
        e.prev.as_ref().map(|p| (p.value.clone(), p.mod_revision)),
        Some((b("v1"), o + 1))
    );
    s.delete("/q/1", None).await.unwrap();
    s.delete("/p/1", None).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(e.kind, EventKind::Delete);
    assert_eq!(
        e.kv,
        KeyValue {
            key: "/p/1".into(),
            value: b("v1b"),
            create_revision: o + 1,
            mod_revision: o + 9
        }
    );
    assert_eq!(e.prev, Some(up));
    // The same delete replayed from history looks the same.
    let mut w2 = s.watch("/p/1", o + 7).await.unwrap();
    assert_eq!(next(&mut w2).await, e);
    // A watch from the future only sees what comes after it.
    let mut w3 = s.watch("/p/", o + 11).await.unwrap();
    s.create("/p/6", b("6")).await.unwrap(); // rev o+10
    s.create("/p/7", b("7")).await.unwrap(); // rev o+11
    s.create("/p/8", b("8")).await.unwrap(); // rev o+12
    assert_eq!(next(&mut w3).await.revision(), o + 12);
}

async fn watch_ends_when_the_store_closes(f: &mut Fixture) {
    let s = f.open().await;
    let mut w = s.watch("", 0).await.unwrap();
    drop(s);
    let end = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap();
    assert_eq!(end, Some(Err(Error::Closed)));
}

/// An etcd restart (kill -9) under a live watch: the watch re-attaches from the last revision
/// it delivered, so the events written before, during and after the outage all arrive, once,
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_watch_resumes_after_a_restart_without_loss_or_repeats() {
    let mut f = Fixture::etcd().await;
    let s = f.open().await;
    let mut w = s.watch("/r/", 0).await.unwrap();
    let mut want = Vec::new();
    for i in 0..20 {
        want.push(
            s.create(&format!("/r/{i}"), b("a"))
                .await
                .unwrap()
                .mod_revision,
        );
    }
    // Read half, then lose etcd with the rest unread.
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(next(&mut w).await.revision());
    }
    f.restart().await;
    for i in 20..40 {
        // The store's client reconnects on its own.
        want.push(
            s.create(&format!("/r/{i}"), b("b"))
                .await
                .unwrap()
                .mod_revision,
        );
    }
    let del = s.delete("/r/0", None).await.unwrap();
    want.push(del.mod_revision);
    for _ in got.len()..want.len() {
        got.push(next(&mut w).await.revision());
    }
    assert_eq!(got, want);
    // Nothing more (no repeats).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), w.next())
            .await
            .is_err()
    );
}

/// The watch cache in front of etcd: many store watches, on different prefixes, share one etcd
/// watch (etcd's own `etcd_debugging_mvcc_watcher_total` gauge says how many it serves), and
/// each still gets exactly its own keys' events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_watch_cache_serves_every_watch_from_one_etcd_watch() {
    let f = Fixture::etcd_cached().await;
    let s = f.open().await;
    let from = s.current_revision().await.unwrap();
    let mut watches = Vec::new();
    for i in 0..20 {
        watches.push(s.watch(&format!("/w/{i}/"), from).await.unwrap());
    }
    let mut want = Vec::new();
    for i in 0..20 {
        want.push(
            s.create(&format!("/w/{i}/k"), b("v"))
                .await
                .unwrap()
                .mod_revision,
        );
    }
    for (i, w) in watches.iter_mut().enumerate() {
        let ev = next(w).await;
        assert_eq!(ev.kv.key, format!("/w/{i}/k"));
        assert_eq!(ev.revision(), want[i]);
    }
    let endpoint = f.etcd.as_ref().unwrap().endpoint();
    let metrics = http_get(&format!("{endpoint}/metrics"));
    let watchers: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .expect("etcd's watcher gauge")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        watchers, 1.0,
        "etcd serves {watchers} watchers for 20 store watches"
    );
}

/// A plain HTTP GET (etcd's metrics endpoint).
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    write!(conn, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out
}
