//! apps/v1 StatefulSet: upstream's defaults (OrderedReady, RollingUpdate partition 0, Retain/Retain
//! claim retention, 10 revisions, claim template defaults), validation (selector/template, which
//! spec fields an update may change) and the READY table.

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation;
use crate::resources::{persistentvolumeclaim, podspec, workload};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

const UPDATE_FORBIDDEN: &str = "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

/// The spec without the fields an update may change.
fn fixed_part(spec: &StatefulSetSpec) -> StatefulSetSpec {
    StatefulSetSpec {
        replicas: None,
        ordinals: None,
        template: Default::default(),
        update_strategy: None,
        revision_history_limit: None,
        persistent_volume_claim_retention_policy: None,
        min_ready_seconds: None,
        ..spec.clone()
    }
}

impl Behavior for StatefulSet {
    const SHORT_NAMES: &'static [&'static str] = &["sts"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["scale", "status"];

    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(StatefulSetSpec::default);
        spec.replicas.get_or_insert(1);
        spec.pod_management_policy
            .get_or_insert_with(|| "OrderedReady".into());
        let us = spec
            .update_strategy
            .get_or_insert_with(StatefulSetUpdateStrategy::default);
        let kind = us.type_.get_or_insert_with(|| "RollingUpdate".into());
        if kind == "RollingUpdate" {
            us.rolling_update
                .get_or_insert_with(RollingUpdateStatefulSetStrategy::default)
                .partition
                .get_or_insert(0);
        }
        let p = spec
            .persistent_volume_claim_retention_policy
            .get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
        p.when_deleted.get_or_insert_with(|| "Retain".into());
        p.when_scaled.get_or_insert_with(|| "Retain".into());
        spec.revision_history_limit.get_or_insert(10);
        for pvc in spec.volume_claim_templates.iter_mut().flatten() {
            persistentvolumeclaim::default_claim(pvc);
        }
        podspec::default_template(&mut spec.template);
    }

    fn prepare_for_create(&mut self) {
        self.status = Some(Default::default());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let Some(spec) = &self.spec else {
            return vec![FieldCause::required("spec")];
        };
        // Containers may mount the claim templates by name: each becomes a volume of the pods.
        let mut template = spec.template.clone();
        if let Some(pod) = template.spec.as_mut() {
            let volumes = pod.volumes.get_or_insert_with(Vec::new);
            for claim in spec.volume_claim_templates.iter().flatten() {
                let name = claim.metadata.name.clone().unwrap_or_default();
                if !volumes.iter().any(|v| v.name == name) {
                    volumes.push(k8s_openapi::api::core::v1::Volume {
                        name: name.clone(),
                        persistent_volume_claim: Some(
                            k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                                claim_name: name,
                                read_only: None,
                            },
                        ),
                        ..Default::default()
                    });
                }
            }
        }
        let mut causes = workload::validate_replicated(
            &spec.selector,
            Some(&template),
            spec.replicas,
            "statefulset",
        );
        validation::supported(
            "spec.podManagementPolicy",
            spec.pod_management_policy.as_deref(),
            &["OrderedReady", "Parallel"],
            &mut causes,
        );
        let us = spec.update_strategy.as_ref();
        validation::supported(
            "spec.updateStrategy.type",
            us.and_then(|u| u.type_.as_deref()),
            &["RollingUpdate", "OnDelete"],
            &mut causes,
        );
        if let Some(p) = us
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
        {
            validation::non_negative(
                "spec.updateStrategy.rollingUpdate.partition",
                Some(i64::from(p)),
                &mut causes,
            );
        }
        let policy = spec.persistent_volume_claim_retention_policy.as_ref();
        validation::supported(
            "spec.persistentVolumeClaimRetentionPolicy.whenDeleted",
            policy.and_then(|p| p.when_deleted.as_deref()),
            &["Retain", "Delete"],
            &mut causes,
        );
        validation::supported(
            "spec.persistentVolumeClaimRetentionPolicy.whenScaled",
            policy.and_then(|p| p.when_scaled.as_deref()),
            &["Retain", "Delete"],
            &mut causes,
        );
        validation::non_negative(
            "spec.revisionHistoryLimit",
            spec.revision_history_limit.map(i64::from),
            &mut causes,
        );
        validation::non_negative(
            "spec.minReadySeconds",
            spec.min_ready_seconds.map(i64::from),
            &mut causes,
        );
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref())
            && fixed_part(spec) != fixed_part(old_spec)
        {
            causes.push(FieldCause::forbidden("spec", UPDATE_FORBIDDEN));
        }
        causes
    }

    fn columns() -> Vec<Column> {
        let [c, i] = workload::container_columns();
        vec![
            Column::new("Ready", "string", "Number of the pod with ready state"),
            Column::age(),
            c,
            i,
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let spec = self.spec.as_ref();
        let ready = self
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        let [c, i] = workload::container_values(spec.map(|s| &s.template));
        vec![
            Value::String(format!(
                "{ready}/{}",
                spec.and_then(|s| s.replicas).unwrap_or(0)
            )),
            age_cell(&self.metadata),
            c,
            i,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_update_rules() {
        let mut s: StatefulSet = serde_json::from_value(json!({"metadata": {"name": "db"}, "spec": {
            "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "pg:16"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}}))
        .unwrap_or_default();
        s.apply_defaults();
        let v = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(v["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            v["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            v["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(v["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(
            v["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        assert!(s.validate(None).is_empty(), "{:?}", s.validate(None));
        let mut changed = s.clone();
        if let Some(spec) = changed.spec.as_mut() {
            spec.replicas = Some(3);
        }
        assert!(changed.validate(Some(&s)).is_empty());
        if let Some(spec) = changed.spec.as_mut() {
            spec.service_name = Some("other".into());
        }
        assert!(
            changed
                .validate(Some(&s))
                .iter()
                .any(|c| c.field == "spec" && c.reason == "FieldValueForbidden")
        );
    }
}
