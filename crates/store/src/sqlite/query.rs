//! Read queries. Every function here runs inside one read transaction, so the revision it
//! reports and the rows it returns come from the same snapshot.

use bytes::Bytes;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::schema::{backend, read_meta};
use crate::{Error, Event, EventKind, KeyValue, RangeRequest, RangeResponse, Result, Revision};

/// A key bound that may not be valid UTF-8 (the prefix with its last byte bumped), bound as
/// TEXT so that SQLite compares it bytewise against the TEXT keys.
struct TextBytes(Vec<u8>);

impl ToSql for TextBytes {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(&self.0)))
    }
}

/// The smallest byte string greater than every string starting with `prefix`, or None when
/// there is none (empty prefix, or only 0xFF bytes, which UTF-8 never contains).
fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Keys under a prefix, optionally strictly after a key. SQLite's default BINARY collation
/// compares TEXT bytewise, like Rust's `str` ordering.
pub(crate) struct KeyRange {
    prefix: String,
    end: Option<TextBytes>,
    after: Option<String>,
}

impl KeyRange {
    pub(crate) fn new(prefix: &str, after: Option<&str>) -> KeyRange {
        KeyRange {
            prefix: prefix.to_owned(),
            end: prefix_end(prefix).map(TextBytes),
            after: after.map(str::to_owned),
        }
    }

    /// Whether `key` is in the range.
    pub(crate) fn contains(&self, key: &str) -> bool {
        key.starts_with(&self.prefix) && self.after.as_deref().is_none_or(|a| key > a)
    }

    /// The SQL condition on column `col` (uses the named parameters :lo, :hi, :after).
    fn cond(&self, col: &str) -> String {
        let mut c = format!("{col} >= :lo");
        if self.end.is_some() {
            c.push_str(&format!(" AND {col} < :hi"));
        }
        if self.after.is_some() {
            c.push_str(&format!(" AND {col} > :after"));
        }
        c
    }

    fn bind<'a>(&'a self, out: &mut Vec<(&'static str, &'a dyn ToSql)>) {
        out.push((":lo", &self.prefix));
        if let Some(end) = &self.end {
            out.push((":hi", end));
        }
        if let Some(after) = &self.after {
            out.push((":after", after));
        }
    }
}

fn kv_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: row.get(0)?,
        create_revision: row.get(1)?,
        mod_revision: row.get(2)?,
        value: Bytes::from(row.get::<_, Vec<u8>>(3)?),
    })
}

/// The rows (key, create_rev, mod_rev, value) of the keys in `range` as of revision `:rev`.
/// Keys not changed since `:rev` are read from `current`; for keys changed since, the newest
/// log row at or below `:rev` (compaction keeps it, see the writer) unless it is a delete.
fn at_revision_sql(range: &KeyRange) -> String {
    format!(
        "SELECT key, create_rev, mod_rev, value FROM current
           WHERE mod_rev <= :rev AND {cur}
         UNION ALL
         SELECT l.key, l.create_rev, l.rev, l.value
           FROM (SELECT DISTINCT key AS k FROM log WHERE rev > :rev AND {chg}) c
           JOIN log l ON l.rev = (SELECT max(x.rev) FROM log x WHERE x.key = c.k AND x.rev <= :rev)
          WHERE l.deleted = 0",
        cur = range.cond("key"),
        chg = range.cond("key"),
    )
}

/// A prefix range read, at the latest or a past revision.
pub(crate) fn range(conn: &mut Connection, req: &RangeRequest) -> Result<RangeResponse> {
    let tx = conn.transaction().map_err(backend)?;
    let meta = read_meta(&tx).map_err(backend)?;
    let at = match req.revision {
        None => None,
        Some(r) if r > meta.current => {
            return Err(Error::FutureRevision {
                requested: r,
                current: meta.current,
            });
        }
        Some(r) if r < meta.compacted => {
            return Err(Error::Compacted {
                requested: r,
                compacted: meta.compacted,
            });
        }
        Some(r) if r == meta.current => None,
        Some(r) => Some(r),
    };
    let served_at = req.revision.unwrap_or(meta.current);
    let keys = KeyRange::new(&req.prefix, req.after_key.as_deref());
    let source = match at {
        None => format!(
            "SELECT key, create_rev, mod_rev, value FROM current WHERE {}",
            keys.cond("key")
        ),
        Some(_) => at_revision_sql(&keys),
    };
    let limit = req.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    let mut sql = format!("SELECT key, create_rev, mod_rev, value FROM ({source}) ORDER BY key");
    if limit.is_some() {
        sql.push_str(" LIMIT :limit");
    }
    let rev_param = at.unwrap_or(0);
    let mut kvs = Vec::new();
    {
        let mut p: Vec<(&str, &dyn ToSql)> = Vec::new();
        keys.bind(&mut p);
        if at.is_some() {
            p.push((":rev", &rev_param));
        }
        if let Some(l) = &limit {
            p.push((":limit", l));
        }
        let mut stmt = tx.prepare_cached(&sql).map_err(backend)?;
        let mut rows = stmt.query(&p[..]).map_err(backend)?;
        while let Some(row) = rows.next().map_err(backend)? {
            kvs.push(kv_from_row(row).map_err(backend)?);
        }
    }
    let mut remaining = 0;
    if req.limit.is_some_and(|l| kvs.len() >= l) {
        // Count what lies beyond the last key returned.
        let after = kvs
            .last()
            .map(|kv| kv.key.as_str())
            .or(req.after_key.as_deref());
        let rest = KeyRange::new(&req.prefix, after);
        let source = match at {
            None => format!("SELECT key FROM current WHERE {}", rest.cond("key")),
            Some(_) => at_revision_sql(&rest),
        };
        let sql = format!("SELECT count(*) FROM ({source})");
        let mut p: Vec<(&str, &dyn ToSql)> = Vec::new();
        rest.bind(&mut p);
        if at.is_some() {
            p.push((":rev", &rev_param));
        }
        let n: i64 = tx
            .prepare_cached(&sql)
            .and_then(|mut s| s.query_row(&p[..], |r| r.get(0)))
            .map_err(backend)?;
        remaining = u64::try_from(n).unwrap_or(0);
    }
    Ok(RangeResponse {
        kvs,
        revision: served_at,
        remaining,
    })
}

