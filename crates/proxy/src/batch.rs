//! Rendered rulesets → one nft JSON transaction (`nft -j -f -` applies it atomically).
//!
//! - [`full`]: `add table; delete table; add table; ...everything` — replaces whatever is
//!   there (stale rules from a crash included) in one transaction.
//! - [`diff`]: only what changed between two rendered rulesets: new sets and chains are
//!   added, changed chains flushed and refilled, elements deleted and added, then chains and
//!   sets that are gone deleted (after everything that referred to them). Unchanged affinity
//!   sets keep their entries.
//!
//! The `nftables` crate's schema has no `verdict` map type, so the four verdict maps are
//! written as raw JSON objects of the same schema; everything else is the crate's types.

use std::collections::{BTreeMap, BTreeSet};

use nftables::schema::{
    Chain, FlushObject, NfCmd, NfListObject, Rule, Set, SetFlag, SetType, SetTypeValue, Table,
};
use nftables::types::NfFamily;
use serde_json::{Value as Json, json};

use crate::nft::Stmt;
use crate::render::{
    CLUSTER_IPS, Element, FixedChain, HAIRPIN, NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES,
    NODE_LOCAL_IPS, NODEPORT_IPS, RenderConfig, Ruleset, SERVICE_IPS, SERVICE_NODEPORTS,
    fixed_chains,
};

/// One nft transaction, in order.
#[derive(Debug, Default)]
pub struct Batch {
    cmds: Vec<Json>,
}

impl Batch {
    /// Number of commands.
    pub fn len(&self) -> usize {
        self.cmds.len()
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// The JSON document for `nft -j -f -`.
    pub fn to_json(&self) -> String {
        json!({"nftables": self.cmds}).to_string()
    }

    /// Appends a command of the `nftables` crate's schema.
    pub fn cmd(&mut self, cmd: NfCmd<'_>) {
        // Serializing the crate's schema types cannot fail (no maps with non-string keys).
        if let Ok(v) = serde_json::to_value(cmd) {
            self.cmds.push(v);
        }
    }

    /// Appends a command written as raw JSON of the same schema (for objects the crate's
    /// types lack, e.g. verdict maps).
    pub fn raw(&mut self, cmd: Json) {
        self.cmds.push(cmd);
    }

    /// The commands so far (for tests and logs).
    pub fn commands(&self) -> &[Json] {
        &self.cmds
    }
}

fn chain(cfg: &RenderConfig, name: &str) -> Chain<'static> {
    Chain {
        family: NfFamily::IP,
        table: cfg.table.clone().into(),
        name: name.to_string().into(),
        ..Default::default()
    }
}

fn rule(cfg: &RenderConfig, chain: &str, stmts: &[Stmt]) -> NfCmd<'static> {
    NfCmd::Add(NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: cfg.table.clone().into(),
        chain: chain.to_string().into(),
        expr: stmts.to_vec().into(),
        ..Default::default()
    }))
}

fn affinity_set(cfg: &RenderConfig, name: &str, timeout: u32) -> Set<'static> {
    Set {
        family: NfFamily::IP,
        table: cfg.table.clone().into(),
        name: name.to_string().into(),
        set_type: SetTypeValue::Single(SetType::Ipv4Addr),
        // nft 1.0.6 knows no "dynamic" flag in JSON; a timeout set is a hash set, which
        // the packet path can update.
        flags: Some([SetFlag::Timeout].into()),
        timeout: Some(timeout),
        ..Default::default()
    }
}

fn plain_set(cfg: &RenderConfig, name: &str) -> Set<'static> {
    Set {
        family: NfFamily::IP,
        table: cfg.table.clone().into(),
        name: name.to_string().into(),
        set_type: SetTypeValue::Single(SetType::Ipv4Addr),
        ..Default::default()
    }
}

fn verdict_map(cfg: &RenderConfig, name: &str, key: &[&str]) -> Json {
    json!({"add": {"map": {
        "family": "ip", "table": cfg.table, "name": name, "type": key, "map": "verdict",
    }}})
}

/// Element commands (`add element` / `delete element`), one per map or set.
fn elements<'a>(
    batch: &mut Batch,
    cfg: &RenderConfig,
    delete: bool,
    elems: impl Iterator<Item = &'a Element>,
) {
    let mut by_map: BTreeMap<&str, Vec<Json>> = BTreeMap::new();
    for e in elems {
        let key = serde_json::to_value(e.key.expr()).unwrap_or(Json::Null);
        let item = match (&e.value, delete) {
            (Some(v), false) => json!([key, serde_json::to_value(v.expr()).unwrap_or(Json::Null)]),
            _ => key,
        };
        by_map.entry(e.map).or_default().push(item);
    }
    for (map, items) in by_map {
        let verb = if delete { "delete" } else { "add" };
        batch.cmds.push(json!({verb: {"element": {
            "family": "ip", "table": cfg.table, "name": map, "elem": items,
        }}}));
    }
}

