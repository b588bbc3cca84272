//! networking.k8s.io/v1 NetworkPolicy: TCP ports and policy types defaulted as upstream, port and
//! policy type validation, and the POD-SELECTOR table.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::podspec::PROTOCOLS;
use crate::resources::validation::{self, PORT_RANGE_MSG, invalid_raw};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for NetworkPolicy {
    const SHORT_NAMES: &'static [&'static str] = &["netpol"];

    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        let ports = spec
            .ingress
            .iter_mut()
            .flatten()
            .flat_map(|r| r.ports.iter_mut().flatten());
        for p in ports {
            p.protocol.get_or_insert_with(|| "TCP".into());
        }
        for p in spec
            .egress
            .iter_mut()
            .flatten()
            .flat_map(|r| r.ports.iter_mut().flatten())
        {
            p.protocol.get_or_insert_with(|| "TCP".into());
        }
        if spec.policy_types.as_ref().is_none_or(|t| t.is_empty()) {
            let mut types = vec!["Ingress".to_string()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                types.push("Egress".into());
            }
            spec.policy_types = Some(types);
        }
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        let spec = self.spec.clone().unwrap_or_default();
        if let Some(sel) = &spec.pod_selector {
            causes.extend(validation::validate_label_selector(sel, "spec.podSelector"));
        }
        for (kind, rules) in [
            (
                "ingress",
                spec.ingress
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| r.ports)
                    .collect::<Vec<_>>(),
            ),
            (
                "egress",
                spec.egress
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| r.ports)
                    .collect(),
            ),
        ] {
            for (i, ports) in rules.iter().enumerate() {
                for (j, p) in ports.iter().flatten().enumerate() {
                    let pp = format!("spec.{kind}[{i}].ports[{j}]");
                    validation::supported(
                        &format!("{pp}.protocol"),
                        p.protocol.as_deref(),
                        PROTOCOLS,
                        &mut causes,
                    );
                    if let Some(IntOrString::Int(n)) = &p.port
                        && !(1..=65535).contains(n)
                    {
                        causes.push(invalid_raw(format!("{pp}.port"), n, PORT_RANGE_MSG));
                    }
                }
            }
        }
        let types = spec.policy_types.clone().unwrap_or_default();
        for (i, t) in types.iter().enumerate() {
            validation::supported(
                &format!("spec.policyTypes[{i}]"),
                Some(t),
                &["Ingress", "Egress"],
                &mut causes,
            );
        }
        if types.len() > 2 {
            causes.push(FieldCause::invalid(
                "spec.policyTypes",
                types.join(","),
                "may not specify more than two policyTypes",
            ));
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Pod-Selector",
                "string",
                "podSelector selects the pods to which this NetworkPolicy object applies. The array of rules is applied to any pods selected by this field. An empty selector matches all pods in the policy's namespace. Multiple network policies can select the same set of pods. In this case, the ingress rules for each are combined additively. This field is optional. If it is not specified, it defaults to an empty selector.",
            ),
            Column::age(),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let sel = self.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
        vec![
            Value::String(validation::format_label_selector(sel)),
            age_cell(&self.metadata),
        ]
    }
}
