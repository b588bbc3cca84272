//! core/v1 PersistentVolume: Retain and Filesystem by default, Pending on create, validation of
//! the essentials, and the CAPACITY..VOLUMEMODE table.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeSpec, PersistentVolumeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::persistentvolumeclaim::{access_modes_string, validate_access_modes};
use crate::resources::validation;
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for PersistentVolume {
    const SHORT_NAMES: &'static [&'static str] = &["pv"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(PersistentVolumeSpec::default);
        spec.persistent_volume_reclaim_policy
            .get_or_insert_with(|| "Retain".into());
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        self.status
            .get_or_insert_with(PersistentVolumeStatus::default)
            .phase
            .get_or_insert_with(|| "Pending".into());
    }

    fn prepare_for_create(&mut self) {
        self.status = Some(PersistentVolumeStatus {
            phase: Some("Pending".into()),
            last_phase_transition_time: Some(Time(jiff::Timestamp::now())),
            ..Default::default()
        });
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        let Some(spec) = &self.spec else {
            return vec![FieldCause::required("spec")];
        };
        validate_access_modes(spec.access_modes.as_ref(), "spec.accessModes", &mut causes);
        match spec.capacity.as_ref().and_then(|c| c.get("storage")) {
            None => causes.push(FieldCause::required("spec.capacity")),
            Some(q) if validation::parse_quantity(&q.0).is_none() => causes.push(
                FieldCause::invalid("spec.capacity[storage]", &q.0, "must be a valid quantity"),
            ),
            _ => {}
        }
        validation::supported(
            "spec.persistentVolumeReclaimPolicy",
            spec.persistent_volume_reclaim_policy.as_deref(),
            &["Delete", "Recycle", "Retain"],
            &mut causes,
        );
        validation::supported(
            "spec.volumeMode",
            spec.volume_mode.as_deref(),
            &["Block", "Filesystem"],
            &mut causes,
        );
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Capacity",
                "string",
                "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity",
            ),
            Column::new(
                "Access Modes",
                "string",
                "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes",
            ),
            Column::new(
                "Reclaim Policy",
                "string",
                "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming",
            ),
            Column::new(
                "Status",
                "string",
                "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase",
            ),
            Column::new(
                "Claim",
                "string",
                "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding",
            ),
            Column::new("StorageClass", "string", "StorageClass of the pv"),
            Column::new(
                "VolumeAttributesClass",
                "string",
                "VolumeAttributesClass of the pv",
            ),
            Column::new(
                "Reason",
                "string",
                "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
            ),
            Column::age(),
            Column::wide(
                "VolumeMode",
                "string",
                "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec.",
            ),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let claim = spec.claim_ref.as_ref().map_or_else(String::new, |c| {
            format!(
                "{}/{}",
                c.namespace.as_deref().unwrap_or(""),
                c.name.as_deref().unwrap_or("")
            )
        });
        let mut phase = st.phase.clone().unwrap_or_default();
        if self.metadata.deletion_timestamp.is_some() {
            phase = "Terminating".into();
        }
        let ann = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"));
        let class = ann
            .cloned()
            .or_else(|| spec.storage_class_name.clone())
            .unwrap_or_default();
        vec![
            Value::String(
                spec.capacity
                    .as_ref()
                    .and_then(|c| c.get("storage"))
                    .map_or_else(|| "0".into(), |q| q.0.clone()),
            ),
            Value::String(access_modes_string(spec.access_modes.as_ref())),
            Value::String(
                spec.persistent_volume_reclaim_policy
                    .clone()
                    .unwrap_or_default(),
            ),
            Value::String(phase),
            Value::String(claim),
            Value::String(class),
            Value::String(
                spec.volume_attributes_class_name
                    .clone()
                    .unwrap_or_else(|| "<unset>".into()),
            ),
            Value::String(st.reason.clone().unwrap_or_default()),
            age_cell(&self.metadata),
            Value::String(spec.volume_mode.clone().unwrap_or_else(|| "<unset>".into())),
        ]
    }
}
