//! apps/v1 ReplicaSet: 1 replica by default, selector/template validation, immutable selector,
//! the DESIRED/CURRENT/READY table and the `status.replicas` field selector.

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec};
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::{podspec, workload};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for ReplicaSet {
    const SHORT_NAMES: &'static [&'static str] = &["rs"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["scale", "status"];

    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(ReplicaSetSpec::default);
        spec.replicas.get_or_insert(1);
        if let Some(t) = &mut spec.template {
            podspec::default_template(t);
        }
    }

    fn prepare_for_create(&mut self) {
        self.status = Some(Default::default());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let Some(spec) = &self.spec else {
            return vec![FieldCause::required("spec")];
        };
        // Upstream's message says "deployment" for replica sets too.
        let mut causes = workload::validate_replicated(
            &spec.selector,
            spec.template.as_ref(),
            spec.replicas,
            "deployment",
        );
        crate::resources::validation::non_negative(
            "spec.minReadySeconds",
            spec.min_ready_seconds.map(i64::from),
            &mut causes,
        );
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            causes.extend(workload::immutable_selector(
                &spec.selector,
                &old_spec.selector,
            ));
        }
        causes
    }

    fn columns() -> Vec<Column> {
        let [c, i] = workload::container_columns();
        vec![
            Column::new(
                "Desired",
                "integer",
                "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
            ),
            Column::new(
                "Current",
                "integer",
                "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset",
            ),
            Column::new(
                "Ready",
                "integer",
                "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
            ),
            Column::age(),
            c,
            i,
            workload::selector_column(
                "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
            ),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let spec = self.spec.as_ref();
        let st = self.status.clone().unwrap_or_default();
        let [c, i] = workload::container_values(spec.and_then(|s| s.template.as_ref()));
        vec![
            Value::from(spec.and_then(|s| s.replicas).unwrap_or(0)),
            Value::from(st.replicas),
            Value::from(st.ready_replicas.unwrap_or(0)),
            age_cell(&self.metadata),
            c,
            i,
            workload::selector_value(spec.map(|s| &s.selector)),
        ]
    }

    fn field(&self, label: &str) -> Option<String> {
        (label == "status.replicas")
            .then(|| self.status.as_ref().map_or(0, |s| s.replicas).to_string())
    }
}
