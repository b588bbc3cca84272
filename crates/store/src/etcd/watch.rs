//! Watches on etcd that survive dropped connections.
//!
//! One etcd watch (prefix range, `prev_kv`) per stream, started at `after + 1`. Every event
//! moves the next start revision past it; when the gRPC stream fails or ends, the watch is
//! created again from there (backing off up to 2 s), so the caller sees every revision once,
//! in order. etcd cancelling the watch because its start revision was compacted ends the
//! stream with [`Error::Compacted`]; the store being dropped ends it with [`Error::Closed`].

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{EventType, WatchClient, WatchOptions};
use futures::StreamExt;

use super::{kv, prefix_end};
use crate::{Error, Event, EventKind, KeyValue, Result, Revision, WatchStream};

/// The longest wait between attempts to re-create a failed watch.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

struct State {
    client: WatchClient,
    prefix: Vec<u8>,
    /// The revision the next (re-)created watch starts at.
    next: Revision,
    stream: Option<etcd_client::WatchStream>,
    pending: VecDeque<Event>,
    closed: tokio::sync::watch::Receiver<()>,
    backoff: Duration,
    done: bool,
}

/// A stream of the changes under `prefix` after revision `after`.
pub(super) fn stream(
    client: WatchClient,
    prefix: Vec<u8>,
    after: Revision,
    closed: tokio::sync::watch::Receiver<()>,
) -> WatchStream {
    let state = State {
        client,
        prefix,
        next: after + 1,
        stream: None,
        pending: VecDeque::new(),
        closed,
        backoff: Duration::from_millis(100),
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        let item = s.step().await?;
        Some((item, s))
    })
    .boxed()
}

impl State {
    /// The next item, or None once the stream has ended.
    async fn step(&mut self) -> Option<Result<Event>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            let Some(stream) = self.stream.as_mut() else {
                let key = if self.prefix.is_empty() {
                    vec![0]
                } else {
                    self.prefix.clone()
                };
                let options = WatchOptions::new()
                    .with_range(prefix_end(&self.prefix))
                    .with_start_revision(self.next)
                    .with_prev_key();
                let mut client = self.client.clone();
                let created = tokio::select! {
                    _ = self.closed.changed() => None,
                    created = client.watch(key, Some(options)) => Some(created),
                };
                match created {
                    None => return self.end(Error::Closed),
                    Some(Ok(stream)) => self.stream = Some(stream),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, revision = self.next, "etcd watch failed; retrying");
                        if self.pause().await {
                            return self.end(Error::Closed);
                        }
                    }
                }
                continue;
            };
            let message = tokio::select! {
                _ = self.closed.changed() => None,
                message = stream.message() => Some(message),
            };
            let Some(message) = message else {
                return self.end(Error::Closed);
            };
            match message {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        return self.end(Error::Compacted {
                            requested: self.next - 1,
                            compacted: resp.compact_revision(),
                        });
                    }
                    if resp.canceled() {
                        let reason = resp.cancel_reason().to_string();
                        return self.end(Error::Backend(format!(
                            "etcd cancelled the watch: {reason}"
                        )));
                    }
                    self.backoff = Duration::from_millis(100);
                    for ev in resp.events() {
                        match event(ev) {
                            // A re-created watch never repeats, but be sure.
                            Ok(e) if e.revision() < self.next => {}
                            Ok(e) => {
                                self.next = e.revision() + 1;
                                self.pending.push_back(e);
                            }
                            Err(e) => return self.end(e),
                        }
                    }
                }
                Ok(None) => {
                    tracing::debug!(revision = self.next, "etcd watch stream ended; re-watching");
                    self.stream = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, revision = self.next, "etcd watch broke; re-watching");
                    self.stream = None;
                    if self.pause().await {
                        return self.end(Error::Closed);
                    }
                }
            }
        }
    }

    /// Ends the stream with `error` (after the events already received).
    fn end(&mut self, error: Error) -> Option<Result<Event>> {
        self.done = true;
        self.stream = None;
        Some(Err(error))
    }

    /// Waits before the next attempt; true if the store closed meanwhile.
    async fn pause(&mut self) -> bool {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = self.closed.changed() => true,
            _ = tokio::time::sleep(wait) => false,
        }
    }
}

/// Converts etcd's event. A delete carries the key's last value (from `prev_kv`) with the
/// delete's revision, as the embedded store reports it.
fn event(ev: &etcd_client::Event) -> Result<Event> {
    let current = ev
        .kv()
        .ok_or_else(|| Error::Backend("etcd watch event without a key".into()))?;
    let prev = ev.prev_kv().map(kv).transpose()?;
    Ok(match ev.event_type() {
        EventType::Put => Event {
            kind: EventKind::Put,
            kv: kv(current)?,
            prev,
        },
        EventType::Delete => {
            let mut last = match &prev {
                Some(p) => p.clone(),
                None => KeyValue {
                    key: kv(current)?.key,
                    value: Bytes::new(),
                    create_revision: 0,
                    mod_revision: 0,
                },
            };
            last.mod_revision = current.mod_revision();
            Event {
                kind: EventKind::Delete,
                kv: last,
                prev,
            }
        }
    })
}
