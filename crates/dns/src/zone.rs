//! The in-memory cluster zone and its answers.
//!
//! [`Zone`] holds one [`ServiceRecords`] per service, the namespaces, and a reverse index
//! (address → names) that each service update replaces its own share of, so an update costs
//! the size of that service, never of the cluster. [`Zone::lookup`] parses the query name by
//! its shape (as CoreDNS does) and answers from hash maps:
//!
//! | name (below the cluster domain) | answers |
//! |---|---|
//! | (apex) | SOA, NS |
//! | `dns-version` | TXT `1.1.0` (the DNS specification's schema version) |
//! | `ns.dns` | A: the cluster DNS address |
//! | `svc`, `pod`, `NS.svc`, `NS.pod` | no data (they exist: empty non-terminals) |
//! | `NAME.NS.svc` | the service's addresses, SRV for all its named ports, or a CNAME |
//! | `HOST.NAME.NS.svc` | a headless service's host |
//! | `_PORT._PROTO.NAME.NS.svc` | SRV |
//! | `A-B-C-D.NS.pod` | A A.B.C.D (any address, as CoreDNS's `pods insecure`, in an existing namespace) |
//!
//! Anything else below the domain is NXDOMAIN (with the SOA); `in-addr.arpa` / `ip6.arpa`
//! names answer PTR for known addresses and are otherwise not ours (forwarded).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::records::{Kind, ServiceRecords, undashed};

/// The TTL of every answer, and of negative answers (the SOA's minimum).
pub const TTL: u32 = 5;

/// The answer to one question.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Not in a zone this server is authoritative for: forward it.
    NotOurs,
    /// The zone has not been loaded from the API yet (SERVFAIL; clients retry).
    NotReady,
    /// The name does not exist (NXDOMAIN with the SOA).
    NxDomain,
    /// The name exists, without records of this type (NOERROR, the SOA, no answers).
    NoData,
    /// Records.
    Records {
        /// The answer section.
        answers: Vec<Record>,
        /// Addresses of SRV targets.
        additionals: Vec<Record>,
        /// An ExternalName's target, still to be resolved for the query's type.
        chase: Option<Name>,
    },
}

/// The cluster zone.
#[derive(Debug)]
pub struct Zone {
    domain: Name,
    dns_ip: Option<IpAddr>,
    /// namespace → service name → records (looked up by `&str`, without allocating).
    services: HashMap<String, HashMap<String, Arc<ServiceRecords>>>,
    count: usize,
    namespaces: HashSet<String>,
    ptr: HashMap<IpAddr, BTreeSet<Name>>,
    serial: u32,
    synced: bool,
}

