//! Keeps the [`Zone`] in step with the API: kube-rs watchers on Services, Endpoints and
//! Namespaces (metadata only), merged into one stream so that each event recomputes only the
//! service it touches. A relist (after a watch expired) drops what the new list no longer
//! holds, as a reflector would. The zone counts as loaded once all three first lists are in.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::records::service_records;
use crate::zone::Zone;

/// A namespace/name key.
type Key = (String, String);

/// One event from any of the three watches.
enum Change {
    Service(Box<watcher::Event<Service>>),
    Endpoints(watcher::Event<Endpoints>),
    Namespace(watcher::Event<PartialObjectMeta<Namespace>>),
}

/// What the watches have shown so far (the zone is derived from it).
struct State {
    domain: String,
    zone: Arc<RwLock<Zone>>,
    services: HashMap<Key, Service>,
    endpoints: HashMap<Key, Endpoints>,
    /// Keys seen by a relist in progress, per resource (services, endpoints, namespaces).
    relisting: [Option<HashSet<Key>>; 3],
    /// Which resources have completed their first list.
    listed: [bool; 3],
}

fn key<K: kube::Resource>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

fn watch_stream<K>(
    api: Api<K>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default()).default_backoff()
}

/// Runs the watches, updating `zone`, until the task is dropped.
pub async fn run(client: Client, zone: Arc<RwLock<Zone>>, domain: String) {
    let services = watch_stream(Api::<Service>::all(client.clone()))
        .map(|e| e.map(|e| Change::Service(Box::new(e))));
    let endpoints =
        watch_stream(Api::<Endpoints>::all(client.clone())).map(|e| e.map(Change::Endpoints));
    let namespaces = watch_stream(Api::<PartialObjectMeta<Namespace>>::all(client))
        .map(|e| e.map(Change::Namespace));
    let changes = futures::stream::select(services, futures::stream::select(endpoints, namespaces));
    let mut changes = std::pin::pin!(changes);
    let mut state = State {
        domain,
        zone,
        services: HashMap::new(),
        endpoints: HashMap::new(),
        relisting: [None, None, None],
        listed: [false; 3],
    };
    while let Some(change) = changes.next().await {
        match change {
            Ok(change) => state.apply(change),
            Err(e) => tracing::warn!(error = %e, "cluster DNS watch failed (retrying)"),
        }
    }
}

impl State {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Zone> {
        self.zone.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Recomputes the records of service `key`.
    fn refresh(&self, key: &Key) {
        let records = self
            .services
            .get(key)
            .and_then(|svc| service_records(svc, self.endpoints.get(key), &self.domain));
        if records.is_none() && self.services.contains_key(key) {
            tracing::debug!(service = ?key, "service name is not a DNS name");
        }
        self.write().set_service(&key.0, &key.1, records);
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Service(event) => self.event(0, *event, |s, k, obj| {
                match obj {
                    Some(svc) => s.services.insert(k.clone(), svc),
                    None => s.services.remove(k),
                };
                s.refresh(k);
            }),
            Change::Endpoints(event) => self.event(1, event, |s, k, obj| {
                match obj {
                    Some(ep) => s.endpoints.insert(k.clone(), ep),
                    None => s.endpoints.remove(k),
                };
                if s.services.contains_key(k) {
                    s.refresh(k);
                }
            }),
            Change::Namespace(event) => self.event(2, event, |s, k, obj| {
                s.write().set_namespace(&k.1, obj.is_some());
            }),
        }
    }

    /// Applies one watcher event of resource `which` through `set` (Some: upsert, None:
    /// delete), handling relists.
    fn event<K: kube::Resource>(
        &mut self,
        which: usize,
        event: watcher::Event<K>,
        set: impl Fn(&mut Self, &Key, Option<K>),
    ) {
        match event {
            watcher::Event::Apply(obj) => set(self, &key(&obj), Some(obj)),
            watcher::Event::Delete(obj) => set(self, &key(&obj), None),
            watcher::Event::Init => self.relisting[which] = Some(HashSet::new()),
            watcher::Event::InitApply(obj) => {
                let k = key(&obj);
                if let Some(seen) = &mut self.relisting[which] {
                    seen.insert(k.clone());
                }
                set(self, &k, Some(obj));
            }
            watcher::Event::InitDone => {
                let seen = self.relisting[which].take().unwrap_or_default();
                let known: Vec<Key> = match which {
                    0 => self.services.keys().cloned().collect(),
                    1 => self.endpoints.keys().cloned().collect(),
                    _ => Vec::new(),
                };
                for k in known.into_iter().filter(|k| !seen.contains(k)) {
                    set(self, &k, None);
                }
                if which == 2 {
                    // Namespaces are not kept here: replace the zone's set wholesale.
                    let mut zone = self.write();
                    zone.clear_namespaces();
                    for (_, ns) in &seen {
                        zone.set_namespace(ns, true);
                    }
                }
                self.listed[which] = true;
                if self.listed.iter().all(|l| *l) {
                    let mut zone = self.write();
                    if !zone.is_synced() {
                        tracing::info!(services = zone.len(), "cluster DNS zone loaded");
                        zone.set_synced();
                    }
                }
            }
        }
    }
}
