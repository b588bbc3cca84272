//! Offline datastore tools behind `corten datastore`: opening the configured store, moving a
//! cluster's objects between datastores (export / import), and snapshots of the embedded
//! store. They live here because this crate is the only one that opens the store.
//!
//! The export format is JSON lines: a header line
//! `{"format":"corten-datastore-export/v1","revision":R,"count":N}` (the revision the export
//! was read at, the number of keys), then one line per key under `/registry/`, in key order:
//! `{"key":"/registry/...","value":"<the stored bytes as text>"}` (the API server stores JSON,
//! so values are text; a value that is not UTF-8 is written as `"value_base64"` instead).
//! Revisions are not carried over: an import writes every key anew, so objects get the target
//! store's revisions as resourceVersions (clients re-list, as after an etcd restore).
//!
//! The embedded store must not be in use by a running server for export, import or restore
//! (checked: SQLite refuses to leave WAL mode while another process has the file open);
//! `snapshot save` is safe while the server runs (a consistent copy through one read
//! transaction).

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
pub use store::etcd::EtcdConfig;
use store::{RangeRequest, SharedStore, Store};

/// The keys an export covers: every object and allocation the API server stores.
pub const PREFIX: &str = "/registry/";
/// The format tag of the header line.
pub const FORMAT: &str = "corten-datastore-export/v1";
/// Keys read per page while exporting.
const PAGE: usize = 500;
/// Lines parsed before they are written while importing.
const IMPORT_BATCH: usize = 1000;
/// Creates in flight while importing (the embedded store commits them in groups).
const IMPORT_CONCURRENCY: usize = 64;

/// The embedded store's file in a data directory.
pub fn sqlite_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("state.db")
}

