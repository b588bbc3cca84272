//! The store contract on both backends (SQLite in a temp dir, a real etcd on loopback): writes,
//! compare-and-swap, ranges, durability across a restart.

mod common;

use std::collections::HashSet;
use std::time::Instant;

use bytes::Bytes;
use store::{Error, KeyValue, RangeRequest, Revision};

use common::*;

crate::backends!(
    create_get_update_delete_with_cas_errors,
    concurrent_compare_and_swap_counter,
    range_with_prefix_limit_after_key_and_remaining,
    data_and_revision_survive_a_restart,
    many_concurrent_writes,
);

async fn create_get_update_delete_with_cas_errors(f: &mut Fixture) {
    let s = f.open().await;
    let o = f.base;
    assert_eq!(s.current_revision().await.unwrap(), o);
    assert_eq!(s.get("/a").await.unwrap(), (None, o));

    let kv = s.create("/a", b("v1")).await.unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (o + 1, o + 1),
        "the first write gets the next revision"
    );
    assert_eq!(
        s.create("/a", b("x")).await,
        Err(Error::AlreadyExists("/a".into()))
    );
    assert_eq!(s.get("/a").await.unwrap(), (Some(kv.clone()), o + 1));

    let kv2 = s.update("/a", b("v2"), o + 1).await.unwrap();
    assert_eq!(
        (kv2.create_revision, kv2.mod_revision, kv2.value.clone()),
        (o + 1, o + 2, b("v2"))
    );
    match s.update("/a", b("v3"), o + 1).await {
        Err(Error::Conflict {
            key,
            expected,
            current,
        }) => {
            assert_eq!((key.as_str(), expected), ("/a", o + 1));
            assert_eq!(*current, kv2);
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(
        s.update("/nope", b("x"), o + 1).await,
        Err(Error::NotFound("/nope".into()))
    );
    assert!(matches!(
        s.delete("/a", Some(o + 1)).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(
        s.delete("/nope", None).await,
        Err(Error::NotFound("/nope".into()))
    );
    // Failed writes do not bump the revision.
    assert_eq!(s.current_revision().await.unwrap(), o + 2);

    let del = s.delete("/a", Some(o + 2)).await.unwrap();
    assert_eq!(
        del,
        KeyValue {
            key: "/a".into(),
            value: b("v2"),
            create_revision: o + 1,
            mod_revision: o + 3
        }
    );
    assert_eq!(s.get("/a").await.unwrap(), (None, o + 3));
    assert_eq!(
        s.delete("/a", None).await,
        Err(Error::NotFound("/a".into()))
    );

    let again = s.create("/a", b("v4")).await.unwrap();
    assert_eq!((again.create_revision, again.mod_revision), (o + 4, o + 4));
    let del = s.delete("/a", None).await.unwrap();
    assert_eq!(del.mod_revision, o + 5);
    assert_eq!(s.current_revision().await.unwrap(), o + 5);
}

async fn concurrent_compare_and_swap_counter(f: &mut Fixture) {
    let s = f.open().await;
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
    assert_eq!(rev, f.base + (TASKS * EACH + 1) as i64);
    assert_eq!(kv.mod_revision, rev);
    eprintln!("{conflicts} conflicts retried");
}

async fn range_with_prefix_limit_after_key_and_remaining(f: &mut Fixture) {
    let s = f.open().await;
    let o = f.base;
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
    assert_eq!((all.remaining, all.revision), (0, o + 12));
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
            revision: Some(o + 13),
            ..range("/")
        })
        .await,
        Err(Error::FutureRevision {
            requested,
            current,
        }) if (requested, current) == (o + 13, o + 12)
    ));
}

async fn data_and_revision_survive_a_restart(f: &mut Fixture) {
    let o = f.base;
    {
        let s = f.open().await;
        s.create("/d/a", b("1")).await.unwrap();
        s.create("/d/b", b("2")).await.unwrap();
        s.update("/d/a", b("3"), o + 1).await.unwrap();
        s.create("/d/c", b("4")).await.unwrap();
        s.delete("/d/c", None).await.unwrap(); // the latest write is a delete
        s.compact(o + 5).await.unwrap();
    }
    // SQLite: the writer thread finishes on its own once the handle is gone; etcd is killed.
    f.restart().await;
    let s = f.open().await;
    assert_eq!(s.current_revision().await.unwrap(), o + 5);
    assert_eq!(s.compacted_revision().await.unwrap(), o + 5);
    let r = s.range(range("/d/")).await.unwrap();
    assert_eq!(r.revision, o + 5);
    let got: Vec<_> = r
        .kvs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.clone(), kv.mod_revision))
        .collect();
    assert_eq!(got, [("/d/a", b("3"), o + 3), ("/d/b", b("2"), o + 2)]);
    assert_eq!(s.create("/d/c", b("5")).await.unwrap().mod_revision, o + 6);
    assert!(matches!(
        s.watch("/d/", o + 4).await,
        Err(Error::Compacted { .. })
    ));
}

async fn many_concurrent_writes(f: &mut Fixture) {
    let s = f.open().await;
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
    let o = f.base;
    assert_eq!(revs, (o + 1..=o + n as Revision).collect::<HashSet<_>>());
    let r = s.range(range("/g/")).await.unwrap();
    assert_eq!((r.kvs.len(), r.revision), (n, o + n as Revision));
}
