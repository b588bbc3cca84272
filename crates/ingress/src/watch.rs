//! Keeps the routing table and certificates in step with the API: reflectors on Ingresses,
//! IngressClasses, Services, EndpointSlices and `kubernetes.io/tls` Secrets; each burst of
//! events (coalesced for [`Config::debounce`]) rebuilds both from the reflectors' stores and
//! swaps them in. Nothing is served from a partial view: the first build waits for every
//! initial list. A sixth reflector, on Nodes, feeds the status: after each burst (of either
//! kind) the served Ingresses' `status.loadBalancer.ingress` is brought to
//! [`crate::nodes::status_addresses`] where it differs; Node changes alone (heartbeats) do
//! not rebuild the table. This node's mark is set by a task beside the watches.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressClassSpec};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use crate::proxy::Shared;
use crate::routes::{self, DEFAULT_CLASS_ANNOTATION};
use crate::tls::Certs;
use crate::{CONTROLLER, Config, nodes};

/// Creates IngressClass `class` (controller [`CONTROLLER`], marked the default) unless it
/// exists. Failures are logged: Ingresses that name the class are served regardless.
pub async fn ensure_class(client: &Client, class: &str) {
    let api = Api::<IngressClass>::all(client.clone());
    let object = IngressClass {
        metadata: ObjectMeta {
            name: Some(class.to_string()),
            annotations: Some(BTreeMap::from([(
                DEFAULT_CLASS_ANNOTATION.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some(CONTROLLER.to_string()),
            parameters: None,
        }),
    };
    for attempt in 0..30 {
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                tracing::info!(class, "created IngressClass (default)");
                return;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => return,
            Err(e) if attempt < 29 => {
                tracing::debug!("ingress: creating IngressClass {class}: {e} (retrying)");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => tracing::warn!("ingress: cannot create IngressClass {class}: {e}"),
        }
    }
}

/// Events not yet reflected in the table, and which initial lists are complete.
#[derive(Default)]
struct Pending {
    notify: Notify,
    listed: AtomicUsize,
}

/// Feeds one reflector's events into `pending`.
async fn follow<K>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    pending: Arc<Pending>,
) {
    let mut stream = std::pin::pin!(stream);
    let mut listed = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                if !listed {
                    listed = true;
                    pending.listed.fetch_add(1, Ordering::SeqCst);
                }
                pending.notify.notify_one();
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(_) => pending.notify.notify_one(),
            Err(e) => tracing::debug!("ingress watch: {e}"),
        }
    }
}

/// A reflector on `api` feeding `pending`; returns its store.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    pending: &Arc<Pending>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tasks.spawn(follow(stream, pending.clone()));
    store
}

/// The watches and the rebuild loop; runs until dropped.
pub async fn run(client: Client, config: Config, shared: Shared, certs: Arc<RwLock<Arc<Certs>>>) {
    let pending = Arc::new(Pending::default());
    let node_pending = Arc::new(Pending::default());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(nodes::mark(client.clone(), config.node_name.clone()));
    let all = watcher::Config::default;
    let ingresses = reflect(
        Api::<Ingress>::all(client.clone()),
        all(),
        &pending,
        &mut tasks,
    );
    let classes = reflect(
        Api::<IngressClass>::all(client.clone()),
        all(),
        &pending,
        &mut tasks,
    );
    let services = reflect(
        Api::<Service>::all(client.clone()),
        all(),
        &pending,
        &mut tasks,
    );
    let slices = reflect(
        Api::<EndpointSlice>::all(client.clone()),
        all(),
        &pending,
        &mut tasks,
    );
    let secrets = reflect(
        Api::<Secret>::all(client.clone()),
        all().fields("type=kubernetes.io/tls"),
        &pending,
        &mut tasks,
    );
    let node_store = reflect(
        Api::<Node>::all(client.clone()),
        all(),
        &node_pending,
        &mut tasks,
    );
    const WATCHES: usize = 5;
    let mut first = true;
    let mut table_stale = true;
    loop {
        tokio::select! {
            _ = pending.notify.notified() => table_stale = true,
            _ = node_pending.notify.notified() => {}
        }
        if pending.listed.load(Ordering::SeqCst) < WATCHES {
            continue;
        }
        tokio::time::sleep(config.debounce).await;
        let class_list = classes.state();
        let is_default = routes::class_is_default(class_list.iter().map(|c| &**c), &config.class);
        let ingress_list = ingresses.state();
        let mut ours: Vec<&Ingress> = ingress_list
            .iter()
            .map(|i| &**i)
            .filter(|i| routes::is_ours(i, &config.class, is_default))
            .collect();
        routes::oldest_first(&mut ours);
        if node_pending.listed.load(Ordering::SeqCst) > 0 {
            let node_list = node_store.state();
            let want = nodes::status_addresses(node_list.iter().map(|n| &**n));
            for ingress in &ours {
                update_status(&client, ingress, &want);
            }
        }
        if !table_stale {
            continue;
        }
        table_stale = false;
        let svc_list = services.state();
        let slice_list = slices.state();
        let table = routes::build(
            &ours,
            svc_list.iter().map(|s| &**s),
            slice_list.iter().map(|s| &**s),
        );
        let secret_list = secrets.state();
        let new_certs = tls_build(&ours, &secret_list);
        if first {
            tracing::info!(
                ingresses = ours.len(),
                rules = table.len(),
                certificates = new_certs.len(),
                "ingress: routing table loaded"
            );
            first = false;
        } else {
            tracing::debug!(
                ingresses = ours.len(),
                rules = table.len(),
                "ingress: routing table rebuilt"
            );
        }
        let live: HashSet<_> = slice_list.iter().flat_map(|s| endpoint_addrs(s)).collect();
        shared.pool.retain(&live);
        shared.backends.retain(&live);
        if let Ok(mut t) = shared.table.write() {
            *t = Arc::new(table);
        }
        if let Ok(mut c) = certs.write() {
            *c = Arc::new(new_certs);
        }
    }
}

fn tls_build(ours: &[&Ingress], secrets: &[Arc<Secret>]) -> Certs {
    crate::tls::build(ours, secrets.iter().map(|s| &**s))
}

/// Every address:port an EndpointSlice lists (to keep their pooled connections).
fn endpoint_addrs(slice: &EndpointSlice) -> Vec<std::net::SocketAddr> {
    let ports: Vec<u16> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.port.and_then(|p| u16::try_from(p).ok()))
        .collect();
    slice
        .endpoints
        .iter()
        .flat_map(|e| &e.addresses)
        .filter_map(|a| a.parse().ok())
        .flat_map(|ip| ports.iter().map(move |p| std::net::SocketAddr::new(ip, *p)))
        .collect()
}

/// Sets `status.loadBalancer.ingress` to `addresses` when it says otherwise (every
/// controller writes the same value, so they never undo each other's writes).
fn update_status(client: &Client, ingress: &Ingress, addresses: &[std::net::IpAddr]) {
    let want: Vec<String> = addresses.iter().map(|ip| ip.to_string()).collect();
    let have: Vec<String> = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|list| list.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default();
    if want == have {
        return;
    }
    let (Some(ns), name) = (ingress.namespace(), ingress.name_any()) else {
        return;
    };
    let api = Api::<Ingress>::namespaced(client.clone(), &ns);
    let entries: Vec<_> = want
        .iter()
        .map(|ip| serde_json::json!({"ip": ip}))
        .collect();
    let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": entries}}});
    tokio::spawn(async move {
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(ingress = %format!("{ns}/{name}"), "ingress: status update failed: {e}");
        }
    });
}
