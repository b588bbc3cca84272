//! The model → the nftables objects that carry it out (kube-proxy's nftables layout). No I/O.
//!
//! Fixed part (created by a full sync only, see [`crate::batch`]):
//! - `nat-prerouting` / `nat-output` (nat, priority -100; nft 1.0.6 rejects `dstnat` on
//!   output) jump to `services`: `ip daddr . meta l4proto . th dport vmap @service-ips`, then
//!   the NodePorts on the node's addresses (`fib daddr type local`, or the configured ones):
//!   `meta l4proto . th dport vmap @service-nodeports`;
//! - `nat-postrouting` (priority 100) marks for masquerading a connection DNATed back to its
//!   own source (`ip saddr . ip daddr @hairpin-endpoints`: a pod reaching itself through its
//!   service), then masquerades packets marked with [`MASQ_BIT`];
//! - `filter-input` / `filter-forward` / `filter-output` (filter, priority -110) send new
//!   connections through `endpoints-check`, which rejects (TCP reset, ICMP port unreachable)
//!   those to services without endpoints (maps `no-endpoint-services`,
//!   `no-endpoint-nodeports`); `filter-forward` and `filter-output-post-dnat` (priority -90,
//!   after DNAT) reject what is still addressed to the service CIDR: a ClusterIP port that is
//!   not served, or an unallocated ClusterIP (so nothing for the service range leaves the
//!   node by the default route).
//!
//! Per service port (see [`Ruleset`]): `service-ID` (ClusterIP: marks traffic from outside
//! the cluster CIDR for masquerading, then DNATs) and `external-ID` (NodePort, externalIPs,
//! LoadBalancer: masquerade, or with externalTrafficPolicy Local only the node's own traffic,
//! which may use any endpoint). The DNAT picks an endpoint with
//! `numgen random mod N map { i : ADDR . PORT }`, inside the entry chain: a service port costs
//! one or two chains, not one per endpoint (a transaction's cost grows with the table's
//! chains: nft fetches them all into its cache). Only with sessionAffinity ClientIP is there a
//! dispatch chain (`cluster-ID` / `local-ID`: affinity lookups, then `numgen random mod N
//! vmap`) and a chain per endpoint (`endpoint-ID__IP/PORT`: refresh the affinity set, DNAT).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use nftables::expr::{FibFlag, MetaKey};

use crate::model::{Endpoint, Model, Proto, ServicePort};
use crate::nft::*;

/// What the renderer needs to know about the node and the cluster.
#[derive(Debug, Clone)]
pub struct RenderConfig {
    /// The nftables table (family `ip`).
    pub table: String,
    /// The pod network of the whole cluster.
    pub cluster_cidr: (Ipv4Addr, u32),
    /// The service network (ClusterIPs).
    pub service_cidr: (Ipv4Addr, u32),
    /// Addresses NodePorts answer on; empty means every local address (and 127.0.0.1).
    pub nodeport_ips: Vec<Ipv4Addr>,
}

/// A key of a map or set element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// `ipv4_addr`.
    Ip(Ipv4Addr),
    /// `ipv4_addr . inet_proto . inet_service`.
    IpProtoPort(Ipv4Addr, Proto, u16),
    /// `inet_proto . inet_service`.
    ProtoPort(Proto, u16),
    /// `ipv4_addr . ipv4_addr`, the same address twice (an endpoint as source and
    /// destination: hairpin).
    SameIpPair(Ipv4Addr),
}

impl Key {
    /// As an nft expression.
    pub fn expr(&self) -> Expr {
        match self {
            Key::Ip(ip) => s(ip.to_string()),
            Key::IpProtoPort(ip, p, port) => {
                concat(vec![s(ip.to_string()), s(p.nft()), n((*port).into())])
            }
            Key::ProtoPort(p, port) => concat(vec![s(p.nft()), n((*port).into())]),
            Key::SameIpPair(ip) => concat(vec![s(ip.to_string()), s(ip.to_string())]),
        }
    }
}

/// A verdict stored in a map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// `goto CHAIN`.
    Goto(String),
    /// `drop`.
    Drop,
}

impl Value {
    /// As an nft expression.
    pub fn expr(&self) -> Expr {
        match self {
            Value::Goto(c) => goto_verdict(c.clone()),
            Value::Drop => drop_verdict(),
        }
    }
}

/// An element of one of the fixed maps or sets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    /// The map or set.
    pub map: &'static str,
    /// The key.
    pub key: Key,
    /// The verdict (maps only).
    pub value: Option<Value>,
}

