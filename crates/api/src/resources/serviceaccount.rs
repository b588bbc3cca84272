//! core/v1 ServiceAccount: the `token` subresource and the SECRETS table.

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::Value;

use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for ServiceAccount {
    const SHORT_NAMES: &'static [&'static str] = &["sa"];
    const SUBRESOURCES: &'static [&'static str] = &["token"];

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Secrets",
                "string",
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret",
            ),
            Column::age(),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        vec![
            Value::from(self.secrets.as_ref().map_or(0, |s| s.len())),
            age_cell(&self.metadata),
        ]
    }
}