/// The whole table for `rs`, replacing whatever table of that name exists.
pub fn full(cfg: &RenderConfig, rs: &Ruleset) -> Batch {
    let mut b = Batch::default();
    replace_table(&mut b, NfFamily::IP, &cfg.table);
    let ip_proto_port = ["ipv4_addr", "inet_proto", "inet_service"];
    let proto_port = ["inet_proto", "inet_service"];
    b.cmds.push(verdict_map(cfg, SERVICE_IPS, &ip_proto_port));
    b.cmds
        .push(verdict_map(cfg, NO_ENDPOINT_SERVICES, &ip_proto_port));
    b.cmds
        .push(verdict_map(cfg, SERVICE_NODEPORTS, &proto_port));
    b.cmds
        .push(verdict_map(cfg, NO_ENDPOINT_NODEPORTS, &proto_port));
    for set in [CLUSTER_IPS, NODE_LOCAL_IPS, NODEPORT_IPS] {
        b.cmd(NfCmd::Add(NfListObject::Set(Box::new(plain_set(cfg, set)))));
    }
    let mut hairpin = plain_set(cfg, HAIRPIN);
    hairpin.set_type =
        SetTypeValue::Concatenated(vec![SetType::Ipv4Addr, SetType::Ipv4Addr].into());
    b.cmd(NfCmd::Add(NfListObject::Set(Box::new(hairpin))));
    for (name, timeout) in &rs.sets {
        b.cmd(NfCmd::Add(NfListObject::Set(Box::new(affinity_set(
            cfg, name, *timeout,
        )))));
    }
    let fixed = fixed_chains(cfg);
    // Regular chains first (so every jump target exists), then base chains last: nothing is
    // hooked until its targets are complete.
    for name in rs.chains.keys() {
        b.cmd(NfCmd::Add(NfListObject::Chain(chain(cfg, name))));
    }
    for FixedChain { name, base, .. } in &fixed {
        let mut c = chain(cfg, name);
        if let Some((kind, hook, prio)) = base {
            c._type = Some(*kind);
            c.hook = Some(*hook);
            c.prio = Some(*prio);
            c.policy = Some(nftables::types::NfChainPolicy::Accept);
        }
        b.cmd(NfCmd::Add(NfListObject::Chain(c)));
    }
    for (name, rules) in &rs.chains {
        for r in rules {
            b.cmd(rule(cfg, name, r));
        }
    }
    if !cfg.nodeport_ips.is_empty() {
        let mut nodeport_ips: Vec<Element> = cfg
            .nodeport_ips
            .iter()
            .map(|ip| Element {
                map: NODEPORT_IPS,
                key: crate::render::Key::Ip(*ip),
                value: None,
            })
            .collect();
        nodeport_ips.push(Element {
            map: NODEPORT_IPS,
            key: crate::render::Key::Ip(std::net::Ipv4Addr::LOCALHOST),
            value: None,
        });
        elements(&mut b, cfg, false, nodeport_ips.iter());
    }
    elements(&mut b, cfg, false, rs.elements.iter());
    for FixedChain { name, rules, .. } in &fixed {
        for r in rules {
            b.cmd(rule(cfg, name, r));
        }
    }
    b
}

/// The changes that turn the applied `old` into `new` (empty when nothing changed).
pub fn diff(cfg: &RenderConfig, old: &Ruleset, new: &Ruleset) -> Batch {
    let mut b = Batch::default();
    for (name, timeout) in &new.sets {
        if !old.sets.contains_key(name) {
            b.cmd(NfCmd::Add(NfListObject::Set(Box::new(affinity_set(
                cfg, name, *timeout,
            )))));
        }
    }
    for name in new.chains.keys() {
        if !old.chains.contains_key(name) {
            b.cmd(NfCmd::Add(NfListObject::Chain(chain(cfg, name))));
        }
    }
    elements(
        &mut b,
        cfg,
        true,
        // A changed value is a delete and an add of the same key.
        old.elements.difference(&new.elements),
    );
    // Chains whose rules changed, and chains that go: flush (drops their references).
    for (name, rules) in &old.chains {
        if new.chains.get(name) != Some(rules) {
            b.cmd(NfCmd::Flush(FlushObject::Chain(chain(cfg, name))));
        }
    }
    for (name, rules) in &new.chains {
        if old.chains.get(name) != Some(rules) {
            for r in rules {
                b.cmd(rule(cfg, name, r));
            }
        }
    }
    elements(&mut b, cfg, false, new.elements.difference(&old.elements));
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            b.cmd(NfCmd::Delete(NfListObject::Chain(chain(cfg, name))));
        }
    }
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            b.cmd(NfCmd::Delete(NfListObject::Set(Box::new(plain_set(
                cfg, name,
            )))));
        }
    }
    b
}

/// Appends the element changes that turn `old` into `new` (for the shared plain sets, whose
/// elements no chain refers to one by one, so their order in the transaction is free).
pub fn diff_elements(
    batch: &mut Batch,
    cfg: &RenderConfig,
    old: &BTreeSet<Element>,
    new: &BTreeSet<Element>,
) {
    elements(batch, cfg, true, old.difference(new));
    elements(batch, cfg, false, new.difference(old));
}

/// `delete table` (for a clean shutdown). `add` first, so it succeeds when there is none.
pub fn remove(cfg: &RenderConfig) -> Batch {
    remove_table(NfFamily::IP, &cfg.table)
}

/// `add table; delete table` for any table: removes it whether or not it exists.
pub fn remove_table(family: NfFamily, name: &str) -> Batch {
    let mut b = Batch::default();
    replace_table(&mut b, family, name);
    b.cmds.pop();
    b
}

/// `add table; delete table; add table`: the start of a transaction that replaces a table
/// whole (whatever was in it, stale rules from a crash included, goes).
pub fn replace_table(b: &mut Batch, family: NfFamily, name: &str) {
    let t = || {
        NfListObject::Table(Table {
            family,
            name: name.to_string().into(),
            handle: None,
        })
    };
    b.cmd(NfCmd::Add(t()));
    b.cmd(NfCmd::Delete(t()));
    b.cmd(NfCmd::Add(t()));
}