/// Map of ClusterIPs, externalIPs and LoadBalancer IPs with endpoints.
pub const SERVICE_IPS: &str = "service-ips";
/// Map of NodePorts with endpoints.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Map of service addresses without endpoints (reject or drop).
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Map of NodePorts without endpoints.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// Set of every proxied ClusterIP.
pub const CLUSTER_IPS: &str = "cluster-ips";
/// Set of ClusterIPs served by node-local components.
pub const NODE_LOCAL_IPS: &str = "node-local-ips";
/// Set of NodePort addresses (when configured).
pub const NODEPORT_IPS: &str = "nodeport-ips";
/// Set of `endpoint . endpoint` address pairs: a connection DNATed back to its own source
/// (a pod reaching itself through a service) is masqueraded, so the reply comes back
/// through the node.
pub const HAIRPIN: &str = "hairpin-endpoints";
/// The chain that rejects.
pub const REJECT_CHAIN: &str = "reject-chain";
/// The chain that marks for masquerading.
pub const MARK_FOR_MASQ: &str = "mark-for-masquerade";

/// The per-service part of the table: chains with their rules, affinity sets (name →
/// timeout in seconds), and elements of the fixed maps and sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ruleset {
    /// Regular chains by name, each with its rules.
    pub chains: BTreeMap<String, Vec<Vec<Stmt>>>,
    /// Affinity sets by name, with their timeout.
    pub sets: BTreeMap<String, u32>,
    /// Elements of the fixed maps and sets.
    pub elements: BTreeSet<Element>,
}

fn endpoint_chain(sp: &ServicePort, ep: &Endpoint) -> String {
    format!("endpoint-{}__{}/{}", sp.id, ep.ip, ep.port)
}

fn affinity_set(sp: &ServicePort, ep: &Endpoint, timeout: u32) -> String {
    format!("affinity-{}__{}/{}__{timeout}", sp.id, ep.ip, ep.port)
}

impl Ruleset {
    /// Adds everything of `other` (rulesets of different service ports are disjoint).
    pub fn merge(&mut self, other: Ruleset) {
        self.chains.extend(other.chains);
        self.sets.extend(other.sets);
        self.elements.extend(other.elements);
    }
}

/// Renders the per-service part of the table for `model`: [`render_global`] and
/// [`render_port`] for every port.
pub fn render(model: &Model, cfg: &RenderConfig) -> Ruleset {
    let mut rs = render_global(model);
    for sp in model.ports.values() {
        rs.merge(render_port(sp, cfg));
    }
    rs
}

/// What no single service port owns: the sets of ClusterIPs (several ports share one), of
/// node-local ClusterIPs, and of endpoint addresses for hairpin masquerading (several ports
/// and services share endpoints).
pub fn render_global(model: &Model) -> Ruleset {
    let mut rs = Ruleset::default();
    for ip in &model.node_local_ips {
        rs.elements.insert(Element {
            map: NODE_LOCAL_IPS,
            key: Key::Ip(*ip),
            value: None,
        });
    }
    for sp in model.ports.values() {
        rs.elements.insert(Element {
            map: CLUSTER_IPS,
            key: Key::Ip(sp.cluster_ip),
            value: None,
        });
        for ep in &sp.endpoints {
            rs.elements.insert(Element {
                map: HAIRPIN,
                key: Key::SameIpPair(ep.ip),
                value: None,
            });
        }
    }
    rs
}

/// The rule that sends a connection to one of `eps`, for the caller's chain to end with.
///
/// Without session affinity this is the DNAT itself: `dnat to ADDR:PORT` for one endpoint,
/// `dnat to numgen random mod N map { 0 : ADDR . PORT, ... }` for several, so a service port
/// costs one chain however many endpoints it has (nft's cache fetch and the kernel's commit
/// grow with the number of chains). With affinity the choice needs per-endpoint state: a
/// dispatch chain `KIND-ID` looks up each endpoint's affinity set, then picks at random among
/// the endpoint chains (which refresh the set and DNAT); the rule is `goto KIND-ID`.
fn dispatch(rs: &mut Ruleset, sp: &ServicePort, kind: &str, eps: &[Endpoint]) -> Vec<Stmt> {
    let Some(timeout) = sp.affinity_timeout else {
        let targets: Vec<(String, u16)> = eps.iter().map(|e| (e.ip.to_string(), e.port)).collect();
        let dnat = match targets.as_slice() {
            [(ip, port)] => dnat(ip.clone(), *port),
            _ => dnat_random(&targets),
        };
        return vec![l4proto(sp.proto.nft()), dnat];
    };
    let name = format!("{kind}-{}", sp.id);
    let mut rules = vec![];
    let mut targets = vec![];
    for ep in eps {
        let chain = endpoint_chain(sp, ep);
        let set = affinity_set(sp, ep, timeout);
        if !rs.chains.contains_key(&chain) {
            let rules = vec![
                vec![update_set(&set, field("ip", "saddr"))],
                vec![l4proto(sp.proto.nft()), dnat(ep.ip.to_string(), ep.port)],
            ];
            rs.sets.insert(set.clone(), timeout);
            rs.chains.insert(chain.clone(), rules);
        }
        rules.push(vec![
            eq(field("ip", "saddr"), s(format!("@{set}"))),
            goto(chain.clone()),
        ]);
        targets.push(chain);
    }
    match targets.len() {
        0 => {}
        1 => rules.push(vec![goto(targets[0].clone())]),
        _ => rules.push(vec![numgen_vmap(&targets)]),
    }
    rs.chains.insert(name.clone(), rules);
    vec![goto(name)]
}

