//! WATCH: a stream of `WatchEvent`s, one JSON document per line. Initial ADDED events when no
//! or a "0" resourceVersion is given (or `sendInitialEvents=true`, ended by a bookmark with the
//! `k8s.io/initial-events-end` annotation), then changes from the store's watch, translated
//! through the selectors (an object that stops matching is DELETED, one that starts matching
//! is ADDED), periodic bookmarks, `timeoutSeconds`, and a 410 ERROR event when the requested
//! revision has been compacted.

use std::sync::Arc;
use std::time::Duration;

use api::{ApiError, ResourceInfo};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::list::{Filter, prefix};
use crate::objects;
use crate::request::Query;
use crate::state::ApiState;
use crate::table::{self, IncludeObject};
use crate::watchcache::CachedEvent;

/// How often bookmarks are sent to watchers that allow them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);
/// The longest a watch lasts when the client gives no timeout (upstream: 30-60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// The most bytes of queued events [`body`] joins into one chunk.
const COALESCE_BYTES: usize = 64 * 1024;

/// A watch's response body: its events as they come, except that events already queued when
/// the connection is ready for more are joined into one chunk (one TLS record and one write
/// instead of one per event, when a busy server produces them faster than they are sent).
pub fn body(
    rx: mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        let mut chunk: Option<Vec<u8>> = None;
        while chunk.as_ref().map_or(first.len(), Vec::len) < COALESCE_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            chunk
                .get_or_insert_with(|| first.to_vec())
                .extend_from_slice(&next);
        }
        let out = chunk.map_or(first, Bytes::from);
        Some((Ok(out), rx))
    })
}

/// How each watched object is rendered.
#[derive(Clone, Copy)]
pub enum Render {
    /// The object itself.
    Object,
    /// A one-row Table (kubectl get -w).
    Table(IncludeObject),
}

struct Watcher {
    res: Arc<ResourceInfo>,
    filter: Filter,
    name: Option<String>,
    /// The one key watched, when `name` is set.
    key: Option<String>,
    render: Render,
    first_table: bool,
    tx: mpsc::Sender<Bytes>,
}

impl Watcher {
    /// Whether the selectors take `obj` (the watched name is checked on the key, in
    /// [`Watcher::classify`]).
    fn selects(&self, obj: &Value) -> bool {
        self.filter.matches(obj).unwrap_or(false)
    }

    /// How a store event shows to this watcher (ADDED, MODIFIED, DELETED), or `None` when it
    /// does not: an object that starts matching the selectors is ADDED, one that stops is
    /// DELETED. Objects are decoded only when there are selectors to test.
    fn classify(&self, ev: &CachedEvent) -> Option<&'static str> {
        if self.key.as_deref().is_some_and(|k| k != ev.kv.key) {
            return None;
        }
        let deleted = ev.kind == store::EventKind::Delete;
        if self.filter.is_everything() {
            // Still skip what cannot be decoded, as a selector watcher would.
            ev.object_json()?;
            return Some(match (deleted, ev.prev.is_some()) {
                (true, _) => "DELETED",
                (false, true) => "MODIFIED",
                (false, false) => "ADDED",
            });
        }
        let now = self.selects(ev.object()?);
        let before = ev.prev_object().is_some_and(|p| self.selects(p));
        match (before, now, deleted) {
            (true, _, true) | (_, true, true) => Some("DELETED"),
            (false, false, true) => None,
            (true, true, _) => Some("MODIFIED"),
            (false, true, _) => Some("ADDED"),
            (true, false, _) => Some("DELETED"),
            (false, false, _) => None,
        }
    }

    /// Sends a store event; the object's JSON is shared with every other watcher of it.
    async fn send_event(&mut self, kind: &str, ev: &CachedEvent) -> bool {
        match self.render {
            Render::Object => {
                let Some(json) = ev.object_json() else {
                    return true;
                };
                let mut line = Vec::with_capacity(json.len() + 40);
                line.extend_from_slice(b"{\"type\":\"");
                line.extend_from_slice(kind.as_bytes());
                line.extend_from_slice(b"\",\"object\":");
                line.extend_from_slice(json);
                line.extend_from_slice(b"}\n");
                self.tx.send(Bytes::from(line)).await.is_ok()
            }
            Render::Table(_) => match ev.object() {
                Some(obj) => self.send(kind, obj).await,
                None => true,
            },
        }
    }

    async fn send(&mut self, kind: &str, obj: &Value) -> bool {
        let object = match self.render {
            Render::Object => obj.clone(),
            Render::Table(include) if kind != "BOOKMARK" && kind != "ERROR" => {
                let mut t = json!({
                    "kind": "Table",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"resourceVersion": objects::meta_str(obj, "resourceVersion").unwrap_or("")},
                    "columnDefinitions": [],
                    "rows": [table::row(&self.res, obj, include)],
                });
                if self.first_table {
                    t["columnDefinitions"] = json!(table::columns(&self.res));
                    self.first_table = false;
                }
                t
            }
            Render::Table(_) => obj.clone(),
        };
        let mut line =
            serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
        line.push(b'\n');
        self.tx.send(Bytes::from(line)).await.is_ok()
    }

    fn bookmark(&self, rev: i64, initial_end: bool) -> Value {
        let mut meta = json!({ "resourceVersion": rev.to_string() });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        json!({ "kind": self.res.kind, "apiVersion": self.res.api_version, "metadata": meta })
    }
}

