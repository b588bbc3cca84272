//! networking.k8s.io/v1 Ingress: rule/path/backend validation as upstream (absolute paths,
//! supported path types, one backend kind, a port name or number), and the
//! CLASS/HOSTS/ADDRESS/PORTS table.

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{self, PORT_RANGE_MSG, invalid_raw};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

fn validate_backend(b: &IngressBackend, path: &str, causes: &mut Vec<FieldCause>) {
    match (&b.service, &b.resource) {
        (Some(_), Some(_)) => causes.push(FieldCause::invalid(
            path,
            "",
            "cannot set both service and resource backends",
        )),
        (None, None) => causes.push(validation::required_because(
            path,
            "at least one backend must be specified",
        )),
        (Some(s), None) => {
            if s.name.is_empty() {
                causes.push(FieldCause::required(format!("{path}.service.name")));
            }
            let port = s.port.clone().unwrap_or_default();
            match (port.name.as_deref().filter(|n| !n.is_empty()), port.number) {
                (Some(_), Some(_)) => causes.push(FieldCause::invalid(
                    format!("{path}.service.port"),
                    "",
                    "cannot set both port name & port number",
                )),
                (None, None) => causes.push(FieldCause::invalid(
                    format!("{path}.service.port"),
                    "",
                    "port name or number is required",
                )),
                (None, Some(n)) if !(1..=65535).contains(&n) => causes.push(invalid_raw(
                    format!("{path}.service.port.number"),
                    n,
                    PORT_RANGE_MSG,
                )),
                _ => {}
            }
        }
        (None, Some(r)) => {
            if r.kind.is_empty() {
                causes.push(FieldCause::required(format!("{path}.resource.kind")));
            }
            if r.name.is_empty() {
                causes.push(FieldCause::required(format!("{path}.resource.name")));
            }
        }
    }
}

impl Behavior for Ingress {
    const SHORT_NAMES: &'static [&'static str] = &["ing"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn prepare_for_create(&mut self) {
        self.status = Some(Default::default());
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        let spec = self.spec.clone().unwrap_or_default();
        let rules = spec.rules.clone().unwrap_or_default();
        if rules.is_empty() && spec.default_backend.is_none() {
            causes.push(FieldCause::invalid(
                "spec.rules",
                "[]",
                "either `defaultBackend` or `rules` must be specified",
            ));
        }
        if let Some(b) = &spec.default_backend {
            validate_backend(b, "spec.defaultBackend", &mut causes);
        }
        for (i, rule) in rules.iter().enumerate() {
            let rp = format!("spec.rules[{i}]");
            if let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty()) {
                let bare = host.strip_prefix("*.").unwrap_or(host);
                if host.parse::<std::net::IpAddr>().is_ok() {
                    causes.push(FieldCause::invalid(
                        format!("{rp}.host"),
                        host,
                        "must be a DNS name, not an IP address",
                    ));
                } else if !validation::is_dns1123_subdomain(bare) {
                    causes.push(FieldCause::invalid(
                        format!("{rp}.host"),
                        host,
                        validation::DNS1123_SUBDOMAIN_MSG,
                    ));
                }
            }
            let Some(http) = &rule.http else { continue };
            if http.paths.is_empty() {
                causes.push(FieldCause::required(format!("{rp}.http.paths")));
            }
            for (j, p) in http.paths.iter().enumerate() {
                let pp = format!("{rp}.http.paths[{j}]");
                validation::supported(
                    &format!("{pp}.pathType"),
                    Some(&p.path_type),
                    &["Exact", "ImplementationSpecific", "Prefix"],
                    &mut causes,
                );
                let path = p.path.as_deref().unwrap_or("");
                if (p.path_type == "Exact" || p.path_type == "Prefix") && !path.starts_with('/') {
                    causes.push(FieldCause::invalid(
                        format!("{pp}.path"),
                        path,
                        "must be an absolute path",
                    ));
                } else if p.path_type == "Prefix" && path.contains("//") {
                    causes.push(FieldCause::invalid(
                        format!("{pp}.path"),
                        path,
                        "must not contain '//'",
                    ));
                } else if p.path_type == "ImplementationSpecific"
                    && !path.is_empty()
                    && !path.starts_with('/')
                {
                    causes.push(FieldCause::invalid(
                        format!("{pp}.path"),
                        path,
                        "must be an absolute path",
                    ));
                }
                validate_backend(&p.backend, &format!("{pp}.backend"), &mut causes);
            }
        }
        if let Some(c) = spec
            .ingress_class_name
            .as_deref()
            .filter(|c| !validation::is_dns1123_subdomain(c))
        {
            causes.push(FieldCause::invalid(
                "spec.ingressClassName",
                c,
                validation::DNS1123_SUBDOMAIN_MSG,
            ));
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Class",
                "string",
                "The name of the IngressClass resource that should be used for ingress",
            ),
            Column::new(
                "Hosts",
                "string",
                "Hosts that incoming requests are matched against before the ingress rule",
            ),
            Column::new(
                "Address",
                "string",
                "Address is a list containing ingress points for the load-balancer",
            ),
            Column::new("Ports", "string", "Ports of TLS configurations that open"),
            Column::age(),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let hosts: Vec<String> = spec
            .rules
            .iter()
            .flatten()
            .filter_map(|r| r.host.clone().filter(|h| !h.is_empty()))
            .collect();
        let hosts = match hosts.len() {
            0 => "*".to_string(),
            n if n > 3 => format!("{} + {} more...", hosts[..3].join(","), n - 3),
            _ => hosts.join(","),
        };
        let lb = self
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.clone())
            .unwrap_or_default();
        let address: Vec<String> = lb
            .into_iter()
            .filter_map(|i| i.ip.filter(|s| !s.is_empty()).or(i.hostname))
            .collect();
        let ports = if spec.tls.as_ref().is_some_and(|t| !t.is_empty()) {
            "80, 443"
        } else {
            "80"
        };
        vec![
            Value::String(
                spec.ingress_class_name
                    .clone()
                    .unwrap_or_else(|| "<none>".into()),
            ),
            Value::String(hosts),
            Value::String(address.join(",")),
            Value::String(ports.into()),
            age_cell(&self.metadata),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_and_backends() {
        let ing: Ingress = serde_json::from_value(json!({"metadata": {"name": "i"}, "spec": {"rules": [{"host": "a.example.com", "http": {"paths": [
            {"path": "foo", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            {"path": "/", "pathType": "Sometimes", "backend": {"service": {"name": "web"}}}]}}]}}))
        .unwrap_or_default();
        let causes = ing.validate(None);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.rules[0].http.paths[0].path",
                "spec.rules[0].http.paths[1].pathType",
                "spec.rules[0].http.paths[1].backend.service.port"
            ]
        );
        assert_eq!(
            causes[0].message,
            r#"Invalid value: "foo": must be an absolute path"#
        );
        assert_eq!(
            ing.cells()[..4],
            [
                json!("<none>"),
                json!("a.example.com"),
                json!(""),
                json!("80")
            ]
        );
    }
}
