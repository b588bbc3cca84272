//! POST pods/NAME/eviction honouring PodDisruptionBudgets, as upstream's eviction REST
//! (`pkg/registry/core/pod/storage/eviction.go`).
//!
//! A pod that is being deleted, has finished or is still Pending is deleted at once. Otherwise
//! the budgets of its namespace whose selector matches it are looked up: none → delete; more
//! than one → 500, as upstream; one → its status decides. A budget its controller has not
//! processed yet (`observedGeneration` behind) or with no `disruptionsAllowed` left refuses
//! with 429 TooManyRequests "Cannot evict pod as it would violate the pod's disruption
//! budget." and a `DisruptionBudget` cause; an unready pod may go anyway when the budget's
//! `unhealthyPodEvictionPolicy` allows. Otherwise `disruptionsAllowed` is decremented and the
//! pod recorded in `disruptedPods` (one compare-and-swap write of the budget's status, so
//! concurrent evictions cannot overdraw it), the pod gets the `DisruptionTarget` condition and
//! is deleted with the eviction's `deleteOptions`.

use std::sync::Arc;

use api::{ApiError, ResourceInfo};
use serde_json::{Value, json};

use crate::generic::Reply;
use crate::objects;
use crate::request::Query;
use crate::state::ApiState;

/// The message of a refused eviction.
const REFUSED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// The 429 of a refused eviction, with the `DisruptionBudget` cause.
fn too_many_requests(cause: String) -> ApiError {
    let mut e = ApiError::new(429, "TooManyRequests", REFUSED);
    e.retry_after_seconds = Some(0);
    e.causes = vec![api::error::FieldCause {
        field: String::new(),
        message: cause,
        reason: "DisruptionBudget",
    }];
    e
}

