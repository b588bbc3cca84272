//! core/v1 PersistentVolumeClaim: Filesystem volume mode and Pending phase by default, access
//! mode and storage request validation, the update rule, and the STATUS..VOLUMEMODE table.

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
};
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{self, required_because};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

/// Access modes, in the order kubectl prints them, with their short forms.
pub const ACCESS_MODES: [(&str, &str); 4] = [
    ("ReadWriteOnce", "RWO"),
    ("ReadOnlyMany", "ROX"),
    ("ReadWriteMany", "RWX"),
    ("ReadWriteOncePod", "RWOP"),
];

/// Access modes as `RWO,ROX` (upstream's `GetAccessModesAsString`).
pub fn access_modes_string(modes: Option<&Vec<String>>) -> String {
    let modes = modes.map(|m| m.as_slice()).unwrap_or_default();
    ACCESS_MODES
        .iter()
        .filter(|(long, _)| modes.iter().any(|m| m == long))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}

/// Validates a list of access modes under `path`.
pub fn validate_access_modes(
    modes: Option<&Vec<String>>,
    path: &str,
    causes: &mut Vec<FieldCause>,
) {
    let modes = modes.map(|m| m.as_slice()).unwrap_or_default();
    if modes.is_empty() {
        causes.push(required_because(path, "at least 1 access mode is required"));
    }
    let supported: Vec<&str> = ACCESS_MODES.iter().map(|(l, _)| *l).collect();
    for m in modes {
        validation::supported(path, Some(m), &supported, causes);
    }
}

/// Upstream's claim defaults, also applied to stateful set claim templates.
pub fn default_claim(pvc: &mut PersistentVolumeClaim) {
    pvc.spec
        .get_or_insert_with(PersistentVolumeClaimSpec::default)
        .volume_mode
        .get_or_insert_with(|| "Filesystem".into());
    pvc.status
        .get_or_insert_with(PersistentVolumeClaimStatus::default)
        .phase
        .get_or_insert_with(|| "Pending".into());
}

fn storage_class(pvc: &PersistentVolumeClaim) -> String {
    let ann = pvc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"));
    ann.cloned()
        .or_else(|| pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone()))
        .unwrap_or_default()
}

impl Behavior for PersistentVolumeClaim {
    const SHORT_NAMES: &'static [&'static str] = &["pvc"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn apply_defaults(&mut self) {
        default_claim(self);
    }

    fn prepare_for_create(&mut self) {
        self.status = Some(Default::default());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        let Some(spec) = &self.spec else {
            return vec![FieldCause::required("spec")];
        };
        validate_access_modes(spec.access_modes.as_ref(), "spec.accessModes", &mut causes);
        let storage = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"));
        match storage {
            None if spec.data_source.is_none() && spec.data_source_ref.is_none() => {
                causes.push(FieldCause::required("spec.resources[storage]"))
            }
            Some(q) if validation::parse_quantity(&q.0).is_none_or(|v| v <= 0.0) => {
                causes.push(FieldCause::invalid(
                    "spec.resources.requests[storage]",
                    &q.0,
                    "must be greater than zero",
                ))
            }
            _ => {}
        }
        validation::supported(
            "spec.volumeMode",
            spec.volume_mode.as_deref(),
            &["Block", "Filesystem"],
            &mut causes,
        );
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            let strip = |s: &PersistentVolumeClaimSpec| {
                let mut s = s.clone();
                s.resources = None;
                s.volume_attributes_class_name = None;
                if old_spec.volume_name.as_deref().unwrap_or("").is_empty() {
                    s.volume_name = None;
                }
                // An unset class may be set once (upstream's retroactive default StorageClass).
                if old_spec.storage_class_name.is_none() {
                    s.storage_class_name = None;
                }
                s
            };
            if strip(spec) != strip(old_spec) {
                causes.push(FieldCause::forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Status",
                "string",
                "phase represents the current phase of PersistentVolumeClaim.",
            ),
            Column::new(
                "Volume",
                "string",
                "volumeName is the binding reference to the PersistentVolume backing this claim.",
            ),
            Column::new(
                "Capacity",
                "string",
                "capacity represents the actual resources of the underlying volume.",
            ),
            Column::new(
                "Access Modes",
                "string",
                "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1",
            ),
            Column::new("StorageClass", "string", "StorageClass of the pvc"),
            Column::new(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the pvc",
            ),
            Column::age(),
            Column::wide(
                "VolumeMode",
                "string",
                "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec.",
            ),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let mut phase = st.phase.clone().unwrap_or_default();
        if self.metadata.deletion_timestamp.is_some() {
            phase = "Terminating".into();
        }
        let volume = spec.volume_name.clone().unwrap_or_default();
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            let cap = st
                .capacity
                .as_ref()
                .and_then(|c| c.get("storage"))
                .map_or_else(|| "0".into(), |q| q.0.clone());
            (cap, access_modes_string(st.access_modes.as_ref()))
        };
        vec![
            Value::String(phase),
            Value::String(volume),
            Value::String(capacity),
            Value::String(modes),
            Value::String(storage_class(self)),
            Value::String(
                spec.volume_attributes_class_name
                    .clone()
                    .unwrap_or_else(|| "<unset>".into()),
            ),
            age_cell(&self.metadata),
            Value::String(spec.volume_mode.clone().unwrap_or_else(|| "<unset>".into())),
        ]
    }
}
