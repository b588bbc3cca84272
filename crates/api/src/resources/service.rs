//! core/v1 Service: upstream's defaults (ClusterIP, None affinity, TCP ports with targetPort =
//! port, traffic policies, IP family policy), validation (types, ports, external names, what an
//! update may change in `clusterIPs`), the TYPE..PORT(S) table and the `spec.clusterIP`/`spec.type`
//! field selectors. Cluster IP and node port allocation belong to the API server.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{
    LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::podspec::PROTOCOLS;
use crate::resources::validation::{
    self, DNS1123_LABEL_MSG, PORT_RANGE_MSG, invalid_raw, is_dns1123_label, is_port_name,
};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

fn externally_accessible(spec: &ServiceSpec) -> bool {
    match spec.type_.as_deref() {
        Some("LoadBalancer" | "NodePort") => true,
        Some("ClusterIP") => spec
            .external_ips
            .as_ref()
            .is_some_and(|ips| !ips.is_empty()),
        _ => false,
    }
}

/// The PORT(S) cell: `80/TCP,443:30443/TCP`.
pub fn port_string(ports: &[ServicePort]) -> String {
    let pieces: Vec<String> = ports
        .iter()
        .map(|p| {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            match p.node_port.filter(|n| *n > 0) {
                Some(n) => format!("{}:{n}/{proto}", p.port),
                None => format!("{}/{proto}", p.port),
            }
        })
        .collect();
    pieces.join(",")
}

fn external_ip(svc: &Service) -> String {
    let spec = svc.spec.clone().unwrap_or_default();
    let external = spec.external_ips.clone().unwrap_or_default();
    match spec.type_.as_deref() {
        Some("ClusterIP" | "NodePort") if !external.is_empty() => external.join(","),
        Some("ClusterIP" | "NodePort") => "<none>".into(),
        Some("LoadBalancer") => {
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.clone())
                .unwrap_or_default();
            let mut all: Vec<String> = ingress
                .into_iter()
                .filter_map(|i| i.ip.filter(|s| !s.is_empty()).or(i.hostname))
                .collect();
            all.extend(external);
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        Some("ExternalName") => spec.external_name.unwrap_or_default(),
        _ => "<unknown>".into(),
    }
}

fn primary_ips(spec: &ServiceSpec) -> Vec<String> {
    match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.clone(),
        (_, Some(ip)) if !ip.is_empty() => vec![ip.clone()],
        _ => vec![],
    }
}

