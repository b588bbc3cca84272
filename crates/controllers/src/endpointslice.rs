//! The EndpointSlice controller: for every Service with a selector, discovery.k8s.io/v1
//! EndpointSlices (address type IPv4) listing the pods it selects, as upstream's
//! `pkg/controller/endpointslice`:
//!
//! - one endpoint per pod with an IP (pods that Succeeded or Failed are left out), with the
//!   conditions `ready` (Ready and not terminating, or always with
//!   `publishNotReadyAddresses`), `serving` (Ready, even while terminating) and `terminating`
//!   (a deletion timestamp); `nodeName`, `targetRef`, and `hostname` when the pod's
//!   `subdomain` is the Service's name;
//! - ports resolved against each pod (a named `targetPort` looks up the pod's container
//!   ports), so pods that resolve differently land in different slices; at most
//!   [`MAX_ENDPOINTS`] endpoints per slice;
//! - slices carry the Service's labels plus `kubernetes.io/service-name` and
//!   `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`, and are owned
//!   by the Service (the garbage collector removes them with it).
//!
//! Existing slices are reused (matched by port set) and only written when they differ;
//! slices that are no longer needed are deleted. Slices managed by anyone else are left alone.

use crate::informers::PodEvents;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::endpoints::{is_ready, selects, target_port};

/// The label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the slice's manager.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice (upstream's default `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS: usize = 100;

struct Ctx {
    client: Client,
}

/// Runs the controller forever.
pub async fn run(client: Client, pods: PodEvents) {
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    let cache = controller.store();
    controller
        .owns(
            slices,
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
        )
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

/// One desired slice: its ports and endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The resolved ports (shared by every endpoint of the slice).
    pub ports: Vec<EndpointPort>,
    /// The endpoints, sorted by address.
    pub endpoints: Vec<Endpoint>,
}

/// The endpoint for `pod`, or None when it has no address or has finished.
fn endpoint(svc: &Service, pod: &Pod) -> Option<Endpoint> {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty() && !ip.contains(':'))?;
    if matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let serving = is_ready(pod);
    let spec = pod.spec.as_ref();
    let hostname = spec
        .filter(|s| s.subdomain.as_deref() == Some(svc.name_any().as_str()))
        .and_then(|s| s.hostname.clone());
    Some(Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(publish_not_ready || (serving && !terminating)),
            serving: Some(publish_not_ready || serving),
            terminating: Some(terminating),
        }),
        hostname,
        node_name: spec.and_then(|s| s.node_name.clone()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.namespace(),
            name: Some(pod.name_any()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The slices `svc` should have over `pods`: endpoints grouped by resolved port set, in
/// chunks of at most [`MAX_ENDPOINTS`].
pub fn desired(svc: &Service, pods: &[Pod]) -> Vec<Desired> {
    let spec = svc.spec.clone().unwrap_or_default();
    let mut groups: BTreeMap<Vec<(String, i32, String)>, Vec<Endpoint>> = BTreeMap::new();
    for pod in pods {
        let Some(ep) = endpoint(svc, pod) else {
            continue;
        };
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
        groups.entry(ports).or_default().push(ep);
    }
    let app_protocol = |name: &str| {
        spec.ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == name)
            .and_then(|p| p.app_protocol.clone())
    };
    let mut out = vec![];
    for (ports, mut endpoints) in groups {
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        let ports: Vec<EndpointPort> = ports
            .iter()
            .map(|(name, port, protocol)| EndpointPort {
                name: Some(name.clone()),
                port: Some(*port),
                protocol: Some(protocol.clone()),
                app_protocol: app_protocol(name),
            })
            .collect();
        for chunk in endpoints.chunks(MAX_ENDPOINTS) {
            out.push(Desired {
                ports: ports.clone(),
                endpoints: chunk.to_vec(),
            });
        }
    }
    out
}

/// The labels a slice of `svc` carries.
fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    labels
}

