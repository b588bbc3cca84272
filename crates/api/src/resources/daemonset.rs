//! apps/v1 DaemonSet: RollingUpdate (maxUnavailable 1, maxSurge 0) and 10 revisions by default,
//! selector/template validation with an immutable selector, and the DESIRED..NODE SELECTOR table.

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{self, format_labels};
use crate::resources::{podspec, workload};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for DaemonSet {
    const SHORT_NAMES: &'static [&'static str] = &["ds"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(DaemonSetSpec::default);
        let us = spec
            .update_strategy
            .get_or_insert_with(DaemonSetUpdateStrategy::default);
        let kind = us.type_.get_or_insert_with(|| "RollingUpdate".into());
        if kind == "RollingUpdate" {
            let ru = us
                .rolling_update
                .get_or_insert_with(RollingUpdateDaemonSet::default);
            ru.max_unavailable.get_or_insert(IntOrString::Int(1));
            ru.max_surge.get_or_insert(IntOrString::Int(0));
        }
        spec.revision_history_limit.get_or_insert(10);
        podspec::default_template(&mut spec.template);
    }

    fn prepare_for_create(&mut self) {
        self.status = Some(Default::default());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let Some(spec) = &self.spec else {
            return vec![FieldCause::required("spec")];
        };
        let mut causes =
            workload::validate_replicated(&spec.selector, Some(&spec.template), None, "daemonset");
        if let Some(us) = &spec.update_strategy {
            validation::supported(
                "spec.updateStrategy.type",
                us.type_.as_deref(),
                &["OnDelete", "RollingUpdate"],
                &mut causes,
            );
            if let Some(ru) = &us.rolling_update {
                causes.extend(workload::validate_rolling(
                    ru.max_unavailable.as_ref(),
                    ru.max_surge.as_ref(),
                    "spec.updateStrategy.rollingUpdate",
                ));
            }
        }
        validation::non_negative(
            "spec.minReadySeconds",
            spec.min_ready_seconds.map(i64::from),
            &mut causes,
        );
        validation::non_negative(
            "spec.revisionHistoryLimit",
            spec.revision_history_limit.map(i64::from),
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
                "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
            ),
            Column::new(
                "Current",
                "integer",
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/",
            ),
            Column::new(
                "Ready",
                "integer",
                "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
            ),
            Column::new(
                "Up-to-date",
                "integer",
                "The total number of nodes that are running updated daemon pod",
            ),
            Column::new(
                "Available",
                "integer",
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
            ),
            Column::new(
                "Node Selector",
                "string",
                "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/",
            ),
            Column::age(),
            c,
            i,
            workload::selector_column(
                "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors",
            ),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let spec = self.spec.as_ref();
        let st = self.status.clone().unwrap_or_default();
        let template = spec.map(|s| &s.template);
        let node_selector = template
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.node_selector.as_ref());
        let [c, i] = workload::container_values(template);
        vec![
            Value::from(st.desired_number_scheduled),
            Value::from(st.current_number_scheduled),
            Value::from(st.number_ready),
            Value::from(st.updated_number_scheduled.unwrap_or(0)),
            Value::from(st.number_available.unwrap_or(0)),
            Value::String(format_labels(node_selector)),
            age_cell(&self.metadata),
            c,
            i,
            workload::selector_value(spec.map(|s| &s.selector)),
        ]
    }
}
