//! The writer thread: group commit.
//!
//! One thread owns the write connection. It takes a request, drains whatever else is queued
//! (up to [`MAX_BATCH`]), applies the whole batch in one transaction, commits once (with
//! `synchronous=FULL`, so the batch is durable), publishes the events, then answers every
//! request.
//!
//! Compaction keeps, for each key, the newest log row at or below the compacted revision if it
//! is a live value that a later write superseded; it drops every other row at or below it. A
//! key's newest row that is still current is dropped too (the `current` table has it), so when
//! such a key is later updated or deleted and its previous version is at or below the compacted
//! revision, the writer puts that version back into the log (from `current`). Reads at any
//! revision at or above the compacted one and watches from it thus always find what they need.
//! `compact` only records the compacted revision; the rows are deleted afterwards in small
//! transactions between write batches (rows not yet deleted do not change any answer).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::Shared;
use super::latest::{Changes, Latest};
use super::schema::backend;
use crate::{Error, Event, EventKind, KeyValue, Result, Revision};

/// The most requests committed in one transaction.
const MAX_BATCH: usize = 512;

/// A write operation.
pub(crate) enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

/// A request to the writer thread.
pub(crate) enum Cmd {
    Write {
        op: Op,
        reply: oneshot::Sender<Result<KeyValue>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<()>>,
    },
}

pub(crate) struct Writer {
    conn: Connection,
    rev: Revision,
    compacted: Revision,
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<Event>>,
    /// Work left by the last compaction.
    cleanup: Option<Cleanup>,
}

