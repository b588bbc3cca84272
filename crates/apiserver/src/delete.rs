//! DELETE of one object, the way upstream's generic registry does it: preconditions, then
//! deletion propagation ([`crate::propagation`]: the `orphan` / `foregroundDeletion`
//! finalizers), finalizers and pod grace periods decide between marking the object as deleting
//! (a deletionTimestamp; someone else finishes the job) and removing it now.

use std::sync::Arc;

use api::{ApiError, ResourceInfo};
use serde_json::{Value, json};

use crate::generic::{MAX_RETRIES, Reply, has_finalizers};
use crate::objects::{self, meta_mut, meta_str};
use crate::propagation::{self, Requested};
use crate::request::Query;
use crate::state::ApiState;

/// The object's `metadata.finalizers`.
fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the DeleteOptions preconditions against the stored object.
fn check_preconditions(
    res: &ResourceInfo,
    name: &str,
    options: &Value,
    obj: &Value,
    rev: i64,
) -> Result<(), ApiError> {
    let pre = &options["preconditions"];
    if let Some(uid) = pre["uid"].as_str()
        && meta_str(obj, "uid") != Some(uid)
    {
        return Err(ApiError::conflict(
            res.group,
            res.plural,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(obj, "uid").unwrap_or("")
            ),
        ));
    }
    if let Some(want) = pre["resourceVersion"].as_str()
        && want != rev.to_string()
    {
        return Err(ApiError::conflict(
            res.group,
            res.plural,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rev}"
            ),
        ));
    }
    Ok(())
}

