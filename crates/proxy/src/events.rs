//! Coalescing watch events: reflector streams mark a shared [`Pending`]; a sync loop waits on
//! it, lets a burst gather (the service proxy: [`pace`], syncs a least interval apart; the
//! NetworkPolicy controller: a fixed debounce), and takes the time of the first event the sync
//! covers (for its latency). Shared by the service proxy and the NetworkPolicy controller.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tokio::sync::Notify;

/// Watch events not yet reflected in the rules: when the first of them arrived, and which
/// watches have finished their initial list.
pub struct Pending {
    since: Mutex<Option<Instant>>,
    /// Woken on every event.
    pub notify: Notify,
    ready: Mutex<Vec<bool>>,
}

impl Pending {
    /// Pending events of `watches` watches, none of them listed yet.
    pub fn new(watches: usize) -> Self {
        Pending {
            since: Mutex::new(None),
            notify: Notify::new(),
            ready: Mutex::new(vec![false; watches]),
        }
    }

    /// Records an event (and wakes the sync loop).
    pub fn mark(&self) {
        if let Ok(mut since) = self.since.lock() {
            since.get_or_insert_with(Instant::now);
        }
        self.notify.notify_one();
    }

    /// When the first event not yet synced arrived (and forgets it).
    pub fn take(&self) -> Option<Instant> {
        self.since.lock().ok().and_then(|mut s| s.take())
    }

    /// Whether every watch has delivered its initial list.
    pub fn all_ready(&self) -> bool {
        self.ready
            .lock()
            .map(|r| r.iter().all(|x| *x))
            .unwrap_or(false)
    }

    fn set_ready(&self, which: usize) {
        if let Ok(mut r) = self.ready.lock()
            && let Some(slot) = r.get_mut(which)
        {
            *slot = true;
        }
    }
}

/// Waits until `min_interval` has passed since `last_sync` (when the previous sync started):
/// the first change after a quiet period is synced at once, and a burst of changes becomes one
/// sync per interval.
pub async fn pace(last_sync: Option<Instant>, min_interval: Duration) {
    if let Some(last) = last_sync {
        tokio::time::sleep_until((last + min_interval).into()).await;
    }
}

/// Feeds a reflector's events into `pending` (`which`: the watch's index).
pub async fn follow<K, S>(stream: S, pending: std::sync::Arc<Pending>, which: usize)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                pending.set_ready(which);
                pending.mark();
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(_) => pending.mark(),
            Err(e) => {
                tracing::debug!("watch: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