/// Opens the datastore a server with these settings would use: etcd if `etcd` is given, else
/// the embedded store under `data_dir` (which must exist and not be in use by a server).
pub async fn open(data_dir: &Path, etcd: Option<&EtcdConfig>) -> Result<SharedStore> {
    Ok(match etcd {
        Some(etcd) => Arc::new(
            store::etcd::EtcdStore::connect(etcd)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        None => {
            let db = sqlite_path(data_dir);
            store::sqlite::ensure_unused(&db).map_err(|e| anyhow::anyhow!("{e}"))?;
            Arc::new(store::sqlite::SqliteStore::open(&db).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
    })
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    revision: i64,
    count: u64,
}

#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

/// Writes every key under [`PREFIX`] as one consistent export (all pages are read at the
/// revision of the first). Returns the number of keys written.
pub async fn export(store: &dyn Store, out: &mut dyn Write) -> Result<u64> {
    let first = store
        .range(RangeRequest {
            prefix: PREFIX.into(),
            limit: Some(0),
            ..Default::default()
        })
        .await?;
    let (revision, count) = (first.revision, first.remaining);
    serde_json::to_writer(
        &mut *out,
        &Header {
            format: FORMAT.into(),
            revision,
            count,
        },
    )?;
    out.write_all(b"\n")?;
    let mut after_key = None;
    let mut written = 0;
    loop {
        let page = store
            .range(RangeRequest {
                prefix: PREFIX.into(),
                after_key: after_key.take(),
                limit: Some(PAGE),
                revision: Some(revision),
            })
            .await
            .context("reading the datastore (was it compacted during the export?)")?;
        for kv in &page.kvs {
            let line = match std::str::from_utf8(&kv.value) {
                Ok(text) => Line {
                    key: kv.key.clone(),
                    value: Some(text.to_string()),
                    value_base64: None,
                },
                Err(_) => Line {
                    key: kv.key.clone(),
                    value: None,
                    value_base64: Some(base64::engine::general_purpose::STANDARD.encode(&kv.value)),
                },
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
            written += 1;
        }
        match page.kvs.last() {
            Some(last) if page.remaining > 0 => after_key = Some(last.key.clone()),
            _ => break,
        }
    }
    out.flush()?;
    if written != count {
        bail!("export read {written} keys but the datastore had {count} at revision {revision}");
    }
    Ok(written)
}

/// Creates every key of an export in `store`, which must hold nothing under [`PREFIX`].
/// Returns the number of keys written.
pub async fn import(store: &dyn Store, input: &mut dyn BufRead) -> Result<u64> {
    let existing = store
        .range(RangeRequest {
            prefix: PREFIX.into(),
            limit: Some(0),
            ..Default::default()
        })
        .await?
        .remaining;
    if existing > 0 {
        bail!(
            "the target datastore already holds {existing} keys under {PREFIX}; import needs an empty one"
        );
    }
    let mut lines = input.lines();
    let header = lines.next().context("the export is empty")??;
    let header: Header = serde_json::from_str(&header)
        .ok()
        .filter(|h: &Header| h.format == FORMAT)
        .with_context(|| {
            format!("not a corten datastore export (the first line is not a {FORMAT} header)")
        })?;
    let mut written = 0;
    let mut batch = Vec::with_capacity(IMPORT_BATCH);
    let mut lines = lines.enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let line = line?;
        if !line.trim().is_empty() {
            batch.push(parse_line(&line, n + 2)?);
        }
        if batch.len() == IMPORT_BATCH || (lines.peek().is_none() && !batch.is_empty()) {
            written += write_batch(store, std::mem::take(&mut batch)).await?;
        }
    }
    if written != header.count {
        bail!(
            "the export is incomplete: its header announces {} keys, it holds {written} (all {written} were imported)",
            header.count
        );
    }
    Ok(written)
}

/// One key line of an export (`lineno` for errors).
fn parse_line(line: &str, lineno: usize) -> Result<(String, Bytes)> {
    let line: Line = serde_json::from_str(line)
        .with_context(|| format!("line {lineno} of the export is not a key line"))?;
    let value = match (line.value, line.value_base64) {
        (Some(text), None) => Bytes::from(text),
        (None, Some(b64)) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .with_context(|| format!("line {lineno}: bad value_base64"))?,
        ),
        _ => bail!("line {lineno}: expected one of value and value_base64"),
    };
    if !line.key.starts_with(PREFIX) {
        bail!("line {lineno}: key {:?} is not under {PREFIX}", line.key);
    }
    Ok((line.key, value))
}

/// Creates the keys of `batch`, several at a time.
async fn write_batch(store: &dyn Store, batch: Vec<(String, Bytes)>) -> Result<u64> {
    use futures::StreamExt;
    let mut results = futures::stream::iter(batch)
        .map(|(key, value)| async move {
            store
                .create(&key, value)
                .await
                .with_context(|| format!("writing {key}"))
        })
        .buffer_unordered(IMPORT_CONCURRENCY);
    let mut written = 0;
    while let Some(result) = results.next().await {
        result?;
        written += 1;
    }
    Ok(written)
}

/// Writes a consistent copy of the embedded store of `data_dir` to `file` (which must not
/// exist); safe while the server runs. Returns the copy's revision.
pub fn snapshot_save(data_dir: &Path, file: &Path) -> Result<i64> {
    store::sqlite::snapshot(&sqlite_path(data_dir), file).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Replaces the embedded store of `data_dir` with the snapshot `file` (the server must be
/// stopped). Returns the snapshot's revision.
pub fn snapshot_restore(data_dir: &Path, file: &Path) -> Result<i64> {
    store::sqlite::restore(file, &sqlite_path(data_dir)).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &tempfile::TempDir, name: &str) -> store::sqlite::SqliteStore {
        store::sqlite::SqliteStore::open(&dir.path().join(name)).expect("open")
    }

    #[tokio::test]
    async fn export_import_round_trip_and_bad_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = store(&dir, "a.db");
        for i in 0..1203 {
            a.create(
                &format!("/registry/configmaps/ns/c{i:04}"),
                Bytes::from(format!("{{\"i\":{i}}}")),
            )
            .await
            .expect("create");
        }
        a.create("/registry/raw", Bytes::from_static(&[0xff, 0x00, 0x80]))
            .await
            .expect("create");
        a.create("/other/key", Bytes::from_static(b"not exported"))
            .await
            .expect("create");
        let mut out = Vec::new();
        assert_eq!(export(&a, &mut out).await.expect("export"), 1204);
        let text = String::from_utf8(out.clone()).expect("utf-8");
        assert!(text.lines().next().expect("header").contains(FORMAT));
        assert!(text.contains("value_base64"));

        let b = store(&dir, "b.db");
        assert_eq!(import(&b, &mut out.as_slice()).await.expect("import"), 1204);
        let (kv, _) = b.get("/registry/raw").await.expect("get");
        assert_eq!(
            kv.expect("raw").value,
            Bytes::from_static(&[0xff, 0x00, 0x80])
        );
        let mut again = Vec::new();
        export(&b, &mut again).await.expect("export");
        let body = |s: &[u8]| {
            String::from_utf8_lossy(s)
                .lines()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(body(&again), body(&out));

        // A non-empty target, a foreign file, a truncated export.
        let err = import(&b, &mut out.as_slice())
            .await
            .expect_err("non-empty");
        assert!(err.to_string().contains("needs an empty one"), "{err}");
        let c = store(&dir, "c.db");
        let err = import(&c, &mut &b"{\"hello\":1}\n"[..])
            .await
            .expect_err("foreign");
        assert!(
            err.to_string().contains("not a corten datastore export"),
            "{err}"
        );
        let cut: Vec<u8> = text
            .lines()
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes();
        let err = import(&c, &mut cut.as_slice())
            .await
            .expect_err("truncated");
        assert!(err.to_string().contains("incomplete"), "{err}");
    }
}
