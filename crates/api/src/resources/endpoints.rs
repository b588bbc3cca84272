//! core/v1 Endpoints: TCP ports by default, address/port validation and the ENDPOINTS table
//! (`10.0.0.1:80,10.0.0.2:80 + 3 more...`).

use k8s_openapi::api::core::v1::Endpoints;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::podspec::PROTOCOLS;
use crate::resources::validation::{self, PORT_RANGE_MSG, invalid_raw};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

/// Upstream's `formatEndpoints`: up to three `ip:port` pairs, then `+ N more...`.
pub fn format_endpoints(ep: &Endpoints) -> String {
    let subsets = ep.subsets.as_deref().unwrap_or_default();
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let (mut list, mut count, mut more) = (Vec::new(), 0, false);
    for ss in subsets {
        let addrs = ss.addresses.as_deref().unwrap_or_default();
        let ports = ss.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(a.ip.clone());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                let host = if a.ip.contains(':') {
                    format!("[{}]", a.ip)
                } else {
                    a.ip.clone()
                };
                list.push(format!("{host}:{}", p.port));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

impl Behavior for Endpoints {
    const SHORT_NAMES: &'static [&'static str] = &["ep"];

    fn apply_defaults(&mut self) {
        for ss in self.subsets.iter_mut().flatten() {
            for p in ss.ports.iter_mut().flatten() {
                p.protocol.get_or_insert_with(|| "TCP".into());
            }
        }
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        for (i, ss) in self.subsets.iter().flatten().enumerate() {
            let sp = format!("subsets[{i}]");
            for (kind, list) in [
                ("addresses", &ss.addresses),
                ("notReadyAddresses", &ss.not_ready_addresses),
            ] {
                for (j, a) in list.iter().flatten().enumerate() {
                    if a.ip.parse::<std::net::IpAddr>().is_err() {
                        causes.push(FieldCause::invalid(
                            format!("{sp}.{kind}[{j}].ip"),
                            &a.ip,
                            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                        ));
                    }
                }
            }
            let ports = ss.ports.as_deref().unwrap_or_default();
            for (j, p) in ports.iter().enumerate() {
                let pp = format!("{sp}.ports[{j}]");
                if ports.len() > 1 && p.name.as_deref().unwrap_or("").is_empty() {
                    causes.push(FieldCause::required(format!("{pp}.name")));
                }
                if !(1..=65535).contains(&p.port) {
                    causes.push(invalid_raw(format!("{pp}.port"), p.port, PORT_RANGE_MSG));
                }
                validation::supported(
                    &format!("{pp}.protocol"),
                    p.protocol.as_deref(),
                    PROTOCOLS,
                    &mut causes,
                );
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Endpoints",
                "string",
                "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.",
            ),
            Column::age(),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        vec![
            Value::String(format_endpoints(self)),
            age_cell(&self.metadata),
        ]
    }
}
