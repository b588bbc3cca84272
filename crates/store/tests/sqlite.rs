//! Tests of the SQLite backend against a real database in a temporary directory: writes, compare-and-swap, ranges, durability, errors.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use store::sqlite::SqliteStore;
use store::{Error, KeyValue, RangeRequest, Revision, SharedStore, Store};
use tempfile::TempDir;

use common::*;

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
