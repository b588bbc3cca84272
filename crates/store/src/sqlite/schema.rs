//! Opening connections, pragmas, the schema, and error mapping.

use std::path::Path;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use crate::{Error, Result, Revision};

/// The schema version this code writes and understands.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Page cache of the write connection, in KiB (negative `cache_size` means KiB).
const WRITER_CACHE_KIB: i64 = 8 * 1024;
/// Page cache of each read connection, in KiB.
const READER_CACHE_KIB: i64 = 2 * 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
-- One row per revision. Deletes store an empty value (the last value is the row at prev_rev).
CREATE TABLE IF NOT EXISTS log (
    rev        INTEGER PRIMARY KEY,
    key        TEXT NOT NULL,
    create_rev INTEGER NOT NULL,
    prev_rev   INTEGER NOT NULL,
    value      BLOB NOT NULL,
    deleted    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log (key, rev);
-- The latest value of every live key.
CREATE TABLE IF NOT EXISTS current (
    key        TEXT PRIMARY KEY,
    create_rev INTEGER NOT NULL,
    mod_rev    INTEGER NOT NULL,
    value      BLOB NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('current_rev', 0);
INSERT OR IGNORE INTO meta (name, value) VALUES ('compacted_rev', 0);
";

/// Maps a SQLite error to a store error.
pub(crate) fn backend(e: rusqlite::Error) -> Error {
    Error::Backend(format!("sqlite: {e}"))
}

/// Maps an error met while opening `path` to a clear store error.
fn open_error(path: &Path, e: rusqlite::Error) -> Error {
    let p = path.display();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => Error::Backend(
            format!("datastore {p} is corrupt or not a SQLite database: {e}"),
        ),
        Some(ErrorCode::CannotOpen) => Error::Backend(format!(
            "cannot open datastore {p}: {e} (does the directory exist and is it writable?)"
        )),
        Some(ErrorCode::ReadOnly) | Some(ErrorCode::PermissionDenied) => Error::Backend(format!(
            "datastore {p} is not writable: {e} (check the permissions of the file and its directory)"
        )),
        _ => Error::Backend(format!("cannot open datastore {p}: {e}")),
    }
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// What the database says at open time.
pub(crate) struct Meta {
    pub current: Revision,
    pub compacted: Revision,
}

/// Opens the write connection: sets the pragmas, creates or checks the schema, and reads the
/// revisions.
pub(crate) fn open_writer(path: &Path) -> Result<(Connection, Meta)> {
    let conn = open_conn(path).map_err(|e| open_error(path, e))?;
    init_writer(&conn).map_err(|e| open_error(path, e))?;
    let version: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| open_error(path, e))?;
    match version {
        Some(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(Error::Backend(format!(
                "datastore {} has schema version {v}, this build understands {SCHEMA_VERSION}",
                path.display()
            )));
        }
        None => {
            conn.execute(
                "INSERT INTO meta (name, value) VALUES ('schema_version', ?1)",
                params![SCHEMA_VERSION],
            )
            .map_err(|e| open_error(path, e))?;
        }
    }
    let meta = read_meta(&conn).map_err(|e| open_error(path, e))?;
    // The log's newest row can never be ahead of the recorded revision (both are written in one
    // transaction), but take the larger one anyway: handing out a revision twice would be worse.
    let max_log: Option<i64> = conn
        .query_row("SELECT max(rev) FROM log", [], |r| r.get(0))
        .map_err(|e| open_error(path, e))?;
    let current = meta.current.max(max_log.unwrap_or(0));
    Ok((
        conn,
        Meta {
            current,
            compacted: meta.compacted,
        },
    ))
}

fn init_writer(conn: &Connection) -> rusqlite::Result<()> {
    // auto_vacuum only takes effect on a new database (before the first table is created); it
    // lets compaction hand freed pages back to the file system with incremental_vacuum.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!(
                "could not switch to WAL mode (journal_mode is {mode})"
            )),
        ));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Keep the WAL file from staying large after a burst of writes.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.set_prepared_statement_cache_capacity(32);
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

/// Opens a read connection.
pub(crate) fn open_reader(path: &Path) -> Result<Connection> {
    let conn = open_conn(path).map_err(|e| open_error(path, e))?;
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)
        .and_then(|_| conn.pragma_update(None, "query_only", true))
        .and_then(|_| conn.pragma_update(None, "temp_store", "MEMORY"))
        .map_err(|e| open_error(path, e))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Reads the current and compacted revisions.
pub(crate) fn read_meta(conn: &Connection) -> rusqlite::Result<Meta> {
    let mut stmt = conn.prepare_cached(
        "SELECT (SELECT value FROM meta WHERE name = 'current_rev'),
                (SELECT value FROM meta WHERE name = 'compacted_rev')",
    )?;
    stmt.query_row([], |r| {
        Ok(Meta {
            current: r.get::<_, Option<i64>>(0)?.unwrap_or(0),
            compacted: r.get::<_, Option<i64>>(1)?.unwrap_or(0),
        })
    })
}
