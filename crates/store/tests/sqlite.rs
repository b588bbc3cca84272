//! Tests of the SQLite backend against a real database in a temporary directory.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use store::sqlite::SqliteStore;
use store::{
    Error, Event, EventKind, KeyValue, RangeRequest, Revision, SharedStore, Store, WatchStream,
};
use tempfile::TempDir;

fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("state.db")).expect("open store")
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn range(prefix: &str) -> RangeRequest {
    RangeRequest {
        prefix: prefix.into(),
        ..Default::default()
    }
}

async fn next(w: &mut WatchStream) -> Event {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event in time")
        .expect("stream open")
        .expect("event, not error")
}

/// A tiny deterministic PRNG (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test]
async fn create_get_update_delete_with_cas_errors() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir);
    assert_eq!(s.current_revision().await.unwrap(), 0);
    assert_eq!(s.get("/a").await.unwrap(), (None, 0));

    let kv = s.create("/a", b("v1")).await.unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (1, 1),
        "revisions start at 1"
    );
    assert_eq!(
        s.create("/a", b("x")).await,
        Err(Error::AlreadyExists("/a".into()))
    );
    assert_eq!(s.get("/a").await.unwrap(), (Some(kv.clone()), 1));

    let kv2 = s.update("/a", b("v2"), 1).await.unwrap();
    assert_eq!(
        (kv2.create_revision, kv2.mod_revision, kv2.value.clone()),
        (1, 2, b("v2"))
    );
    match s.update("/a", b("v3"), 1).await {
        Err(Error::Conflict {
            key,
            expected,
            current,
        }) => {
            assert_eq!((key.as_str(), expected), ("/a", 1));
            assert_eq!(*current, kv2);
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(
        s.update("/nope", b("x"), 1).await,
        Err(Error::NotFound("/nope".into()))
    );
    assert!(matches!(
        s.delete("/a", Some(1)).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(
        s.delete("/nope", None).await,
        Err(Error::NotFound("/nope".into()))
    );
    // Failed writes do not bump the revision.
    assert_eq!(s.current_revision().await.unwrap(), 2);

    let del = s.delete("/a", Some(2)).await.unwrap();
    assert_eq!(
        del,
        KeyValue {
            key: "/a".into(),
            value: b("v2"),
            create_revision: 1,
            mod_revision: 3
        }
    );
    assert_eq!(s.get("/a").await.unwrap(), (None, 3));
    assert_eq!(
        s.delete("/a", None).await,
        Err(Error::NotFound("/a".into()))
    );

    let again = s.create("/a", b("v4")).await.unwrap();
    assert_eq!((again.create_revision, again.mod_revision), (4, 4));
    let del = s.delete("/a", None).await.unwrap();
    assert_eq!(del.mod_revision, 5);
    assert_eq!(s.current_revision().await.unwrap(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_compare_and_swap_counter() {
    let dir = TempDir::new().unwrap();
    let s: SharedStore = Arc::new(open(&dir));
    s.create("/counter", b("0")).await.unwrap();
    const TASKS: usize = 32;
    const EACH: usize = 20;
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..EACH {
                let (mut kv, _) = s.get("/counter").await.unwrap();
                loop {
                    let cur = kv.clone().unwrap();
                    let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                    match s
                        .update("/counter", b(&(n + 1).to_string()), cur.mod_revision)
                        .await
                    {
                        Ok(_) => break,
                        Err(Error::Conflict { current, .. }) => {
                            conflicts += 1;
                            kv = Some(*current);
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for h in handles {
        conflicts += h.await.unwrap();
    }
    let (kv, rev) = s.get("/counter").await.unwrap();
    let kv = kv.unwrap();
    assert_eq!(kv.value, b(&(TASKS * EACH).to_string()));
    assert_eq!(rev, (TASKS * EACH + 1) as i64);
    assert_eq!(kv.mod_revision, rev);
    eprintln!("{conflicts} conflicts retried");
}

#[tokio::test]
async fn range_with_prefix_limit_after_key_and_remaining() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir);
    for i in 1..=9 {
        s.create(&format!("/a/{i}"), b(&i.to_string()))
            .await
            .unwrap();
    }
    s.create("/ab/x", b("x")).await.unwrap();
    s.create("/b/1", b("b")).await.unwrap();
    s.create("/a\u{10FFFF}", b("max")).await.unwrap();
    let keys = |r: &store::RangeResponse| r.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();

    let all = s.range(range("/a/")).await.unwrap();
    assert_eq!(
        keys(&all),
        (1..=9).map(|i| format!("/a/{i}")).collect::<Vec<_>>()
    );
    assert_eq!((all.remaining, all.revision), (0, 12));
    assert_eq!(all.kvs[0].value, b("1"));

    let page = s
        .range(RangeRequest {
            limit: Some(4),
            ..range("/a/")
        })
        .await
        .unwrap();
    assert_eq!(keys(&page), ["/a/1", "/a/2", "/a/3", "/a/4"]);
    assert_eq!(page.remaining, 5);
    let page = s
        .range(RangeRequest {
            limit: Some(4),
            after_key: Some("/a/4".into()),
            ..range("/a/")
        })
        .await
        .unwrap();
    assert_eq!(keys(&page), ["/a/5", "/a/6", "/a/7", "/a/8"]);
    assert_eq!(page.remaining, 1);
    let page = s
        .range(RangeRequest {
            limit: Some(4),
            after_key: Some("/a/8".into()),
            ..range("/a/")
        })
        .await
        .unwrap();
    assert_eq!((keys(&page), page.remaining), (vec!["/a/9".to_string()], 0));
    let page = s
        .range(RangeRequest {
            limit: Some(9),
            ..range("/a/")
        })
        .await
        .unwrap();
    assert_eq!((page.kvs.len(), page.remaining), (9, 0));
    let none = s
        .range(RangeRequest {
            limit: Some(0),
            ..range("/a/")
        })
        .await
        .unwrap();
    assert_eq!((none.kvs.len(), none.remaining), (0, 9));

    assert_eq!(s.range(range("/a")).await.unwrap().kvs.len(), 11);
    assert_eq!(s.range(range("")).await.unwrap().kvs.len(), 12);
    assert_eq!(keys(&s.range(range("/b/")).await.unwrap()), ["/b/1"]);
    assert!(s.range(range("/c/")).await.unwrap().kvs.is_empty());
    // An after_key before the prefix changes nothing.
    let r = s
        .range(RangeRequest {
            after_key: Some("/".into()),
            ..range("/b/")
        })
        .await
        .unwrap();
    assert_eq!(keys(&r), ["/b/1"]);

    assert!(matches!(
        s.range(RangeRequest {
            revision: Some(13),
            ..range("/")
        })
        .await,
        Err(Error::FutureRevision {
            requested: 13,
            current: 12
        })
    ));
}

/// Expected states and events for a random sequence of writes, checked against the store at
/// every revision, across several compactions.
#[tokio::test]
async fn range_and_watch_at_past_revisions_across_compactions() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // states[r] = the store's content at revision r.
    let mut states: Vec<BTreeMap<String, KeyValue>> = vec![BTreeMap::new()];
    let mut events: Vec<Event> = vec![];
    let mut compacted = 0;

    async fn write_some(
        s: &SqliteStore,
        rng: &mut Rng,
        states: &mut Vec<BTreeMap<String, KeyValue>>,
        events: &mut Vec<Event>,
        n: usize,
    ) {
        for _ in 0..n {
            let mut state = states.last().unwrap().clone();
            let key = format!("/k/{}", rng.below(12));
            let prev = state.get(&key).cloned();
            let value = b(&format!("v{}", rng.next()));
            let event = match (prev, rng.below(4)) {
                (None, _) => {
                    let kv = s.create(&key, value).await.unwrap();
                    Event {
                        kind: EventKind::Put,
                        kv,
                        prev: None,
                    }
                }
                (Some(p), 0) => {
                    let kv = s.delete(&key, Some(p.mod_revision)).await.unwrap();
                    Event {
                        kind: EventKind::Delete,
                        kv,
                        prev: Some(p),
                    }
                }
                (Some(p), _) => {
                    let kv = s.update(&key, value, p.mod_revision).await.unwrap();
                    Event {
                        kind: EventKind::Put,
                        kv,
                        prev: Some(p),
                    }
                }
            };
            match event.kind {
                EventKind::Put => state.insert(key, event.kv.clone()),
                EventKind::Delete => state.remove(&key),
            };
            assert_eq!(event.revision() as usize, states.len());
            states.push(state);
            events.push(event);
        }
    }

    async fn check(
        s: &SqliteStore,
        states: &[BTreeMap<String, KeyValue>],
        events: &[Event],
        compacted: Revision,
    ) {
        let current = (states.len() - 1) as Revision;
        assert_eq!(s.current_revision().await.unwrap(), current);
        for r in 0..compacted {
            let res = s
                .range(RangeRequest {
                    revision: Some(r),
                    ..range("/k/")
                })
                .await;
            assert!(
                matches!(res, Err(Error::Compacted { .. })),
                "range at {r}: {res:?}"
            );
            assert!(matches!(
                s.watch("/k/", r).await,
                Err(Error::Compacted { .. })
            ));
        }
        for r in compacted.max(1)..=current {
            let want: Vec<KeyValue> = states[r as usize].values().cloned().collect();
            let got = s
                .range(RangeRequest {
                    revision: Some(r),
                    ..range("/k/")
                })
                .await
                .unwrap();
            assert_eq!(
                got.kvs, want,
                "range at revision {r} (compacted {compacted})"
            );
            assert_eq!(got.revision, r);
            let page = s
                .range(RangeRequest {
                    revision: Some(r),
                    limit: Some(3),
                    ..range("/k/")
                })
                .await
                .unwrap();
            assert_eq!(page.kvs, want[..want.len().min(3)]);
            assert_eq!(page.remaining as usize, want.len().saturating_sub(3));
            let page = s
                .range(RangeRequest {
                    revision: Some(r),
                    limit: Some(2),
                    after_key: Some("/k/4".into()),
                    ..range("/k/")
                })
                .await
                .unwrap();
            let rest: Vec<_> = want
                .iter()
                .filter(|kv| kv.key.as_str() > "/k/4")
                .cloned()
                .collect();
            assert_eq!(page.kvs, rest[..rest.len().min(2)]);
            assert_eq!(page.remaining as usize, rest.len().saturating_sub(2));
        }
        // Watching from the compacted revision replays everything after it, prevs included.
        let mut w = s.watch("/k/", compacted).await.unwrap();
        for want in &events[compacted as usize..] {
            assert_eq!(&next(&mut w).await, want, "watch from {compacted}");
        }
        // Narrower prefix.
        let mut w = s.watch("/k/1", compacted).await.unwrap();
        for want in events[compacted as usize..]
            .iter()
            .filter(|e| e.kv.key.starts_with("/k/1"))
        {
            assert_eq!(&next(&mut w).await, want);
        }
    }

    write_some(&s, &mut rng, &mut states, &mut events, 150).await;
    check(&s, &states, &events, compacted).await;
    for round in 0..4 {
        compacted = (states.len() - 1 - 20 * round) as Revision - 30;
        s.compact(compacted).await.unwrap();
        assert_eq!(s.compacted_revision().await.unwrap(), compacted);
        check(&s, &states, &events, compacted).await;
        write_some(&s, &mut rng, &mut states, &mut events, 80).await;
        check(&s, &states, &events, compacted).await;
    }
    // Compacting to the current revision keeps the latest state readable.
    compacted = s.current_revision().await.unwrap();
    s.compact(compacted).await.unwrap();
    check(&s, &states, &events, compacted).await;
    write_some(&s, &mut rng, &mut states, &mut events, 40).await;
    check(&s, &states, &events, compacted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_is_ordered_and_gap_free_with_concurrent_writers() {
    let dir = TempDir::new().unwrap();
    let s: SharedStore = Arc::new(open(&dir));
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

    let mut want: Vec<Revision> = vec![1];
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
    for r in 1..=total {
        assert_eq!(next(&mut all_keys).await.revision(), r);
    }
}

#[tokio::test]
async fn watch_from_past_revision_replays_history_then_live() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir);
    for i in 1..=5 {
        s.create(&format!("/p/{i}"), b(&format!("v{i}")))
            .await
            .unwrap();
    }
    s.create("/q/1", b("other")).await.unwrap(); // rev 6, not under /p/
    let mut w = s.watch("/p/", 2).await.unwrap();
    for r in 3..=5 {
        let e = next(&mut w).await;
        assert_eq!((e.kind, e.revision(), e.prev), (EventKind::Put, r, None));
    }
    let up = s.update("/p/1", b("v1b"), 1).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!((e.kind, &e.kv), (EventKind::Put, &up));
    assert_eq!(
        e.prev.as_ref().map(|p| (p.value.clone(), p.mod_revision)),
        Some((b("v1"), 1))
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
            create_revision: 1,
            mod_revision: 9
        }
    );
    assert_eq!(e.prev, Some(up));
    // The same delete replayed from history looks the same.
    let mut w2 = s.watch("/p/1", 7).await.unwrap();
    assert_eq!(next(&mut w2).await, e);
    // A watch from the future only sees what comes after it.
    let mut w3 = s.watch("/p/", 11).await.unwrap();
    s.create("/p/6", b("6")).await.unwrap(); // rev 10
    s.create("/p/7", b("7")).await.unwrap(); // rev 11
    s.create("/p/8", b("8")).await.unwrap(); // rev 12
    assert_eq!(next(&mut w3).await.revision(), 12);
}

#[tokio::test]
async fn compaction_rejects_old_revisions_and_keeps_current_data() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir);
    for i in 0..10 {
        s.create(&format!("/c/{i}"), b("a")).await.unwrap(); // revs 1..=10
    }
    for i in 0..5 {
        s.update(&format!("/c/{i}"), b("b"), i + 1).await.unwrap(); // revs 11..=15
    }
    s.delete("/c/9", None).await.unwrap(); // rev 16
    let before = s.range(range("/c/")).await.unwrap();
    s.compact(14).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), 14);
    assert_eq!(
        s.range(RangeRequest {
            revision: Some(13),
            ..range("/c/")
        })
        .await
        .unwrap_err(),
        Error::Compacted {
            requested: 13,
            compacted: 14
        }
    );
    assert!(matches!(
        s.watch("/c/", 13).await,
        Err(Error::Compacted {
            requested: 13,
            compacted: 14
        })
    ));
    let after = s.range(range("/c/")).await.unwrap();
    assert_eq!(after.kvs, before.kvs);
    let at14 = s
        .range(RangeRequest {
            revision: Some(14),
            ..range("/c/")
        })
        .await
        .unwrap();
    assert_eq!(at14.kvs.len(), 10);
    assert_eq!(at14.kvs[4].value, b("a"));
    assert_eq!(at14.kvs[3].value, b("b"));
    let mut w = s.watch("/c/", 14).await.unwrap();
    assert_eq!(next(&mut w).await.revision(), 15);
    assert_eq!(next(&mut w).await.kind, EventKind::Delete);
    // Compacting backwards is a no-op; into the future an error.
    s.compact(3).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), 14);
    assert!(matches!(
        s.compact(17).await,
        Err(Error::FutureRevision { .. })
    ));
    // A watch that lives across a compaction keeps going.
    s.compact(16).await.unwrap();
    s.update("/c/0", b("c"), 11).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!((e.revision(), e.prev.map(|p| p.value)), (17, Some(b("b"))));
}

