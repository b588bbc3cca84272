//! ResourceQuota scopes (no I/O), after upstream's `podMatchesScopeFunc`: which objects a
//! quota with `spec.scopes` and / or `spec.scopeSelector` covers. Each scope is a requirement
//! and all must hold (`spec.scopes` entries are `Exists` requirements):
//! - `Terminating` / `NotTerminating`: the pod has / lacks `spec.activeDeadlineSeconds >= 0`;
//! - `BestEffort` / `NotBestEffort`: the pod's QoS class is / is not BestEffort (no container,
//!   init containers included, requests or limits cpu or memory);
//! - `PriorityClass`: `Exists` when the pod names a priority class; `In` / `NotIn` on its
//!   `spec.priorityClassName` (an empty name is a value too); `DoesNotExist` never matches,
//!   as upstream evaluates it as a label selector on `{PriorityClass: name}`, where the key is
//!   always present;
//! - `CrossNamespacePodAffinity`: a pod (anti-)affinity term with a namespace selector or
//!   namespaces;
//! - `VolumeAttributesClass` (PersistentVolumeClaims, upstream's `pvcMatchesScopeFunc`): the
//!   classes a claim refers to are `spec.volumeAttributesClassName`,
//!   `status.currentVolumeAttributesClassName` and
//!   `status.modifyVolumeStatus.targetVolumeAttributesClassName` (empty names left out);
//!   `Exists` when there is one, otherwise the requirement is a label selector on
//!   `{VolumeAttributesClass: name}` that some name must meet — or, with none, the empty
//!   label set (so `NotIn` and `DoesNotExist` match a claim without a class, `In` does not).
//!
//! A scoped quota covers pods and PersistentVolumeClaims only, each by the scopes of its
//! kind (a pod meets no `VolumeAttributesClass` requirement, a claim no pod scope); upstream's
//! object-count evaluators match no scope.

use serde_json::Value;

/// One scope requirement: scope name, operator and values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// The scope (`Terminating`, `PriorityClass`, ...).
    pub scope: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values of `In` / `NotIn`.
    pub values: Vec<String>,
}

/// A quota's scope requirements (JSON quota): `spec.scopes`, then the scope selector's.
pub fn requirements(quota: &Value) -> Vec<Requirement> {
    let spec = &quota["spec"];
    let scopes = spec["scopes"].as_array().into_iter().flatten();
    let mut out: Vec<Requirement> = scopes
        .filter_map(Value::as_str)
        .map(|s| Requirement {
            scope: s.to_string(),
            operator: "Exists".into(),
            values: vec![],
        })
        .collect();
    let exprs = spec["scopeSelector"]["matchExpressions"].as_array();
    for e in exprs.into_iter().flatten() {
        out.push(Requirement {
            scope: e["scopeName"].as_str().unwrap_or("").to_string(),
            operator: e["operator"].as_str().unwrap_or("").to_string(),
            values: e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        });
    }
    out
}

/// Whether a pod (JSON) is BestEffort: no container asks for or is limited in cpu or memory.
pub fn is_best_effort(pod: &Value) -> bool {
    let spec = &pod["spec"];
    let containers = spec["containers"].as_array().into_iter().flatten();
    let init = spec["initContainers"].as_array().into_iter().flatten();
    !containers.chain(init).any(|c| {
        ["requests", "limits"].iter().any(|kind| {
            ["cpu", "memory"]
                .iter()
                .any(|r| !c["resources"][kind][r].is_null())
        })
    })
}

