//! NetworkPolicies, Pods and Namespaces → what this node enforces: for each of its pods that a
//! policy isolates (per direction), the traffic that is allowed, as [`Match`]es. No I/O.
//!
//! Semantics (networking.k8s.io/v1, as upstream's conformance tests check them):
//! - a pod is isolated for ingress (egress) when a policy of its namespace selects it with
//!   `Ingress` (`Egress`) in its policyTypes; a pod no policy selects stays open;
//! - what is allowed is the union of the rules of every policy that selects it; a rule
//!   allows traffic matching any of its peers and any of its ports (no peers: every source or
//!   destination; no ports: every port);
//! - a peer with a `podSelector` only selects pods of the policy's namespace; with a
//!   `namespaceSelector` only, every pod of the matching namespaces; with both, the pods
//!   matching the pod selector in the matching namespaces; an `ipBlock` a CIDR less its
//!   `except` ranges;
//! - ports: a protocol (default TCP) with a number, a number range (`endPort`), a name
//!   (resolved against the container ports of the pod receiving the traffic: the selected pod
//!   for ingress, each peer pod for egress) or no port (every port of the protocol).
//!
//! Namespaces carry `kubernetes.io/metadata.name` (upstream sets it on every namespace; it is
//! added here when missing). Only IPv4 is handled (corten's pod network is IPv4); IPv6
//! ipBlocks are skipped, and so are named ports of ipBlock peers (nothing to resolve them on).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proxy::model::Proto;

/// The label upstream puts on every namespace, holding its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// What the translation needs of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name (for logs).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The pod's IPv4 address.
    pub ip: Ipv4Addr,
    /// The node it runs on.
    pub node: String,
    /// Named container ports: (name, protocol, number).
    pub named_ports: Vec<(String, Proto, u16)>,
}

impl PodInfo {
    /// The pod's view, if it takes part in pod networking: an IPv4 pod address, not
    /// hostNetwork, not finished.
    pub fn from_pod(pod: &Pod) -> Option<PodInfo> {
        let spec = pod.spec.as_ref()?;
        if spec.host_network == Some(true) {
            return None;
        }
        let status = pod.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let ip = status.pod_ip.as_deref()?.parse().ok()?;
        let named_ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let name = p.name.clone()?;
                let proto = Proto::parse(p.protocol.as_deref())?;
                Some((name, proto, u16::try_from(p.container_port).ok()?))
            })
            .collect();
        Some(PodInfo {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ip,
            node: spec.node_name.clone().unwrap_or_default(),
            named_ports,
        })
    }

    fn port_named(&self, name: &str, proto: Proto) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|(n, p, _)| n == name && *p == proto)
            .map(|(_, _, port)| *port)
    }
}

/// A namespace's labels, with [`NAMESPACE_NAME_LABEL`] added when missing.
pub fn namespace_labels(ns: &Namespace) -> (String, BTreeMap<String, String>) {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
    labels
        .entry(NAMESPACE_NAME_LABEL.into())
        .or_insert_with(|| name.clone());
    (name, labels)
}

/// Which way traffic goes, seen from the selected pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// To the pod: peers are sources.
    Ingress,
    /// From the pod: peers are destinations.
    Egress,
}

/// The other end of allowed traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Anyone.
    Any,
    /// These pod addresses (never empty).
    Ips(BTreeSet<Ipv4Addr>),
    /// A CIDR less some ranges inside it.
    Block {
        /// The CIDR.
        cidr: (Ipv4Addr, u32),
        /// Ranges excluded from it.
        except: Vec<(Ipv4Addr, u32)>,
    },
}

/// Allowed traffic: a peer, and optionally a protocol with destination port ranges.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Match {
    /// The other end.
    pub peer: Peer,
    /// The protocol; None: any traffic.
    pub proto: Option<Proto>,
    /// Destination port ranges (inclusive); empty: every port of `proto`.
    pub ports: BTreeSet<(u16, u16)>,
}

/// What one node enforces: for each isolated local pod (by address), what it may receive
/// and what it may send. An empty list denies everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// Ingress-isolated pods.
    pub ingress: BTreeMap<Ipv4Addr, Vec<Match>>,
    /// Egress-isolated pods.
    pub egress: BTreeMap<Ipv4Addr, Vec<Match>>,
}