#[tokio::test]
async fn compaction_removes_history_and_shrinks_the_file() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state.db");
    let s = open(&dir);
    let value = Bytes::from(vec![b'v'; 3000]);
    let mut revs = Vec::new();
    for i in 0..50 {
        revs.push(
            s.create(&format!("/f/{i}"), value.clone())
                .await
                .unwrap()
                .mod_revision,
        );
    }
    for _ in 0..20 {
        for (i, rev) in revs.iter_mut().enumerate() {
            *rev = s
                .update(&format!("/f/{i}"), value.clone(), *rev)
                .await
                .unwrap()
                .mod_revision;
        }
    }
    for i in 40..50 {
        s.delete(&format!("/f/{i}"), None).await.unwrap();
    }
    let count = |sql: &str| -> i64 {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    assert_eq!(count("SELECT count(*) FROM log"), 50 * 21 + 10);
    let pages_before = count("PRAGMA page_count");
    s.compact(s.current_revision().await.unwrap())
        .await
        .unwrap();
    // The rows go in the background, between write batches.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("SELECT count(*) FROM log") != 0 || count("PRAGMA freelist_count") != 0 {
        assert!(Instant::now() < deadline, "history not cleaned up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pages_after = count("PRAGMA page_count");
    assert!(
        pages_after * 4 < pages_before,
        "{pages_before} pages before, {pages_after} after"
    );
    let r = s.range(range("/f/")).await.unwrap();
    assert_eq!(r.kvs.len(), 40);
    // Updating a key whose only version was compacted keeps history readable.
    let cur = s.current_revision().await.unwrap();
    s.update("/f/0", b("new"), revs[0]).await.unwrap();
    let old = s
        .range(RangeRequest {
            revision: Some(cur),
            ..range("/f/0")
        })
        .await
        .unwrap();
    assert_eq!(old.kvs[0].value, value);
    let mut w = s.watch("/f/", cur).await.unwrap();
    assert_eq!(next(&mut w).await.prev.unwrap().value, value);
}

#[tokio::test]
async fn data_and_revision_survive_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let s = open(&dir);
        s.create("/d/a", b("1")).await.unwrap();
        s.create("/d/b", b("2")).await.unwrap();
        s.update("/d/a", b("3"), 1).await.unwrap();
        s.create("/d/c", b("4")).await.unwrap();
        s.delete("/d/c", None).await.unwrap(); // rev 5: the latest write is a delete
        s.compact(5).await.unwrap();
    }
    // The writer thread finishes on its own once the handle is gone.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = open(&dir);
    assert_eq!(s.current_revision().await.unwrap(), 5);
    assert_eq!(s.compacted_revision().await.unwrap(), 5);
    let r = s.range(range("/d/")).await.unwrap();
    assert_eq!(r.revision, 5);
    let got: Vec<_> = r
        .kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.clone(), kv.mod_revision))
        .collect();
    assert_eq!(got, [("/d/a", b("3"), 3), ("/d/b", b("2"), 2)]);
    assert_eq!(s.create("/d/c", b("5")).await.unwrap().mod_revision, 6);
    assert!(matches!(
        s.watch("/d/", 4).await,
        Err(Error::Compacted { .. })
    ));
}