/// The chains, sets and map elements of one service port (names carry its id, so the
/// rulesets of different ports never overlap).
pub fn render_port(sp: &ServicePort, cfg: &RenderConfig) -> Ruleset {
    let mut rs = Ruleset::default();
    render_port_into(&mut rs, sp, cfg);
    rs
}

fn render_port_into(rs: &mut Ruleset, sp: &ServicePort, cfg: &RenderConfig) {
    let all = (!sp.endpoints.is_empty()).then(|| dispatch(rs, sp, "cluster", &sp.endpoints));
    let wants_local = sp.internal_local || sp.external_local;
    let local = (wants_local && !sp.local_endpoints.is_empty())
        .then(|| dispatch(rs, sp, "local", &sp.local_endpoints));
    let cluster_key = Key::IpProtoPort(sp.cluster_ip, sp.proto, sp.port);

    // ClusterIP.
    let internal = if sp.internal_local { &local } else { &all };
    match internal {
        Some(target) => {
            let name = format!("service-{}", sp.id);
            let mut rules = vec![];
            if !sp.internal_local {
                let (net, len) = cfg.cluster_cidr;
                rules.push(vec![
                    ne(field("ip", "saddr"), prefix(net.to_string(), len)),
                    jump(MARK_FOR_MASQ),
                ]);
            }
            rules.push(target.clone());
            rs.chains.insert(name.clone(), rules);
            rs.elements.insert(Element {
                map: SERVICE_IPS,
                key: cluster_key,
                value: Some(Value::Goto(name)),
            });
        }
        None => {
            // No endpoints at all: reject. Endpoints, but none here (Local): drop, as upstream.
            let value = if all.is_some() {
                Value::Drop
            } else {
                Value::Goto(REJECT_CHAIN.into())
            };
            rs.elements.insert(Element {
                map: NO_ENDPOINT_SERVICES,
                key: cluster_key,
                value: Some(value),
            });
        }
    }

    // NodePort, externalIPs, LoadBalancer ingress.
    if sp.node_port.is_none() && sp.external_ips.is_empty() {
        return;
    }
    let external = all.as_ref().map(|all| {
        let name = format!("external-{}", sp.id);
        let rules = if sp.external_local {
            let from_node = || eq(fib_type(FibFlag::Saddr), s("local"));
            let mut rules = vec![
                vec![from_node(), jump(MARK_FOR_MASQ)],
                [vec![from_node()], all.clone()].concat(),
            ];
            match &local {
                Some(local) => rules.push(local.clone()),
                None => rules.push(vec![Stmt::Drop(None)]),
            }
            rules
        } else {
            vec![vec![jump(MARK_FOR_MASQ)], all.clone()]
        };
        rs.chains.insert(name.clone(), rules);
        name
    });
    let (map, nodeport_map, value) = match external {
        Some(chain) => (SERVICE_IPS, SERVICE_NODEPORTS, Value::Goto(chain)),
        None => (
            NO_ENDPOINT_SERVICES,
            NO_ENDPOINT_NODEPORTS,
            Value::Goto(REJECT_CHAIN.into()),
        ),
    };
    for ip in &sp.external_ips {
        rs.elements.insert(Element {
            map,
            key: Key::IpProtoPort(*ip, sp.proto, sp.port),
            value: Some(value.clone()),
        });
    }
    if let Some(np) = sp.node_port {
        rs.elements.insert(Element {
            map: nodeport_map,
            key: Key::ProtoPort(sp.proto, np),
            value: Some(value),
        });
    }
}

