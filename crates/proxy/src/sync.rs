//! Applying rendered rulesets: the first sync (and any sync after a failure) replaces the
//! whole table in one transaction; later ones send only the difference from what was last
//! applied, also in one transaction. Each transaction is one `nft -j -f -` run through the
//! `nftables` crate.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::batch::{self, Batch};
use crate::model::Model;
use crate::render::{RenderConfig, Ruleset, render};

/// What one sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncStats {
    /// Whether the whole table was replaced.
    pub full: bool,
    /// nft commands in the transaction (0: nothing changed, nft not run).
    pub commands: usize,
    /// Time to render and diff.
    pub render: Duration,
    /// Time `nft` took to apply the transaction.
    pub apply: Duration,
}

/// Keeps what was last applied, to send only differences.
pub struct Syncer {
    cfg: RenderConfig,
    applied: Option<Ruleset>,
}

impl Syncer {
    /// A syncer for the table of `cfg`; its first sync replaces the table.
    pub fn new(cfg: RenderConfig) -> Self {
        Syncer { cfg, applied: None }
    }

    /// The render configuration.
    pub fn config(&self) -> &RenderConfig {
        &self.cfg
    }

    /// Makes the next sync replace the whole table.
    pub fn force_full(&mut self) {
        self.applied = None;
    }

    /// Brings the table to `model`. On failure the next sync is a full one.
    pub async fn sync(&mut self, model: &Model) -> Result<SyncStats> {
        let t = Instant::now();
        let new = render(model, &self.cfg);
        let (full, batch) = match &self.applied {
            Some(old) => (false, batch::diff(&self.cfg, old, &new)),
            None => (true, batch::full(&self.cfg, &new)),
        };
        let render_time = t.elapsed();
        let mut stats = SyncStats {
            full,
            commands: batch.len(),
            render: render_time,
            apply: Duration::ZERO,
        };
        if batch.is_empty() {
            return Ok(stats);
        }
        let t = Instant::now();
        let result = apply(&batch).await;
        stats.apply = t.elapsed();
        match result {
            Ok(()) => {
                self.applied = Some(new);
                Ok(stats)
            }
            Err(e) => {
                self.applied = None;
                Err(e)
            }
        }
    }

    /// Removes the table.
    pub async fn remove(&mut self) -> Result<()> {
        self.applied = None;
        apply(&batch::remove(&self.cfg)).await
    }
}

/// Runs one transaction through `nft -j -f -`.
pub async fn apply(batch: &Batch) -> Result<()> {
    nftables::helper::apply_ruleset_raw_async(
        &batch.to_json(),
        nftables::helper::DEFAULT_NFT,
        nftables::helper::DEFAULT_ARGS,
    )
    .await
    .map(|_| ())
    .context("nft transaction failed")
}
