//! ResourceQuota admission, as upstream's ResourceQuota admission plugin: every quota of the
//! namespace whose scopes cover the object (`api::quota_scope`; scoped quotas cover only the
//! pods and PersistentVolumeClaims they select) and that constrains something it uses is
//! checked against its `status.hard` / `status.used` (kept by the quota controller), and
//! charged.
//!
//! Creates are charged what the object uses. Updates are looked at where upstream's
//! evaluators handle them ([`handles_update`]): a claim's spec (a resize, a new
//! VolumeAttributesClass), a claim's status when its allocated size or its classes change
//! (charged, never refused, as upstream), a service (a type change to NodePort or
//! LoadBalancer, more ports), a pod whose Terminating scope changes (`activeDeadlineSeconds`
//! set). An update is charged its growth (`api::quota::growth`: new usage less old, per
//! resource, never negative) by the quotas that covered the old object too, and the whole new
//! usage by those it enters (a claim moving into a VolumeAttributesClass scope).
//!
//! Refusals are 403 Forbidden with upstream's messages: `exceeded quota: NAME, requested:
//! pods=1, used: pods=2, limited: pods=2`; `failed quota: NAME: must specify requests.cpu for:
//! app` (a pod without a request or limit that a quota tracks); `status unknown for quota:
//! NAME, resource: pods` (the controller has not filled its status yet). An admitted object's
//! usage is added to `status.used` in one compare-and-swap write per quota, re-checked on the
//! current quota, so concurrent writes cannot both take the last unit; a write that then fails
//! in the store gives the charge back ([`ApiState::refund_quota`]), and the controller later
//! recomputes `used` from what exists (which also gives back what deleted objects used).

use api::quota::{self, Usage};
use api::quota_scope;
use api::{ApiError, ResourceInfo};
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::objects;
use crate::request::Query;
use crate::state::ApiState;

/// The 403 of a refused create of `res` named `name`.
fn forbidden(res: &ResourceInfo, name: &str, why: String) -> ApiError {
    let mut e = ApiError::forbidden(format!("{} \"{name}\" is forbidden: {why}", res.plural));
    e.kind = Some(res.plural.to_string());
    e.name = Some(name.to_string());
    if !res.group.is_empty() {
        e.group = Some(res.group.to_string());
    }
    e
}

/// Checks one quota (JSON) against the object's usage `delta`.
fn check(
    res: &ResourceInfo,
    obj: &Value,
    quota_obj: &Value,
    delta: &Usage,
) -> Result<(), ApiError> {
    let qname = objects::name(quota_obj);
    let name = objects::name(obj);
    let hard = quota::parse_list(&quota_obj["status"]["hard"]);
    if is_pod(res) {
        let missing = quota::missing_specs(obj, &hard);
        if !missing.is_empty() {
            return Err(forbidden(
                res,
                name,
                format!("failed quota: {qname}: must specify {}", missing.join("; ")),
            ));
        }
    }
    let used = quota::parse_list(&quota_obj["status"]["used"]);
    let over = quota::exceeded(&hard, &used, delta);
    if over.is_empty() {
        return Ok(());
    }
    Err(forbidden(
        res,
        name,
        format!(
            "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
            quota::pretty(delta, &over),
            quota::pretty(&used, &over),
            quota::pretty(&hard, &over),
        ),
    ))
}

fn is_pod(res: &ResourceInfo) -> bool {
    res.group.is_empty() && res.plural == "pods"
}

