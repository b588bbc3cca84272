//! `corten datastore`: moving a cluster's objects between the embedded store and etcd
//! (`export` / `import`, JSON lines: see `apiserver::datastore`) and snapshots of the embedded
//! store (`snapshot save` / `snapshot restore`). Also the `--datastore-*` flags that
//! `corten server` shares with these commands.

use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use apiserver::datastore::{self, EtcdConfig};
use clap::Subcommand;

/// Which datastore to use: etcd when `--datastore-endpoint` is given, else the embedded store.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated: `https://HOST:2379[,...]` or `http://...`. Without it
    /// the embedded store (DATA_DIR/state.db) is used.
    #[arg(long, value_name = "URLS")]
    pub datastore_endpoint: Option<String>,
    /// The CA certificate (PEM) that signed etcd's serving certificates.
    #[arg(long, value_name = "FILE")]
    pub datastore_cafile: Option<PathBuf>,
    /// The client certificate (PEM) to present to etcd.
    #[arg(long, value_name = "FILE")]
    pub datastore_certfile: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub datastore_keyfile: Option<PathBuf>,
}

impl EtcdArgs {
    /// The etcd settings, or None for the embedded store.
    pub fn config(&self) -> anyhow::Result<Option<EtcdConfig>> {
        let Some(endpoints) = &self.datastore_endpoint else {
            if self.datastore_cafile.is_some()
                || self.datastore_certfile.is_some()
                || self.datastore_keyfile.is_some()
            {
                bail!(
                    "--datastore-cafile/--datastore-certfile/--datastore-keyfile need --datastore-endpoint"
                );
            }
            return Ok(None);
        };
        let mut config = EtcdConfig::from_endpoints(endpoints);
        config.ca_file = self.datastore_cafile.clone();
        config.cert_file = self.datastore_certfile.clone();
        config.key_file = self.datastore_keyfile.clone();
        Ok(Some(config))
    }
}

/// `corten datastore ...`
#[derive(Subcommand)]
pub enum DatastoreCommand {
    /// Writes every object of the cluster to stdout (or --output) as JSON lines. The embedded
    /// store must not be in use (stop the server first).
    Export(ExportArgs),
    /// Writes the objects of an export into an empty datastore (the embedded store of
    /// --data-dir, or etcd); the server must be stopped. Objects get new resourceVersions.
    Import(ImportArgs),
    /// Snapshots of the embedded store.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// Arguments of `corten datastore export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// The server's data directory (its embedded store, when no etcd is given).
    #[arg(long, default_value = "/var/lib/corten")]
    data_dir: PathBuf,
    #[command(flatten)]
    etcd: EtcdArgs,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// Arguments of `corten datastore import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// The export to read (`-` or absent: stdin).
    file: Option<PathBuf>,
    /// The server's data directory (its embedded store, when no etcd is given).
    #[arg(long, default_value = "/var/lib/corten")]
    data_dir: PathBuf,
    #[command(flatten)]
    etcd: EtcdArgs,
}

/// `corten datastore snapshot ...`
#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Writes a consistent copy of the embedded store to FILE (the server may be running).
    Save(SnapshotArgs),
    /// Replaces the embedded store with the snapshot FILE (the server must be stopped).
    Restore(SnapshotArgs),
}

/// Arguments of `corten datastore snapshot save|restore`.
#[derive(clap::Args)]
pub struct SnapshotArgs {
    /// The snapshot file.
    file: PathBuf,
    /// The server's data directory.
    #[arg(long, default_value = "/var/lib/corten")]
    data_dir: PathBuf,
}

/// Runs a `corten datastore` command.
pub async fn run(cmd: DatastoreCommand) -> anyhow::Result<()> {
    match cmd {
        DatastoreCommand::Export(args) => {
            let store = datastore::open(&args.data_dir, args.etcd.config()?.as_ref()).await?;
            let mut out: Box<dyn Write> = match &args.output {
                Some(path) => Box::new(BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(BufWriter::new(std::io::stdout().lock())),
            };
            let n = datastore::export(store.as_ref(), &mut out).await?;
            eprintln!("exported {n} keys");
        }
        DatastoreCommand::Import(args) => {
            let store = datastore::open(&args.data_dir, args.etcd.config()?.as_ref()).await?;
            let mut input: Box<dyn std::io::BufRead> = match &args.file {
                Some(path) if path.as_os_str() != "-" => Box::new(BufReader::new(
                    std::fs::File::open(path)
                        .with_context(|| format!("cannot open {}", path.display()))?,
                )),
                _ => Box::new(BufReader::new(std::io::stdin().lock())),
            };
            let n = datastore::import(store.as_ref(), &mut input).await?;
            eprintln!("imported {n} keys");
        }
        DatastoreCommand::Snapshot(SnapshotCommand::Save(args)) => {
            let rev = datastore::snapshot_save(&args.data_dir, &args.file)?;
            eprintln!("saved {} at revision {rev}", args.file.display());
        }
        DatastoreCommand::Snapshot(SnapshotCommand::Restore(args)) => {
            let rev = datastore::snapshot_restore(&args.data_dir, &args.file)?;
            eprintln!(
                "restored {} (revision {rev}) into {}",
                args.file.display(),
                args.data_dir.display()
            );
        }
    }
    Ok(())
}
