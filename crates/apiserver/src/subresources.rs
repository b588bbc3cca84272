//! Subresources with their own shapes: `scale` (autoscaling/v1 Scale over spec.replicas),
//! `binding` (the scheduler's pod-to-node assignment) and DELETE on a collection (`eviction`
//! is in [`crate::eviction`]).

use std::sync::Arc;

use api::{ApiError, ResourceInfo};
use serde_json::{Value, json};

use crate::body::PatchType;
use crate::generic::Reply;
use crate::objects::{self, meta_mut};
use crate::request::Query;
use crate::state::ApiState;

/// The label selector of a workload's `spec.selector` in its string form.
fn selector_string(obj: &Value) -> String {
    let sel = &obj["spec"]["selector"];
    // ReplicationControllers use a plain map; the others a LabelSelector.
    if sel.get("matchLabels").is_none() && sel.get("matchExpressions").is_none() && sel.is_object()
    {
        let map: std::collections::BTreeMap<String, String> =
            serde_json::from_value(sel.clone()).unwrap_or_default();
        return map
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
    }
    serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(
        sel.clone(),
    )
    .ok()
    .and_then(|s| api::selector::LabelSelector::from_k8s(&s).ok())
    .map(|s| s.to_string())
    .unwrap_or_default()
}

/// The autoscaling/v1 Scale view of a scalable object.
pub fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": { "replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1) },
        "status": { "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector_string(obj) },
    })
}

/// Applies a scale change to the object, carrying a resourceVersion precondition over.
fn with_replicas(current: &Value, scale: &Value) -> Result<Value, ApiError> {
    let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            objects::name(current),
            vec![api::error::FieldCause::invalid(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            )],
        ));
    }
    let mut new = current.clone();
    new["spec"]["replicas"] = json!(replicas);
    match objects::meta_str(scale, "resourceVersion").filter(|v| !v.is_empty()) {
        Some(rv) => objects::set_resource_version(&mut new, rv.parse().unwrap_or(-1)),
        None => {
            meta_mut(&mut new).remove("resourceVersion");
        }
    }
    Ok(new)
}

impl ApiState {
    /// GET .../scale.
    pub async fn get_scale(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        Ok(scale_of(&self.get(res, ns, name).await?))
    }

    /// PUT .../scale.
    pub async fn update_scale(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        name: &str,
        scale: Value,
        query: &Query,
    ) -> Result<Reply, ApiError> {
        let mut reply = self
            .write_via(res, ns, name, query, |current| {
                with_replicas(current, &scale)
            })
            .await?;
        reply.body = scale_of(&reply.body);
        Ok(reply)
    }

    /// PATCH .../scale: the patch applies to the Scale view.
    pub async fn patch_scale(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        name: &str,
        patch_type: PatchType,
        patch: Value,
        query: &Query,
    ) -> Result<Reply, ApiError> {
        let mut reply = self
            .write_via(res, ns, name, query, |current| {
                let mut view = scale_of(current);
                meta_mut(&mut view).remove("resourceVersion");
                let patched = match patch_type {
                    PatchType::Json => api::patch::apply_json_patch(&view, &patch)?,
                    // Scale has no lists, so a strategic merge is a plain merge.
                    PatchType::Merge | PatchType::Strategic => {
                        api::patch::apply_merge_patch(&view, &patch)?
                    }
                    PatchType::Apply => {
                        return Err(ApiError::unsupported_media_type(
                            "application/apply-patch+yaml",
                        ));
                    }
                };
                with_replicas(current, &patched)
            })
            .await?;
        reply.body = scale_of(&reply.body);
        Ok(reply)
    }

    /// POST pods/NAME/binding: assigns an unbound pod to a node.
    pub async fn bind(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        name: &str,
        binding: Value,
        query: &Query,
    ) -> Result<Reply, ApiError> {
        let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                name,
                vec![api::error::FieldCause::required("target.name")],
            ));
        }
        self.write(res, ns, name, Some("binding"), query, |current| {
            match current["spec"]["nodeName"].as_str() {
                Some(n) if !n.is_empty() => Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    &format!("pod {name} is already assigned to node \"{n}\""),
                )),
                _ if current["metadata"]
                    .get("deletionTimestamp")
                    .is_some_and(|t| !t.is_null()) =>
                {
                    Err(ApiError::conflict(
                        "",
                        "pods",
                        name,
                        "pod is being deleted, cannot be assigned to a host",
                    ))
                }
                _ => {
                    let mut new = current.clone();
                    new["spec"]["nodeName"] = json!(node);
                    set_pod_scheduled(&mut new);
                    meta_mut(&mut new).remove("resourceVersion");
                    Ok(new)
                }
            }
        })
        .await?;
        Ok(Reply {
            code: 201,
            body: success(201),
            warnings: vec![],
        })
    }

    /// DELETE on a collection: deletes every selected object, returning them as a list.
    pub async fn delete_collection(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        options: &Value,
        query: &Query,
    ) -> Result<Reply, ApiError> {
        let page = self.list_page(res, ns, query).await?;
        let mut deleted = vec![];
        for obj in page.items {
            let obj_ns = objects::meta_str(&obj, "namespace").map(str::to_string);
            match self
                .delete(res, obj_ns.as_deref(), objects::name(&obj), options, query)
                .await
            {
                Ok(r) => deleted.push(r.body),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Reply::ok(json!({
            "kind": format!("{}List", res.kind),
            "apiVersion": res.api_version,
            "metadata": {"resourceVersion": page.revision.to_string()},
            "items": deleted,
        })))
    }
}

/// Sets the pod's PodScheduled condition to True (as upstream's binding does).
fn set_pod_scheduled(pod: &mut Value) {
    let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": objects::now()});
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    match pod["status"]["conditions"].as_array_mut() {
        Some(conditions) => {
            conditions.retain(|c| c["type"] != "PodScheduled");
            conditions.push(condition);
        }
        None => pod["status"]["conditions"] = json!([condition]),
    }
}

fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}
