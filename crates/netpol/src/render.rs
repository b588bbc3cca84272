//! The [`Model`] → one nft transaction that replaces the table `inet corten-netpol` whole.
//! No I/O.
//!
//! ```text
//! table inet corten-netpol {
//!   map ingress-pods { type ipv4_addr : verdict }   # isolated pod → jump its ingress chain
//!   map egress-pods  { type ipv4_addr : verdict }   # isolated pod → jump its egress chain
//!   chain forward { type filter hook forward priority 0; policy accept;
//!     ct state established,related accept
//!     ip saddr vmap @egress-pods
//!     ip daddr vmap @ingress-pods }
//!   chain ingress-10.42.0.5 {
//!     ip saddr { 10.42.0.7, 10.42.1.3 } meta l4proto tcp th dport { 80, 8000-8080 } return
//!     ip saddr 192.168.0.0/16 ip saddr != { 192.168.1.0/24 } return
//!     meta l4proto tcp reject with tcp reset
//!     reject }
//!   chain egress-10.42.0.5 { ... }
//! }
//! ```
//!
//! The filter chains run after the service proxy's DNAT (prerouting, priority -100), so they
//! see the pod a service address was translated to. Traffic between a pod and its own node is
//! always allowed, as upstream specifies: what the node sends to its pods (probes) takes the
//! output hook, and what pods send to it (the node-local cluster DNS included) the input hook,
//! neither of which is hooked here. Replies to allowed connections pass through
//! `ct state established,related`. Pod-to-pod traffic on one node crosses the
//! corten0 bridge and reaches these chains through br_netfilter (`bridge-nf-call-iptables`).

use nftables::schema::{Chain, NfCmd, NfListObject, Rule};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use proxy::batch::{Batch, replace_table};
use proxy::nft::{
    Expr, Stmt, cmp, eq, field, l4proto, n, prefix, reject, reject_tcp_reset, ret, s,
};
use proxy::nftables;
use proxy::nftables::expr::{Expression, NamedExpression, Range, SetItem};
use proxy::nftables::stmt::Operator;
use serde_json::json;

use crate::policy::{Direction, Match, Model, Peer};

/// Map of ingress-isolated pods.
pub const INGRESS_PODS: &str = "ingress-pods";
/// Map of egress-isolated pods.
pub const EGRESS_PODS: &str = "egress-pods";

/// The chain holding what a pod may receive (`ingress-IP`) or send (`egress-IP`).
pub fn pod_chain(dir: Direction, ip: std::net::Ipv4Addr) -> String {
    match dir {
        Direction::Ingress => format!("ingress-{ip}"),
        Direction::Egress => format!("egress-{ip}"),
    }
}

/// An anonymous set `{ a, b, ... }`, or the one element itself.
fn set_of(mut items: Vec<Expr>) -> Expr {
    if items.len() == 1 {
        return items.remove(0);
    }
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}

fn net((addr, len): (std::net::Ipv4Addr, u32)) -> Expr {
    if len == 32 {
        s(addr.to_string())
    } else {
        prefix(addr.to_string(), len)
    }
}

/// One allowed match as the statements of a rule (ending in `return`: allowed here, on to
/// the next check).
pub fn match_rule(dir: Direction, m: &Match) -> Vec<Stmt> {
    let addr = || match dir {
        Direction::Ingress => field("ip", "saddr"),
        Direction::Egress => field("ip", "daddr"),
    };
    let mut rule = vec![];
    match &m.peer {
        Peer::Any => {}
        Peer::Ips(ips) => rule.push(eq(
            addr(),
            set_of(ips.iter().map(|i| s(i.to_string())).collect()),
        )),
        Peer::Block { cidr, except } => {
            if cidr.1 > 0 {
                rule.push(eq(addr(), net(*cidr)));
            }
            if !except.is_empty() {
                rule.push(cmp(
                    addr(),
                    Operator::NEQ,
                    set_of(except.iter().map(|e| net(*e)).collect()),
                ));
            }
        }
    }
    if let Some(proto) = m.proto {
        rule.push(l4proto(proto.nft()));
        if !m.ports.is_empty() {
            let ports = m
                .ports
                .iter()
                .map(|&(lo, hi)| {
                    if lo == hi {
                        n(lo.into())
                    } else {
                        Expression::Range(Box::new(Range {
                            range: [n(lo.into()), n(hi.into())],
                        }))
                    }
                })
                .collect();
            rule.push(eq(field("th", "dport"), set_of(ports)));
        }
    }
    rule.push(ret());
    rule
}

/// The rules of a pod's chain: its allowed matches, then reject.
pub fn pod_rules(dir: Direction, allowed: &[Match]) -> Vec<Vec<Stmt>> {
    let mut rules: Vec<Vec<Stmt>> = allowed.iter().map(|m| match_rule(dir, m)).collect();
    rules.push(vec![l4proto("tcp"), reject_tcp_reset()]);
    rules.push(vec![reject()]);
    rules
}

