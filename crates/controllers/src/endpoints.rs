//! The endpoints controller: for every Service with a selector, an Endpoints object of the
//! same name listing the IPs of the pods it selects — ready pods under `addresses`, the others
//! (with an IP) under `notReadyAddresses`, or all as ready with `publishNotReadyAddresses` —
//! with the service's ports resolved against each pod (named `targetPort`s look up the pod's
//! container ports). The Endpoints is owned by its Service, so the garbage collector removes
//! it with the Service. Services without a selector keep hand-written Endpoints.

use crate::informers::PodEvents;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

struct Ctx {
    client: Client,
}

pub(crate) fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(selector) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
    else {
        return false;
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    svc.namespace() == pod.namespace() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Runs the controller forever.
pub async fn run(client: Client, pods: PodEvents) {
    let services: Api<Service> = Api::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let cache = controller.store();
    controller
        .watches_shared_stream(pods, move |pod| {
            cache
                .state()
                .into_iter()
                .filter(|svc| selects(svc, &pod))
                .map(|svc| ObjectRef::from_obj(&*svc))
                .collect::<Vec<_>>()
        })
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            Arc::new(Ctx { client }),
        )
        .for_each(|_| async {})
        .await;
}

/// The port of a pod that a service port's `targetPort` names (None: the pod lacks it).
pub(crate) fn target_port(pod: &Pod, target: Option<&IntOrString>, port: i32) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The subsets for `svc` over `pods`: pods grouped by their resolved port set, as upstream.
pub fn subsets(svc: &Service, pods: &[Pod]) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let mut groups: BTreeMap<Vec<(String, i32, String)>, EndpointSubset> = BTreeMap::new();
    for pod in pods {
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() && !publish_not_ready {
            continue;
        }
        if matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let ports: Vec<(String, i32, String)> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let resolved = target_port(pod, p.target_port.as_ref(), p.port)?;
                Some((
                    p.name.clone().unwrap_or_default(),
                    resolved,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        // A hostname only for the service the pod names as its subdomain (upstream's rule: it
        // becomes HOSTNAME.SERVICE.NS.svc in cluster DNS).
        let hostname = pod
            .spec
            .as_ref()
            .filter(|s| {
                s.subdomain.as_deref() == svc.metadata.name.as_deref()
                    && pod.metadata.namespace == svc.metadata.namespace
            })
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty());
        let address = EndpointAddress {
            ip,
            hostname,
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.namespace(),
                name: Some(pod.name_any()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
        };
        let subset = groups
            .entry(ports.clone())
            .or_insert_with(|| EndpointSubset {
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name: (!name.is_empty()).then(|| name.clone()),
                            port: *port,
                            protocol: Some(protocol.clone()),
                            ..Default::default()
                        })
                        .collect()
                }),
                ..Default::default()
            });
        let list = if publish_not_ready || is_ready(pod) {
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        list.get_or_insert_with(Vec::new).push(address);
    }
    let mut out: Vec<EndpointSubset> = groups.into_values().collect();
    for s in &mut out {
        for list in [&mut s.addresses, &mut s.not_ready_addresses]
            .into_iter()
            .flatten()
        {
            list.sort_by(|a, b| a.ip.cmp(&b.ip));
        }
    }
    out
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let Some(selector) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .filter(|s| !s.is_empty())
    else {
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let label_selector = selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&label_selector))
        .await?;
    let subsets = subsets(&svc, &pods.items);
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let owner = svc.controller_owner_ref(&()).map(|o| OwnerReference {
        block_owner_deletion: Some(true),
        ..o
    });
    match api.get_opt(&name).await? {
        Some(mut current) => {
            let want = (!subsets.is_empty()).then_some(subsets);
            if current.subsets == want && current.metadata.labels == svc.metadata.labels {
                return Ok(Action::await_change());
            }
            current.subsets = want;
            current.metadata.labels = svc.metadata.labels.clone();
            api.replace(&name, &PostParams::default(), &current).await?;
        }
        None => {
            let endpoints = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: svc.metadata.labels.clone(),
                    owner_references: owner.map(|o| vec![o]),
                    ..Default::default()
                },
                subsets: (!subsets.is_empty()).then_some(subsets),
            };
            match api.create(&PostParams::default(), &endpoints).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    return Ok(Action::requeue(Duration::from_millis(100)));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"podIP": ip, "phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap()
    }

    #[test]
    fn ready_and_not_ready_addresses_with_named_ports() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }))
        .unwrap();
        let pods = [
            pod("a", "10.0.0.2", true, "http", 8080),
            pod("b", "10.0.0.1", false, "http", 8080),
            pod("c", "10.0.0.3", true, "http", 9090),
        ];
        let s = subsets(&svc, &pods);
        assert_eq!(s.len(), 2, "two port sets: {s:?}");
        let on_8080 = s
            .iter()
            .find(|x| x.ports.as_ref().unwrap()[0].port == 8080)
            .unwrap();
        assert_eq!(on_8080.addresses.as_ref().unwrap()[0].ip, "10.0.0.2");
        assert_eq!(
            on_8080.not_ready_addresses.as_ref().unwrap()[0].ip,
            "10.0.0.1"
        );
        assert!(selects(&svc, &pods[0]));
    }

    #[test]
    fn publish_not_ready_addresses_lists_everything_as_ready() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "publishNotReadyAddresses": true, "ports": [{"port": 5432}]},
        }))
        .unwrap();
        let s = subsets(&svc, &[pod("a", "10.0.0.2", false, "x", 1)]);
        assert_eq!(s[0].addresses.as_ref().unwrap().len(), 1);
        assert!(s[0].not_ready_addresses.is_none());
        assert_eq!(s[0].ports.as_ref().unwrap()[0].port, 5432);
    }

    #[test]
    fn hostname_only_for_the_subdomain_service() {
        let svc = |name: &str| -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"selector": {"app": "web"}, "clusterIP": "None"},
            }))
            .unwrap()
        };
        let mut p = pod("web-0", "10.0.0.2", true, "x", 1);
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("web-0".into());
        spec.subdomain = Some("web".into());
        let host = |s: &Service| {
            subsets(s, std::slice::from_ref(&p))[0]
                .addresses
                .as_ref()
                .unwrap()[0]
                .hostname
                .clone()
        };
        assert_eq!(host(&svc("web")).as_deref(), Some("web-0"));
        assert_eq!(host(&svc("other")), None);
    }
}
