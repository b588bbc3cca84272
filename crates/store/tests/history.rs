//! History on both backends: reads and watches at past revisions, compaction.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use store::{Error, Event, EventKind, KeyValue, RangeRequest, Revision, Store};

use common::*;

crate::backends!(
    range_and_watch_at_past_revisions_across_compactions,
    compaction_rejects_old_revisions_and_keeps_current_data,
    compactor_keeps_the_last_revisions,
);

/// Expected states and events for a random sequence of writes, checked against the store at
/// every revision, across several compactions.
async fn range_and_watch_at_past_revisions_across_compactions(f: &mut Fixture) {
    let s = f.open().await;
    let s = s.as_ref();
    let base = f.base;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // states[i] = the store's content at revision base + i.
    let mut states: Vec<BTreeMap<String, KeyValue>> = vec![BTreeMap::new()];
    let mut events: Vec<Event> = vec![];
    let mut compacted = 0;

    async fn write_some(
        s: &dyn Store,
        base: Revision,
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
            assert_eq!((event.revision() - base) as usize, states.len());
            states.push(state);
            events.push(event);
        }
    }

    async fn check(
        s: &dyn Store,
        base: Revision,
        states: &[BTreeMap<String, KeyValue>],
        events: &[Event],
        compacted: Revision,
    ) {
        let current = base + (states.len() - 1) as Revision;
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
            let want: Vec<KeyValue> = states[(r - base) as usize].values().cloned().collect();
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
        let from = (compacted - base).max(0) as usize;
        let mut w = s.watch("/k/", compacted).await.unwrap();
        for want in &events[from..] {
            assert_eq!(&next(&mut w).await, want, "watch from {compacted}");
        }
        // Narrower prefix.
        let mut w = s.watch("/k/1", compacted).await.unwrap();
        for want in events[from..]
            .iter()
            .filter(|e| e.kv.key.starts_with("/k/1"))
        {
            assert_eq!(&next(&mut w).await, want);
        }
    }

    write_some(s, base, &mut rng, &mut states, &mut events, 150).await;
    check(s, base, &states, &events, compacted).await;
    for round in 0..4 {
        compacted = base + (states.len() - 1 - 20 * round) as Revision - 30;
        s.compact(compacted).await.unwrap();
        assert_eq!(s.compacted_revision().await.unwrap(), compacted);
        check(s, base, &states, &events, compacted).await;
        write_some(s, base, &mut rng, &mut states, &mut events, 80).await;
        check(s, base, &states, &events, compacted).await;
    }
    // Compacting to the current revision keeps the latest state readable.
    compacted = s.current_revision().await.unwrap();
    s.compact(compacted).await.unwrap();
    check(s, base, &states, &events, compacted).await;
    write_some(s, base, &mut rng, &mut states, &mut events, 40).await;
    check(s, base, &states, &events, compacted).await;
}

async fn compaction_rejects_old_revisions_and_keeps_current_data(f: &mut Fixture) {
    let s = f.open().await;
    let o = f.base;
    for i in 0..10 {
        s.create(&format!("/c/{i}"), b("a")).await.unwrap(); // revs o+1..=o+10
    }
    for i in 0..5 {
        s.update(&format!("/c/{i}"), b("b"), o + i + 1)
            .await
            .unwrap(); // revs o+11..=o+15
    }
    s.delete("/c/9", None).await.unwrap(); // rev o+16
    let before = s.range(range("/c/")).await.unwrap();
    s.compact(o + 14).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), o + 14);
    assert_eq!(
        s.range(RangeRequest {
            revision: Some(o + 13),
            ..range("/c/")
        })
        .await
        .unwrap_err(),
        Error::Compacted {
            requested: o + 13,
            compacted: o + 14
        }
    );
    match s.watch("/c/", o + 13).await {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (o + 13, o + 14)),
        Err(e) => panic!("expected compacted, got {e}"),
        Ok(_) => panic!("expected compacted, got a watch"),
    }
    let after = s.range(range("/c/")).await.unwrap();
    assert_eq!(after.kvs, before.kvs);
    let at14 = s
        .range(RangeRequest {
            revision: Some(o + 14),
            ..range("/c/")
        })
        .await
        .unwrap();
    assert_eq!(at14.kvs.len(), 10);
    assert_eq!(at14.kvs[4].value, b("a"));
    assert_eq!(at14.kvs[3].value, b("b"));
    let mut w = s.watch("/c/", o + 14).await.unwrap();
    assert_eq!(next(&mut w).await.revision(), o + 15);
    assert_eq!(next(&mut w).await.kind, EventKind::Delete);
    // Compacting backwards is a no-op; into the future an error.
    s.compact(o + 3).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), o + 14);
    assert!(matches!(
        s.compact(o + 17).await,
        Err(Error::FutureRevision { .. })
    ));
    // A watch that lives across a compaction keeps going.
    s.compact(o + 16).await.unwrap();
    s.update("/c/0", b("c"), o + 11).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(
        (e.revision(), e.prev.map(|p| p.value)),
        (o + 17, Some(b("b")))
    );
}

async fn compactor_keeps_the_last_revisions(f: &mut Fixture) {
    let s = f.open().await;
    for i in 0..10 {
        s.create(&format!("/k/{i}"), b("x")).await.unwrap();
    }
    let handle = store::spawn_compactor(s.clone(), Duration::from_millis(20), 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.compacted_revision().await.unwrap() != f.base + 7 {
        assert!(Instant::now() < deadline, "compactor did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.abort();
    assert_eq!(s.range(range("/k/")).await.unwrap().kvs.len(), 10);
    assert_eq!(store::compact_keeping(s.as_ref(), 3).await.unwrap(), None);
}