impl ApiState {
    /// DELETE of one object, honouring preconditions, propagation policy, finalizers and pod
    /// grace periods.
    pub async fn delete(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        name: &str,
        options: &Value,
        query: &Query,
    ) -> Result<Reply, ApiError> {
        if res.group.is_empty()
            && res.plural == "namespaces"
            && matches!(name, "default" | "kube-system" | "kube-public")
        {
            let mut e = ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            ));
            e.kind = Some("namespaces".into());
            e.name = Some(name.into());
            return Err(e);
        }
        let dry_run = query.dry_run()?
            || options["dryRun"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "All"));
        let requested = Requested::parse(options, query)?;
        let default_policy = propagation::default_for(res);
        let ns = if res.namespaced { ns } else { None };
        let key = res.key(ns, name);
        let grace_query = query.int("gracePeriodSeconds")?;
        let grace_option = grace_query.or_else(|| options["gracePeriodSeconds"].as_i64());
        for _ in 0..MAX_RETRIES {
            let (mut obj, rev) = self.read(res, ns, name).await?;
            check_preconditions(res, name, options, &obj, rev)?;
            let already_deleting = obj["metadata"]
                .get("deletionTimestamp")
                .is_some_and(|t| !t.is_null());
            // The garbage-collection finalizers the policy asks for.
            let new_finalizers =
                propagation::finalizers_after_delete(requested, &finalizers(&obj), default_policy);
            let finalizers_changed = new_finalizers.is_some();
            if let Some(list) = new_finalizers {
                let meta = meta_mut(&mut obj);
                if list.is_empty() {
                    meta.remove("finalizers");
                } else {
                    meta.insert("finalizers".into(), json!(list));
                }
            }
            let has_finalizers = has_finalizers(res, &obj);
            // Pods bound to a node are deleted gracefully: the node agent stops them first.
            let requested_grace = if res.group.is_empty()
                && res.plural == "pods"
                && obj["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
            {
                let grace = grace_option
                    .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                    .unwrap_or(30);
                Some(grace.max(0))
            } else {
                None
            };
            let pod_grace = requested_grace.filter(|g| *g > 0);
            if has_finalizers || pod_grace.is_some() {
                // A second DELETE may only shorten a pending grace period (to 0 as well: a pod
                // kept by finalizers then goes as soon as they are removed).
                let shortens = requested_grace.is_some_and(|g| {
                    obj["metadata"]["deletionGracePeriodSeconds"]
                        .as_i64()
                        .is_none_or(|cur| cur > g)
                });
                if already_deleting && !shortens && !finalizers_changed {
                    return Ok(Reply::ok(obj));
                }
                if !already_deleting || shortens {
                    let grace = requested_grace.unwrap_or(0);
                    let meta = meta_mut(&mut obj);
                    meta.insert(
                        "deletionTimestamp".into(),
                        Value::String(objects::now_plus(grace)),
                    );
                    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                meta_mut(&mut obj).remove("resourceVersion");
                if res.plural == "namespaces" {
                    obj["status"]["phase"] = json!("Terminating");
                }
                if dry_run {
                    return Ok(Reply::ok(obj));
                }
                match self.store.update(&key, objects::encode(&obj)?, rev).await {
                    Ok(kv) => {
                        objects::set_resource_version(&mut obj, kv.mod_revision);
                        return Ok(Reply::ok(obj));
                    }
                    Err(store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(objects::store_error(e, res.group, res.plural, name)),
                }
            }
            if dry_run {
                return Ok(Reply::ok(obj));
            }
            match self.store.delete(&key, Some(rev)).await {
                Ok(kv) => {
                    self.release(res, &obj).await;
                    objects::set_resource_version(&mut obj, kv.mod_revision);
                    return Ok(Reply::ok(obj));
                }
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(objects::store_error(e, res.group, res.plural, name)),
            }
        }
        Err(ApiError::conflict(
            res.group,
            res.plural,
            name,
            "too many concurrent updates, please retry",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn state(dir: &tempfile::TempDir) -> ApiState {
        let store = store::sqlite::SqliteStore::open(&dir.path().join("db.sqlite")).expect("store");
        let state = ApiState::new(Arc::new(store), "token".into(), "127.0.0.1:0".into());
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        state
            .create(&resource("", "namespaces"), None, ns, &Query::parse(None))
            .await
            .expect("namespace");
        state
    }

    fn resource(group: &str, plural: &str) -> Arc<ResourceInfo> {
        api::Registry::global()
            .all()
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .cloned()
            .expect("resource")
    }

    async fn create(state: &ApiState, res: &Arc<ResourceInfo>, obj: Value) {
        let q = Query::parse(None);
        state
            .create(res, Some("default"), obj, &q)
            .await
            .expect("create");
    }

    #[tokio::test]
    async fn propagation_policies_mark_or_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state(&dir).await;
        let cms = resource("", "configmaps");
        create(
            &state,
            &cms,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
        )
        .await;
        let q = Query::parse(None);
        let orphan = json!({"propagationPolicy": "Orphan"});
        let r = state
            .delete(&cms, Some("default"), "a", &orphan, &q)
            .await
            .expect("orphan delete");
        assert_eq!(finalizers(&r.body), vec![propagation::ORPHAN]);
        assert!(r.body["metadata"]["deletionTimestamp"].is_string());
        // Still there; a foreground DELETE swaps the finalizer.
        let fg = Query::parse(Some("propagationPolicy=Foreground"));
        let r = state
            .delete(&cms, Some("default"), "a", &Value::Null, &fg)
            .await
            .expect("foreground delete");
        assert_eq!(finalizers(&r.body), vec![propagation::FOREGROUND]);
        let stored = state.get(&cms, Some("default"), "a").await.expect("get");
        assert_eq!(finalizers(&stored), vec![propagation::FOREGROUND]);
        // Background: nothing holds it any more, so it goes now.
        let bg = json!({"propagationPolicy": "Background"});
        state
            .delete(&cms, Some("default"), "a", &bg, &q)
            .await
            .expect("background delete");
        let gone = state.get(&cms, Some("default"), "a").await;
        assert_eq!(gone.expect_err("deleted").code, 404);
    }

    #[tokio::test]
    async fn jobs_orphan_by_default_and_dry_run_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state(&dir).await;
        let jobs = resource("batch", "jobs");
        create(
            &state,
            &jobs,
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox"}]}}}}),
        )
        .await;
        let dry = Query::parse(Some("dryRun=All"));
        let r = state
            .delete(&jobs, Some("default"), "j", &Value::Null, &dry)
            .await
            .expect("dry run");
        assert_eq!(finalizers(&r.body), vec![propagation::ORPHAN]);
        let stored = state.get(&jobs, Some("default"), "j").await.expect("get");
        assert!(finalizers(&stored).is_empty());
        let q = Query::parse(None);
        let r = state
            .delete(&jobs, Some("default"), "j", &Value::Null, &q)
            .await
            .expect("default delete");
        assert_eq!(finalizers(&r.body), vec![propagation::ORPHAN]);
        // kubectl's background policy deletes it at once.
        let bg = Query::parse(Some("propagationPolicy=Background"));
        state
            .delete(&jobs, Some("default"), "j", &Value::Null, &bg)
            .await
            .expect("background delete");
        assert_eq!(
            state
                .get(&jobs, Some("default"), "j")
                .await
                .expect_err("deleted")
                .code,
            404
        );
    }

    #[tokio::test]
    async fn zero_grace_shortens_a_pod_kept_by_finalizers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state(&dir).await;
        let pods = resource("", "pods");
        create(
            &state,
            &pods,
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "finalizers": ["example.com/keep"]},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}),
        )
        .await;
        let q = Query::parse(None);
        let r = state
            .delete(&pods, Some("default"), "p", &Value::Null, &q)
            .await
            .expect("graceful delete");
        assert_eq!(r.body["metadata"]["deletionGracePeriodSeconds"], 30);
        // The agent's final DELETE (grace 0) shortens it even though a finalizer keeps the pod,
        // so removing the finalizer later deletes the pod instead of waiting for the agent.
        let now = Query::parse(Some("gracePeriodSeconds=0"));
        let r = state
            .delete(&pods, Some("default"), "p", &Value::Null, &now)
            .await
            .expect("final delete");
        assert_eq!(r.body["metadata"]["deletionGracePeriodSeconds"], 0);
        assert!(state.get(&pods, Some("default"), "p").await.is_ok());
    }

    #[tokio::test]
    async fn invalid_options_are_rejected_before_anything_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state(&dir).await;
        let cms = resource("", "configmaps");
        create(
            &state,
            &cms,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}),
        )
        .await;
        let q = Query::parse(None);
        let both = json!({"propagationPolicy": "Orphan", "orphanDependents": true});
        let e = state
            .delete(&cms, Some("default"), "b", &both, &q)
            .await
            .expect_err("invalid");
        assert_eq!(e.code, 422);
        assert!(state.get(&cms, Some("default"), "b").await.is_ok());
    }
}
