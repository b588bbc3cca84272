//! Helpers shared by the store tests: a fixture per backend (the embedded SQLite store in a
//! temp dir, or a real single-member etcd on free loopback ports in a temp dir, killed on
//! drop), and the `backends!` macro that runs a test against each.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use store::etcd::{EtcdConfig, EtcdStore};
use store::sqlite::SqliteStore;
use store::{Event, RangeRequest, Revision, SharedStore, WatchStream};
use tempfile::TempDir;

/// Runs each named `async fn(&mut Fixture)` once per backend: `sqlite::NAME`, `etcd::NAME` and
/// `etcd_cached::NAME` (etcd behind the watch cache).
#[macro_export]
macro_rules! backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let mut f = $crate::common::Fixture::sqlite();
                    super::$name(&mut f).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let mut f = $crate::common::Fixture::etcd().await;
                    super::$name(&mut f).await;
                }
            )*
        }
        mod etcd_cached {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let mut f = $crate::common::Fixture::etcd_cached().await;
                    super::$name(&mut f).await;
                }
            )*
        }
    };
}

/// A backend with its data: opens store handles on it and can reopen (restart) it.
pub struct Fixture {
    pub dir: TempDir,
    pub etcd: Option<Etcd>,
    /// The revision of the empty store: 0 for SQLite, 1 for etcd (its first write gets 2).
    pub base: Revision,
    /// etcd behind the watch cache (`store::cache::WatchCache`).
    pub cached: bool,
}

impl Fixture {
    pub fn sqlite() -> Fixture {
        Fixture {
            dir: TempDir::new().unwrap(),
            etcd: None,
            base: 0,
            cached: false,
        }
    }

    pub async fn etcd() -> Fixture {
        let dir = TempDir::new().unwrap();
        let etcd = Etcd::start(dir.path().join("etcd")).await;
        Fixture {
            dir,
            etcd: Some(etcd),
            base: 1,
            cached: false,
        }
    }

    pub async fn etcd_cached() -> Fixture {
        Fixture {
            cached: true,
            ..Self::etcd().await
        }
    }

    /// A new handle on the backend's data.
    pub async fn open(&self) -> SharedStore {
        match &self.etcd {
            None => Arc::new(open(&self.dir)),
            Some(etcd) if self.cached => {
                let cache = store::cache::WatchCache::new(Arc::new(etcd.connect().await));
                // Watches from now on are served by the cache.
                let deadline = Instant::now() + Duration::from_secs(10);
                while cache.covered().is_none() {
                    assert!(Instant::now() < deadline, "the watch cache did not start");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Arc::new(cache)
            }
            Some(etcd) => Arc::new(etcd.connect().await),
        }
    }

    /// Stops the backend and starts it again on the same data: the SQLite store is closed
    /// and reopened by the next `open`, etcd is killed (SIGKILL) and restarted.
    pub async fn restart(&mut self) {
        match &mut self.etcd {
            None => tokio::time::sleep(Duration::from_millis(50)).await,
            Some(etcd) => etcd.restart().await,
        }
    }
}

/// A single-member etcd on loopback (the `etcd` on PATH, or `$CORTEN_ETCD`).
pub struct Etcd {
    child: Option<Child>,
    data: std::path::PathBuf,
    client_port: u16,
    peer_port: u16,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    pub async fn start(data: std::path::PathBuf) -> Etcd {
        let mut etcd = Etcd {
            child: None,
            data,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn().await;
        etcd
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    async fn spawn(&mut self) {
        let bin = std::env::var("CORTEN_ETCD").unwrap_or_else(|_| "etcd".into());
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        std::fs::create_dir_all(&self.data).unwrap();
        let log = std::fs::File::create(self.data.with_extension("log")).unwrap();
        let child = Command::new(&bin)
            .args(["--name", "test", "--data-dir"])
            .arg(self.data.join("member"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {bin} (install etcd-server: scripts/deps.sh etcd-server): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(store) = EtcdStore::connect(&EtcdConfig::from_endpoints(&client)).await {
                drop(store);
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("etcd exited: {status}");
            }
            assert!(Instant::now() < deadline, "etcd did not start in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn connect(&self) -> EtcdStore {
        EtcdStore::connect(&EtcdConfig::from_endpoints(&self.endpoint()))
            .await
            .unwrap()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

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
