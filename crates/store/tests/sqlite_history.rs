//! History on the SQLite backend: reads at past revisions, compaction, and the file shrinking after it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use store::sqlite::SqliteStore;
use store::{Error, Event, EventKind, KeyValue, RangeRequest, Revision, SharedStore, Store};
use tempfile::TempDir;

use common::*;

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
