//! coordination.k8s.io/v1 Lease: non-negative durations and transitions, and the HOLDER table.

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{self, invalid_raw};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for Lease {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        let spec = self.spec.clone().unwrap_or_default();
        if let Some(d) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
            causes.push(invalid_raw(
                "spec.leaseDurationSeconds",
                d,
                "must be greater than 0",
            ));
        }
        validation::non_negative(
            "spec.leaseTransitions",
            spec.lease_transitions.map(i64::from),
            &mut causes,
        );
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Holder",
                "string",
                "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
            ),
            Column::age(),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let holder = self
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        vec![Value::String(holder), age_cell(&self.metadata)]
    }
}