impl Zone {
    /// An empty zone for `domain` (`cluster.local`); `dns_ip` is what `ns.dns.DOMAIN` answers.
    pub fn new(domain: &str, dns_ip: Option<IpAddr>) -> anyhow::Result<Self> {
        let mut domain = Name::from_ascii(domain.trim_end_matches('.'))?.to_lowercase();
        domain.set_fqdn(true);
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Zone {
            domain,
            dns_ip,
            services: HashMap::new(),
            count: 0,
            namespaces: HashSet::new(),
            ptr: HashMap::new(),
            serial,
            synced: false,
        })
    }

    /// The cluster domain, as a fully qualified name.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// Marks the zone loaded (the first list of every watched resource is in).
    pub fn set_synced(&mut self) {
        self.synced = true;
    }

    /// Whether the zone has been loaded.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Forgets every namespace (before a relist of them).
    pub fn clear_namespaces(&mut self) {
        self.namespaces.clear();
    }

    /// How many services the zone holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the zone holds no service.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Replaces (or with None removes) the records of service `ns/name`.
    pub fn set_service(&mut self, ns: &str, name: &str, records: Option<ServiceRecords>) {
        let old = self.services.get_mut(ns).and_then(|m| m.remove(name));
        if let Some(old) = old {
            self.count -= 1;
            for (ip, target) in &old.ptr {
                if let Some(set) = self.ptr.get_mut(ip) {
                    set.remove(target);
                    if set.is_empty() {
                        self.ptr.remove(ip);
                    }
                }
            }
            if self.services.get(ns).is_some_and(HashMap::is_empty) {
                self.services.remove(ns);
            }
        }
        if let Some(records) = records {
            for (ip, target) in &records.ptr {
                self.ptr.entry(*ip).or_default().insert(target.clone());
            }
            self.count += 1;
            self.services
                .entry(ns.to_string())
                .or_default()
                .insert(name.to_string(), Arc::new(records));
        }
        self.serial = self.serial.wrapping_add(1);
    }

    /// Records that namespace `ns` exists (or no longer does).
    pub fn set_namespace(&mut self, ns: &str, exists: bool) {
        if exists {
            self.namespaces.insert(ns.to_string());
        } else {
            self.namespaces.remove(ns);
        }
    }

    /// The zone's SOA record.
    pub fn soa(&self) -> Record {
        let ns = self.ns_name();
        let mail = self
            .domain
            .prepend_label("hostmaster")
            .unwrap_or_else(|_| self.domain.clone());
        Record::from_rdata(
            self.domain.clone(),
            TTL,
            RData::SOA(SOA::new(ns, mail, self.serial, 7200, 1800, 86400, TTL)),
        )
    }

    fn ns_name(&self) -> Name {
        Name::from_ascii("ns.dns")
            .and_then(|n| n.append_domain(&self.domain))
            .unwrap_or_else(|_| self.domain.clone())
    }

    /// Answers `qtype` questions about `qname` (lowercase).
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Answer {
        if self.domain.zone_of(qname) {
            if !self.synced {
                return Answer::NotReady;
            }
            return self.lookup_cluster(qname, qtype);
        }
        self.lookup_reverse(qname, qtype)
    }

    fn lookup_cluster(&self, qname: &Name, qtype: RecordType) -> Answer {
        let depth = qname.num_labels() as usize - self.domain.num_labels() as usize;
        let mut labels = Vec::with_capacity(depth);
        for label in qname.iter().take(depth) {
            match std::str::from_utf8(label) {
                Ok(l) => labels.push(l),
                Err(_) => return Answer::NxDomain,
            }
        }
        let rec = |data: RData| Record::from_rdata(qname.clone(), TTL, data);
        match labels.as_slice() {
            [] => match qtype {
                RecordType::SOA => records(vec![self.soa()], vec![]),
                RecordType::NS => records(vec![rec(RData::NS(NS(self.ns_name())))], vec![]),
                _ => Answer::NoData,
            },
            ["dns-version"] => match qtype {
                RecordType::TXT | RecordType::ANY => records(
                    vec![rec(RData::TXT(TXT::new(vec!["1.1.0".into()])))],
                    vec![],
                ),
                _ => Answer::NoData,
            },
            ["ns", "dns"] => match self.dns_ip {
                Some(ip) => addresses(qname, &[ip], qtype),
                None => Answer::NxDomain,
            },
            ["dns"] | ["svc"] | ["pod"] => Answer::NoData,
            [ns, "svc"] | [ns, "pod"] => {
                if self.namespace_exists(ns) {
                    Answer::NoData
                } else {
                    Answer::NxDomain
                }
            }
            [ip, ns, "pod"] => match undashed(ip) {
                Some(ip) if self.namespace_exists(ns) => addresses(qname, &[ip], qtype),
                _ => Answer::NxDomain,
            },
            [name, ns, "svc"] => match self.service(ns, name) {
                Some(svc) => service_answer(qname, svc, qtype),
                None => Answer::NxDomain,
            },
            [proto, name, ns, "svc"] if proto.starts_with('_') => match self.service(ns, name) {
                Some(svc) if svc.srv.iter().any(|s| s.proto == proto[1..]) => Answer::NoData,
                _ => Answer::NxDomain,
            },
            [host, name, ns, "svc"] => match self.service(ns, name) {
                Some(svc) if svc.kind == Kind::Headless => match svc.hosts.get(*host) {
                    Some(ips) => addresses(qname, ips, qtype),
                    None => Answer::NxDomain,
                },
                _ => Answer::NxDomain,
            },
            [port, proto, name, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                let Some(svc) = self.service(ns, name) else {
                    return Answer::NxDomain;
                };
                let matching: Vec<_> = svc
                    .srv
                    .iter()
                    .filter(|s| s.port_name == port[1..] && s.proto == proto[1..])
                    .collect();
                if matching.is_empty() {
                    return Answer::NxDomain;
                }
                if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
                    return Answer::NoData;
                }
                srv_answer(qname, svc, matching)
            }
            _ => Answer::NxDomain,
        }
    }

    fn service(&self, ns: &str, name: &str) -> Option<&ServiceRecords> {
        self.services.get(ns)?.get(name).map(Arc::as_ref)
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.namespaces.contains(ns) || self.services.contains_key(ns)
    }

    fn lookup_reverse(&self, qname: &Name, qtype: RecordType) -> Answer {
        let Some(ip) = reverse_ip(qname) else {
            return Answer::NotOurs;
        };
        let Some(names) = self.ptr.get(&ip) else {
            return Answer::NotOurs;
        };
        if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
            return Answer::NoData;
        }
        let answers = names
            .iter()
            .map(|n| Record::from_rdata(qname.clone(), TTL, RData::PTR(PTR(n.clone()))))
            .collect();
        records(answers, vec![])
    }
}

fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
    Answer::Records {
        answers,
        additionals,
        chase: None,
    }
}

/// A and AAAA records for `ips` named `qname`, for a question of type `qtype`.
fn address_records(qname: &Name, ips: &[IpAddr], qtype: RecordType) -> Vec<Record> {
    ips.iter()
        .filter_map(|ip| match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(*v6))),
            _ => None,
        })
        .map(|data| Record::from_rdata(qname.clone(), TTL, data))
        .collect()
}

fn addresses(qname: &Name, ips: &[IpAddr], qtype: RecordType) -> Answer {
    let answers = address_records(qname, ips, qtype);
    if answers.is_empty() {
        Answer::NoData
    } else {
        records(answers, vec![])
    }
}

fn service_answer(qname: &Name, svc: &ServiceRecords, qtype: RecordType) -> Answer {
    match &svc.kind {
        Kind::ExternalName(target) => {
            let cname = Record::from_rdata(qname.clone(), TTL, RData::CNAME(CNAME(target.clone())));
            let chase = !matches!(qtype, RecordType::CNAME);
            Answer::Records {
                answers: vec![cname],
                additionals: vec![],
                chase: chase.then(|| target.clone()),
            }
        }
        _ if qtype == RecordType::SRV => {
            if svc.srv.is_empty() {
                Answer::NoData
            } else {
                srv_answer(qname, svc, svc.srv.iter().collect())
            }
        }
        _ => addresses(qname, &svc.addrs, qtype),
    }
}

fn srv_answer(qname: &Name, svc: &ServiceRecords, srv: Vec<&crate::records::Srv>) -> Answer {
    let weight = (100 / srv.len().max(1)).max(1) as u16;
    let mut answers = Vec::with_capacity(srv.len());
    let mut additionals = Vec::new();
    let mut seen = HashSet::new();
    for s in srv {
        answers.push(Record::from_rdata(
            qname.clone(),
            TTL,
            RData::SRV(SRV::new(0, weight, s.port, s.target.clone())),
        ));
        if !seen.insert(s.target.clone()) {
            continue;
        }
        let ips: &[IpAddr] = if s.target == svc.name {
            &svc.addrs
        } else {
            s.target
                .iter()
                .next()
                .and_then(|l| std::str::from_utf8(l).ok())
                .and_then(|l| svc.hosts.get(l))
                .map_or(&[], Vec::as_slice)
        };
        additionals.extend(address_records(&s.target, ips, RecordType::ANY));
    }
    records(answers, additionals)
}

/// The address a reverse name (`D.C.B.A.in-addr.arpa.`, or 32 nibbles then `ip6.arpa.`) stands
/// for.
pub fn reverse_ip(qname: &Name) -> Option<IpAddr> {
    let labels: Vec<&str> = qname
        .iter()
        .map(std::str::from_utf8)
        .collect::<Result<_, _>>()
        .ok()?;
    match labels.as_slice() {
        [d, c, b, a, "in-addr", "arpa"] => {
            let octets: Vec<u8> = [a, b, c, d]
                .iter()
                .map(|o| o.parse::<u8>().ok())
                .collect::<Option<_>>()?;
            Some(IpAddr::from([octets[0], octets[1], octets[2], octets[3]]))
        }
        [nibbles @ .., "ip6", "arpa"] if nibbles.len() == 32 => {
            let mut v: u128 = 0;
            for n in nibbles.iter().rev() {
                let digit = u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1)?;
                v = (v << 4) | u128::from(digit);
            }
            Some(IpAddr::V6(v.into()))
        }
        _ => None,
    }
}

/// The reverse name of `ip` (`5.0.42.10.in-addr.arpa.`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            s + "ip6.arpa."
        }
    }
}

#[cfg(test)]
#[path = "zone_tests.rs"]
mod tests;
