//! Watch streams: history from the log, then live events from the writer's broadcast.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::Shared;
use super::query::{KeyRange, history};
use crate::{Error, Event, Result, Revision, WatchStream};

/// History rows read per round trip.
const HISTORY_CHUNK: usize = 256;

struct Watcher {
    shared: Arc<Shared>,
    keys: Arc<KeyRange>,
    rx: broadcast::Receiver<Arc<Event>>,
    /// Events read but not yet yielded.
    buf: VecDeque<Event>,
    /// Every revision up to this one has been yielded or skipped.
    done: Revision,
    /// History is read from the log up to this revision; later ones come from `rx`.
    history_until: Revision,
}

impl Watcher {
    async fn next(&mut self) -> Result<Event> {
        loop {
            if let Some(event) = self.buf.pop_front() {
                return Ok(event);
            }
            if self.done < self.history_until {
                let (keys, from, to) = (self.keys.clone(), self.done, self.history_until);
                let chunk = self
                    .shared
                    .clone()
                    .read(move |c| history(c, &keys, from, Some(to), HISTORY_CHUNK))
                    .await?;
                self.done = chunk.covered;
                self.buf.extend(chunk.events);
                continue;
            }
            match self.rx.recv().await {
                Ok(event) => {
                    if event.revision() <= self.done {
                        continue; // already read from the log
                    }
                    self.done = event.revision();
                    if self.keys.contains(&event.kv.key) {
                        return Ok(Event::clone(&event));
                    }
                }
                Err(RecvError::Lagged(_)) => return Err(Error::WatchLagged),
                Err(RecvError::Closed) => return Err(Error::Closed),
            }
        }
    }
}

/// Starts a watch. The broadcast is subscribed before the history is read, so every revision
/// after `after` is either in the history (up to the revision that read saw) or received live.
pub(crate) async fn watch(
    shared: Arc<Shared>,
    events: &broadcast::Sender<Arc<Event>>,
    prefix: &str,
    after: Revision,
) -> Result<WatchStream> {
    let rx = events.subscribe();
    let keys = Arc::new(KeyRange::new(prefix, None));
    let k = keys.clone();
    let first = shared
        .clone()
        .read(move |c| history(c, &k, after, None, HISTORY_CHUNK))
        .await?;
    let watcher = Watcher {
        shared,
        keys,
        rx,
        buf: first.events.into(),
        done: first.covered.max(after),
        history_until: first.current,
    };
    let stream = futures::stream::unfold(Some(watcher), |state| async move {
        let mut watcher = state?;
        match watcher.next().await {
            Ok(event) => Some((Ok(event), Some(watcher))),
            // The stream ends after an error.
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(Box::pin(stream))
}