fn validate_ports(spec: &ServiceSpec, causes: &mut Vec<FieldCause>) {
    let ports = spec.ports.as_deref().unwrap_or_default();
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        match p.name.as_deref().unwrap_or("") {
            "" if ports.len() > 1 => causes.push(FieldCause::required(format!("{pp}.name"))),
            "" => {}
            n if !is_dns1123_label(n) => causes.push(FieldCause::invalid(
                format!("{pp}.name"),
                n,
                DNS1123_LABEL_MSG,
            )),
            n if !names.insert(n) => causes.push(FieldCause::duplicate(format!("{pp}.name"), n)),
            _ => {}
        }
        if !(1..=65535).contains(&p.port) {
            causes.push(invalid_raw(format!("{pp}.port"), p.port, PORT_RANGE_MSG));
        }
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        validation::supported(&format!("{pp}.protocol"), Some(proto), PROTOCOLS, causes);
        if !keys.insert((p.port, proto)) {
            causes.push(FieldCause {
                reason: "FieldValueDuplicate",
                field: pp.clone(),
                message: format!(
                    "Duplicate value: core.ServicePort{{Name:\"\", Protocol:{proto:?}, Port:{}}}",
                    p.port
                ),
            });
        }
        match &p.target_port {
            Some(IntOrString::Int(t)) if !(1..=65535).contains(t) => {
                causes.push(invalid_raw(format!("{pp}.targetPort"), t, PORT_RANGE_MSG))
            }
            Some(IntOrString::String(s)) if !is_port_name(s) => causes.push(FieldCause::invalid(
                format!("{pp}.targetPort"),
                s,
                "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            )),
            _ => {}
        }
        if let Some(n) = p.node_port.filter(|n| *n != 0) {
            if spec.type_.as_deref() == Some("ClusterIP") {
                causes.push(FieldCause::forbidden(
                    format!("{pp}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !(1..=65535).contains(&n) {
                causes.push(invalid_raw(format!("{pp}.nodePort"), n, PORT_RANGE_MSG));
            }
        }
    }
}

impl Behavior for Service {
    const SHORT_NAMES: &'static [&'static str] = &["svc"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["proxy", "status"];

    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(ServiceSpec::default);
        let affinity = spec.session_affinity.get_or_insert_with(|| "None".into());
        if affinity == "None" {
            spec.session_affinity_config = None;
        } else if affinity == "ClientIP" {
            let cfg = spec
                .session_affinity_config
                .get_or_insert_with(Default::default);
            cfg.client_ip
                .get_or_insert_with(Default::default)
                .timeout_seconds
                .get_or_insert(10800);
        }
        let kind = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
        for p in spec.ports.iter_mut().flatten() {
            p.protocol.get_or_insert_with(|| "TCP".into());
            let unset = matches!(&p.target_port, None | Some(IntOrString::Int(0)))
                || matches!(&p.target_port, Some(IntOrString::String(s)) if s.is_empty());
            if unset {
                p.target_port = Some(IntOrString::Int(p.port));
            }
        }
        if externally_accessible(spec) {
            spec.external_traffic_policy
                .get_or_insert_with(|| "Cluster".into());
        }
        if kind != "ExternalName" {
            spec.internal_traffic_policy
                .get_or_insert_with(|| "Cluster".into());
            let headless_no_selector = spec.cluster_ip.as_deref() == Some("None")
                && spec.selector.as_ref().is_none_or(|s| s.is_empty());
            let policy = if headless_no_selector {
                "RequireDualStack"
            } else {
                "SingleStack"
            };
            spec.ip_family_policy.get_or_insert_with(|| policy.into());
            if spec.ip_families.as_ref().is_none_or(|f| f.is_empty()) {
                let v6 = primary_ips(spec).first().is_some_and(|ip| ip.contains(':'));
                spec.ip_families = Some(vec![if v6 { "IPv6" } else { "IPv4" }.into()]);
            }
        }
        if kind == "LoadBalancer" {
            spec.allocate_load_balancer_node_ports.get_or_insert(true);
        }
    }

    fn prepare_for_create(&mut self) {
        self.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus::default()),
            conditions: None,
        });
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let Some(spec) = &self.spec else {
            return vec![FieldCause::required("spec.ports")];
        };
        let mut causes = vec![];
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        validation::supported("spec.type", Some(kind), TYPES, &mut causes);
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if spec.ports.as_ref().is_none_or(|p| p.is_empty()) && !headless && kind != "ExternalName" {
            causes.push(FieldCause::required("spec.ports"));
        }
        if kind == "ExternalName" {
            match spec.external_name.as_deref().unwrap_or("") {
                "" => causes.push(FieldCause::required("spec.externalName")),
                n if !validation::is_dns1123_subdomain(n.trim_end_matches('.')) => causes.push(
                    FieldCause::invalid("spec.externalName", n, validation::DNS1123_SUBDOMAIN_MSG),
                ),
                _ => {}
            }
            if spec.cluster_ips.as_ref().is_some_and(|ips| !ips.is_empty()) {
                causes.push(FieldCause::forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
        }
        if let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            causes.push(FieldCause::invalid(
                "spec.clusterIPs[0]",
                ip,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
        validate_ports(spec, &mut causes);
        validation::supported(
            "spec.sessionAffinity",
            spec.session_affinity.as_deref(),
            &["ClientIP", "None"],
            &mut causes,
        );
        validation::supported(
            "spec.ipFamilyPolicy",
            spec.ip_family_policy.as_deref(),
            &["SingleStack", "PreferDualStack", "RequireDualStack"],
            &mut causes,
        );
        validation::supported(
            "spec.internalTrafficPolicy",
            spec.internal_traffic_policy.as_deref(),
            &["Cluster", "Local"],
            &mut causes,
        );
        if let Some(p) = spec.external_traffic_policy.as_deref() {
            if !externally_accessible(spec) {
                causes.push(FieldCause::invalid(
                    "spec.externalTrafficPolicy",
                    p,
                    "may only be set for externally-accessible services",
                ));
            } else {
                validation::supported(
                    "spec.externalTrafficPolicy",
                    Some(p),
                    &["Cluster", "Local"],
                    &mut causes,
                );
            }
        }
        // Cluster IPs may not change, except when moving to or from ExternalName.
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            let old_kind = old_spec.type_.as_deref().unwrap_or("ClusterIP");
            let (old_ips, new_ips) = (primary_ips(old_spec), primary_ips(spec));
            if old_kind != "ExternalName"
                && kind != "ExternalName"
                && let (Some(o), Some(n)) = (old_ips.first(), new_ips.first())
                && o != n
            {
                let shown: Vec<String> = new_ips.iter().map(|ip| format!("{ip:?}")).collect();
                causes.push(invalid_raw(
                    "spec.clusterIPs[0]",
                    format!("[]string{{{}}}", shown.join(", ")),
                    "may not change once set",
                ));
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Type",
                "string",
                "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types",
            ),
            Column::new(
                "Cluster-IP",
                "string",
                "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
            ),
            Column::new(
                "External-IP",
                "string",
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.",
            ),
            Column::new(
                "Port(s)",
                "string",
                "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
            ),
            Column::age(),
            Column::wide(
                "Selector",
                "string",
                "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
            ),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let ports = port_string(spec.ports.as_deref().unwrap_or_default());
        vec![
            Value::String(spec.type_.clone().unwrap_or_default()),
            Value::String(
                spec.cluster_ips
                    .as_ref()
                    .and_then(|ips| ips.first().cloned())
                    .unwrap_or_else(|| "<none>".into()),
            ),
            Value::String(external_ip(self)),
            Value::String(if ports.is_empty() {
                "<none>".into()
            } else {
                ports
            }),
            age_cell(&self.metadata),
            Value::String(validation::format_labels(spec.selector.as_ref())),
        ]
    }

    fn field(&self, label: &str) -> Option<String> {
        let spec = self.spec.as_ref();
        match label {
            "spec.clusterIP" => Some(spec.and_then(|s| s.cluster_ip.clone()).unwrap_or_default()),
            "spec.type" => Some(spec.and_then(|s| s.type_.clone()).unwrap_or_default()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: Value) -> Service {
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn defaults_and_ports_column() {
        let mut s = svc(
            json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443, "targetPort": "https", "nodePort": 30443}]}}),
        );
        s.prepare_for_create();
        s.apply_defaults();
        let v = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(v["spec"]["sessionAffinity"], "None");
        assert_eq!(v["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(v["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(v["spec"]["ports"][1]["targetPort"], "https");
        assert_eq!(v["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(v["spec"]["internalTrafficPolicy"], "Cluster");
        assert_eq!(v["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(v["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(v["status"], json!({"loadBalancer": {}}));
        assert!(s.validate(None).is_empty(), "{:?}", s.validate(None));
        let cells = s.cells();
        assert_eq!(cells[0], "NodePort");
        assert_eq!(cells[1], "<none>");
        assert_eq!(cells[3], "80/TCP,443:30443/TCP");
        assert_eq!(cells[5], "app=web");
    }

    #[test]
    fn cluster_ip_is_immutable() {
        let mut old = svc(
            json!({"spec": {"ports": [{"port": 80}], "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"]}}),
        );
        old.apply_defaults();
        let mut new = old.clone();
        if let Some(s) = new.spec.as_mut() {
            s.cluster_ip = Some("10.0.0.6".into());
            s.cluster_ips = Some(vec!["10.0.0.6".into()]);
        }
        let causes = new.validate(Some(&old));
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.clusterIPs[0]");
        assert_eq!(
            causes[0].message,
            r#"Invalid value: []string{"10.0.0.6"}: may not change once set"#
        );
        // Moving to ExternalName may drop the IP.
        if let Some(s) = new.spec.as_mut() {
            s.type_ = Some("ExternalName".into());
            s.external_name = Some("example.com".into());
            s.cluster_ip = None;
            s.cluster_ips = None;
            s.ports = None;
        }
        assert!(
            new.validate(Some(&old))
                .iter()
                .all(|c| c.field != "spec.clusterIPs[0]")
        );
    }

    #[test]
    fn ports_are_required_and_checked() {
        let s = svc(json!({"spec": {"type": "ClusterIP"}}));
        assert_eq!(s.validate(None)[0].field, "spec.ports");
        let s = svc(json!({"spec": {"clusterIP": "None"}}));
        assert!(s.validate(None).is_empty());
        let s = svc(json!({"spec": {"ports": [{"port": 0}]}}));
        assert_eq!(
            s.validate(None)[0].message,
            "Invalid value: 0: must be between 1 and 65535, inclusive"
        );
    }
}
