//! The latest value of every live key, in memory: the `current` table mirrored.
//!
//! Reads of the present (a point read, a range at the latest revision) are answered from
//! here, without a read transaction: on a busy server those were most of SQLite's work
//! outside the writer, because every commit invalidates each read connection's page cache
//! and the next read pulls its pages in again. The writer thread is the only one that changes
//! it: after a batch commits it applies the batch's changes and the new revision under one
//! write lock, before it answers the writers or publishes the events, so a read never sees
//! a revision whose writes it misses, nor a write that is not durable yet. (Upstream's API
//! server keeps every object in memory too, in its watch cache.)
//!
//! Reads of the past (a range at an older revision, watch history) still go to SQLite.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use bytes::Bytes;
use rusqlite::Connection;

use crate::{KeyValue, Revision};

/// The live keys and the revision they are current at.
#[derive(Debug, Default)]
pub(crate) struct Latest {
    kvs: BTreeMap<String, KeyValue>,
    rev: Revision,
}

/// A batch's changes before they are applied: the final state of each key it wrote
/// (`None`: deleted).
pub(crate) type Changes = HashMap<String, Option<KeyValue>>;

impl Latest {
    /// Reads the whole `current` table; `rev` is the store's current revision.
    pub(crate) fn load(conn: &Connection, rev: Revision) -> rusqlite::Result<Latest> {
        let mut stmt = conn.prepare("SELECT key, create_rev, mod_rev, value FROM current")?;
        let rows = stmt.query_map([], |r| {
            Ok(KeyValue {
                key: r.get(0)?,
                create_revision: r.get(1)?,
                mod_revision: r.get(2)?,
                value: Bytes::from(r.get::<_, Vec<u8>>(3)?),
            })
        })?;
        let mut kvs = BTreeMap::new();
        for kv in rows {
            let kv = kv?;
            kvs.insert(kv.key.clone(), kv);
        }
        Ok(Latest { kvs, rev })
    }

    /// The revision the contents are current at.
    pub(crate) fn revision(&self) -> Revision {
        self.rev
    }

    /// The live value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&KeyValue> {
        self.kvs.get(key)
    }

    /// The live keys starting with `prefix` and (when given) after `after`, in key order, at
    /// most `limit` of them; with how many more match.
    pub(crate) fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> (Vec<KeyValue>, u64) {
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut keys = self
            .kvs
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        let limit = limit.unwrap_or(usize::MAX);
        let kvs: Vec<KeyValue> = keys
            .by_ref()
            .take(limit)
            .map(|(_, kv)| kv.clone())
            .collect();
        let remaining = keys.count() as u64;
        (kvs, remaining)
    }

    /// Applies a committed batch's changes, now current at `rev`.
    pub(crate) fn apply(&mut self, changes: Changes, rev: Revision) {
        for (key, kv) in changes {
            match kv {
                Some(kv) => {
                    self.kvs.insert(key, kv);
                }
                None => {
                    self.kvs.remove(&key);
                }
            }
        }
        self.rev = rev;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from(format!("v{rev}")),
            create_revision: rev,
            mod_revision: rev,
        }
    }

    fn latest(keys: &[&str]) -> Latest {
        let mut l = Latest::default();
        let changes = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_string(), Some(kv(k, i as Revision + 1))))
            .collect();
        l.apply(changes, keys.len() as Revision);
        l
    }

    fn names(kvs: &[KeyValue]) -> Vec<&str> {
        kvs.iter().map(|kv| kv.key.as_str()).collect()
    }

    #[test]
    fn ranges_stop_at_the_prefix_and_count_what_is_left() {
        let l = latest(&["/a/1", "/a/2", "/a/3", "/a0", "/b/1"]);
        let (kvs, left) = l.range("/a/", None, None);
        assert_eq!(names(&kvs), ["/a/1", "/a/2", "/a/3"]);
        assert_eq!(left, 0);
        let (kvs, left) = l.range("/a/", None, Some(2));
        assert_eq!(names(&kvs), ["/a/1", "/a/2"]);
        assert_eq!(left, 1);
        let (kvs, left) = l.range("/a/", Some("/a/2"), Some(2));
        assert_eq!(names(&kvs), ["/a/3"]);
        assert_eq!(left, 0);
        // A continue key before the prefix starts at the prefix.
        let (kvs, _) = l.range("/b/", Some("/a/9"), None);
        assert_eq!(names(&kvs), ["/b/1"]);
        let (kvs, left) = l.range("/c/", None, Some(1));
        assert!(kvs.is_empty());
        assert_eq!(left, 0);
    }

    #[test]
    fn applied_deletes_remove_keys_and_the_revision_moves() {
        let mut l = latest(&["/a/1", "/a/2"]);
        l.apply(
            Changes::from([
                ("/a/1".to_string(), None),
                ("/a/3".into(), Some(kv("/a/3", 3))),
            ]),
            3,
        );
        assert_eq!(l.revision(), 3);
        assert!(l.get("/a/1").is_none());
        let (kvs, _) = l.range("/a/", None, None);
        assert_eq!(names(&kvs), ["/a/2", "/a/3"]);
    }
}