type Pending = (Op, oneshot::Sender<Result<KeyValue>>);

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        rev: Revision,
        compacted: Revision,
        shared: Arc<Shared>,
        events: broadcast::Sender<Arc<Event>>,
    ) -> Writer {
        // Finish (or check) the cleanup of the last compaction; cheap when it is done.
        let cleanup = (compacted > 0).then_some(Cleanup::Rows { after: 0 });
        Writer {
            conn,
            rev,
            compacted,
            shared,
            events,
            cleanup,
        }
    }

    /// Serves requests until every sender is gone. Between batches, it removes compacted
    /// history a chunk at a time, so that a large compaction never stalls writes for long.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = if self.cleanup.is_some() {
                match rx.try_recv() {
                    Ok(cmd) => Some(cmd),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.blocking_recv() {
                    Some(cmd) => Some(cmd),
                    None => break,
                }
            };
            if let Some(mut cmd) = first {
                loop {
                    match cmd {
                        Cmd::Write { op, reply } => batch.push((op, reply)),
                        Cmd::Compact { revision, reply } => {
                            // Writes queued before the compaction go first.
                            self.commit_batch(&mut batch);
                            let _ = reply.send(self.compact(revision));
                        }
                    }
                    if batch.len() >= MAX_BATCH {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(next) => cmd = next,
                        Err(_) => break,
                    }
                }
                self.commit_batch(&mut batch);
            }
            if self.cleanup.is_some() {
                self.cleanup_step();
            }
        }
        tracing::debug!("datastore writer stopped");
    }

    fn commit_batch(&mut self, batch: &mut Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let mut rev = self.rev;
        let mut results: Vec<Result<(KeyValue, Event)>> = Vec::with_capacity(batch.len());
        let mut changes = Changes::new();
        let shared = self.shared.clone();
        let outcome = (|| -> rusqlite::Result<()> {
            // Only this thread changes `latest`: reading it for the whole batch is safe.
            let latest = shared.latest();
            let mut view = View {
                latest: &latest,
                changes: &mut changes,
            };
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (op, _) in batch.iter_mut() {
                let op = std::mem::replace(
                    op,
                    Op::Delete {
                        key: String::new(),
                        expected: None,
                    },
                );
                results.push(apply(&tx, &mut view, op, &mut rev, self.compacted)?);
            }
            if rev != self.rev {
                tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'current_rev'")?
                    .execute(params![rev])?;
            }
            tx.commit()
        })();
        match outcome {
            Ok(()) => {
                self.rev = rev;
                self.shared.latest_mut().apply(changes, rev);
                for (r, (_, reply)) in results.into_iter().zip(batch.drain(..)) {
                    let answer = r.map(|(kv, event)| {
                        // An error only means nobody is watching.
                        let _ = self.events.send(Arc::new(event));
                        kv
                    });
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "datastore write batch failed");
                let err = backend(e);
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Marks history at or below `revision` as gone; the rows are removed afterwards, a chunk
    /// at a time (see [`Writer::cleanup_step`]). Reads and watches below `revision` fail from
    /// now on, and the rows still there are harmless to reads at or above it.
    fn compact(&mut self, revision: Revision) -> Result<()> {
        if revision > self.rev {
            return Err(Error::FutureRevision {
                requested: revision,
                current: self.rev,
            });
        }
        if revision <= self.compacted {
            return Ok(());
        }
        self.conn
            .execute(
                "UPDATE meta SET value = ?1 WHERE name = 'compacted_rev'",
                params![revision],
            )
            .map_err(backend)?;
        self.compacted = revision;
        self.shared.compacted.store(revision, Ordering::Release);
        // Rows already cleaned for an older compaction may be superseded now: start over.
        self.cleanup = Some(Cleanup::Rows { after: 0 });
        Ok(())
    }

    /// Removes one chunk of compacted history, or frees one chunk of pages.
    fn cleanup_step(&mut self) {
        let step = match self.cleanup {
            Some(Cleanup::Rows { after }) => self.delete_rows(after).map(|next| {
                Some(match next {
                    Some(after) => Cleanup::Rows { after },
                    None => Cleanup::Vacuum,
                })
            }),
            Some(Cleanup::Vacuum) => {
                incremental_vacuum(&self.conn).map(|more| more.then_some(Cleanup::Vacuum))
            }
            None => Ok(None),
        };
        self.cleanup = match step {
            Ok(next) => next,
            Err(e) => {
                // Leftover rows are harmless; the next compaction tries again.
                tracing::warn!(error = %e, "datastore history cleanup failed");
                None
            }
        };
    }

    /// Deletes the compacted rows among the next [`CLEANUP_CHUNK`] log rows after revision
    /// `after`; returns where to go on from, or None when done.
    fn delete_rows(&mut self, after: Revision) -> rusqlite::Result<Option<Revision>> {
        let upto = self.compacted;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let end: Option<Revision> = tx
            .prepare_cached(
                "SELECT rev FROM log WHERE rev > ?1 AND rev <= ?2 ORDER BY rev LIMIT 1 OFFSET ?3",
            )?
            .query_row(params![after, upto, CLEANUP_CHUNK - 1], |r| r.get(0))
            .optional()?;
        let hi = end.unwrap_or(upto);
        // Keep a key's newest live row at or below the compacted revision if a later write
        // superseded it (see the module docs); drop every other row.
        let removed = tx
            .prepare_cached(
                "DELETE FROM log WHERE rev > ?1 AND rev <= ?2 AND (
                    deleted = 1
                    OR EXISTS (SELECT 1 FROM log n WHERE n.key = log.key AND n.rev > log.rev AND n.rev <= ?3)
                    OR EXISTS (SELECT 1 FROM current c WHERE c.key = log.key AND c.mod_rev = log.rev)
                 )",
            )?
            .execute(params![after, hi, upto])?;
        tx.commit()?;
        tracing::trace!(after, hi, removed, "datastore history cleanup");
        Ok(end.filter(|&e| e < upto))
    }
}

/// Background work left by a compaction.
#[derive(Clone, Copy, Debug)]
enum Cleanup {
    /// Delete compacted log rows after this revision.
    Rows { after: Revision },
    /// Hand free pages back to the file system.
    Vacuum,
}

/// Log rows examined per cleanup transaction.
const CLEANUP_CHUNK: i64 = 2000;
/// Free pages handed back per step.
const VACUUM_PAGES: i64 = 1024;

/// Frees up to [`VACUUM_PAGES`] pages; returns whether free pages are left.
fn incremental_vacuum(conn: &Connection) -> rusqlite::Result<bool> {
    {
        let mut stmt =
            conn.prepare_cached(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))?;
        let mut rows = stmt.query([])?;
        // Each step frees one page; run it to the end.
        while rows.next()?.is_some() {}
    }
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok(free > 0)
}

/// What the batch being applied sees: the committed latest values with the batch's own
/// changes over them.
struct View<'a> {
    latest: &'a Latest,
    changes: &'a mut Changes,
}

impl View<'_> {
    /// The live value of `key` as of the operations applied so far.
    fn current(&self, key: &str) -> Option<KeyValue> {
        match self.changes.get(key) {
            Some(kv) => kv.clone(),
            None => self.latest.get(key).cloned(),
        }
    }

    /// Records the batch's new value of `key` (`None`: deleted).
    fn set(&mut self, key: &str, kv: Option<KeyValue>) {
        self.changes.insert(key.to_owned(), kv);
    }
}