/// Whether the pod's Ready condition is True.
fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Whether the budget's selector matches the pod's labels (policy/v1: an empty selector
/// matches every pod of the namespace, a missing one none).
fn selects(pdb: &Value, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let Some(sel) = pdb["spec"].get("selector").filter(|s| !s.is_null()) else {
        return false;
    };
    serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(
        sel.clone(),
    )
    .ok()
    .and_then(|s| api::selector::LabelSelector::from_k8s(&s).ok())
    .is_some_and(|s| s.matches(labels))
}

/// What the budget says about evicting a pod (`ready`: whether the pod is Ready): `Ok(true)`
/// to take one disruption off the budget, `Ok(false)` to delete without touching it.
fn check_budget(pdb: &Value, ready: bool) -> Result<bool, ApiError> {
    let name = objects::name(pdb);
    let status = &pdb["status"];
    let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(0);
    if status["observedGeneration"].as_i64().unwrap_or(0) < generation {
        return Err(too_many_requests(format!(
            "The disruption budget {name} is still being processed by the server."
        )));
    }
    let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
    if allowed < 0 {
        return Err(ApiError::forbidden("pdb disruptions allowed is negative"));
    }
    let healthy = status["currentHealthy"].as_i64().unwrap_or(0);
    let desired = status["desiredHealthy"].as_i64().unwrap_or(0);
    if !ready {
        let policy = pdb["spec"]["unhealthyPodEvictionPolicy"]
            .as_str()
            .unwrap_or("IfHealthyBudget");
        if policy == "AlwaysAllow" || healthy >= desired {
            return Ok(false);
        }
    }
    if allowed == 0 {
        return Err(too_many_requests(format!(
            "The disruption budget {name} needs {desired} healthy pods and has {healthy} currently"
        )));
    }
    Ok(true)
}

impl ApiState {
    /// POST pods/NAME/eviction.
    pub async fn evict(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        name: &str,
        eviction: &Value,
        query: &Query,
    ) -> Result<Reply, ApiError> {
        let options = eviction
            .get("deleteOptions")
            .filter(|o| o.is_object())
            .cloned()
            .unwrap_or_else(|| json!({}));
        let (pod, _) = self.read(res, ns, name).await?;
        let deleting = pod["metadata"]
            .get("deletionTimestamp")
            .is_some_and(|t| !t.is_null());
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        if !deleting && !matches!(phase, "Succeeded" | "Failed" | "Pending") {
            self.take_disruption(ns, &pod, query).await?;
            self.mark_disruption_target(res, ns, name, query).await;
        }
        self.delete(res, ns, name, &options, query).await?;
        Ok(Reply {
            code: 201,
            body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            warnings: vec![],
        })
    }

    /// Checks the pod's budget and, when the eviction counts against it, records it there.
    async fn take_disruption(
        &self,
        ns: Option<&str>,
        pod: &Value,
        query: &Query,
    ) -> Result<(), ApiError> {
        let Some(pdbs) = self.registry.get("policy", "v1", "poddisruptionbudgets") else {
            return Ok(());
        };
        let ns = ns.unwrap_or("default");
        let kvs = self
            .range_few(format!("{}{ns}/", pdbs.key_prefix()))
            .await?;
        let labels = objects::labels(pod);
        let mut matching = vec![];
        for kv in &kvs {
            let pdb = objects::decode(kv)?;
            if selects(&pdb, &labels) {
                matching.push(pdb);
            }
        }
        let pdb = match matching.as_slice() {
            [] => return Ok(()),
            [one] => one,
            _ => {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
        };
        let ready = pod_ready(pod);
        if !check_budget(pdb, ready)? {
            return Ok(());
        }
        let pod_name = objects::name(pod).to_string();
        let now = objects::now();
        self.write(
            pdbs,
            Some(ns),
            objects::name(pdb),
            Some("status"),
            query,
            |current| {
                // Checked again on the current object: another eviction may have come first.
                check_budget(current, ready)?;
                let mut new = current.clone();
                let allowed = new["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
                new["status"]["disruptionsAllowed"] = json!(allowed - 1);
                if !new["status"]["disruptedPods"].is_object() {
                    new["status"]["disruptedPods"] = json!({});
                }
                new["status"]["disruptedPods"][&pod_name] = json!(now);
                // No precondition: a conflict re-reads and checks the budget again.
                objects::meta_mut(&mut new).remove("resourceVersion");
                Ok(new)
            },
        )
        .await?;
        Ok(())
    }

    /// Sets the pod's `DisruptionTarget` condition (reason `EvictionByEvictionAPI`). Best
    /// effort: the eviction goes on if it cannot be written.
    async fn mark_disruption_target(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        name: &str,
        query: &Query,
    ) {
        let condition = json!({
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "EvictionByEvictionAPI",
            "message": "Eviction API: evicting",
            "lastTransitionTime": objects::now(),
        });
        let result = self
            .write(res, ns, name, Some("status"), query, |current| {
                let mut new = current.clone();
                if !new["status"].is_object() {
                    new["status"] = json!({});
                }
                let mut conds = new["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                conds.retain(|c| c["type"] != "DisruptionTarget");
                conds.push(condition.clone());
                new["status"]["conditions"] = Value::Array(conds);
                objects::meta_mut(&mut new).remove("resourceVersion");
                Ok(new)
            })
            .await;
        if let Err(e) = result {
            tracing::debug!(pod = name, error = %e.message, "DisruptionTarget condition not set");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(allowed: i64, healthy: i64, desired: i64, observed: i64) -> Value {
        json!({
            "metadata": {"name": "web", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "web"}}},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": healthy,
                "desiredHealthy": desired, "observedGeneration": observed},
        })
    }

    #[test]
    fn budget_refuses_with_429_and_cause() {
        let e = check_budget(&pdb(0, 2, 2, 1), true).unwrap_err();
        assert_eq!((e.code, e.reason), (429, "TooManyRequests"));
        assert_eq!(e.message, REFUSED);
        assert_eq!(e.causes[0].reason, "DisruptionBudget");
        assert_eq!(
            e.causes[0].message,
            "The disruption budget web needs 2 healthy pods and has 2 currently"
        );
        let stale = check_budget(&pdb(1, 3, 2, 0), true).unwrap_err();
        assert!(stale.causes[0].message.contains("still being processed"));
        assert!(check_budget(&pdb(1, 3, 2, 1), true).unwrap());
    }

    #[test]
    fn unready_pods_go_when_the_budget_is_healthy() {
        assert!(!check_budget(&pdb(0, 2, 2, 1), false).unwrap());
        assert!(check_budget(&pdb(0, 1, 2, 1), false).is_err());
        let mut always = pdb(0, 1, 2, 1);
        always["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        assert!(!check_budget(&always, false).unwrap());
    }

    #[test]
    fn selector_matching() {
        let labels = [("app".to_string(), "web".to_string())].into();
        assert!(selects(&pdb(0, 0, 0, 0), &labels));
        assert!(selects(&json!({"spec": {"selector": {}}}), &labels));
        assert!(!selects(&json!({"spec": {}}), &labels));
        assert!(!selects(
            &json!({"spec": {"selector": {"matchLabels": {"app": "db"}}}}),
            &labels
        ));
    }
}
