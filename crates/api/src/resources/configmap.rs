//! core/v1 ConfigMap.

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;

use crate::error::FieldCause;
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for ConfigMap {
    const SHORT_NAMES: &'static [&'static str] = &["cm"];

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        let keys = self
            .data
            .iter()
            .flat_map(|d| d.keys())
            .chain(self.binary_data.iter().flat_map(|d| d.keys()));
        for key in keys {
            if !crate::resources::validation::is_config_map_key(key) {
                causes.push(FieldCause::invalid(
                    format!("data[{key}]"),
                    key,
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                ));
            }
        }
        if let Some(old) = old
            && old.immutable == Some(true)
            && (old.data != self.data || old.binary_data != self.binary_data)
        {
            causes.push(FieldCause::forbidden(
                "data",
                "field is immutable when `immutable` is set",
            ));
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new("Data", "string", "Data contains the configuration data."),
            Column::age(),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let n = self.data.as_ref().map_or(0, |d| d.len())
            + self.binary_data.as_ref().map_or(0, |d| d.len());
        vec![Value::from(n), age_cell(&self.metadata)]
    }
}
