//! Mutating admission on create, as upstream's admission plugins that corten has:
//! DefaultIngressClass (an Ingress that names no class gets the cluster's default
//! IngressClass, the newest if several are marked default). Runs before validation.

use serde_json::Value;

use api::{ApiError, ResourceInfo};

use crate::objects;
use crate::state::ApiState;

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
        let range = store::RangeRequest {
            prefix: classes.key_prefix(),
            ..Default::default()
        };
        let list = self.store.range(range).await.map_err(ApiError::internal)?;
        let mut defaults: Vec<Value> = vec![];
        for kv in &list.kvs {
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