fn is_terminating(pod: &Value) -> bool {
    pod["spec"]["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|s| s >= 0)
}

fn cross_namespace_affinity(pod: &Value) -> bool {
    let affinity = &pod["spec"]["affinity"];
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let a = &affinity[kind];
        let required = a["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten();
        let preferred = a["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| &w["podAffinityTerm"]);
        required.chain(preferred).any(|t| {
            !t["namespaceSelector"].is_null()
                || t["namespaces"].as_array().is_some_and(|n| !n.is_empty())
        })
    })
}

/// Whether a pod (JSON) meets one requirement.
pub fn pod_matches(req: &Requirement, pod: &Value) -> bool {
    match req.scope.as_str() {
        "Terminating" => is_terminating(pod),
        "NotTerminating" => !is_terminating(pod),
        "BestEffort" => is_best_effort(pod),
        "NotBestEffort" => !is_best_effort(pod),
        "PriorityClass" => {
            let class = pod["spec"]["priorityClassName"].as_str().unwrap_or("");
            match req.operator.as_str() {
                "Exists" => !class.is_empty(),
                "In" => req.values.iter().any(|v| v == class),
                "NotIn" => !req.values.iter().any(|v| v == class),
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => cross_namespace_affinity(pod),
        _ => false,
    }
}

/// The VolumeAttributesClasses a claim (JSON) refers to, sorted, without duplicates.
pub fn claim_attribute_classes(pvc: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = [
        &pvc["spec"]["volumeAttributesClassName"],
        &pvc["status"]["currentVolumeAttributesClassName"],
        &pvc["status"]["modifyVolumeStatus"]["targetVolumeAttributesClassName"],
    ]
    .into_iter()
    .filter_map(Value::as_str)
    .filter(|n| !n.is_empty())
    .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Whether a PersistentVolumeClaim (JSON) meets one requirement.
pub fn claim_matches(req: &Requirement, pvc: &Value) -> bool {
    if req.scope != "VolumeAttributesClass" {
        return false;
    }
    let names = claim_attribute_classes(pvc);
    let listed = |n: &str| req.values.iter().any(|v| v == n);
    match req.operator.as_str() {
        "Exists" => !names.is_empty(),
        "DoesNotExist" => names.is_empty(),
        "In" => names.iter().any(|n| listed(n)),
        "NotIn" => names.is_empty() || names.iter().any(|n| !listed(n)),
        _ => false,
    }
}

/// Whether a quota (JSON) covers an object of `(group, plural)`: every object when it has no
/// scopes, otherwise only pods and claims meeting all its requirements.
pub fn covers(quota: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    let reqs = requirements(quota);
    if reqs.is_empty() {
        return true;
    }
    match (group, plural) {
        ("", "pods") => reqs.iter().all(|r| pod_matches(r, obj)),
        ("", "persistentvolumeclaims") => reqs.iter().all(|r| claim_matches(r, obj)),
        _ => false,
    }
}

/// Whether a quota (JSON) has scopes at all, and so counts only some pods or claims.
pub fn is_scoped(quota: &Value) -> bool {
    !requirements(quota).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({ "spec": spec })
    }

    #[test]
    fn terminating_and_best_effort() {
        let quota = json!({"spec": {"scopes": ["Terminating", "BestEffort"]}});
        let batch = pod(json!({"activeDeadlineSeconds": 30, "containers": [{"name": "a"}]}));
        let service = pod(json!({"containers": [{"name": "a"}]}));
        let sized = pod(json!({"activeDeadlineSeconds": 30,
            "containers": [{"name": "a"}],
            "initContainers": [{"name": "i", "resources": {"limits": {"memory": "1Mi"}}}]}));
        assert!(covers(&quota, "", "pods", &batch));
        assert!(!covers(&quota, "", "pods", &service), "not terminating");
        assert!(!covers(&quota, "", "pods", &sized), "not best effort");
        assert!(
            !covers(&quota, "", "configmaps", &json!({})),
            "scoped quotas count pods only"
        );
        let opposite = json!({"spec": {"scopes": ["NotTerminating", "NotBestEffort"]}});
        assert!(!covers(&opposite, "", "pods", &batch));
        assert!(!covers(&opposite, "", "pods", &service));
        let unscoped = json!({"spec": {"hard": {"pods": "1"}}});
        assert!(covers(&unscoped, "", "configmaps", &json!({})));
        let storage_only = pod(json!({"containers": [{"name": "a",
            "resources": {"requests": {"ephemeral-storage": "1Gi"}}}]}));
        assert!(is_best_effort(&storage_only));
    }

    #[test]
    fn priority_class_selector() {
        let sel = |op: &str, values: Value| {
            json!({"spec": {"scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": op, "values": values}]}}})
        };
        let high = pod(json!({"priorityClassName": "high", "containers": []}));
        let none = pod(json!({"containers": []}));
        let in_high = sel("In", json!(["high", "critical"]));
        assert!(covers(&in_high, "", "pods", &high));
        assert!(!covers(&in_high, "", "pods", &none));
        let not_in = sel("NotIn", json!(["high"]));
        assert!(!covers(&not_in, "", "pods", &high));
        assert!(covers(&not_in, "", "pods", &none));
        let exists = sel("Exists", Value::Null);
        assert!(covers(&exists, "", "pods", &high));
        assert!(!covers(&exists, "", "pods", &none));
        let absent = sel("DoesNotExist", Value::Null);
        assert!(!covers(&absent, "", "pods", &high));
        assert!(!covers(&absent, "", "pods", &none));
    }

    #[test]
    fn volume_attributes_class_selector() {
        let sel = |op: &str, values: Value| {
            json!({"spec": {"scopeSelector": {"matchExpressions": [
                {"scopeName": "VolumeAttributesClass", "operator": op, "values": values}]}}})
        };
        let claim = |spec: Value, status: Value| json!({"spec": spec, "status": status});
        let gold = claim(json!({"volumeAttributesClassName": "gold"}), json!({}));
        let none = claim(json!({}), json!({}));
        let empty = claim(json!({"volumeAttributesClassName": ""}), json!({}));
        // Moving from silver to gold: both count.
        let moving = claim(
            json!({"volumeAttributesClassName": "gold"}),
            json!({"currentVolumeAttributesClassName": "silver",
                   "modifyVolumeStatus": {"targetVolumeAttributesClassName": "gold", "status": "InProgress"}}),
        );
        let pvc = "persistentvolumeclaims";
        let in_gold = sel("In", json!(["gold"]));
        assert!(covers(&in_gold, "", pvc, &gold));
        assert!(covers(&in_gold, "", pvc, &moving));
        assert!(!covers(&in_gold, "", pvc, &none));
        let in_silver = sel("In", json!(["silver"]));
        assert!(
            covers(&in_silver, "", pvc, &moving),
            "the current class counts"
        );
        assert!(!covers(&in_silver, "", pvc, &gold));
        let not_in = sel("NotIn", json!(["gold"]));
        assert!(!covers(&not_in, "", pvc, &gold));
        assert!(covers(&not_in, "", pvc, &moving), "silver is not gold");
        assert!(covers(&not_in, "", pvc, &none), "no class is not gold");
        let exists = sel("Exists", Value::Null);
        assert!(covers(&exists, "", pvc, &gold));
        assert!(!covers(&exists, "", pvc, &none));
        assert!(
            !covers(&exists, "", pvc, &empty),
            "an empty name is no class"
        );
        let absent = sel("DoesNotExist", Value::Null);
        assert!(covers(&absent, "", pvc, &none));
        assert!(!covers(&absent, "", pvc, &gold));
        assert_eq!(claim_attribute_classes(&moving), ["gold", "silver"]);
        // Each kind meets only its own scopes.
        assert!(!covers(
            &exists,
            "",
            "pods",
            &pod(json!({"containers": []}))
        ));
        let priority = json!({"spec": {"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "NotIn", "values": ["x"]}]}}});
        assert!(!covers(&priority, "", pvc, &gold));
        assert!(is_scoped(&priority));
        assert!(!is_scoped(&json!({"spec": {"hard": {"pods": "1"}}})));
    }

    #[test]
    fn cross_namespace_affinity_scope() {
        let quota = json!({"spec": {"scopes": ["CrossNamespacePodAffinity"]}});
        let cross = pod(json!({"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "x", "namespaceSelector": {}}]}}}));
        let local = pod(json!({"affinity": {"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "x"}]}}}));
        assert!(covers(&quota, "", "pods", &cross));
        assert!(!covers(&quota, "", "pods", &local));
    }
}
