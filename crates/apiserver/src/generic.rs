//! The generic store: create, get, update, patch and delete for every resource, the way
//! upstream's `genericregistry.Store` does it. Per-resource behaviour comes from the
//! registry's strategy; the order of hooks is fixed here, once:
//! decode -> metadata -> prepare (create) or spec/status split (update) -> defaults ->
//! mutating admission (create) -> validation -> validating admission (LimitRanger,
//! ResourceQuota; on create and update) -> allocations -> compare-and-swap write (a failed
//! write gives back what ResourceQuota admission charged). DELETE lives in
//! [`crate::delete`].

use std::sync::Arc;

use api::error::FieldCause;
use api::resources::validation::validate_meta;
use api::strategy::spec_changed;
use api::{ApiError, ResourceInfo};
use serde_json::{Value, json};

use crate::body::PatchType;
use crate::objects::{self, meta_mut, meta_str};
use crate::request::{FieldValidation, Query};
use crate::state::ApiState;

/// A successful answer: HTTP code, body, and `Warning` headers.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub code: u16,
    /// JSON body.
    pub body: Value,
    /// Warnings for the client (`Warning: 299 - "..."`).
    pub warnings: Vec<String>,
}

impl Reply {
    /// 200 with a body.
    pub fn ok(body: Value) -> Self {
        Self {
            code: 200,
            body,
            warnings: vec![],
        }
    }
}

/// How many times an unconditional update retries a lost compare-and-swap.
pub(crate) const MAX_RETRIES: usize = 16;

/// Decodes a client object through the resource's type and applies the fieldValidation policy.
fn canonicalize(
    res: &ResourceInfo,
    raw: &Value,
    query: &Query,
    warnings: &mut Vec<String>,
) -> Result<Value, ApiError> {
    let policy = query.field_validation()?;
    let mut unknown = vec![];
    let obj = res.strategy.decode(raw, &mut unknown)?;
    match policy {
        FieldValidation::Strict if !unknown.is_empty() => {
            let list: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
        FieldValidation::Warn => {
            warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")))
        }
        _ => {}
    }
    Ok(obj)
}

/// Checks that a body's apiVersion and kind match the URL's resource.
fn check_type(res: &ResourceInfo, raw: &Value) -> Result<(), ApiError> {
    let api_version = raw.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = raw.get("kind").and_then(Value::as_str).unwrap_or("");
    if !api_version.is_empty() && api_version != res.api_version {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            res.api_version
        )));
    }
    if !kind.is_empty() && kind != res.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            res.kind
        )));
    }
    Ok(())
}

fn validate(res: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
        serde_json::from_value(obj.get("metadata").cloned().unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("invalid metadata: {e}")))?;
    let mut causes: Vec<FieldCause> = validate_meta(
        &meta,
        res.namespaced,
        api::resources::name_rule(res.group, res.kind),
    );
    causes.extend(res.strategy.validate(obj, old));
    if causes.is_empty() {
        Ok(())
    } else {
        let name = meta.name.or(meta.generate_name).unwrap_or_default();
        Err(ApiError::invalid(res.group, res.kind, &name, causes))
    }
}

/// Whether an object has finalizers left (for namespaces, `spec.finalizers` count too).
pub(crate) fn has_finalizers(res: &ResourceInfo, obj: &Value) -> bool {
    let non_empty = |v: &Value| v.as_array().is_some_and(|f| !f.is_empty());
    non_empty(&obj["metadata"]["finalizers"])
        || (res.group.is_empty()
            && res.plural == "namespaces"
            && non_empty(&obj["spec"]["finalizers"]))
}

