//! core/v1 Secret: type Opaque by default, `stringData` merged into `data` (as upstream's
//! conversion does), key/size/type validation, immutability, the TYPE/DATA table and the `type`
//! field selector.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{is_config_map_key, required_because};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

/// Upstream's limit on the total size of a secret's data.
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// Keys a secret of each built-in type must have.
fn required_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        _ => &[],
    }
}

impl Behavior for Secret {
    fn apply_defaults(&mut self) {
        if let Some(string_data) = self.string_data.take() {
            let data = self.data.get_or_insert_with(Default::default);
            for (k, v) in string_data {
                data.insert(k, ByteString(v.into_bytes()));
            }
        }
        if self.type_.as_deref().unwrap_or("").is_empty() {
            self.type_ = Some("Opaque".into());
        }
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        let data = self.data.clone().unwrap_or_default();
        let mut total = 0;
        for (k, v) in &data {
            if !is_config_map_key(k) {
                causes.push(FieldCause::invalid(format!("data[{k}]"), k, "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
            }
            total += v.0.len();
        }
        if total > MAX_SECRET_SIZE {
            causes.push(FieldCause::too_long("data", MAX_SECRET_SIZE));
        }
        let kind = self.type_.as_deref().unwrap_or("Opaque");
        for key in required_keys(kind) {
            if !data.contains_key(*key) {
                causes.push(FieldCause::required(format!("data[{key}]")));
            }
        }
        match kind {
            "kubernetes.io/service-account-token"
                if self
                    .metadata
                    .annotations
                    .as_ref()
                    .is_none_or(|a| !a.contains_key("kubernetes.io/service-account.name")) =>
            {
                causes.push(FieldCause::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                ));
            }
            "kubernetes.io/basic-auth"
                if !data.contains_key("username") && !data.contains_key("password") =>
            {
                causes.push(required_because("data[username]", ""));
                causes.push(required_because("data[password]", ""));
            }
            "kubernetes.io/dockerconfigjson"
                if data
                    .get(".dockerconfigjson")
                    .is_some_and(|v| serde_json::from_slice::<Value>(&v.0).is_err()) =>
            {
                causes.push(FieldCause::invalid(
                    "data[.dockerconfigjson]",
                    "<secret contents redacted>",
                    "invalid character in JSON",
                ));
            }
            _ => {}
        }
        if let Some(old) = old {
            if old.type_ != self.type_ {
                causes.push(FieldCause::immutable(
                    "type",
                    self.type_.as_deref().unwrap_or(""),
                ));
            }
            if old.immutable == Some(true) {
                if self.immutable != Some(true) {
                    causes.push(FieldCause::forbidden(
                        "immutable",
                        "field is immutable when `immutable` is set",
                    ));
                }
                if old.data != self.data {
                    causes.push(FieldCause::forbidden(
                        "data",
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Type",
                "string",
                "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
            ),
            Column::new(
                "Data",
                "string",
                "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
            ),
            Column::age(),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        vec![
            Value::String(self.type_.clone().unwrap_or_default()),
            Value::from(self.data.as_ref().map_or(0, |d| d.len())),
            age_cell(&self.metadata),
        ]
    }

    fn field(&self, label: &str) -> Option<String> {
        (label == "type").then(|| self.type_.clone().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_data_merges_and_limits_apply() {
        let mut s: Secret = serde_json::from_value(
            json!({"metadata": {"name": "s"}, "stringData": {"a": "x"}, "data": {"b": "eQ=="}}),
        )
        .unwrap_or_default();
        s.apply_defaults();
        let v = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(v["type"], "Opaque");
        assert_eq!(v["data"], json!({"a": "eA==", "b": "eQ=="}));
        assert!(v.get("stringData").is_none());
        assert!(s.validate(None).is_empty());
        assert_eq!(s.cells()[1], 2);
        let big: Secret =
            serde_json::from_value(json!({"data": {"k": base64_of(MAX_SECRET_SIZE + 1)}}))
                .unwrap_or_default();
        assert_eq!(big.validate(None)[0].field, "data");
        let tls: Secret =
            serde_json::from_value(json!({"type": "kubernetes.io/tls", "data": {"tls.crt": ""}}))
                .unwrap_or_default();
        assert_eq!(tls.validate(None)[0].field, "data[tls.key]");
    }

    fn base64_of(n: usize) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(vec![b'a'; n])
    }
}
