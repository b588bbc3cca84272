//! ResourceQuota admission on create, as upstream's ResourceQuota admission plugin: every
//! quota of the namespace whose scopes cover the new object (`api::quota_scope`; scoped
//! quotas cover only the pods they select) and that constrains something it uses is checked against
//! its `status.hard` / `status.used` (kept by the quota controller), and charged.
//!
//! Refusals are 403 Forbidden with upstream's messages: `exceeded quota: NAME, requested:
//! pods=1, used: pods=2, limited: pods=2`; `failed quota: NAME: must specify requests.cpu for:
//! app` (a pod without a request or limit that a quota tracks); `status unknown for quota:
//! NAME, resource: pods` (the controller has not filled its status yet). An admitted object's
//! usage is added to `status.used` in one compare-and-swap write per quota, re-checked on the
//! current quota, so concurrent creates cannot both take the last unit; the controller later
//! recomputes `used` from what exists (which also gives back what deleted objects used).

use api::quota::{self, Usage};
use api::quota_scope;
use api::{ApiError, ResourceInfo};
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

/// Checks one quota (JSON) against the new object's usage `delta`.
fn check(
    res: &ResourceInfo,
    obj: &Value,
    quota_obj: &Value,
    delta: &Usage,
) -> Result<(), ApiError> {
    let qname = objects::name(quota_obj);
    let name = objects::name(obj);
    let hard = quota::parse_list(&quota_obj["status"]["hard"]);
    if res.group.is_empty() && res.plural == "pods" {
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

impl ApiState {
    /// Checks and charges the namespace's quotas for a new object (`dry_run`: check only).
    pub async fn admit_quota(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        obj: &Value,
        query: &Query,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        let Some(ns) = ns.filter(|_| res.namespaced) else {
            return Ok(());
        };
        let Some(quotas) = self.registry.get("", "v1", "resourcequotas") else {
            return Ok(());
        };
        let range = store::RangeRequest {
            prefix: format!("{}{ns}/", quotas.key_prefix()),
            ..Default::default()
        };
        let list = self.store.range(range).await.map_err(ApiError::internal)?;
        if list.kvs.is_empty() {
            return Ok(());
        }
        let delta = quota::usage(res.group, res.plural, obj);
        let mut charged = vec![];
        for kv in &list.kvs {
            let q = objects::decode(kv)?;
            if !quota_scope::covers(&q, res.group, res.plural, obj) {
                continue;
            }
            let spec_hard = quota::parse_list(&q["spec"]["hard"]);
            let relevant = spec_hard
                .keys()
                .any(|k| delta.get(k).is_some_and(|v| *v > 0))
                || (res.group.is_empty()
                    && res.plural == "pods"
                    && !quota::missing_specs(obj, &spec_hard).is_empty());
            if !relevant {
                continue;
            }
            if q["status"]["hard"].as_object().is_none_or(|h| h.is_empty()) {
                let keys: Vec<&String> = spec_hard
                    .keys()
                    .filter(|k| delta.contains_key(*k))
                    .collect();
                let keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
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
            check(res, obj, &q, &delta)?;
            charged.push(objects::name(&q).to_string());
        }
        if dry_run {
            return Ok(());
        }
        for qname in charged {
            self.write(quotas, Some(ns), &qname, Some("status"), query, |current| {
                check(res, obj, current, &delta)?;
                let hard = quota::parse_list(&current["status"]["hard"]);
                let mut used = quota::parse_list(&current["status"]["used"]);
                for k in hard.keys() {
                    *used.entry(k.clone()).or_insert(0) += delta.get(k).copied().unwrap_or(0);
                }
                let mut new = current.clone();
                new["status"]["used"] = json!(
                    used.iter()
                        .filter(|(k, _)| hard.contains_key(*k))
                        .map(|(k, v)| (k.clone(), Value::String(quota::format(*v))))
                        .collect::<serde_json::Map<_, _>>()
                );
                objects::meta_mut(&mut new).remove("resourceVersion");
                Ok(new)
            })
            .await?;
        }
        Ok(())
    }
}