/// The whole table for `model`, replacing whatever table named `table` exists.
pub fn full(table: &str, model: &Model) -> Batch {
    let mut b = Batch::default();
    replace_table(&mut b, NfFamily::INet, table);
    for map in [INGRESS_PODS, EGRESS_PODS] {
        b.raw(json!({"add": {"map": {
            "family": "inet", "table": table, "name": map, "type": "ipv4_addr", "map": "verdict",
        }}}));
    }
    let chain = |name: &str| Chain {
        family: NfFamily::INet,
        table: table.to_string().into(),
        name: name.to_string().into(),
        ..Default::default()
    };
    let add_rule = |b: &mut Batch, chain: &str, stmts: Vec<Stmt>| {
        b.cmd(NfCmd::Add(NfListObject::Rule(Rule {
            family: NfFamily::INet,
            table: table.to_string().into(),
            chain: chain.to_string().into(),
            expr: stmts.into(),
            ..Default::default()
        })));
    };
    // Pod chains and the map elements pointing at them, before the hooks exist.
    for (dir, pods, map) in [
        (Direction::Ingress, &model.ingress, INGRESS_PODS),
        (Direction::Egress, &model.egress, EGRESS_PODS),
    ] {
        let mut elems = vec![];
        for (ip, allowed) in pods {
            let name = pod_chain(dir, *ip);
            b.cmd(NfCmd::Add(NfListObject::Chain(chain(&name))));
            for r in pod_rules(dir, allowed) {
                add_rule(&mut b, &name, r);
            }
            elems.push(json!([ip.to_string(), {"jump": {"target": name}}]));
        }
        if !elems.is_empty() {
            b.raw(json!({"add": {"element": {
                "family": "inet", "table": table, "name": map, "elem": elems,
            }}}));
        }
    }
    let established = || {
        vec![
            cmp(
                proxy::nft::ct("state"),
                Operator::IN,
                s_set(&["established", "related"]),
            ),
            Stmt::Accept(None),
        ]
    };
    let vmap = |key: Expr, map: &str| vec![proxy::nft::vmap_named(key, map)];
    for (name, hook, rules) in [(
        "forward",
        NfHook::Forward,
        vec![
            established(),
            vmap(field("ip", "saddr"), EGRESS_PODS),
            vmap(field("ip", "daddr"), INGRESS_PODS),
        ],
    )] {
        let mut c = chain(name);
        c._type = Some(NfChainType::Filter);
        c.hook = Some(hook);
        c.prio = Some(0);
        c.policy = Some(NfChainPolicy::Accept);
        b.cmd(NfCmd::Add(NfListObject::Chain(c)));
        for r in rules {
            add_rule(&mut b, name, r);
        }
    }
    b
}

/// A list of flag names as nft's JSON writes them (`["established", "related"]`).
fn s_set(flags: &[&str]) -> Expr {
    Expression::List(flags.iter().map(|f| s(*f)).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;

    use super::*;
    use crate::policy::Peer;
    use proxy::model::Proto;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn json_of(stmts: &[Stmt]) -> String {
        serde_json::to_string(stmts).unwrap()
    }

    #[test]
    fn pods_and_ports_become_sets_and_ranges() {
        let m = Match {
            peer: Peer::Ips(BTreeSet::from([ip("10.42.0.7"), ip("10.42.1.3")])),
            proto: Some(Proto::Tcp),
            ports: BTreeSet::from([(80, 80), (8000, 8080)]),
        };
        let j = json_of(&match_rule(Direction::Ingress, &m));
        assert!(j.contains(r#""left":{"payload":{"protocol":"ip","field":"saddr"}},"right":{"set":["10.42.0.7","10.42.1.3"]}"#), "{j}");
        assert!(j.contains(r#"{"set":[80,{"range":[8000,8080]}]}"#), "{j}");
        assert!(j.ends_with(r#"{"return":null}]"#), "{j}");
    }

    #[test]
    fn ip_block_with_except_on_destination() {
        let m = Match {
            peer: Peer::Block {
                cidr: (ip("10.250.0.0"), 16),
                except: vec![(ip("10.250.3.0"), 24)],
            },
            proto: None,
            ports: BTreeSet::new(),
        };
        let j = json_of(&match_rule(Direction::Egress, &m));
        assert!(
            j.contains(r#""field":"daddr"}},"right":{"prefix":{"addr":"10.250.0.0","len":16}}"#),
            "{j}"
        );
        assert!(
            j.contains(r#""right":{"prefix":{"addr":"10.250.3.0","len":24}},"op":"!=""#),
            "{j}"
        );
        assert!(!j.contains("l4proto"), "{j}");
        // 0.0.0.0/0 needs no address match at all.
        let any = Match {
            peer: Peer::Block {
                cidr: (ip("0.0.0.0"), 0),
                except: vec![],
            },
            proto: Some(Proto::Udp),
            ports: BTreeSet::new(),
        };
        let j = json_of(&match_rule(Direction::Egress, &any));
        assert!(!j.contains("daddr"), "{j}");
        assert!(j.contains(r#""right":"udp""#), "{j}");
    }

    #[test]
    fn chains_end_in_reject_and_maps_jump_to_them() {
        let mut model = Model::default();
        model.ingress.insert(ip("10.42.0.5"), vec![]);
        let rules = pod_rules(Direction::Ingress, &[]);
        assert_eq!(rules.len(), 2, "deny all: only the rejects");
        let b = full("t", &model);
        let j = b.to_json();
        assert!(
            j.contains(
                r#"{"add":{"chain":{"family":"inet","name":"ingress-10.42.0.5","table":"t"}}}"#
            ),
            "{j}"
        );
        assert!(
            j.contains(r#"["10.42.0.5",{"jump":{"target":"ingress-10.42.0.5"}}]"#),
            "{j}"
        );
        assert!(j.contains(r#""hook":"forward""#), "{j}");
        // The hooked chains come last: nothing is filtered before the pod chains exist.
        assert!(j.rfind("ingress-10.42.0.5").unwrap() < j.find(r#""hook":"forward""#).unwrap());
        // No isolated pods: still the table, maps and hooks (which then pass everything).
        let empty = full("t", &Model::default()).to_json();
        assert!(!empty.contains("element"), "{empty}");
    }
}
