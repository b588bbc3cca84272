//! core/v1 ReplicationController: 1 replica by default, selector and labels defaulted from the
//! template labels, selector/template validation, the DESIRED/CURRENT/READY table and the
//! `status.replicas` field selector.

use k8s_openapi::api::core::v1::{ReplicationController, ReplicationControllerSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{self, format_labels};
use crate::resources::{podspec, workload};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for ReplicationController {
    const SHORT_NAMES: &'static [&'static str] = &["rc"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["scale", "status"];

    fn apply_defaults(&mut self) {
        let spec = self
            .spec
            .get_or_insert_with(ReplicationControllerSpec::default);
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone());
        if let Some(labels) = template_labels.filter(|l| !l.is_empty()) {
            if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
                spec.selector = Some(labels.clone());
            }
            if self.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
                self.metadata.labels = Some(labels);
            }
        }
        spec.replicas.get_or_insert(1);
        if let Some(t) = &mut spec.template {
            podspec::default_template(t);
        }
    }

    fn prepare_for_create(&mut self) {
        self.status = Some(Default::default());
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let Some(spec) = &self.spec else {
            return vec![FieldCause::required("spec.selector")];
        };
        let mut causes = vec![];
        let selector = LabelSelector {
            match_labels: spec.selector.clone(),
            match_expressions: None,
        };
        if validation::selector_is_empty(&selector) {
            causes.push(FieldCause::required("spec.selector"));
        }
        causes.extend(validation::validate_label_selector(
            &selector,
            "spec.selector",
        ));
        match &spec.template {
            None => causes.push(FieldCause::required("spec.template")),
            Some(t) => {
                causes.extend(workload::template_matches(&selector, t, "spec.template"));
                causes.extend(podspec::validate_template(t, "spec.template"));
                causes.extend(workload::restart_always(t, "spec.template"));
            }
        }
        validation::non_negative("spec.replicas", spec.replicas.map(i64::from), &mut causes);
        validation::non_negative(
            "spec.minReadySeconds",
            spec.min_ready_seconds.map(i64::from),
            &mut causes,
        );
        causes
    }

    fn columns() -> Vec<Column> {
        let [c, i] = workload::container_columns();
        vec![
            Column::new(
                "Desired",
                "integer",
                "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller",
            ),
            Column::new(
                "Current",
                "integer",
                "Replicas is the most recently observed number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller",
            ),
            Column::new(
                "Ready",
                "integer",
                "The number of ready replicas for this replication controller.",
            ),
            Column::age(),
            c,
            i,
            workload::selector_column(
                "Selector is a label query over pods that should match the Replicas count. If Selector is empty, it is defaulted to the labels present on the Pod template. Label keys and values that must match in order to be controlled by this replication controller, if empty defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
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
            Value::String(format_labels(spec.and_then(|s| s.selector.as_ref()))),
        ]
    }

    fn field(&self, label: &str) -> Option<String> {
        (label == "status.replicas")
            .then(|| self.status.as_ref().map_or(0, |s| s.replicas).to_string())
    }
}