/// A fixed chain: name, and (type, hook, priority) for base chains.
pub struct FixedChain {
    /// The name.
    pub name: &'static str,
    /// Base chains: type, hook and priority.
    pub base: Option<(nftables::types::NfChainType, nftables::types::NfHook, i32)>,
    /// Its rules.
    pub rules: Vec<Vec<Stmt>>,
}

/// The fixed chains of the table, with their rules.
pub fn fixed_chains(cfg: &RenderConfig) -> Vec<FixedChain> {
    use nftables::types::{NfChainType as T, NfHook as H};
    let nodeport_dst = || {
        if cfg.nodeport_ips.is_empty() {
            eq(fib_type(FibFlag::Daddr), s("local"))
        } else {
            eq(field("ip", "daddr"), s(format!("@{NODEPORT_IPS}")))
        }
    };
    let svc_key = || {
        concat(vec![
            field("ip", "daddr"),
            meta(MetaKey::L4proto),
            field("th", "dport"),
        ])
    };
    let port_key = || concat(vec![meta(MetaKey::L4proto), field("th", "dport")]);
    let (net, len) = cfg.service_cidr;
    let chain = |name, base, rules| FixedChain { name, base, rules };
    vec![
        chain(MARK_FOR_MASQ, None, vec![vec![set_mark_bit(MASQ_BIT)]]),
        chain(
            "masquerading",
            None,
            vec![
                vec![mark_bit_clear(MASQ_BIT), ret()],
                vec![clear_mark_bit(MASQ_BIT)],
                vec![masquerade()],
            ],
        ),
        chain(
            REJECT_CHAIN,
            None,
            vec![vec![l4proto("tcp"), reject_tcp_reset()], vec![reject()]],
        ),
        chain(
            "services",
            None,
            vec![
                vec![vmap_named(svc_key(), SERVICE_IPS)],
                vec![nodeport_dst(), vmap_named(port_key(), SERVICE_NODEPORTS)],
            ],
        ),
        chain(
            "endpoints-check",
            None,
            vec![
                vec![vmap_named(svc_key(), NO_ENDPOINT_SERVICES)],
                vec![
                    nodeport_dst(),
                    vmap_named(port_key(), NO_ENDPOINT_NODEPORTS),
                ],
            ],
        ),
        chain(
            "cluster-ips-check",
            None,
            vec![
                vec![
                    eq(field("ip", "daddr"), s(format!("@{NODE_LOCAL_IPS}"))),
                    ret(),
                ],
                vec![
                    eq(field("ip", "daddr"), prefix(net.to_string(), len)),
                    goto(REJECT_CHAIN),
                ],
            ],
        ),
        chain(
            "nat-prerouting",
            Some((T::NAT, H::Prerouting, -100)),
            vec![vec![jump("services")]],
        ),
        chain(
            "nat-output",
            Some((T::NAT, H::Output, -100)),
            vec![vec![jump("services")]],
        ),
        chain(
            "nat-postrouting",
            Some((T::NAT, H::Postrouting, 100)),
            vec![
                vec![
                    eq(
                        concat(vec![field("ip", "saddr"), field("ip", "daddr")]),
                        s(format!("@{HAIRPIN}")),
                    ),
                    jump(MARK_FOR_MASQ),
                ],
                vec![jump("masquerading")],
            ],
        ),
        chain(
            "filter-input",
            Some((T::Filter, H::Input, -110)),
            vec![vec![ct_new(), jump("endpoints-check")]],
        ),
        chain(
            "filter-forward",
            Some((T::Filter, H::Forward, -110)),
            vec![
                vec![ct_new(), jump("endpoints-check")],
                vec![ct_new(), jump("cluster-ips-check")],
            ],
        ),
        chain(
            "filter-output",
            Some((T::Filter, H::Output, -110)),
            vec![vec![ct_new(), jump("endpoints-check")]],
        ),
        chain(
            "filter-output-post-dnat",
            Some((T::Filter, H::Output, -90)),
            vec![vec![ct_new(), jump("cluster-ips-check")]],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Endpoint;

    fn cfg() -> RenderConfig {
        RenderConfig {
            table: "t".into(),
            cluster_cidr: (Ipv4Addr::new(10, 42, 0, 0), 16),
            service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
            nodeport_ips: vec![],
        }
    }

    fn port(eps: &[(u8, bool)]) -> ServicePort {
        let endpoints: Vec<Endpoint> = eps
            .iter()
            .map(|(i, local)| Endpoint {
                ip: Ipv4Addr::new(10, 42, 0, *i),
                port: 8080,
                local: *local,
            })
            .collect();
        ServicePort {
            id: "ns/web/tcp/".into(),
            proto: Proto::Tcp,
            cluster_ip: Ipv4Addr::new(10, 43, 0, 5),
            port: 80,
            node_port: Some(30080),
            external_ips: vec![],
            affinity_timeout: None,
            internal_local: false,
            external_local: false,
            local_endpoints: endpoints.iter().filter(|e| e.local).cloned().collect(),
            endpoints,
        }
    }

    fn model(sp: ServicePort) -> Model {
        let mut m = Model::default();
        m.ports.insert(sp.id.clone(), sp);
        m
    }

    fn maps(rs: &Ruleset, map: &str) -> Vec<Option<Value>> {
        rs.elements
            .iter()
            .filter(|e| e.map == map)
            .map(|e| e.value.clone())
            .collect()
    }

    #[test]
    fn cluster_ip_with_endpoints() {
        let rs = render(&model(port(&[(3, true), (4, false)])), &cfg());
        assert_eq!(
            maps(&rs, SERVICE_IPS),
            [Some(Value::Goto("service-ns/web/tcp/".into()))]
        );
        assert_eq!(
            maps(&rs, SERVICE_NODEPORTS),
            [Some(Value::Goto("external-ns/web/tcp/".into()))]
        );
        // One chain per entry point, whatever the number of endpoints: the service chain
        // masquerades outside traffic, then DNATs to a random endpoint.
        assert_eq!(
            rs.chains.keys().collect::<Vec<_>>(),
            ["external-ns/web/tcp/", "service-ns/web/tcp/"]
        );
        let service = &rs.chains["service-ns/web/tcp/"];
        assert_eq!(service.len(), 2);
        let json = serde_json::to_string(&service[1]).unwrap();
        assert!(
            json.contains(r#""numgen":{"mode":"random","mod":2"#),
            "{json}"
        );
        assert!(json.contains(r#"{"concat":["10.42.0.3",8080]}"#), "{json}");
        assert!(rs.sets.is_empty());
        // Both endpoints are hairpin candidates.
        let hairpin: Vec<_> = rs.elements.iter().filter(|e| e.map == HAIRPIN).collect();
        assert_eq!(hairpin.len(), 2);
    }

    #[test]
    fn one_endpoint_is_a_plain_dnat() {
        let rs = render(&model(port(&[(7, false)])), &cfg());
        let service = &rs.chains["service-ns/web/tcp/"];
        assert_eq!(service[1], vec![l4proto("tcp"), dnat("10.42.0.7", 8080)]);
    }

    #[test]
    fn no_endpoints_rejects_and_local_policy_drops() {
        let rs = render(&model(port(&[])), &cfg());
        assert!(maps(&rs, SERVICE_IPS).is_empty());
        assert_eq!(
            maps(&rs, NO_ENDPOINT_SERVICES),
            [Some(Value::Goto(REJECT_CHAIN.into()))]
        );
        assert_eq!(
            maps(&rs, NO_ENDPOINT_NODEPORTS),
            [Some(Value::Goto(REJECT_CHAIN.into()))]
        );
        let mut sp = port(&[(4, false)]);
        sp.internal_local = true;
        let rs = render(&model(sp), &cfg());
        assert_eq!(maps(&rs, NO_ENDPOINT_SERVICES), [Some(Value::Drop)]);
        // External traffic still has a path (Cluster policy).
        assert_eq!(maps(&rs, SERVICE_NODEPORTS).len(), 1);
    }

    #[test]
    fn affinity_sets_per_endpoint() {
        let mut sp = port(&[(3, true), (4, true)]);
        sp.affinity_timeout = Some(60);
        let rs = render(&model(sp), &cfg());
        assert_eq!(rs.sets.len(), 2);
        assert!(rs.sets.values().all(|t| *t == 60));
        // Two affinity lookups, then the random choice.
        assert_eq!(rs.chains["cluster-ns/web/tcp/"].len(), 3);
        assert_eq!(
            rs.chains["service-ns/web/tcp/"][1],
            vec![goto("cluster-ns/web/tcp/")]
        );
        // Endpoint chain: affinity update, DNAT.
        assert_eq!(rs.chains["endpoint-ns/web/tcp/__10.42.0.3/8080"].len(), 2);
    }

    #[test]
    fn external_local_keeps_node_traffic_cluster_wide() {
        let mut sp = port(&[(3, false)]);
        sp.external_local = true;
        let rs = render(&model(sp), &cfg());
        let ext = &rs.chains["external-ns/web/tcp/"];
        assert_eq!(ext.len(), 3);
        assert_eq!(ext[2], vec![Stmt::Drop(None)]);
    }
}
