//! Applying rendered rulesets: the first sync (and any sync after a failure) replaces the
//! whole table in one transaction; later ones send only the difference from what was last
//! applied, also in one transaction. Each transaction is one `nft -j -f -` run through the
//! `nftables` crate.
//!
//! Rendering is incremental too: the rules of each service port are kept with the model they
//! were rendered from, and only ports whose model changed are rendered and diffed again.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use std::collections::HashMap;

use crate::batch::{self, Batch};
use crate::model::{Model, ServicePort};
use crate::render::{RenderConfig, Ruleset, render_global, render_port};

/// What is in the table: the shared part, and each port's model and rules.
struct Applied {
    global: Ruleset,
    ports: HashMap<String, (ServicePort, Ruleset)>,
}

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
    applied: Option<Applied>,
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
        let previous = self.applied.take();
        let full = previous.is_none();
        let (old_global, mut old_ports) = previous.map(|a| (a.global, a.ports)).unwrap_or_default();
        let mut ports = HashMap::with_capacity(model.ports.len());
        // Only what changed: the old and new rules of changed, added and removed ports (the
        // shared sets are diffed on their own: they hold an element per endpoint).
        let global = render_global(model);
        let (mut old_changed, mut new_changed) = (Ruleset::default(), Ruleset::default());
        for (id, sp) in &model.ports {
            let rs = match old_ports.remove(id) {
                Some((old_sp, old_rs)) if old_sp == *sp => old_rs,
                other => {
                    if let Some((_, old_rs)) = other {
                        old_changed.merge(old_rs);
                    }
                    let rs = render_port(sp, &self.cfg);
                    if !full {
                        new_changed.merge(rs.clone());
                    }
                    rs
                }
            };
            ports.insert(id.clone(), (sp.clone(), rs));
        }
        for (_, old_rs) in old_ports.into_values() {
            old_changed.merge(old_rs);
        }
        let batch = if full {
            let mut all = global.clone();
            for (_, rs) in ports.values() {
                all.merge(rs.clone());
            }
            batch::full(&self.cfg, &all)
        } else {
            let mut batch = batch::diff(&self.cfg, &old_changed, &new_changed);
            batch::diff_elements(
                &mut batch,
                &self.cfg,
                &old_global.elements,
                &global.elements,
            );
            batch
        };
        let new = Applied { global, ports };
        let render_time = t.elapsed();
        let mut stats = SyncStats {
            full,
            commands: batch.len(),
            render: render_time,
            apply: Duration::ZERO,
        };
        if batch.is_empty() {
            self.applied = Some(new);
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