fn is_terminating(pod: &Value) -> bool {
    pod["spec"]["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|s| s >= 0)
}

/// Whether quota admission looks at an update of `res` (its `subresource`) from `old` to
/// `new`, as upstream's evaluators' `Handles`: claims (and their status when the allocated
/// size or the VolumeAttributesClasses change), services, and pods whose Terminating scope
/// changes. Other kinds are counted on create only.
pub fn handles_update(
    res: &ResourceInfo,
    subresource: Option<&str>,
    new: &Value,
    old: &Value,
) -> bool {
    if !res.group.is_empty() {
        return false;
    }
    match (res.plural, subresource) {
        ("persistentvolumeclaims" | "services", None) => true,
        ("persistentvolumeclaims", Some("status")) => {
            let allocated = |c: &Value| c["status"]["allocatedResources"]["storage"].clone();
            allocated(new) != allocated(old)
                || quota_scope::claim_attribute_classes(new)
                    != quota_scope::claim_attribute_classes(old)
        }
        ("pods", None) => is_terminating(new) != is_terminating(old),
        _ => false,
    }
}

/// What an admitted write charged: the namespace, and per quota what was added.
#[derive(Debug, Default)]
pub struct Charges {
    ns: String,
    items: Vec<(String, Usage)>,
}

impl Charges {
    /// Whether nothing was charged.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// `status.used` of a quota (JSON) with `delta` added (`sign` 1) or taken away (-1, never
/// below zero), for the resources of its `status.hard`.
fn add_used(current: &Value, delta: &Usage, sign: i64) -> Value {
    let hard = quota::parse_list(&current["status"]["hard"]);
    let mut used = quota::parse_list(&current["status"]["used"]);
    for k in hard.keys() {
        let v = used.entry(k.clone()).or_insert(0);
        *v = (*v + sign * delta.get(k).copied().unwrap_or(0)).max(0);
    }
    let mut new = current.clone();
    new["status"]["used"] = json!(
        used.iter()
            .filter(|(k, _)| hard.contains_key(*k))
            .map(|(k, v)| (k.clone(), Value::String(quota::format(*v))))
            .collect::<serde_json::Map<_, _>>()
    );
    objects::meta_mut(&mut new).remove("resourceVersion");
    new
}

impl ApiState {
    /// A write of a quota's `status.used` (boxed: the generic update path that calls quota
    /// admission is the one this goes through).
    fn write_used<'a>(
        &'a self,
        quotas: &'a std::sync::Arc<ResourceInfo>,
        ns: &'a str,
        name: &'a str,
        query: &'a Query,
        change: impl Fn(&Value) -> Result<Value, ApiError> + Send + Sync + 'a,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            self.write(quotas, Some(ns), name, Some("status"), query, change)
                .await
                .map(drop)
        })
    }

    /// Checks and charges the namespace's quotas for a write of `obj` (`dry_run`: check
    /// only): a create (`old` is `None`), or an update from `old` of the object or its
    /// `subresource`. Returns what was charged, for [`ApiState::refund_quota`] when the write
    /// does not happen after all.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit_quota(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        obj: &Value,
        old: Option<&Value>,
        subresource: Option<&str>,
        query: &Query,
        dry_run: bool,
    ) -> Result<Charges, ApiError> {
        let Some(ns) = ns.filter(|_| res.namespaced) else {
            return Ok(Charges::default());
        };
        match old {
            Some(old) if !handles_update(res, subresource, obj, old) => {
                return Ok(Charges::default());
            }
            None if subresource.is_some() => return Ok(Charges::default()),
            _ => {}
        }
        // An object on its way out gives its share back rather than taking more.
        if obj["metadata"]
            .get("deletionTimestamp")
            .is_some_and(|t| !t.is_null())
        {
            return Ok(Charges::default());
        }
        let Some(quotas) = self.registry.get("", "v1", "resourcequotas") else {
            return Ok(Charges::default());
        };
        let quota_kvs = self
            .range_few(format!("{}{ns}/", quotas.key_prefix()))
            .await?;
        if quota_kvs.is_empty() {
            return Ok(Charges::default());
        }
        // A status write (a claim's allocated size) is recorded, never refused.
        let enforce = subresource != Some("status");
        let usage = quota::usage(res.group, res.plural, obj);
        let old_usage = old.map(|o| quota::usage(res.group, res.plural, o));
        let mut planned = vec![];
        for kv in &quota_kvs {
            let q = objects::decode(kv)?;
            if !quota_scope::covers(&q, res.group, res.plural, obj) {
                continue;
            }
            let spec_hard = quota::parse_list(&q["spec"]["hard"]);
            let relevant = spec_hard
                .keys()
                .any(|k| usage.get(k).is_some_and(|v| *v > 0))
                || (is_pod(res) && !quota::missing_specs(obj, &spec_hard).is_empty());
            if !relevant {
                continue;
            }
            if q["status"]["hard"].as_object().is_none_or(|h| h.is_empty()) {
                let keys: Vec<&str> = spec_hard
                    .keys()
                    .filter(|k| usage.contains_key(*k))
                    .map(String::as_str)
                    .collect();
                return Err(forbidden(
                    res,
                    objects::name(obj),
                    format!(
                        "status unknown for quota: {}, resource: {}",
                        objects::name(&q),
                        keys.join(",")
                    ),
                ));
            }
            // An update is charged its growth where the quota covered the old object too.
            let delta = match (old, &old_usage) {
                (Some(old), Some(old_usage))
                    if quota_scope::covers(&q, res.group, res.plural, old) =>
                {
                    quota::growth(&usage, old_usage)
                }
                _ => usage.clone(),
            };
            if enforce {
                check(res, obj, &q, &delta)?;
            }
            let hard = quota::parse_list(&q["status"]["hard"]);
            if delta.iter().any(|(k, v)| *v > 0 && hard.contains_key(k)) {
                planned.push((objects::name(&q).to_string(), delta));
            }
        }
        let mut charged = Charges {
            ns: ns.to_string(),
            items: vec![],
        };
        if dry_run {
            return Ok(charged);
        }
        for (qname, delta) in planned {
            let written = self
                .write_used(quotas, ns, &qname, query, |current| {
                    if enforce {
                        check(res, obj, current, &delta)?;
                    }
                    Ok(add_used(current, &delta, 1))
                })
                .await;
            if let Err(e) = written {
                self.refund_quota(charged).await;
                return Err(e);
            }
            charged.items.push((qname, delta));
        }
        Ok(charged)
    }

    /// Gives back what [`ApiState::admit_quota`] charged for a write that then failed.
    pub async fn refund_quota(&self, charges: Charges) {
        let Some(quotas) = self.registry.get("", "v1", "resourcequotas") else {
            return;
        };
        let query = Query::default();
        for (qname, delta) in charges.items {
            let refunded = self
                .write_used(quotas, &charges.ns, &qname, &query, |current| {
                    Ok(add_used(current, &delta, -1))
                })
                .await;
            if let Err(e) = refunded {
                tracing::debug!(quota = %qname, error = %e.message, "quota refund failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(plural: &str) -> &'static ResourceInfo {
        api::registry::Registry::global()
            .get("", "v1", plural)
            .expect("a core resource")
    }

    #[test]
    fn updates_that_quota_looks_at() {
        let pvc = info("persistentvolumeclaims");
        let claim = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        assert!(handles_update(pvc, None, &claim, &claim));
        assert!(!handles_update(pvc, Some("status"), &claim, &claim));
        let mut allocated = claim.clone();
        allocated["status"]["allocatedResources"] = json!({"storage": "2Gi"});
        assert!(handles_update(pvc, Some("status"), &allocated, &claim));
        let mut modified = claim.clone();
        modified["status"]["currentVolumeAttributesClassName"] = json!("gold");
        assert!(handles_update(pvc, Some("status"), &modified, &claim));

        let svc = info("services");
        assert!(handles_update(svc, None, &json!({}), &json!({})));
        assert!(!handles_update(svc, Some("status"), &json!({}), &json!({})));

        let pods = info("pods");
        let pod = json!({"spec": {"containers": []}});
        let mut deadline = pod.clone();
        deadline["spec"]["activeDeadlineSeconds"] = json!(30);
        assert!(handles_update(pods, None, &deadline, &pod));
        assert!(!handles_update(pods, None, &pod, &pod));
        let mut shorter = deadline.clone();
        shorter["spec"]["activeDeadlineSeconds"] = json!(10);
        assert!(!handles_update(pods, None, &shorter, &deadline));

        assert!(!handles_update(info("configmaps"), None, &pod, &pod));
    }

    #[test]
    fn charges_and_refunds_stay_within_hard_and_above_zero() {
        let q = json!({"metadata": {"name": "q", "resourceVersion": "7"}, "status": {
            "hard": {"requests.storage": "5Gi", "persistentvolumeclaims": "2"},
            "used": {"requests.storage": "1Gi", "persistentvolumeclaims": "1"}}});
        let delta = quota::parse_list(&json!({"requests.storage": "2Gi", "services": "1"}));
        let more = add_used(&q, &delta, 1);
        assert_eq!(
            more["status"]["used"],
            json!({"requests.storage": "3Gi", "persistentvolumeclaims": "1"})
        );
        assert!(more["metadata"].get("resourceVersion").is_none());
        let back = add_used(&more, &delta, -1);
        assert_eq!(back["status"]["used"], q["status"]["used"]);
        assert_eq!(
            add_used(&q, &delta, -1)["status"]["used"]["requests.storage"],
            "0"
        );
    }

    #[test]
    fn refusal_names_what_the_update_requests() {
        let pvc = info("persistentvolumeclaims");
        let q = json!({"metadata": {"name": "storage"}, "status": {
            "hard": {"requests.storage": "3Gi"}, "used": {"requests.storage": "1Gi"}}});
        let claim = json!({"metadata": {"name": "data"}});
        let growth = quota::parse_list(&json!({"requests.storage": "4Gi"}));
        let err = check(pvc, &claim, &q, &growth).expect_err("over");
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "persistentvolumeclaims \"data\" is forbidden: exceeded quota: storage, requested: requests.storage=4Gi, used: requests.storage=1Gi, limited: requests.storage=3Gi"
        );
        let fits = quota::parse_list(&json!({"requests.storage": "2Gi"}));
        assert!(check(pvc, &claim, &q, &fits).is_ok());
    }
}
