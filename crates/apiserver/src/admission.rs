//! Mutating admission on create, as upstream's admission plugins that corten has:
//! DefaultIngressClass (an Ingress that names no class gets the cluster's default
//! IngressClass, the newest if several are marked default), DefaultTolerationSeconds (a
//! pod gets NoExecute tolerations of the `not-ready` and `unreachable` taints for 300 s unless
//! it tolerates them already), LimitRanger's defaults ([`crate::limitranger`]) and Priority (a
//! pod's `spec.priority` and `preemptionPolicy` come from its PriorityClass, or from the global
//! default class when it names none; an unknown class is refused with 403). Runs before
//! validation; the validating plugins (LimitRanger's checks, ResourceQuota in
//! [`crate::quota`]) run after it.

use serde_json::Value;

use api::{ApiError, ResourceInfo};

use crate::objects;
use crate::state::ApiState;
use store::KeyValue;

/// The annotation that marks an IngressClass as the default.
const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";

impl ApiState {
    /// Mutates a new object as the admission plugins do, before it is validated.
    pub async fn mutate_on_create(
        &self,
        res: &ResourceInfo,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        if res.group == "networking.k8s.io" && res.plural == "ingresses" {
            self.default_ingress_class(obj).await?;
        }
        if res.group.is_empty() && res.plural == "pods" {
            default_toleration_seconds(obj);
            self.default_limits(obj).await?;
            self.pod_priority(obj).await?;
        }
        Ok(())
    }

    /// Every stored object under `prefix`, for admission's lookups of the few objects that
    /// govern a request (LimitRanges, quotas, PriorityClasses, budgets): asked first with a
    /// small limit, which the store answers without a trip through its blocking pool, and
    /// again in full only when there are more.
    pub(crate) async fn range_few(&self, prefix: String) -> Result<Vec<KeyValue>, ApiError> {
        let first = store::RangeRequest {
            prefix: prefix.clone(),
            limit: Some(store::INLINE_RANGE),
            ..Default::default()
        };
        let list = self.store.range(first).await.map_err(ApiError::internal)?;
        if list.remaining == 0 {
            return Ok(list.kvs);
        }
        let all = store::RangeRequest {
            prefix,
            ..Default::default()
        };
        Ok(self.store.range(all).await.map_err(ApiError::internal)?.kvs)
    }

    /// All stored objects of a cluster-scoped resource.
    async fn list_all(&self, group: &str, plural: &str) -> Result<Vec<Value>, ApiError> {
        let Some(res) = self.registry.get(group, "v1", plural) else {
            return Ok(vec![]);
        };
        let kvs = self.range_few(res.key_prefix()).await?;
        kvs.iter().map(objects::decode).collect()
    }

