//! autoscaling/v2 HorizontalPodAutoscaler: upstream's defaults (minReplicas 1, 80% CPU when no
//! metrics, scaling behavior rules filled in when `behavior` is set), validation of the
//! essentials, and the REFERENCE/TARGETS/MINPODS/MAXPODS/REPLICAS table.

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler, MetricSpec, MetricStatus,
    MetricTarget, ResourceMetricSource,
};
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::validation::{self, invalid_raw};
use crate::strategy::Behavior;
use crate::table::{Column, age_cell};

fn policy(kind: &str, value: i32) -> HPAScalingPolicy {
    HPAScalingPolicy {
        type_: kind.into(),
        value,
        period_seconds: 15,
    }
}

fn default_rules(
    rules: &mut Option<HPAScalingRules>,
    window: i32,
    policies: Vec<HPAScalingPolicy>,
) {
    let r = rules.get_or_insert_with(HPAScalingRules::default);
    r.stabilization_window_seconds.get_or_insert(window);
    r.select_policy.get_or_insert_with(|| "Max".into());
    r.policies.get_or_insert(policies);
}

/// Upstream's `formatHPAMetrics`: `cpu: 30%/80%`, at most two, then `+ N more...`.
fn format_metrics(specs: &[MetricSpec], statuses: &[MetricStatus]) -> String {
    if specs.is_empty() {
        return "<none>".into();
    }
    let q = |t: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        t.map_or_else(|| "<unknown>".to_string(), |q| q.0.clone())
    };
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let st = statuses.get(i);
            match s.type_.as_str() {
                "Resource" | "ContainerResource" => {
                    let (name, target, current) = match (&s.resource, &s.container_resource) {
                        (Some(r), _) => (
                            r.name.clone(),
                            r.target.clone(),
                            st.and_then(|x| x.resource.as_ref())
                                .map(|r| r.current.clone()),
                        ),
                        (None, Some(c)) => (
                            c.name.clone(),
                            c.target.clone(),
                            st.and_then(|x| x.container_resource.as_ref())
                                .map(|r| r.current.clone()),
                        ),
                        _ => return "<unknown type>".into(),
                    };
                    if let Some(avg) = &target.average_value {
                        format!(
                            "{name}: {}/{}",
                            q(current.as_ref().and_then(|c| c.average_value.as_ref())),
                            avg.0
                        )
                    } else {
                        let cur = current
                            .and_then(|c| c.average_utilization)
                            .map_or_else(|| "<unknown>".into(), |u| format!("{u}%"));
                        let tgt = target
                            .average_utilization
                            .map_or_else(|| "<auto>".into(), |u| format!("{u}%"));
                        format!("{name}: {cur}/{tgt}")
                    }
                }
                "Pods" => {
                    let cur = st
                        .and_then(|x| x.pods.as_ref())
                        .and_then(|p| p.current.average_value.as_ref());
                    format!(
                        "{}/{}",
                        q(cur),
                        q(s.pods
                            .as_ref()
                            .and_then(|p| p.target.average_value.as_ref()))
                    )
                }
                "Object" => {
                    let target = s
                        .object
                        .as_ref()
                        .map(|o| o.target.clone())
                        .unwrap_or_default();
                    let cur = st
                        .and_then(|x| x.object.as_ref())
                        .map(|o| o.current.clone())
                        .unwrap_or_default();
                    match &target.average_value {
                        Some(avg) => format!("{}/{} (avg)", q(cur.average_value.as_ref()), avg.0),
                        None => format!("{}/{}", q(cur.value.as_ref()), q(target.value.as_ref())),
                    }
                }
                "External" => {
                    let target = s
                        .external
                        .as_ref()
                        .map(|o| o.target.clone())
                        .unwrap_or_default();
                    let cur = st
                        .and_then(|x| x.external.as_ref())
                        .map(|o| o.current.clone())
                        .unwrap_or_default();
                    match &target.average_value {
                        Some(avg) => format!("{}/{} (avg)", q(cur.average_value.as_ref()), avg.0),
                        None => format!("{}/{}", q(cur.value.as_ref()), q(target.value.as_ref())),
                    }
                }
                _ => "<unknown type>".into(),
            }
        })
        .collect();
    if list.len() > 2 {
        format!("{} + {} more...", list[..2].join(", "), list.len() - 2)
    } else {
        list.join(", ")
    }
}

