//! Services and EndpointSlices → what this node should do with each service port: its
//! addresses (ClusterIP, NodePort, externalIPs, LoadBalancer ingress) and the endpoints that
//! may receive its traffic, already filtered for readiness and locality. No I/O.
//!
//! Endpoint selection follows kube-proxy: `ready` endpoints; when a set has none, `serving`
//! and `terminating` ones (so connections drain to pods that are shutting down rather than
//! being refused). Services that are ExternalName, headless, annotated
//! `corten.io/node-local: "true"` (served on every node by a local component, e.g. the
//! cluster DNS) or labelled `service.kubernetes.io/service-proxy-name` are skipped; the
//! node-local ones' ClusterIPs are reported so the renderer leaves them alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The annotation marking a service that a node-local component serves itself.
pub const NODE_LOCAL_ANNOTATION: &str = "corten.io/node-local";
/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A layer-4 protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// From a Kubernetes protocol name (default TCP); None for an unknown one.
    pub fn parse(name: Option<&str>) -> Option<Proto> {
        match name.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// nft's name for it.
    pub fn nft(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The pod address.
    pub ip: Ipv4Addr,
    /// The pod port.
    pub port: u16,
    /// Whether it runs on this node.
    pub local: bool,
}

/// One port of one service, as this node serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name/protocol/port-name` (unique; names chains).
    pub id: String,
    /// The protocol.
    pub proto: Proto,
    /// The ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// The node port, if any.
    pub node_port: Option<u16>,
    /// externalIPs and LoadBalancer ingress IPs (reached with `port`).
    pub external_ips: Vec<Ipv4Addr>,
    /// ClientIP session affinity: its timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// internalTrafficPolicy Local.
    pub internal_local: bool,
    /// externalTrafficPolicy Local (for NodePort, externalIPs, LoadBalancer).
    pub external_local: bool,
    /// Every usable endpoint (ready, or else serving and terminating), sorted.
    pub endpoints: Vec<Endpoint>,
    /// The usable endpoints on this node (ready, or else serving and terminating), sorted.
    pub local_endpoints: Vec<Endpoint>,
}

/// What the proxy serves: every proxied service port, and the ClusterIPs of node-local
/// services (left alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// By id.
    pub ports: BTreeMap<String, ServicePort>,
    /// ClusterIPs of services served by a node-local component.
    pub node_local_ips: BTreeSet<Ipv4Addr>,
}

/// A candidate endpoint with its conditions.
struct Candidate {
    ep: Endpoint,
    ready: bool,
    serving_terminating: bool,
}

/// Ready endpoints, or else the serving-and-terminating ones; sorted, without duplicates.
fn usable<'a>(cands: impl Iterator<Item = &'a Candidate> + Clone) -> Vec<Endpoint> {
    let pick = |f: fn(&Candidate) -> bool| {
        let set: BTreeSet<Endpoint> = cands
            .clone()
            .filter(|c| f(c))
            .map(|c| c.ep.clone())
            .collect();
        set.into_iter().collect::<Vec<_>>()
    };
    let ready = pick(|c| c.ready);
    if ready.is_empty() {
        pick(|c| c.serving_terminating)
    } else {
        ready
    }
}

