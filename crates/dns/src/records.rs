//! What one Service contributes to cluster.local, computed from the Service and its Endpoints
//! (the Kubernetes DNS specification, as CoreDNS's `kubernetes` plugin serves it):
//!
//! - a ClusterIP service (`NAME.NS.svc.DOMAIN`): A/AAAA for its cluster IPs; SRV
//!   `_PORT._PROTO.NAME.NS.svc.DOMAIN` for each named port, pointing at the service name;
//! - a headless service (`clusterIP: None`): A/AAAA for every ready endpoint address;
//!   `HOST.NAME.NS.svc.DOMAIN` for each ready address, HOST being the endpoint's hostname (a pod
//!   with `spec.hostname` and `spec.subdomain` = the service's name) or the address with dashes
//!   (`10-42-0-5`); SRV per named port and ready address, pointing at the host names;
//! - an ExternalName service: a CNAME to `spec.externalName`;
//! - PTR: a cluster IP names its service; a headless service's ready address names its host.
//!
//! Pure functions of the API objects: no I/O, unit-tested below.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::{Endpoints, Service};

/// A service's records, relative to the names they answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceRecords {
    /// The service's own name (`NAME.NS.svc.DOMAIN.`).
    pub name: Name,
    /// What the name answers.
    pub kind: Kind,
    /// Addresses for the service's name: cluster IPs, or a headless service's ready addresses.
    pub addrs: Vec<IpAddr>,
    /// A headless service's hosts: the first label (lowercase) → its addresses.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// SRV records, one per named port (ClusterIP) or per named port and host (headless).
    pub srv: Vec<Srv>,
    /// The PTR records this service owns: address → the name it points at.
    pub ptr: Vec<(IpAddr, Name)>,
}

/// The shape of a service's name.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Kind {
    /// A virtual address (ClusterIP, NodePort, LoadBalancer).
    #[default]
    ClusterIp,
    /// `clusterIP: None`: the ready pods' addresses.
    Headless,
    /// `type: ExternalName`: an alias.
    ExternalName(Name),
}

/// One SRV record: `_PORT._PROTO.NAME.NS.svc.DOMAIN. SRV 0 WEIGHT PORT TARGET`.
#[derive(Debug, Clone, PartialEq)]
pub struct Srv {
    /// The port's name, lowercase (no underscore).
    pub port_name: String,
    /// The protocol, lowercase: `tcp`, `udp` or `sctp`.
    pub proto: String,
    /// The port number.
    pub port: u16,
    /// The target: the service's name or one of a headless service's host names.
    pub target: Name,
}

/// `NAME.NS.svc.DOMAIN.` (None when the parts are not valid DNS labels).
pub fn service_name(name: &str, ns: &str, domain: &str) -> Option<Name> {
    Name::from_ascii(format!("{name}.{ns}.svc.{domain}."))
        .ok()
        .map(|n| n.to_lowercase())
}

/// An address with dashes for dots or colons (`10.42.0.5` → `10-42-0-5`), as the host label of an
/// endpoint without a hostname and the first label of a pod record.
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// Parses the first label of a pod record (`10-42-0-5`) back into an address.
pub fn undashed(label: &str) -> Option<IpAddr> {
    if label.contains('.') || label.contains(':') {
        return None;
    }
    if let Ok(v4) = label.replace('-', ".").parse::<std::net::Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The records for `svc` (with its Endpoints, if any) in `domain`; None for a service whose
/// name cannot be a DNS name.
pub fn service_records(
    svc: &Service,
    endpoints: Option<&Endpoints>,
    domain: &str,
) -> Option<ServiceRecords> {
    let meta = &svc.metadata;
    let name = service_name(meta.name.as_deref()?, meta.namespace.as_deref()?, domain)?;
    let spec = svc.spec.clone().unwrap_or_default();
    let mut out = ServiceRecords {
        name: name.clone(),
        ..Default::default()
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.as_deref().unwrap_or_default();
        let target = Name::from_ascii(target.trim_end_matches('.')).ok()?;
        let mut target = target.to_lowercase();
        target.set_fqdn(true);
        out.kind = Kind::ExternalName(target);
        return Some(out);
    }
    let cluster_ips: Vec<String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.clone(),
        _ => spec.cluster_ip.clone().into_iter().collect(),
    };
    if cluster_ips.iter().any(|ip| ip == "None") {
        out.kind = Kind::Headless;
        headless(&mut out, endpoints);
        return Some(out);
    }
    out.addrs = cluster_ips
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    out.ptr = out.addrs.iter().map(|ip| (*ip, name.clone())).collect();
    for port in spec.ports.iter().flatten() {
        let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        out.srv.push(Srv {
            port_name: port_name.to_lowercase(),
            proto: port.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
            port: number,
            target: name.clone(),
        });
    }
    Some(out)
}