fn insert_log(
    tx: &Transaction<'_>,
    rev: Revision,
    key: &str,
    create_rev: Revision,
    prev_rev: Revision,
    value: &[u8],
    deleted: bool,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO log (rev, key, create_rev, prev_rev, value, deleted) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![rev, key, create_rev, prev_rev, value, deleted])?;
    Ok(())
}

/// Puts `cur` (about to be superseded) back into the log if compaction may have dropped it.
fn keep_superseded(
    tx: &Transaction<'_>,
    cur: &KeyValue,
    compacted: Revision,
) -> rusqlite::Result<()> {
    if cur.mod_revision <= compacted {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO log (rev, key, create_rev, prev_rev, value, deleted)
             VALUES (?1, ?2, ?3, 0, ?4, 0)",
        )?
        .execute(params![
            cur.mod_revision,
            cur.key,
            cur.create_revision,
            cur.value.as_ref()
        ])?;
    }
    Ok(())
}

/// Checks an update's or delete's expectation against what is stored.
fn check(key: &str, cur: Option<KeyValue>, expected: Option<Revision>) -> Result<KeyValue> {
    let cur = cur.ok_or_else(|| Error::NotFound(key.to_owned()))?;
    match expected {
        Some(expected) if expected != cur.mod_revision => Err(Error::Conflict {
            key: key.to_owned(),
            expected,
            current: Box::new(cur),
        }),
        _ => Ok(cur),
    }
}

/// Applies one operation inside the batch's transaction. The outer error is a SQLite failure
/// (fails the batch), the inner one the operation's own answer.
fn apply(
    tx: &Transaction<'_>,
    view: &mut View<'_>,
    op: Op,
    rev: &mut Revision,
    compacted: Revision,
) -> rusqlite::Result<Result<(KeyValue, Event)>> {
    match op {
        Op::Create { key, value } => {
            if view.current(&key).is_some() {
                return Ok(Err(Error::AlreadyExists(key)));
            }
            let r = *rev + 1;
            insert_log(tx, r, &key, r, 0, &value, false)?;
            tx.prepare_cached(
                "INSERT INTO current (key, create_rev, mod_rev, value) VALUES (?1, ?2, ?2, ?3)",
            )?
            .execute(params![key, r, value.as_ref()])?;
            *rev = r;
            let kv = KeyValue {
                key,
                value,
                create_revision: r,
                mod_revision: r,
            };
            view.set(&kv.key, Some(kv.clone()));
            let event = Event {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev: None,
            };
            Ok(Ok((kv, event)))
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let cur = match check(&key, view.current(&key), Some(expected)) {
                Ok(cur) => cur,
                Err(e) => return Ok(Err(e)),
            };
            let r = *rev + 1;
            keep_superseded(tx, &cur, compacted)?;
            insert_log(
                tx,
                r,
                &key,
                cur.create_revision,
                cur.mod_revision,
                &value,
                false,
            )?;
            tx.prepare_cached("UPDATE current SET mod_rev = ?2, value = ?3 WHERE key = ?1")?
                .execute(params![key, r, value.as_ref()])?;
            *rev = r;
            let kv = KeyValue {
                key,
                value,
                create_revision: cur.create_revision,
                mod_revision: r,
            };
            view.set(&kv.key, Some(kv.clone()));
            let event = Event {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev: Some(cur),
            };
            Ok(Ok((kv, event)))
        }
        Op::Delete { key, expected } => {
            let cur = match check(&key, view.current(&key), expected) {
                Ok(cur) => cur,
                Err(e) => return Ok(Err(e)),
            };
            let r = *rev + 1;
            keep_superseded(tx, &cur, compacted)?;
            insert_log(
                tx,
                r,
                &key,
                cur.create_revision,
                cur.mod_revision,
                &[],
                true,
            )?;
            tx.prepare_cached("DELETE FROM current WHERE key = ?1")?
                .execute(params![key])?;
            *rev = r;
            let kv = KeyValue {
                mod_revision: r,
                ..cur.clone()
            };
            view.set(&kv.key, None);
            let event = Event {
                kind: EventKind::Delete,
                kv: kv.clone(),
                prev: Some(cur),
            };
            Ok(Ok((kv, event)))
        }
    }
}