/// Pairs existing slices with desired ones: returns, per desired slice, the index of the
/// existing slice to reuse (same port set, fewest differences first), and the leftovers.
pub fn assign(existing: &[EndpointSlice], want: &[Desired]) -> (Vec<Option<usize>>, Vec<usize>) {
    let mut used = vec![false; existing.len()];
    let mut pairs = vec![None; want.len()];
    // Exact matches first, then any slice with the same ports, then any slice at all.
    for pass in 0..3 {
        for (i, d) in want.iter().enumerate() {
            if pairs[i].is_some() {
                continue;
            }
            let found = existing.iter().enumerate().position(|(j, s)| {
                !used[j]
                    && match pass {
                        0 => {
                            s.ports.as_deref().unwrap_or_default() == d.ports.as_slice()
                                && s.endpoints == d.endpoints
                        }
                        1 => s.ports.as_deref().unwrap_or_default() == d.ports.as_slice(),
                        _ => true,
                    }
            });
            if let Some(j) = found {
                used[j] = true;
                pairs[i] = Some(j);
            }
        }
    }
    let leftovers = (0..existing.len()).filter(|j| !used[*j]).collect();
    (pairs, leftovers)
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let spec = svc.spec.clone().unwrap_or_default();
    let Some(selector) = spec.selector.clone().filter(|s| !s.is_empty()) else {
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some() || spec.type_.as_deref() == Some("ExternalName") {
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
    let mut want = desired(&svc, &pods.items);
    if want.is_empty() {
        // A Service without endpoints still has one (empty) slice, as upstream.
        want.push(Desired {
            ports: vec![],
            endpoints: vec![],
        });
    }
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let mut existing = api
        .list(&ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"
        )))
        .await?
        .items;
    existing.sort_by_key(|s| s.name_any());
    let labels = slice_labels(&svc);
    let owner = svc.controller_owner_ref(&()).map(|o| OwnerReference {
        block_owner_deletion: Some(true),
        ..o
    });
    let (pairs, leftovers) = assign(&existing, &want);
    for (d, pair) in want.into_iter().zip(pairs) {
        let ports = Some(d.ports);
        match pair {
            Some(j) => {
                let mut slice = existing[j].clone();
                if slice.ports == ports
                    && slice.endpoints == d.endpoints
                    && slice.metadata.labels.as_ref() == Some(&labels)
                {
                    continue;
                }
                slice.ports = ports;
                slice.endpoints = d.endpoints;
                slice.metadata.labels = Some(labels.clone());
                api.replace(&slice.name_any(), &PostParams::default(), &slice)
                    .await?;
            }
            None => {
                let slice = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{name}-")),
                        namespace: Some(ns.clone()),
                        labels: Some(labels.clone()),
                        owner_references: owner.clone().map(|o| vec![o]),
                        ..Default::default()
                    },
                    address_type: "IPv4".into(),
                    endpoints: d.endpoints,
                    ports,
                };
                api.create(&PostParams::default(), &slice).await?;
            }
        }
    }
    for j in leftovers {
        match api
            .delete(&existing[j].name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, port: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}, "uid": name},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": port}]}]},
            "status": {"podIP": ip, "phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap()
    }

    fn svc(extra: serde_json::Value) -> Service {
        let mut spec = json!({"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
            {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"},
        ]});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}},
            "spec": spec,
        }))
        .unwrap()
    }

    fn cond(e: &Endpoint) -> (bool, bool, bool) {
        let c = e.conditions.clone().unwrap();
        (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
    }

    #[test]
    fn endpoints_grouped_by_resolved_ports_with_conditions() {
        let mut gone = pod("d", "10.42.0.4", true, 8080);
        gone.metadata.deletion_timestamp =
            serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap();
        let mut done = pod("e", "10.42.0.5", true, 8080);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let pods = [
            pod("a", "10.42.0.2", true, 8080),
            pod("b", "10.42.0.1", false, 8080),
            pod("c", "10.42.0.3", true, 9090),
            gone,
            done,
        ];
        let d = desired(&svc(json!({})), &pods);
        assert_eq!(d.len(), 2, "{d:?}");
        let on_8080 = d
            .iter()
            .find(|s| s.ports[0].port == Some(8080))
            .expect("slice on 8080");
        assert_eq!(
            on_8080.ports[1],
            EndpointPort {
                name: Some("dns".into()),
                port: Some(5353),
                protocol: Some("UDP".into()),
                app_protocol: None
            }
        );
        let ips: Vec<_> = on_8080
            .endpoints
            .iter()
            .map(|e| e.addresses[0].as_str())
            .collect();
        assert_eq!(ips, ["10.42.0.1", "10.42.0.2", "10.42.0.4"]);
        assert_eq!(cond(&on_8080.endpoints[0]), (false, false, false));
        assert_eq!(cond(&on_8080.endpoints[1]), (true, true, false));
        assert_eq!(cond(&on_8080.endpoints[2]), (false, true, true));
        let e = &on_8080.endpoints[1];
        assert_eq!(e.node_name.as_deref(), Some("n1"));
        assert_eq!(e.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
    }

    #[test]
    fn publish_not_ready_marks_everything_ready_and_slices_are_chunked() {
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.42.{}.{}", i / 200, i % 200),
                    false,
                    8080,
                )
            })
            .collect();
        let d = desired(&svc(json!({"publishNotReadyAddresses": true})), &pods);
        assert_eq!(
            d.iter().map(|s| s.endpoints.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert!(d.iter().flat_map(|s| &s.endpoints).all(|e| cond(e).0));
    }

    #[test]
    fn existing_slices_are_reused_by_port_set() {
        let d = desired(
            &svc(json!({})),
            &[
                pod("a", "10.42.0.2", true, 8080),
                pod("c", "10.42.0.3", true, 9090),
            ],
        );
        let slice = |ports: &[EndpointPort], eps: Vec<Endpoint>| EndpointSlice {
            ports: Some(ports.to_vec()),
            endpoints: eps,
            ..Default::default()
        };
        let existing = vec![
            slice(&[], vec![]),
            slice(&d[1].ports, vec![]),
            slice(&d[0].ports, d[0].endpoints.clone()),
        ];
        let (pairs, leftovers) = assign(&existing, &d);
        assert_eq!(pairs, [Some(2), Some(1)]);
        assert_eq!(leftovers, [0]);
        let (pairs, leftovers) = assign(&existing[..1], &d);
        assert_eq!(pairs, [Some(0), None]);
        assert!(leftovers.is_empty());
    }

    #[test]
    fn labels_name_the_service_and_the_manager() {
        let l = slice_labels(&svc(json!({"clusterIP": "None"})));
        assert_eq!(l[SERVICE_NAME_LABEL], "web");
        assert_eq!(l[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(l["tier"], "front");
        assert!(l.contains_key("service.kubernetes.io/headless"));
    }
}