impl ApiState {
    /// Starts a watch; events arrive on the returned channel until it closes.
    pub async fn watch(
        self: &Arc<Self>,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        name: Option<&str>,
        query: &Query,
        render: Render,
    ) -> Result<mpsc::Receiver<Bytes>, ApiError> {
        let filter = Filter::from_query(res, query)?;
        let bookmarks = query.flag("allowWatchBookmarks");
        let send_initial = query.flag("sendInitialEvents");
        let timeout = query
            .int("timeoutSeconds")?
            .filter(|t| *t > 0)
            .map_or(DEFAULT_TIMEOUT, |t| Duration::from_secs(t as u64));
        let rv = query.non_empty("resourceVersion");
        let from: Option<i64> = match rv {
            None | Some("0") => None,
            Some(v) => Some(
                v.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
            ),
        };
        let prefix = match name {
            Some(n) => res.key(ns, n),
            None => prefix(res, ns),
        };
        let (tx, rx) = mpsc::channel(256);
        let mut w = Watcher {
            res: res.clone(),
            filter,
            name: name.map(str::to_string),
            key: name.map(|n| res.key(ns, n)),
            render,
            first_table: true,
            tx,
        };

        // Initial state: everything that matches now, as ADDED.
        let mut initial = vec![];
        let start = match from {
            Some(rev) if !send_initial => rev,
            _ => {
                let mut q = query.clone();
                q.0.remove("limit");
                q.0.remove("continue");
                q.0.remove("resourceVersion");
                let page = self.list_page(res, ns, &q).await?;
                initial = page.items;
                page.revision
            }
        };
        let state = self.clone();
        tokio::spawn(async move {
            state.metrics.watch_opened();
            run(
                state.clone(),
                &mut w,
                &prefix,
                start,
                initial,
                send_initial,
                bookmarks,
                timeout,
            )
            .await;
            state.metrics.watch_closed();
        });
        Ok(rx)
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    state: Arc<ApiState>,
    w: &mut Watcher,
    prefix: &str,
    start: i64,
    initial: Vec<Value>,
    send_initial: bool,
    bookmarks: bool,
    timeout: Duration,
) {
    let resource_prefix = w.res.key_prefix();
    let mut stream = match state
        .watch_cache
        .watch(&resource_prefix, prefix, start)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            let err = match e {
                store::Error::Compacted {
                    requested,
                    compacted,
                } => ApiError::gone(requested, compacted),
                e => ApiError::internal(e),
            };
            w.send("ERROR", &err.to_json()).await;
            return;
        }
    };
    for obj in &initial {
        if w.name.as_deref().is_some_and(|n| n != objects::name(obj)) {
            continue;
        }
        if !w.send("ADDED", obj).await {
            return;
        }
    }
    if send_initial && bookmarks {
        let b = w.bookmark(start, true);
        if !w.send("BOOKMARK", &b).await {
            return;
        }
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(BOOKMARK_INTERVAL);
    tick.tick().await;
    let mut last_rev = start;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = w.tx.closed() => return,
            _ = tick.tick(), if bookmarks => {
                let b = w.bookmark(last_rev, false);
                if !w.send("BOOKMARK", &b).await { return; }
            }
            ev = stream.next() => {
                let ev = match ev {
                    Some(Ok(ev)) => ev,
                    Some(Err(store::Error::WatchLagged)) | Some(Err(store::Error::Compacted { .. })) => {
                        w.send("ERROR", &ApiError::gone(last_rev, last_rev).to_json()).await;
                        return;
                    }
                    Some(Err(e)) => {
                        w.send("ERROR", &ApiError::internal(e).to_json()).await;
                        return;
                    }
                    None => return,
                };
                last_rev = ev.revision();
                let Some(kind) = w.classify(&ev) else { continue };
                if !w.send_event(kind, &ev).await { return; }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_events_go_out_as_one_chunk_in_order() {
        let (tx, rx) = mpsc::channel(8);
        let mut out = Box::pin(body(rx));
        for line in ["a\n", "b\n", "c\n"] {
            tx.send(Bytes::from(line)).await.unwrap();
        }
        assert_eq!(out.next().await.unwrap().unwrap(), Bytes::from("a\nb\nc\n"));
        tx.send(Bytes::from("d\n")).await.unwrap();
        assert_eq!(out.next().await.unwrap().unwrap(), Bytes::from("d\n"));
        drop(tx);
        assert!(out.next().await.is_none());
    }

    #[tokio::test]
    async fn a_chunk_stops_growing_past_the_coalescing_limit() {
        let (tx, rx) = mpsc::channel(8);
        let mut out = Box::pin(body(rx));
        let big = Bytes::from(vec![b'x'; COALESCE_BYTES - 1]);
        tx.send(big.clone()).await.unwrap();
        tx.send(Bytes::from("y\n")).await.unwrap();
        tx.send(Bytes::from("z\n")).await.unwrap();
        let first = out.next().await.unwrap().unwrap();
        assert_eq!(first.len(), COALESCE_BYTES + 1);
        assert_eq!(out.next().await.unwrap().unwrap(), Bytes::from("z\n"));
    }
}
