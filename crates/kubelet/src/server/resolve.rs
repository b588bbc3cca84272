//! From `{ns}/{pod}/{container}` to runtime containers and sandboxes: CRI lists filtered by the
//! labels the agent puts on them (`io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`,
//! `io.kubernetes.container.name`). When a pod of that name was deleted and created again, the
//! newest incarnation (pod UID) wins; its containers come newest attempt first.

use std::collections::HashMap;

use super::Error;
use crate::pods::sandbox::{
    LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
};
use crate::runtime::{Cri, cri};

/// The runtime containers of `ns/pod`'s container `name`: the newest pod incarnation's, newest
/// attempt first.
pub async fn containers(
    cri: &Cri,
    ns: &str,
    pod: &str,
    name: &str,
) -> Result<Vec<cri::Container>, Error> {
    let labels: HashMap<String, String> = [
        (LABEL_POD_NAMESPACE.to_string(), ns.to_string()),
        (LABEL_POD_NAME.to_string(), pod.to_string()),
        (LABEL_CONTAINER_NAME.to_string(), name.to_string()),
    ]
    .into();
    let mut list = cri
        .runtime
        .clone()
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: labels,
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| Error::internal(format!("listing containers: {}", e.message())))?
        .into_inner()
        .containers;
    list.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    let Some(uid) = list
        .first()
        .and_then(|c| c.labels.get(LABEL_POD_UID))
        .cloned()
    else {
        return Ok(vec![]);
    };
    list.retain(|c| c.labels.get(LABEL_POD_UID) == Some(&uid));
    list.sort_by_key(|c| {
        std::cmp::Reverse((c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at))
    });
    Ok(list)
}

/// The newest running container of `ns/pod`'s container `name` (what exec and attach need);
/// upstream's "container not found" otherwise.
pub async fn running_container(
    cri: &Cri,
    ns: &str,
    pod: &str,
    name: &str,
) -> Result<cri::Container, Error> {
    containers(cri, ns, pod, name)
        .await?
        .into_iter()
        .find(|c| c.state == cri::ContainerState::ContainerRunning as i32)
        .ok_or_else(|| Error::not_found(format!("container not found ({name:?})")))
}

/// The ready sandbox of `ns/pod` (what port-forward needs), the newest if several.
pub async fn ready_sandbox(cri: &Cri, ns: &str, pod: &str) -> Result<cri::PodSandbox, Error> {
    let labels: HashMap<String, String> = [
        (LABEL_POD_NAMESPACE.to_string(), ns.to_string()),
        (LABEL_POD_NAME.to_string(), pod.to_string()),
    ]
    .into();
    let list = cri
        .runtime
        .clone()
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: labels,
                state: Some(cri::PodSandboxStateValue {
                    state: cri::PodSandboxState::SandboxReady as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| Error::internal(format!("listing pod sandboxes: {}", e.message())))?
        .into_inner()
        .items;
    list.into_iter()
        .max_by_key(|s| s.created_at)
        .ok_or_else(|| Error::not_found(format!("pod not found (\"{pod}_{ns}\")")))
}

/// The runtime's status of one container (log path, state).
pub async fn status(cri: &Cri, id: &str) -> Result<cri::ContainerStatus, Error> {
    cri.runtime
        .clone()
        .container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await
        .map_err(|e| match e.code() {
            tonic::Code::NotFound => Error::not_found(format!("container {id:?} not found")),
            _ => Error::internal(format!("container status: {}", e.message())),
        })?
        .into_inner()
        .status
        .ok_or_else(|| Error::internal("the runtime returned no container status"))
}
