//! Snapshots of the embedded store: a consistent online copy (`VACUUM INTO`, one read
//! transaction, so a running server keeps writing meanwhile) and restoring one over a store
//! that no process has open.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::schema;
use crate::{Error, Result, Revision};

fn open_existing(path: &Path, flags: OpenFlags) -> Result<Connection> {
    if !path.is_file() {
        return Err(Error::Backend(format!("{} does not exist", path.display())));
    }
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| Error::Backend(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(schema::backend)?;
    Ok(conn)
}

/// The revision a corten store file is at; fails if it is not one or is damaged.
fn check(conn: &Connection, path: &Path) -> Result<Revision> {
    let bad = |e: rusqlite::Error| {
        Error::Backend(format!(
            "{} is not a usable corten datastore: {e}",
            path.display()
        ))
    };
    let ok: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(bad)?;
    if ok != "ok" {
        return Err(Error::Backend(format!(
            "{} is damaged: {ok}",
            path.display()
        )));
    }
    let meta = schema::read_meta(conn).map_err(bad)?;
    let max_log: Option<i64> = conn
        .query_row("SELECT max(rev) FROM log", [], |r| r.get(0))
        .map_err(bad)?;
    Ok(meta.current.max(max_log.unwrap_or(0)))
}

/// Writes a consistent copy of the store at `db` to `dest` (which must not exist). Safe while
/// a server uses the store. Returns the copy's revision.
pub fn snapshot(db: &Path, dest: &Path) -> Result<Revision> {
    if dest.exists() {
        return Err(Error::Backend(format!(
            "{} exists; choose a new file for the snapshot",
            dest.display()
        )));
    }
    let conn = open_existing(db, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let dest_str = dest
        .to_str()
        .ok_or_else(|| Error::Backend(format!("{} is not a UTF-8 path", dest.display())))?;
    conn.execute("VACUUM INTO ?1", [dest_str]).map_err(|e| {
        Error::Backend(format!("cannot write the snapshot {}: {e}", dest.display()))
    })?;
    let copy = open_existing(dest, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    check(&copy, dest)
}

/// Fails with a clear error if another connection (a running server) has the store at `db`
/// open: SQLite lets a connection leave WAL mode only when it is the file's only user. A
/// missing file is not in use.
pub fn ensure_unused(db: &Path) -> Result<()> {
    if !db.exists() {
        return Ok(());
    }
    let conn = open_existing(db, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.busy_timeout(std::time::Duration::ZERO)
        .map_err(schema::backend)?;
    let mode: std::result::Result<String, _> =
        conn.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0));
    match mode {
        Ok(mode) if mode.eq_ignore_ascii_case("delete") => Ok(()),
        _ => Err(Error::Backend(format!(
            "datastore {} is in use (is the server running? stop it first)",
            db.display()
        ))),
    }
}

/// Replaces the store at `db` with the snapshot `src` (checked first). No process may have the
/// store open. Returns the snapshot's revision.
pub fn restore(src: &Path, db: &Path) -> Result<Revision> {
    let revision = {
        let conn = open_existing(src, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        check(&conn, src)?
    };
    ensure_unused(db)?;
    let io = |what: &str, e: std::io::Error| Error::Backend(format!("{what}: {e}"));
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| io(&format!("cannot create {}", dir.display()), e))?;
    }
    let tmp = db.with_extension("db.restoring");
    std::fs::copy(src, &tmp).map_err(|e| io(&format!("cannot copy {}", src.display()), e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(&format!("cannot sync {}", tmp.display()), e))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = db.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::remove_file(&side) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&format!("cannot remove {side:?}"), e)),
        }
    }
    std::fs::rename(&tmp, db).map_err(|e| io(&format!("cannot replace {}", db.display()), e))?;
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(revision)
}
