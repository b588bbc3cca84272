//! What only the embedded SQLite backend has: errors for unusable database files, the file
//! shrinking after compaction, and closing a watcher that falls behind its in-process buffer.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use store::sqlite::SqliteStore;
use store::{Error, RangeRequest, SharedStore, Store};
use tempfile::TempDir;

use common::*;

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
