//! storage.k8s.io/v1 StorageClass: Delete and Immediate by default, immutable parameters,
//! provisioner and policies, and the PROVISIONER..ALLOWVOLUMEEXPANSION table.

use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation;
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for StorageClass {
    const SHORT_NAMES: &'static [&'static str] = &["sc"];

    fn apply_defaults(&mut self) {
        self.reclaim_policy.get_or_insert_with(|| "Delete".into());
        self.volume_binding_mode
            .get_or_insert_with(|| "Immediate".into());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        if self.provisioner.is_empty() {
            causes.push(FieldCause::required("provisioner"));
        } else if !validation::is_qualified_name(&self.provisioner) {
            causes.push(FieldCause::invalid("provisioner", &self.provisioner, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        }
        validation::supported(
            "reclaimPolicy",
            self.reclaim_policy.as_deref(),
            &["Delete", "Retain"],
            &mut causes,
        );
        validation::supported(
            "volumeBindingMode",
            self.volume_binding_mode.as_deref(),
            &["Immediate", "WaitForFirstConsumer"],
            &mut causes,
        );
        if let Some(old) = old {
            if old.parameters != self.parameters {
                causes.push(FieldCause::forbidden(
                    "parameters",
                    "updates to parameters are forbidden.",
                ));
            }
            if old.provisioner != self.provisioner {
                causes.push(FieldCause::forbidden(
                    "provisioner",
                    "updates to provisioner are forbidden.",
                ));
            }
            if old.reclaim_policy != self.reclaim_policy {
                causes.push(FieldCause::forbidden(
                    "reclaimPolicy",
                    "updates to reclaimPolicy are forbidden.",
                ));
            }
            if old.volume_binding_mode != self.volume_binding_mode {
                causes.push(FieldCause::immutable(
                    "volumeBindingMode",
                    self.volume_binding_mode.as_deref().unwrap_or(""),
                ));
            }
        }
        causes
    }

    // NAME carries a "(default)" suffix for the default class, as upstream prints it.
    const NAME_COLUMN: bool = false;

    fn columns() -> Vec<Column> {
        vec![
            Column::name(),
            Column::new(
                "Provisioner",
                "string",
                "provisioner indicates the type of the provisioner.",
            ),
            Column::new(
                "ReclaimPolicy",
                "string",
                "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete.",
            ),
            Column::new(
                "VolumeBindingMode",
                "string",
                "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature.",
            ),
            Column::new(
                "AllowVolumeExpansion",
                "string",
                "allowVolumeExpansion shows whether the storage class allow volume expand.",
            ),
            Column::age(),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let name = self.metadata.name.clone().unwrap_or_default();
        let is_default = self.metadata.annotations.as_ref().is_some_and(|a| {
            [
                "storageclass.kubernetes.io/is-default-class",
                "storageclass.beta.kubernetes.io/is-default-class",
            ]
            .iter()
            .any(|k| a.get(*k).is_some_and(|v| v == "true"))
        });
        vec![
            Value::String(if is_default {
                format!("{name} (default)")
            } else {
                name
            }),
            Value::String(self.provisioner.clone()),
            Value::String(
                self.reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            Value::String(
                self.volume_binding_mode
                    .clone()
                    .unwrap_or_else(|| "Immediate".into()),
            ),
            Value::Bool(self.allow_volume_expansion.unwrap_or(false)),
            age_cell(&self.metadata),
        ]
    }
}