impl ApiState {
    /// Reads one object with its resourceVersion.
    pub async fn read(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<(Value, i64), ApiError> {
        let key = res.key(ns, name);
        let (kv, _) = self
            .store
            .get(&key)
            .await
            .map_err(|e| objects::store_error(e, res.group, res.plural, name))?;
        let kv = kv.ok_or_else(|| ApiError::not_found(res.group, res.plural, name))?;
        Ok((objects::decode(&kv)?, kv.mod_revision))
    }

    /// GET of one object.
    pub async fn get(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        Ok(self.read(res, ns, name).await?.0)
    }

    /// Fails unless namespace `ns` exists and is not terminating.
    async fn check_namespace(&self, ns: &str) -> Result<(), ApiError> {
        let key = format!("/registry/namespaces/{ns}");
        let (kv, _) = self.store.get(&key).await.map_err(ApiError::internal)?;
        let Some(kv) = kv else {
            return Err(ApiError::not_found("", "namespaces", ns));
        };
        let obj = objects::decode(&kv)?;
        if obj["metadata"]
            .get("deletionTimestamp")
            .is_some_and(|t| !t.is_null())
        {
            let mut e = ApiError::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ));
            e.kind = Some("namespaces".into());
            e.name = Some(ns.into());
            return Err(e);
        }
        Ok(())
    }

    /// POST: creates an object.
    pub async fn create(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        raw: Value,
        query: &Query,
    ) -> Result<Reply, ApiError> {
        check_type(res, &raw)?;
        let mut warnings = vec![];
        let mut obj = canonicalize(res, &raw, query, &mut warnings)?;
        let dry_run = query.dry_run()?;
        let namespace = if res.namespaced {
            let ns = ns.ok_or_else(|| {
                ApiError::bad_request("a namespace is required for this resource")
            })?;
            match meta_str(&obj, "namespace") {
                Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {}
            }
            Some(ns.to_string())
        } else {
            None
        };
        {
            let meta = meta_mut(&mut obj);
            if let Some(ns) = &namespace {
                meta.insert("namespace".into(), Value::String(ns.clone()));
            } else {
                meta.remove("namespace");
            }
            for server_owned in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
                "managedFields",
            ] {
                meta.remove(server_owned);
            }
            meta.insert(
                "uid".into(),
                Value::String(uuid::Uuid::new_v4().to_string()),
            );
            meta.insert("creationTimestamp".into(), Value::String(objects::now()));
            meta.insert("generation".into(), json!(1));
        }
        res.strategy.prepare_for_create(&mut obj)?;
        self.mutate_on_create(res, &mut obj).await?;
        let generate_name = meta_str(&obj, "generateName").unwrap_or("").to_string();
        if objects::name(&obj).is_empty() && !generate_name.is_empty() {
            meta_mut(&mut obj).insert(
                "name".into(),
                Value::String(format!("{generate_name}{}", objects::random_suffix(5))),
            );
        }
        validate(res, &obj, None)?;
        if let Some(ns) = &namespace {
            self.check_namespace(ns).await?;
        }
        self.admit_limits(res, namespace.as_deref(), &obj, None, None)
            .await?;
        let charges = self
            .admit_quota(res, namespace.as_deref(), &obj, None, None, query, dry_run)
            .await?;
        let created = self
            .store_new(res, namespace.as_deref(), obj, dry_run, warnings)
            .await;
        if created.is_err() {
            self.refund_quota(charges).await;
        }
        created
    }

    /// The end of a create, after admission: allocations, then the store's create.
    async fn store_new(
        &self,
        res: &Arc<ResourceInfo>,
        namespace: Option<&str>,
        mut obj: Value,
        dry_run: bool,
        warnings: Vec<String>,
    ) -> Result<Reply, ApiError> {
        let name = objects::name(&obj).to_string();
        let key = res.key(namespace, &name);
        if dry_run {
            let (existing, _) = self.store.get(&key).await.map_err(ApiError::internal)?;
            if existing.is_some() {
                return Err(ApiError::already_exists(res.group, res.plural, &name));
            }
            self.admit_create(res, &mut obj, true).await?;
            return Ok(Reply {
                code: 201,
                body: obj,
                warnings,
            });
        }
        // A duplicate is AlreadyExists, not an allocation conflict.
        if res.plural == "services"
            && self
                .store
                .get(&key)
                .await
                .map_err(ApiError::internal)?
                .0
                .is_some()
        {
            return Err(ApiError::already_exists(res.group, res.plural, &name));
        }
        self.admit_create(res, &mut obj, false).await?;
        let bytes = objects::encode(&obj)?;
        match self.store.create(&key, bytes).await {
            Ok(kv) => {
                objects::set_resource_version(&mut obj, kv.mod_revision);
                Ok(Reply {
                    code: 201,
                    body: obj,
                    warnings,
                })
            }
            Err(e) => {
                self.release(res, &obj).await;
                Err(objects::store_error(e, res.group, res.plural, &name))
            }
        }
    }

    /// PUT: replaces an object (or its status with `subresource = status`).
    pub async fn update(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        raw: Value,
        query: &Query,
    ) -> Result<Reply, ApiError> {
        check_type(res, &raw)?;
        let mut warnings = vec![];
        let body = canonicalize(res, &raw, query, &mut warnings)?;
        let body_name = objects::name(&body);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut reply = self
            .write(res, ns, name, subresource, query, |_| Ok(body.clone()))
            .await?;
        reply.warnings.extend(warnings);
        Ok(reply)
    }

    /// PATCH: applies a JSON, merge or strategic merge patch to the stored object.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        patch_type: PatchType,
        patch: Value,
        query: &Query,
    ) -> Result<Reply, ApiError> {
        let res2 = res.clone();
        let warnings = std::sync::Mutex::new(Vec::new());
        let mut reply = self
            .write(res, ns, name, subresource, query, |current| {
                let mut current = current.clone();
                // A patch is unconditional unless it names a resourceVersion itself.
                meta_mut(&mut current).remove("resourceVersion");
                let patched = match patch_type {
                    PatchType::Json => api::patch::apply_json_patch(&current, &patch)?,
                    PatchType::Merge => api::patch::apply_merge_patch(&current, &patch)?,
                    PatchType::Strategic => {
                        let schema = api::patch::PatchSchema::for_resource(&res2);
                        api::patch::apply_strategic_merge_patch(&current, &patch, &schema)?
                    }
                    PatchType::Apply => {
                        return Err(ApiError::new(
                            415,
                            "UnsupportedMediaType",
                            "server-side apply is not supported by corten yet; use client-side `kubectl apply`",
                        ));
                    }
                };
                check_type(&res2, &patched)?;
                let mut w = warnings.lock().unwrap_or_else(|p| p.into_inner());
                canonicalize(&res2, &patched, query, &mut w)
            })
            .await?;
        reply
            .warnings
            .extend(warnings.into_inner().unwrap_or_default());
        Ok(reply)
    }

    /// The read-modify-write loop for subresources that change the main object.
    pub async fn write_via(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        name: &str,
        query: &Query,
        change: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Reply, ApiError> {
        self.write(res, ns, name, None, query, change).await
    }

    /// The read-modify-write loop behind PUT and PATCH. `change` computes the client's intended
    /// object from the current one; a resourceVersion in it is a precondition.
    pub(crate) async fn write(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        query: &Query,
        change: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Reply, ApiError> {
        let dry_run = query.dry_run()?;
        let ns = if res.namespaced { ns } else { None };
        let key = res.key(ns, name);
        for _ in 0..MAX_RETRIES {
            let (current, rev) = self.read(res, ns, name).await?;
            let mut new = change(&current)?;
            let precondition = meta_str(&new, "resourceVersion")
                .filter(|v| !v.is_empty())
                .map(str::to_string);
            if let Some(want) = &precondition
                && want.parse::<i64>().ok() != Some(rev)
            {
                return Err(ApiError::conflict(
                    res.group,
                    res.plural,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            // The spec/status split.
            match subresource {
                Some("status") => {
                    let status = new.get("status").cloned().unwrap_or(Value::Null);
                    new = current.clone();
                    if status.is_null() {
                        new.as_object_mut().map(|m| m.remove("status"));
                    } else {
                        new["status"] = status;
                    }
                }
                // A binding sets nodeName and the PodScheduled condition together.
                Some("binding") if res.plural == "pods" => {}
                Some("finalize") if res.plural == "namespaces" => {
                    let finalizers = new["spec"]
                        .get("finalizers")
                        .cloned()
                        .unwrap_or(Value::Null);
                    new = current.clone();
                    new["spec"]["finalizers"] = finalizers;
                }
                None if res.has_status() => match current.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().map(|m| m.remove("status"));
                    }
                },
                None => {}
                Some(other) => {
                    return Err(ApiError::not_found(
                        res.group,
                        &format!("{}/{other}", res.plural),
                        name,
                    ));
                }
            }
            // Metadata the client cannot change.
            {
                let old_meta = current.get("metadata").cloned().unwrap_or_default();
                let meta = meta_mut(&mut new);
                for field in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "namespace",
                    "generation",
                ] {
                    match old_meta.get(field) {
                        Some(v) => meta.insert(field.into(), v.clone()),
                        None => meta.remove(field),
                    };
                }
                meta.insert("name".into(), Value::String(name.to_string()));
                meta.remove("resourceVersion");
            }
            ApiState::carry_over_allocations(res, &mut new, &current);
            res.strategy.apply_defaults(&mut new)?;
            if spec_changed(&current, &new) {
                let generation = current["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                meta_mut(&mut new).insert("generation".into(), json!(generation));
            }
            validate(res, &new, Some(&current))?;
            self.admit_limits(res, ns, &new, Some(&current), subresource)
                .await?;
            let charges = self
                .admit_quota(res, ns, &new, Some(&current), subresource, query, dry_run)
                .await?;
            if let Err(e) = self.admit_update(res, &mut new, &current).await {
                self.refund_quota(charges).await;
                return Err(e);
            }

            let mut unchanged = current.clone();
            meta_mut(&mut unchanged).remove("resourceVersion");
            if new == unchanged || dry_run {
                self.refund_quota(charges).await;
                if dry_run {
                    objects::set_resource_version(&mut new, rev);
                    return Ok(Reply::ok(new));
                }
                return Ok(Reply::ok(current));
            }
            // Removing the last finalizer of an object being deleted completes the deletion.
            let deleting = new["metadata"]
                .get("deletionTimestamp")
                .is_some_and(|t| !t.is_null());
            let finalizers_left = has_finalizers(res, &new);
            if deleting && !finalizers_left && !self.waits_for_node(res, &new) {
                match self.store.delete(&key, Some(rev)).await {
                    Ok(kv) => {
                        self.release(res, &new).await;
                        objects::set_resource_version(&mut new, kv.mod_revision);
                        return Ok(Reply::ok(new));
                    }
                    Err(store::Error::Conflict { .. }) if precondition.is_none() => continue,
                    Err(e) => return Err(objects::store_error(e, res.group, res.plural, name)),
                }
            }
            let updated = match objects::encode(&new) {
                Ok(bytes) => self.store.update(&key, bytes, rev).await,
                Err(e) => {
                    self.refund_quota(charges).await;
                    return Err(e);
                }
            };
            match updated {
                Ok(kv) => {
                    objects::set_resource_version(&mut new, kv.mod_revision);
                    return Ok(Reply::ok(new));
                }
                Err(e) => {
                    // Charged for a write that did not happen: give it back (a retry charges
                    // again against the object it then finds).
                    self.refund_quota(charges).await;
                    if matches!(e, store::Error::Conflict { .. }) && precondition.is_none() {
                        continue;
                    }
                    return Err(objects::store_error(e, res.group, res.plural, name));
                }
            }
        }
        Err(ApiError::conflict(
            res.group,
            res.plural,
            name,
            "too many concurrent updates, please retry",
        ))
    }

    /// Whether a deleted object still waits for its node agent (a pod bound to a node, deleted
    /// with a grace period).
    pub(crate) fn waits_for_node(&self, res: &ResourceInfo, obj: &Value) -> bool {
        res.group.is_empty()
            && res.plural == "pods"
            && obj["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
            && obj["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .is_some_and(|g| g > 0)
    }
}
