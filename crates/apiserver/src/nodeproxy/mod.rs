//! The streaming subresources `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`,
//! proxied to the agent (kubelet) of the pod's node, as upstream's `LogLocation`,
//! `streamLocation` and `PortForwardLocation` with the upgrade-aware proxy do:
//! 1. the pod must exist (404) and, but for port-forward, name a container: the one given
//!    (400 if the pod has no such container) or its only one (400 with upstream's "a container
//!    name must be specified ..., choose one of: [a b]" otherwise);
//! 2. it must be bound (400 "pod X does not have a host assigned"), and its Node must exist;
//! 3. the agent is reached at the Node's first InternalIP (then ExternalIP, then Hostname) on
//!    `status.daemonEndpoints.kubeletEndpoint.Port` (default 10250), over TLS that verifies the
//!    agent's serving certificate against the cluster CA and presents the API server's
//!    `kube-apiserver-kubelet-client` certificate ([`agent`]);
//! 4. `GET /containerLogs/{ns}/{pod}/{container}` streams the log through unbuffered (a
//!    follow stream lasts until either side goes); `/exec/...`, `/attach/...` and
//!    `/portForward/{ns}/{pod}` forward the client's upgrade request (WebSocket or SPDY) and,
//!    on `101 Switching Protocols`, splice the two connections together.
//!
//! The options are read and rewritten for the agent in [`options`].

pub mod agent;
pub mod options;

use std::sync::Arc;

use api::ApiError;
use axum::response::Response;
use http::request::Parts;
use http::{Method, header};
use serde_json::Value;

pub use agent::AgentClient;
pub use options::Kind;

use crate::request::{self, RequestInfo};
use crate::state::ApiState;

/// kubelet's default port.
pub const DEFAULT_AGENT_PORT: u16 = 10250;

/// The streaming subresource a request is for, if it is one (core/v1 pods only).
pub fn streaming_kind(info: &RequestInfo) -> Option<Kind> {
    if !info.group.is_empty() || info.version != "v1" || info.resource != "pods" {
        return None;
    }
    info.subresource.as_deref().and_then(Kind::from_subresource)
}

/// Where on which agent a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The agent's address (an IP address or a host name).
    pub host: String,
    /// The agent's port.
    pub port: u16,
    /// The path and query on the agent.
    pub path_and_query: String,
}

/// Serves one streaming-subresource request (`parts` loses its upgrade handle).
pub async fn serve(
    state: &Arc<ApiState>,
    info: &RequestInfo,
    kind: Kind,
    parts: &mut Parts,
) -> Result<Response, ApiError> {
    let allowed = match kind {
        Kind::Log => parts.method == Method::GET,
        _ => parts.method == Method::GET || parts.method == Method::POST,
    };
    if !allowed {
        return Err(ApiError::method_not_allowed(format!(
            "{} is not supported on pods/{}",
            parts.method,
            info.subresource.as_deref().unwrap_or_default()
        )));
    }
    let location = locate(state, info, kind, parts.uri.query().unwrap_or("")).await?;
    let agents = state
        .agents
        .as_ref()
        .ok_or_else(|| ApiError::new(503, "ServiceUnavailable", "node agents are not reachable"))?;
    if kind.upgrades() {
        agent::upgrade(agents, &location, parts).await
    } else {
        agent::stream_log(agents, &location).await
    }
}

/// Resolves the pod, container and node of a request into the agent's URL.
pub async fn locate(
    state: &ApiState,
    info: &RequestInfo,
    kind: Kind,
    raw_query: &str,
) -> Result<Location, ApiError> {
    let ns = info.namespace.as_deref().unwrap_or("default");
    let name = info.name.as_deref().unwrap_or_default();
    let opts = options::parse(kind, name, &request::form_pairs(raw_query))?;
    let pods = state
        .registry
        .get("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not registered"))?
        .clone();
    let pod = state.get(&pods, Some(ns), name).await?;
    let container = if kind.has_container() {
        Some(container_of(&pod, name, opts.container.as_deref())?)
    } else {
        None
    };
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let nodes = state
        .registry
        .get("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not registered"))?
        .clone();
    let node = state.get(&nodes, None, node_name).await?;
    let (host, port) = agent_address(&node).ok_or_else(|| {
        ApiError::new(
            500,
            "InternalError",
            format!(
                "node {node_name} has no address to reach its agent at (no InternalIP, \
                 ExternalIP or Hostname in status.addresses)"
            ),
        )
    })?;
    let mut path = format!("/{}/{ns}/{name}", kind.agent_path());
    if let Some(c) = container {
        path.push('/');
        path.push_str(&c);
    }
    let query = opts.encoded_query();
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    Ok(Location {
        host,
        port,
        path_and_query: path,
    })
}

/// The container a request is for, defaulted and checked as upstream's `validateContainer`.
fn container_of(pod: &Value, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<String> {
        pod["spec"][field]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("containers");
    // Upstream's VisitContainers order: init containers, containers, ephemeral containers.
    let mut all = names("initContainers");
    all.extend(containers.iter().cloned());
    all.extend(names("ephemeralContainers"));
    match asked {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => match containers.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                all.join(" ")
            ))),
        },
    }
}

/// The agent's address and port from a Node: the first InternalIP, else ExternalIP, else
/// Hostname; the kubelet endpoint's port, else [`DEFAULT_AGENT_PORT`].
pub fn agent_address(node: &Value) -> Option<(String, u16)> {
    let addresses = node["status"]["addresses"].as_array()?;
    let host = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|t| {
            addresses
                .iter()
                .find(|a| a["type"] == *t && a["address"].as_str().is_some_and(|s| !s.is_empty()))
        })
        .and_then(|a| a["address"].as_str())?
        .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_AGENT_PORT);
    Some((host, port))
}

/// Whether a request asks for a connection upgrade (`Connection: upgrade` and `Upgrade: ...`).
pub fn is_upgrade_request(headers: &http::HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && headers.get(header::UPGRADE).is_some_and(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_default_and_are_checked_as_upstream() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
                                  "initContainers": [{"name": "init"}]}});
        assert_eq!(
            container_of(&pod, "p", None).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [init a b]"
        );
        assert_eq!(container_of(&pod, "p", Some("init")).unwrap(), "init");
        assert_eq!(
            container_of(&pod, "p", Some("c")).unwrap_err().message,
            "container c is not valid for pod p"
        );
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(container_of(&one, "p", None).unwrap(), "only");
        let none = json!({"spec": {}});
        assert_eq!(container_of(&none, "p", None).unwrap_err().code, 400);
    }

    #[test]
    fn agent_address_prefers_internal_ip_and_defaults_the_port() {
        let node = json!({"status": {"addresses": [
            {"type": "Hostname", "address": "n1"},
            {"type": "InternalIP", "address": "10.0.0.5"},
            {"type": "InternalIP", "address": "10.0.0.6"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 11250}}}});
        assert_eq!(agent_address(&node), Some(("10.0.0.5".into(), 11250)));
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}});
        assert_eq!(
            agent_address(&node),
            Some(("n1".into(), DEFAULT_AGENT_PORT))
        );
        assert_eq!(agent_address(&json!({"status": {}})), None);
    }

    #[test]
    fn upgrade_requests() {
        let mut h = http::HeaderMap::new();
        assert!(!is_upgrade_request(&h));
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        assert!(!is_upgrade_request(&h));
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(is_upgrade_request(&h));
    }
}