#[tokio::test]
async fn unusable_files_give_backend_errors() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![0x5Au8; 16 * 1024]).unwrap();
    match SqliteStore::open(&path) {
        Err(Error::Backend(msg)) => {
            eprintln!("{msg}");
            assert!(msg.contains("corrupt"), "{msg}");
            assert!(msg.contains("state.db"), "{msg}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    // A database whose header was damaged.
    let path = dir.path().join("damaged.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.create("/x", b("x")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..16].copy_from_slice(b"garbage garbage!");
    std::fs::write(&path, bytes).unwrap();
    let _ = std::fs::remove_file(dir.path().join("damaged.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("damaged.db-shm"));
    assert!(matches!(SqliteStore::open(&path), Err(Error::Backend(_))));
    // A directory that cannot be created.
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    match SqliteStore::open(&dir.path().join("file").join("state.db")) {
        Err(Error::Backend(msg)) => assert!(msg.contains("cannot create"), "{msg}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    // The path is a directory.
    assert!(matches!(
        SqliteStore::open(dir.path()),
        Err(Error::Backend(_))
    ));
    // A read-only directory (meaningless when running as root, who may write anyway).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        if std::fs::write(ro.join("probe"), b"x").is_err() {
            match SqliteStore::open(&ro.join("state.db")) {
                Err(Error::Backend(msg)) => {
                    eprintln!("{msg}");
                    assert!(msg.contains("state.db"), "{msg}");
                }
                other => panic!("expected a backend error, got {other:?}"),
            }
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_many_concurrent_writes() {
    let dir = TempDir::new().unwrap();
    let s: SharedStore = Arc::new(open(&dir));
    const CLIENTS: usize = 16;
    const EACH: usize = 250;
    let value = Bytes::from(vec![b'x'; 2048]);
    let started = Instant::now();
    let mut handles = Vec::new();
    for c in 0..CLIENTS {
        let (s, value) = (s.clone(), value.clone());
        handles.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..EACH {
                revs.push(
                    s.create(&format!("/g/{c:02}/{i:04}"), value.clone())
                        .await
                        .unwrap()
                        .mod_revision,
                );
            }
            revs
        }));
    }
    let mut revs = HashSet::new();
    for h in handles {
        for r in h.await.unwrap() {
            assert!(revs.insert(r), "revision {r} handed out twice");
        }
    }
    let elapsed = started.elapsed();
    let n = CLIENTS * EACH;
    eprintln!(
        "{n} creates in {elapsed:?}: {:.0}/s",
        n as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(revs, (1..=n as Revision).collect::<HashSet<_>>());
    let r = s.range(range("/g/")).await.unwrap();
    assert_eq!((r.kvs.len(), r.revision), (n, n as Revision));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_that_falls_behind_is_closed() {
    let dir = TempDir::new().unwrap();
    let s: SharedStore = Arc::new(open(&dir));
    let mut w = s.watch("/l/", 0).await.unwrap();
    let mut handles = Vec::new();
    for c in 0..16 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..600 {
                s.create(&format!("/l/{c}/{i}"), b("x")).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let mut seen = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap()
        {
            Some(Ok(_)) => seen += 1,
            Some(Err(e)) => {
                assert_eq!(e, Error::WatchLagged);
                break;
            }
            None => panic!("stream ended without an error"),
        }
    }
    assert!(seen < 9600);
    assert!(w.next().await.is_none(), "the stream ends after the error");
}

#[tokio::test]
async fn watch_ends_when_the_store_closes() {
    let dir = TempDir::new().unwrap();
    let s = open(&dir);
    let mut w = s.watch("", 0).await.unwrap();
    drop(s);
    let end = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap();
    assert_eq!(end, Some(Err(Error::Closed)));
}

#[tokio::test]
async fn compactor_keeps_the_last_revisions() {
    let dir = TempDir::new().unwrap();
    let s: SharedStore = Arc::new(open(&dir));
    for i in 0..10 {
        s.create(&format!("/k/{i}"), b("x")).await.unwrap();
    }
    let handle = store::spawn_compactor(s.clone(), Duration::from_millis(20), 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.compacted_revision().await.unwrap() != 7 {
        assert!(Instant::now() < deadline, "compactor did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.abort();
    assert_eq!(s.range(range("/k/")).await.unwrap().kvs.len(), 10);
    assert_eq!(store::compact_keeping(s.as_ref(), 3).await.unwrap(), None);
}