/// Builds the model from every Service and EndpointSlice of the cluster.
pub fn build<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node_name: &str,
) -> Model {
    // (namespace, service name) → slices.
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        by_service.entry((ns, svc.clone())).or_default().push(slice);
    }
    let mut model = Model::default();
    for svc in services {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let Some(cluster_ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue; // headless, ExternalName, IPv6 or not allocated yet
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let annotations = svc.metadata.annotations.clone().unwrap_or_default();
        if annotations.get(NODE_LOCAL_ANNOTATION).map(String::as_str) == Some("true") {
            model.node_local_ips.insert(cluster_ip);
            continue;
        }
        if svc
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("service.kubernetes.io/service-proxy-name"))
        {
            continue;
        }
        let mut external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if spec.type_.as_deref() == Some("LoadBalancer") {
            external_ips.extend(
                svc.status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .into_iter()
                    .flatten()
                    .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                    .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
            );
        }
        external_ips.sort();
        external_ips.dedup();
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .filter(|t| *t > 0)
                .map_or(10_800, |t| t as u32)
        });
        let node_port_type = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let slices = by_service
            .get(&(ns.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for p in spec.ports.iter().flatten() {
            let Some(proto) = Proto::parse(p.protocol.as_deref()) else {
                continue;
            };
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let port_name = p.name.clone().unwrap_or_default();
            let mut cands = vec![];
            for slice in slices {
                let Some(target) = slice.ports.iter().flatten().find(|sp| {
                    sp.name.as_deref().unwrap_or("") == port_name
                        && Proto::parse(sp.protocol.as_deref()) == Some(proto)
                }) else {
                    continue;
                };
                let Some(target) = target.port.and_then(|p| u16::try_from(p).ok()) else {
                    continue;
                };
                for e in &slice.endpoints {
                    let c = e.conditions.clone().unwrap_or_default();
                    // Unset `ready` means ready (API semantics).
                    let ready = c.ready.unwrap_or(true) && !c.terminating.unwrap_or(false);
                    let serving_terminating =
                        c.serving.unwrap_or(true) && c.terminating.unwrap_or(false);
                    for ip in e.addresses.iter().filter_map(|a| a.parse().ok()) {
                        cands.push(Candidate {
                            ep: Endpoint {
                                ip,
                                port: target,
                                local: e.node_name.as_deref() == Some(node_name),
                            },
                            ready,
                            serving_terminating,
                        });
                    }
                }
            }
            let endpoints = usable(cands.iter());
            let local_endpoints = usable(cands.iter().filter(|c| c.ep.local));
            let id = format!("{ns}/{name}/{}/{port_name}", proto.nft());
            model.ports.insert(
                id.clone(),
                ServicePort {
                    id,
                    proto,
                    cluster_ip,
                    port,
                    node_port: p
                        .node_port
                        .filter(|_| node_port_type)
                        .and_then(|np| u16::try_from(np).ok())
                        .filter(|np| *np > 0),
                    external_ips: external_ips.clone(),
                    affinity_timeout,
                    internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                    external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
                    endpoints,
                    local_endpoints,
                },
            );
        }
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn svc(name: &str, spec: Value, extra: Value) -> Service {
        let mut v = json!({"metadata": {"name": name, "namespace": "ns"}, "spec": spec});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            for (k, val) in e {
                if k == "metadata" {
                    o["metadata"]
                        .as_object_mut()
                        .unwrap()
                        .extend(val.as_object().unwrap().clone());
                } else {
                    o.insert(k.clone(), val.clone());
                }
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn slice(svc: &str, ports: Value, endpoints: Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-x"), "namespace": "ns", "labels": {SERVICE_NAME_LABEL: svc}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn ep(ip: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> Value {
        json!({"addresses": [ip], "nodeName": node,
               "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
    }

    #[test]
    fn ports_endpoints_and_policies() {
        let s = svc(
            "web",
            json!({"type": "LoadBalancer", "clusterIP": "10.43.0.5", "externalIPs": ["192.0.2.9"],
                   "externalTrafficPolicy": "Local", "sessionAffinity": "ClientIP",
                   "ports": [{"name": "http", "port": 80, "nodePort": 30080},
                             {"name": "dns", "port": 53, "protocol": "UDP"}]}),
            json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.2", "ipMode": "VIP"}]}}}),
        );
        let sl = slice(
            "web",
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
            json!([
                ep("10.42.0.3", "me", true, true, false),
                ep("10.42.1.3", "other", true, true, false),
                ep("10.42.0.4", "me", false, false, false)
            ]),
        );
        let m = build([&s], [&sl], "me");
        let http = &m.ports["ns/web/tcp/http"];
        assert_eq!(http.cluster_ip, Ipv4Addr::new(10, 43, 0, 5));
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(
            http.external_ips,
            [Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 9)]
        );
        assert_eq!(http.affinity_timeout, Some(10_800));
        assert!(http.external_local && !http.internal_local);
        assert_eq!(http.endpoints.len(), 2);
        assert_eq!(http.endpoints[0].port, 8080);
        assert_eq!(http.local_endpoints.len(), 1);
        assert!(http.local_endpoints[0].local);
        let dns = &m.ports["ns/web/udp/dns"];
        assert_eq!((dns.proto, dns.endpoints[0].port), (Proto::Udp, 5353));
    }

    #[test]
    fn terminating_endpoints_only_when_nothing_is_ready() {
        let s = svc(
            "web",
            json!({"clusterIP": "10.43.0.5", "ports": [{"port": 80}]}),
            json!({}),
        );
        let p = json!([{"port": 80, "protocol": "TCP"}]);
        let draining = slice(
            "web",
            p.clone(),
            json!([
                ep("10.42.0.3", "me", false, true, true),
                ep("10.42.0.4", "me", false, false, true)
            ]),
        );
        let m = build([&s], [&draining], "me");
        let eps = &m.ports["ns/web/tcp/"].endpoints;
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].ip, Ipv4Addr::new(10, 42, 0, 3));
        let mixed = slice(
            "web",
            p,
            json!([
                ep("10.42.0.3", "me", false, true, true),
                ep("10.42.0.5", "me", true, true, false)
            ]),
        );
        let m = build([&s], [&mixed], "me");
        assert_eq!(
            m.ports["ns/web/tcp/"].endpoints[0].ip,
            Ipv4Addr::new(10, 42, 0, 5)
        );
    }

    #[test]
    fn skipped_services() {
        let dns = svc(
            "kube-dns",
            json!({"clusterIP": "10.43.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}),
            json!({"metadata": {"annotations": {NODE_LOCAL_ANNOTATION: "true"}}}),
        );
        let headless = svc(
            "db",
            json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
            json!({}),
        );
        let m = build([&dns, &headless], [], "me");
        assert!(m.ports.is_empty());
        assert!(m.node_local_ips.contains(&Ipv4Addr::new(10, 43, 0, 10)));
    }
}
