//! Helpers shared by the SQLite backend tests.

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use store::sqlite::SqliteStore;
use store::{Event, RangeRequest, WatchStream};
use tempfile::TempDir;

pub fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("state.db")).expect("open store")
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn range(prefix: &str) -> RangeRequest {
    RangeRequest {
        prefix: prefix.into(),
        ..Default::default()
    }
}

pub async fn next(w: &mut WatchStream) -> Event {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event in time")
        .expect("stream open")
        .expect("event, not error")
}

/// A tiny deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