/// One chunk of history for a watcher.
pub(crate) struct HistoryChunk {
    /// Events with revision in (from, to], in order; at most the requested number.
    pub events: Vec<Event>,
    /// The highest revision this chunk covers: the last row read, or `to` when the chunk
    /// reached the end.
    pub covered: Revision,
    /// The store's current revision in this snapshot.
    pub current: Revision,
}

/// Reads up to `max` log rows for keys in `keys` with revision in `(from, to]` (`to` None: up
/// to the current revision). Fails with [`Error::Compacted`] if `from` has been compacted.
pub(crate) fn history(
    conn: &mut Connection,
    keys: &KeyRange,
    from: Revision,
    to: Option<Revision>,
    max: usize,
) -> Result<HistoryChunk> {
    let tx = conn.transaction().map_err(backend)?;
    let meta = read_meta(&tx).map_err(backend)?;
    if from < meta.compacted {
        return Err(Error::Compacted {
            requested: from,
            compacted: meta.compacted,
        });
    }
    let to = to.unwrap_or(meta.current).min(meta.current);
    let mut events = Vec::new();
    if from >= to {
        return Ok(HistoryChunk {
            events,
            covered: to,
            current: meta.current,
        });
    }
    let sql = format!(
        "SELECT rev, key, create_rev, prev_rev, value, deleted FROM log
          WHERE rev > :from AND rev <= :to AND {} ORDER BY rev LIMIT :max",
        keys.cond("key")
    );
    let max = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
    let mut p: Vec<(&str, &dyn ToSql)> = vec![(":from", &from), (":to", &to), (":max", &max)];
    keys.bind(&mut p);
    let mut stmt = tx.prepare_cached(&sql).map_err(backend)?;
    let mut prev_stmt = tx
        .prepare_cached("SELECT key, create_rev, rev, value FROM log WHERE rev = ?1")
        .map_err(backend)?;
    let mut rows = stmt.query(&p[..]).map_err(backend)?;
    let mut n: i64 = 0;
    while let Some(row) = rows.next().map_err(backend)? {
        n += 1;
        let rev: Revision = row.get(0).map_err(backend)?;
        let key: String = row.get(1).map_err(backend)?;
        let create_rev: Revision = row.get(2).map_err(backend)?;
        let prev_rev: Revision = row.get(3).map_err(backend)?;
        let deleted: bool = row.get(5).map_err(backend)?;
        let prev = if prev_rev > 0 {
            prev_stmt
                .query_row(params![prev_rev], kv_from_row)
                .optional()
                .map_err(backend)?
        } else {
            None
        };
        let event = if deleted {
            let mut kv = prev.clone().unwrap_or_else(|| KeyValue {
                key: key.clone(),
                value: Bytes::new(),
                create_revision: create_rev,
                mod_revision: rev,
            });
            kv.mod_revision = rev;
            Event {
                kind: EventKind::Delete,
                kv,
                prev,
            }
        } else {
            let value = Bytes::from(row.get::<_, Vec<u8>>(4).map_err(backend)?);
            let kv = KeyValue {
                key,
                value,
                create_revision: create_rev,
                mod_revision: rev,
            };
            Event {
                kind: EventKind::Put,
                kv,
                prev,
            }
        };
        events.push(event);
    }
    let covered = if n < max {
        to
    } else {
        events.last().map_or(to, Event::revision)
    };
    Ok(HistoryChunk {
        events,
        covered,
        current: meta.current,
    })
}