/// A label selector that matches nothing when it is invalid; an empty one matches all.
fn selects(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    match sel {
        None => true,
        Some(sel) => api::selector::LabelSelector::from_k8s(sel).is_ok_and(|s| s.matches(labels)),
    }
}

/// The policy types of `spec`, defaulted as upstream when the server did not.
fn policy_types(policy: &NetworkPolicy) -> (bool, bool) {
    let Some(spec) = &policy.spec else {
        return (true, false);
    };
    match &spec.policy_types {
        Some(types) if !types.is_empty() => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

/// Parses an IPv4 CIDR (None for IPv6 or garbage).
fn cidr(s: &str) -> Option<(Ipv4Addr, u32)> {
    proxy::parse_cidr(s).ok()
}

/// A selected peer before ports are applied.
enum PeerSel<'a> {
    Any,
    Pods(Vec<&'a PodInfo>),
    Block((Ipv4Addr, u32), Vec<(Ipv4Addr, u32)>),
}

/// Everything the translation looks at.
pub struct Cluster<'a> {
    /// Every pod taking part in pod networking.
    pub pods: &'a [PodInfo],
    /// Namespace name → labels.
    pub namespaces: &'a BTreeMap<String, BTreeMap<String, String>>,
}

impl<'a> Cluster<'a> {
    fn ns_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(ns)
            .cloned()
            .unwrap_or_else(|| BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), ns.to_string())]))
    }

    fn peer(&self, policy_ns: &str, peer: &NetworkPolicyPeer) -> Option<PeerSel<'a>> {
        if let Some(block) = &peer.ip_block {
            let net = cidr(&block.cidr)?;
            let except = block
                .except
                .iter()
                .flatten()
                .filter_map(|e| cidr(e))
                .collect();
            return Some(PeerSel::Block(net, except));
        }
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            return None; // invalid (the API server refuses it)
        }
        let pods = self
            .pods
            .iter()
            .filter(|p| match &peer.namespace_selector {
                None => p.namespace == policy_ns,
                Some(sel) => selects(Some(sel), &self.ns_labels(&p.namespace)),
            })
            .filter(|p| selects(peer.pod_selector.as_ref(), &p.labels))
            .collect();
        Some(PeerSel::Pods(pods))
    }
}

/// A port of a rule, before named ports are resolved.
enum PortSel {
    Any,
    Range(Proto, Option<(u16, u16)>),
    Named(Proto, String),
}

fn port_sel(p: &NetworkPolicyPort) -> Option<PortSel> {
    let proto = Proto::parse(p.protocol.as_deref())?;
    Some(match &p.port {
        None => PortSel::Range(proto, None),
        Some(IntOrString::Int(n)) => {
            let lo = u16::try_from(*n).ok()?;
            let hi = p.end_port.map_or(Some(lo), |e| u16::try_from(e).ok())?;
            PortSel::Range(proto, Some((lo, hi.max(lo))))
        }
        Some(IntOrString::String(name)) => match name.parse::<u16>() {
            Ok(n) => PortSel::Range(proto, Some((n, n))),
            Err(_) => PortSel::Named(proto, name.clone()),
        },
    })
}

