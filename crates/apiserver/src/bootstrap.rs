//! Objects every cluster has from the start: the default, kube-system, kube-public and
//! kube-node-lease namespaces, and the `kubernetes` Service and Endpoints in `default` pointing
//! at the API server. Created through the same generic store as client writes.

use std::sync::Arc;

use api::ApiError;
use serde_json::{Value, json};

use crate::alloc::KUBERNETES_SERVICE_IP;
use crate::request::Query;
use crate::state::ApiState;

async fn ensure(
    state: &Arc<ApiState>,
    group: &str,
    plural: &str,
    ns: Option<&str>,
    obj: Value,
) -> Result<(), ApiError> {
    let res = state
        .registry
        .get(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} is not registered")))?
        .clone();
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match state.get(&res, ns, &name).await {
        Ok(_) => return Ok(()),
        Err(e) if e.code != 404 => return Err(e),
        Err(_) => {}
    }
    match state.create(&res, ns, obj, &Query::default()).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the built-in namespaces and the `kubernetes` service if they are missing.
/// `api_ip` and `api_port` are where the API server answers.
pub async fn run(state: &Arc<ApiState>, api_ip: &str, api_port: u16) -> Result<(), ApiError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            state,
            "",
            "namespaces",
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    if state.registry.get("", "v1", "services").is_some() {
        ensure(state, "", "services", Some("default"), json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {
                "clusterIP": KUBERNETES_SERVICE_IP.to_string(),
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}],
                "sessionAffinity": "None", "type": "ClusterIP",
            },
        }))
        .await?;
    }
    if state.registry.get("", "v1", "endpoints").is_some() {
        ensure(state, "", "endpoints", Some("default"), json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": api_ip}], "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}]}],
        }))
        .await?;
    }
    Ok(())
}