/// A headless service's addresses, hosts, SRV and PTR records from its ready endpoints.
fn headless(out: &mut ServiceRecords, endpoints: Option<&Endpoints>) {
    for subset in endpoints
        .and_then(|e| e.subsets.as_ref())
        .into_iter()
        .flatten()
    {
        let mut targets = Vec::new();
        for address in subset.addresses.iter().flatten() {
            let Ok(ip) = address.ip.parse::<IpAddr>() else {
                continue;
            };
            let label = address
                .hostname
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(str::to_lowercase)
                .unwrap_or_else(|| dashed(ip));
            let Ok(host) = out.name.prepend_label(label.as_str()) else {
                continue;
            };
            if !out.addrs.contains(&ip) {
                out.addrs.push(ip);
            }
            let addrs = out.hosts.entry(label).or_default();
            if !addrs.contains(&ip) {
                addrs.push(ip);
                out.ptr.push((ip, host.clone()));
            }
            if !targets.contains(&host) {
                targets.push(host);
            }
        }
        for port in subset.ports.iter().flatten() {
            let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            for target in &targets {
                out.srv.push(Srv {
                    port_name: port_name.to_lowercase(),
                    proto: port.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                    port: number,
                    target: target.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn cluster_ip_service_has_address_srv_and_ptr() {
        let s = svc(json!({
            "metadata": {"name": "Web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.7.9", "clusterIPs": ["10.43.7.9"], "ports": [
                {"name": "http", "port": 80},
                {"name": "DNS", "port": 53, "protocol": "UDP"},
                {"port": 9000}
            ]}
        }));
        let r = service_records(&s, None, "cluster.local").unwrap();
        assert_eq!(r.name, n("web.default.svc.cluster.local."));
        assert_eq!(r.kind, Kind::ClusterIp);
        assert_eq!(r.addrs, vec!["10.43.7.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.srv.len(), 2, "unnamed ports have no SRV");
        assert_eq!(r.srv[0].port_name, "http");
        assert_eq!(r.srv[0].proto, "tcp");
        assert_eq!(r.srv[0].port, 80);
        assert_eq!(r.srv[0].target, r.name);
        assert_eq!(r.srv[1].port_name, "dns");
        assert_eq!(r.srv[1].proto, "udp");
        assert_eq!(r.ptr, vec![("10.43.7.9".parse().unwrap(), r.name.clone())]);
        assert!(r.hosts.is_empty());
    }

    #[test]
    fn headless_service_lists_ready_addresses_and_hosts() {
        let s = svc(json!({
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}
        }));
        let ep: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "apps"},
            "subsets": [{
                "addresses": [{"ip": "10.42.0.5", "hostname": "web-0"}, {"ip": "10.42.0.6"}],
                "notReadyAddresses": [{"ip": "10.42.0.7"}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
            }]
        }))
        .unwrap();
        let r = service_records(&s, Some(&ep), "cluster.local").unwrap();
        assert_eq!(r.kind, Kind::Headless);
        let ips: Vec<IpAddr> = vec!["10.42.0.5".parse().unwrap(), "10.42.0.6".parse().unwrap()];
        assert_eq!(r.addrs, ips, "not-ready addresses are left out");
        assert_eq!(r.hosts["web-0"], vec![ips[0]]);
        assert_eq!(r.hosts["10-42-0-6"], vec![ips[1]]);
        let targets: Vec<String> = r.srv.iter().map(|s| s.target.to_string()).collect();
        assert_eq!(
            targets,
            [
                "web-0.web.apps.svc.cluster.local.",
                "10-42-0-6.web.apps.svc.cluster.local."
            ]
        );
        assert!(
            r.srv
                .iter()
                .all(|s| s.port == 8080 && s.port_name == "http")
        );
        assert_eq!(
            r.ptr,
            vec![
                (ips[0], n("web-0.web.apps.svc.cluster.local.")),
                (ips[1], n("10-42-0-6.web.apps.svc.cluster.local."))
            ]
        );
    }

    #[test]
    fn headless_service_without_endpoints_is_empty() {
        let s = svc(json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None"}
        }));
        let r = service_records(&s, None, "cluster.local").unwrap();
        assert_eq!(r.kind, Kind::Headless);
        assert!(r.addrs.is_empty() && r.srv.is_empty() && r.ptr.is_empty());
    }

    #[test]
    fn external_name_is_an_alias() {
        let s = svc(json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "Example.COM."}
        }));
        let r = service_records(&s, None, "cluster.local").unwrap();
        assert_eq!(r.kind, Kind::ExternalName(n("example.com.")));
        assert!(r.addrs.is_empty() && r.ptr.is_empty());
    }

    #[test]
    fn bad_names_and_addresses_are_skipped() {
        let s = svc(json!({
            "metadata": {"name": "bad..name", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.20"}
        }));
        assert!(service_records(&s, None, "cluster.local").is_none());
        let s = svc(json!({
            "metadata": {"name": "odd", "namespace": "default"},
            "spec": {"clusterIP": "not-an-ip", "ports": [{"name": "big", "port": 70000}]}
        }));
        let r = service_records(&s, None, "cluster.local").unwrap();
        assert!(r.addrs.is_empty() && r.srv.is_empty());
    }

    #[test]
    fn pod_labels_round_trip() {
        let v4: IpAddr = "10.42.1.17".parse().unwrap();
        assert_eq!(dashed(v4), "10-42-1-17");
        assert_eq!(undashed("10-42-1-17"), Some(v4));
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(undashed(&dashed(v6)), Some(v6));
        assert_eq!(undashed("web-0"), None);
        assert_eq!(undashed("10.42.1.17"), None);
    }
}