impl Behavior for HorizontalPodAutoscaler {
    const SHORT_NAMES: &'static [&'static str] = &["hpa"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &["status"];

    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.min_replicas.get_or_insert(1);
        if spec.metrics.as_ref().is_none_or(|m| m.is_empty()) {
            spec.metrics = Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(80),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]);
        }
        if let Some(b) = &mut spec.behavior {
            default_rules(
                &mut b.scale_up,
                0,
                vec![policy("Pods", 4), policy("Percent", 100)],
            );
            default_rules(&mut b.scale_down, 300, vec![policy("Percent", 100)]);
        }
    }

    fn prepare_for_create(&mut self) {
        self.status = Some(Default::default());
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        let mut causes = vec![];
        let spec = self.spec.clone().unwrap_or_default();
        let min = spec.min_replicas.unwrap_or(1);
        if min < 1 {
            causes.push(invalid_raw(
                "spec.minReplicas",
                min,
                "must be greater than or equal to 1",
            ));
        }
        if spec.max_replicas < 1 {
            causes.push(invalid_raw(
                "spec.maxReplicas",
                spec.max_replicas,
                "must be greater than 0",
            ));
        } else if spec.max_replicas < min {
            causes.push(invalid_raw(
                "spec.maxReplicas",
                spec.max_replicas,
                "must be greater than or equal to `minReplicas`",
            ));
        }
        let r = &spec.scale_target_ref;
        if r.kind.is_empty() {
            causes.push(FieldCause::required("spec.scaleTargetRef.kind"));
        }
        if r.name.is_empty() {
            causes.push(FieldCause::required("spec.scaleTargetRef.name"));
        }
        for (i, m) in spec.metrics.iter().flatten().enumerate() {
            validation::supported(
                &format!("spec.metrics[{i}].type"),
                Some(&m.type_),
                &[
                    "ContainerResource",
                    "External",
                    "Object",
                    "Pods",
                    "Resource",
                ],
                &mut causes,
            );
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Reference",
                "string",
                "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.",
            ),
            Column::new(
                "Targets",
                "string",
                "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).  The desired replica count is calculated multiplying the ratio between the target value and the current value by the current number of pods.  Ergo, metrics used must decrease as the pod count is increased, and vice-versa.  See the individual metric source types for more information about how each type of metric must respond. If not set, the default metric will be set to 80% average CPU utilization.",
            ),
            Column::new(
                "MinPods",
                "string",
                "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.  It defaults to 1 pod.  minReplicas is allowed to be 0 if the alpha feature gate HPAScaleToZero is enabled and at least one Object or External metric is configured.  Scaling is active as long as at least one metric value is available.",
            ),
            Column::new(
                "MaxPods",
                "string",
                "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up. It cannot be less that minReplicas.",
            ),
            Column::new(
                "Replicas",
                "string",
                "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.",
            ),
            Column::age(),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let r = &spec.scale_target_ref;
        vec![
            Value::String(format!("{}/{}", r.kind, r.name)),
            Value::String(format_metrics(
                spec.metrics.as_deref().unwrap_or_default(),
                st.current_metrics.as_deref().unwrap_or_default(),
            )),
            spec.min_replicas
                .map_or_else(|| Value::String("<unset>".into()), Value::from),
            Value::from(spec.max_replicas),
            Value::from(st.current_replicas.unwrap_or(0)),
            age_cell(&self.metadata),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_targets() {
        let mut h: HorizontalPodAutoscaler = serde_json::from_value(json!({"metadata": {"name": "h"}, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5, "behavior": {}}}))
        .unwrap_or_default();
        h.apply_defaults();
        let v = serde_json::to_value(&h).unwrap_or_default();
        assert_eq!(v["spec"]["minReplicas"], 1);
        assert_eq!(
            v["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            300
        );
        assert_eq!(
            v["spec"]["behavior"]["scaleUp"]["policies"][0],
            json!({"type": "Pods", "value": 4, "periodSeconds": 15})
        );
        assert!(h.validate(None).is_empty());
        assert_eq!(
            h.cells()[..2],
            [json!("Deployment/web"), json!("cpu: <unknown>/80%")]
        );
    }
}
