//! apps/v1 Deployment: upstream's defaults (1 replica, RollingUpdate 25%/25%, 10 revisions, 600 s
//! progress deadline, pod template defaults), validation (selector/template, strategy,
//! immutable selector), and the READY/UP-TO-DATE/AVAILABLE table.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{self, invalid_raw};
use crate::resources::{podspec, workload};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

impl Behavior for Deployment {
    const SHORT_NAMES: &'static [&'static str] = &["deploy"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["scale", "status"];

    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(DeploymentSpec::default);
        spec.replicas.get_or_insert(1);
        let strategy = spec
            .strategy
            .get_or_insert_with(DeploymentStrategy::default);
        let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
        if kind == "RollingUpdate" {
            let ru = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDeployment::default);
            ru.max_unavailable
                .get_or_insert_with(|| IntOrString::String("25%".into()));
            ru.max_surge
                .get_or_insert_with(|| IntOrString::String("25%".into()));
        }
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        podspec::default_template(&mut spec.template);
    }

    fn prepare_for_create(&mut self) {
        self.status = Some(Default::default());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let Some(spec) = &self.spec else {
            return vec![FieldCause::required("spec")];
        };
        let mut causes = workload::validate_replicated(
            &spec.selector,
            Some(&spec.template),
            spec.replicas,
            "deployment",
        );
        if let Some(s) = &spec.strategy {
            validation::supported(
                "spec.strategy.type",
                s.type_.as_deref(),
                &["Recreate", "RollingUpdate"],
                &mut causes,
            );
            match (s.type_.as_deref(), &s.rolling_update) {
                (Some("Recreate"), Some(_)) => causes.push(FieldCause::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                )),
                (Some("RollingUpdate"), Some(ru)) => causes.extend(workload::validate_rolling(
                    ru.max_unavailable.as_ref(),
                    ru.max_surge.as_ref(),
                    "spec.strategy.rollingUpdate",
                )),
                _ => {}
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
        if let Some(p) = spec.progress_deadline_seconds
            && p <= spec.min_ready_seconds.unwrap_or(0)
        {
            causes.push(invalid_raw(
                "spec.progressDeadlineSeconds",
                p,
                "must be greater than minReadySeconds",
            ));
        }
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
            Column::new("Ready", "string", "Number of the pod with ready state"),
            Column::new(
                "Up-to-date",
                "string",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            Column::new(
                "Available",
                "string",
                "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            Column::age(),
            c,
            i,
            workload::selector_column(
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.",
            ),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let spec = self.spec.as_ref();
        let st = self.status.clone().unwrap_or_default();
        let [c, i] = workload::container_values(spec.map(|s| &s.template));
        vec![
            Value::String(format!(
                "{}/{}",
                st.ready_replicas.unwrap_or(0),
                spec.and_then(|s| s.replicas).unwrap_or(0)
            )),
            Value::from(st.updated_replicas.unwrap_or(0)),
            Value::from(st.available_replicas.unwrap_or(0)),
            age_cell(&self.metadata),
            c,
            i,
            workload::selector_value(spec.map(|s| &s.selector)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(labels: Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}))
        .unwrap_or_default()
    }

    #[test]
    fn defaults_match_upstream() {
        let mut d = deploy(json!({"app": "web"}));
        d.prepare_for_create();
        d.apply_defaults();
        let v = serde_json::to_value(&d).unwrap_or_default();
        assert_eq!(v["spec"]["replicas"], 1);
        assert_eq!(
            v["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(v["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(v["spec"]["progressDeadlineSeconds"], 600);
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
        assert!(
            pod.get("enableServiceLinks").is_none(),
            "pod-only default leaked into template"
        );
        assert_eq!(v["status"], json!({}));
        assert!(d.validate(None).is_empty(), "{:?}", d.validate(None));
    }

    #[test]
    fn selector_must_match_template() {
        let mut d = deploy(json!({"app": "other"}));
        d.apply_defaults();
        let causes = d.validate(None);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
        assert_eq!(
            causes[0].message,
            r#"Invalid value: map[string]string{"app":"other"}: `selector` does not match template `labels`"#
        );
    }

    #[test]
    fn selector_is_immutable() {
        let mut old = deploy(json!({"app": "web", "v": "2"}));
        old.apply_defaults();
        let mut new = old.clone();
        if let Some(s) = new.spec.as_mut() {
            s.selector.match_labels = Some([("v".to_string(), "2".to_string())].into());
        }
        let causes = new.validate(Some(&old));
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.selector");
        assert_eq!(
            causes[0].message,
            r#"Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"v":"2"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"#
        );
    }

    #[test]
    fn zero_surge_and_unavailable_is_invalid() {
        let mut d = deploy(json!({"app": "web"}));
        if let Some(s) = d.spec.as_mut() {
            s.strategy = Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            });
        }
        d.apply_defaults();
        assert!(
            d.validate(None)
                .iter()
                .any(|c| c.field == "spec.strategy.rollingUpdate.maxUnavailable")
        );
    }
}