    /// Priority: resolves the pod's PriorityClass into `spec.priority` and
    /// `spec.preemptionPolicy` (upstream's `Priority` admission plugin).
    async fn pod_priority(&self, pod: &mut Value) -> Result<(), ApiError> {
        if !pod["spec"].is_object() {
            return Ok(());
        }
        let named = pod["spec"]["priorityClassName"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let classes = self
            .list_all("scheduling.k8s.io", "priorityclasses")
            .await?;
        let class = if named.is_empty() {
            classes
                .iter()
                .filter(|c| c["globalDefault"] == true)
                .min_by_key(|c| c["value"].as_i64().unwrap_or(0))
        } else {
            classes
                .iter()
                .find(|c| c["metadata"]["name"] == named.as_str())
        };
        let Some(class) = class else {
            if named.is_empty() || named.starts_with("system-") {
                return Ok(());
            }
            let mut e = ApiError::forbidden(format!(
                "pods \"{}\" is forbidden: no PriorityClass with name {named} was found",
                objects::name(pod)
            ));
            e.kind = Some("pods".into());
            e.name = Some(objects::name(pod).to_string());
            return Err(e);
        };
        let spec = &mut pod["spec"];
        spec["priorityClassName"] = class["metadata"]["name"].clone();
        spec["priority"] = class["value"].clone();
        let policy = class["preemptionPolicy"]
            .as_str()
            .unwrap_or("PreemptLowerPriority");
        spec["preemptionPolicy"] = Value::String(policy.to_string());
        Ok(())
    }

    /// DefaultIngressClass: sets `spec.ingressClassName` when neither it nor the old
    /// `kubernetes.io/ingress.class` annotation names a class and a default class exists.
    async fn default_ingress_class(&self, ingress: &mut Value) -> Result<(), ApiError> {
        let named = !ingress["spec"]["ingressClassName"].is_null()
            || !ingress["metadata"]["annotations"]["kubernetes.io/ingress.class"].is_null();
        if named {
            return Ok(());
        }
        let Some(classes) = self
            .registry
            .get("networking.k8s.io", "v1", "ingressclasses")
        else {
            return Ok(());
        };
        let kvs = self.range_few(classes.key_prefix()).await?;
        let mut defaults: Vec<Value> = vec![];
        for kv in &kvs {
            let class = objects::decode(kv)?;
            if class["metadata"]["annotations"][DEFAULT_CLASS] == "true" {
                defaults.push(class);
            }
        }
        // The newest default wins (creation timestamps are RFC 3339 in UTC: they sort).
        let newest = defaults.iter().max_by(|a, b| {
            let t = |c: &Value| {
                c["metadata"]["creationTimestamp"]
                    .as_str()
                    .map(str::to_string)
            };
            t(a).cmp(&t(b))
        });
        if let Some(name) = newest.and_then(|c| c["metadata"]["name"].as_str()) {
            if !ingress["spec"].is_object() {
                ingress["spec"] = Value::Object(Default::default());
            }
            ingress["spec"]["ingressClassName"] = Value::String(name.to_string());
        }
        Ok(())
    }
}

/// The default `tolerationSeconds` of the added tolerations (upstream's
/// `--default-not-ready-toleration-seconds` and `--default-unreachable-toleration-seconds`).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// DefaultTolerationSeconds: adds `{key, operator: Exists, effect: NoExecute,
/// tolerationSeconds: 300}` for `node.kubernetes.io/not-ready` and
/// `node.kubernetes.io/unreachable` unless a toleration with that key (or no key) and a
/// NoExecute (or no) effect is there already.
pub fn default_toleration_seconds(pod: &mut Value) {
    if !pod["spec"].is_object() {
        return;
    }
    let existing = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let covers = |key: &str| {
        existing.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let e = t["effect"].as_str().unwrap_or("");
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        })
    };
    let mut added = vec![];
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !covers(key) {
            added.push(serde_json::json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }));
        }
    }
    if added.is_empty() {
        return;
    }
    let mut all = existing;
    all.extend(added);
    pod["spec"]["tolerations"] = Value::Array(all);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_get_both_tolerations_unless_they_have_them() {
        let mut pod = json!({"spec": {"containers": []}});
        default_toleration_seconds(&mut pod);
        let tols = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tols.len(), 2);
        assert_eq!(tols[0]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(tols[1]["key"], "node.kubernetes.io/unreachable");
        assert_eq!(tols[1]["tolerationSeconds"], 300);
        assert_eq!(tols[1]["effect"], "NoExecute");

        let own = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 2});
        let mut pod = json!({"spec": {"tolerations": [own.clone()]}});
        default_toleration_seconds(&mut pod);
        let tols = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tols.len(), 2);
        assert_eq!(tols[0], own);
        assert_eq!(tols[1]["key"], "node.kubernetes.io/not-ready");

        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut all);
        assert_eq!(all["spec"]["tolerations"].as_array().unwrap().len(), 1);
        let mut noschedule =
            json!({"spec": {"tolerations": [{"operator": "Exists", "effect": "NoSchedule"}]}});
        default_toleration_seconds(&mut noschedule);
        assert_eq!(
            noschedule["spec"]["tolerations"].as_array().unwrap().len(),
            3
        );
    }
}