/// The matches of one rule (`peers`, `ports` as in the API; None or empty = all) for the
/// selected pod `target`.
fn rule_matches(
    cluster: &Cluster<'_>,
    policy_ns: &str,
    dir: Direction,
    target: &PodInfo,
    peers: Option<&Vec<NetworkPolicyPeer>>,
    ports: Option<&Vec<NetworkPolicyPort>>,
) -> Vec<Match> {
    let peers: Vec<PeerSel<'_>> = match peers.filter(|p| !p.is_empty()) {
        None => vec![PeerSel::Any],
        Some(peers) => peers
            .iter()
            .filter_map(|p| cluster.peer(policy_ns, p))
            .collect(),
    };
    let ports: Vec<PortSel> = match ports.filter(|p| !p.is_empty()) {
        None => vec![PortSel::Any],
        Some(ports) => ports.iter().filter_map(port_sel).collect(),
    };
    let ips = |pods: &[&PodInfo]| pods.iter().map(|p| p.ip).collect::<BTreeSet<_>>();
    let mut out = vec![];
    for peer in &peers {
        let whole = match peer {
            PeerSel::Any => Peer::Any,
            PeerSel::Pods(pods) => Peer::Ips(ips(pods)),
            PeerSel::Block(cidr, except) => Peer::Block {
                cidr: *cidr,
                except: except.clone(),
            },
        };
        for port in &ports {
            let m = |peer: Peer, proto: Option<Proto>, range: Option<(u16, u16)>| Match {
                peer,
                proto,
                ports: range.into_iter().collect(),
            };
            match port {
                PortSel::Any => out.push(m(whole.clone(), None, None)),
                PortSel::Range(proto, range) => out.push(m(whole.clone(), Some(*proto), *range)),
                PortSel::Named(proto, name) => match dir {
                    // The selected pod receives the traffic: its port of that name.
                    Direction::Ingress => {
                        if let Some(n) = target.port_named(name, *proto) {
                            out.push(m(whole.clone(), Some(*proto), Some((n, n))));
                        }
                    }
                    // Each peer pod receives it: its own port of that name.
                    Direction::Egress => {
                        let candidates: Vec<&PodInfo> = match peer {
                            PeerSel::Any => cluster.pods.iter().collect(),
                            PeerSel::Pods(pods) => pods.clone(),
                            PeerSel::Block(..) => vec![],
                        };
                        let mut by_port: BTreeMap<u16, BTreeSet<Ipv4Addr>> = BTreeMap::new();
                        for pod in candidates {
                            if let Some(n) = pod.port_named(name, *proto) {
                                by_port.entry(n).or_default().insert(pod.ip);
                            }
                        }
                        for (n, ips) in by_port {
                            out.push(m(Peer::Ips(ips), Some(*proto), Some((n, n))));
                        }
                    }
                },
            }
        }
    }
    out
}

/// Merges matches of the same peer and protocol (their port ranges joined; "every port"
/// absorbs the rest), drops peers that select no pod, and sorts.
fn merge(matches: Vec<Match>) -> Vec<Match> {
    // (peer, protocol) → port ranges; None: every port.
    type Ports = Option<BTreeSet<(u16, u16)>>;
    let mut by: BTreeMap<(Peer, Option<Proto>), Ports> = BTreeMap::new();
    for m in matches {
        if matches!(&m.peer, Peer::Ips(ips) if ips.is_empty()) {
            continue;
        }
        let entry = by
            .entry((m.peer, m.proto))
            .or_insert_with(|| Some(BTreeSet::new()));
        match (entry.as_mut(), m.ports.is_empty()) {
            (Some(_), true) => *entry = None,
            (Some(set), false) => set.extend(m.ports),
            (None, _) => {}
        }
    }
    by.into_iter()
        .map(|((peer, proto), ports)| Match {
            peer,
            proto,
            ports: ports.unwrap_or_default(),
        })
        .collect()
}

/// What `node` enforces for `policies`, given every pod and namespace.
pub fn build<'a>(
    policies: impl IntoIterator<Item = &'a NetworkPolicy>,
    cluster: &Cluster<'_>,
    node: &str,
) -> Model {
    let policies: Vec<&NetworkPolicy> = policies.into_iter().collect();
    let mut model = Model::default();
    for pod in cluster.pods.iter().filter(|p| p.node == node) {
        let mut ingress: Option<Vec<Match>> = None;
        let mut egress: Option<Vec<Match>> = None;
        for policy in &policies {
            let ns = policy.metadata.namespace.as_deref().unwrap_or_default();
            let Some(spec) = &policy.spec else { continue };
            if ns != pod.namespace || !selects(spec.pod_selector.as_ref(), &pod.labels) {
                continue;
            }
            let (is_ingress, is_egress) = policy_types(policy);
            if is_ingress {
                let allowed = ingress.get_or_insert_with(Vec::new);
                for rule in spec.ingress.iter().flatten() {
                    allowed.extend(rule_matches(
                        cluster,
                        ns,
                        Direction::Ingress,
                        pod,
                        rule.from.as_ref(),
                        rule.ports.as_ref(),
                    ));
                }
            }
            if is_egress {
                let allowed = egress.get_or_insert_with(Vec::new);
                for rule in spec.egress.iter().flatten() {
                    allowed.extend(rule_matches(
                        cluster,
                        ns,
                        Direction::Egress,
                        pod,
                        rule.to.as_ref(),
                        rule.ports.as_ref(),
                    ));
                }
            }
        }
        if let Some(allowed) = ingress {
            model.ingress.insert(pod.ip, merge(allowed));
        }
        if let Some(allowed) = egress {
            model.egress.insert(pod.ip, merge(allowed));
        }
    }
    model
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
