//! Shared informers (upstream's `SharedInformerFactory`): one watch of a resource for every
//! controller that needs it, instead of one per controller.
//!
//! Pods are the resource every workload controller watches, and the busiest: with a watch per
//! controller, each pod change was sent, decoded and cached a dozen times over in this one
//! process. A [`SharedPods`] runs ONE watcher (with a reflector cache, [`SharedPods::store`])
//! and hands each change, as a shared `Arc<Pod>`, to every subscriber's stream, which a
//! kube-runtime `Controller` takes through `watches_shared_stream`.
//!
//! Subscribers are taken before the watch starts ([`SharedPods::new`], then
//! [`SharedPods::subscribe`] for each controller, then [`SharedPods::run`]), so that none
//! misses the initial list. Each subscriber has its own unbounded queue: a slow controller
//! delays only itself, and no change is dropped (the queue holds `Arc`s of objects the cache
//! holds anyway). As with the per-controller watchers this replaces, a re-list after a broken
//! watch replays every pod still there as a change, and a pod deleted while the watch was down
//! is not announced.

use std::future::Future;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;

/// A controller's subscription to the shared pod watch: each change as a shared object.
pub type PodEvents = BoxStream<'static, Arc<Pod>>;

/// One pod watch shared by the controllers.
pub struct SharedPods {
    store: Store<Pod>,
    writer: reflector::store::Writer<Pod>,
    subscribers: Vec<mpsc::UnboundedSender<Arc<Pod>>>,
}

impl SharedPods {
    /// A shared pod informer; nothing is watched until [`SharedPods::run`] runs.
    pub fn new() -> Self {
        let (store, writer) = reflector::store::<Pod>();
        Self {
            store,
            writer,
            subscribers: vec![],
        }
    }

    /// Every pod added, changed or deleted from the start of the watch on (the object's last
    /// state for a deletion).
    pub fn subscribe(&mut self) -> PodEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.push(tx);
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) })
            .boxed()
    }

    /// The cache of every pod, filled by the shared watch.
    pub fn store(&self) -> Store<Pod> {
        self.store.clone()
    }

    /// The shared watch and its fan-out to the subscribers taken so far, to be run (spawned)
    /// by the caller; it ends only if every subscriber is gone.
    pub fn run(self, client: Client) -> impl Future<Output = ()> + Send + 'static {
        let events = watcher(Api::<Pod>::all(client), watcher::Config::default())
            .default_backoff()
            .reflect(self.writer);
        fan_out(events, self.subscribers)
    }
}

impl Default for SharedPods {
    fn default() -> Self {
        Self::new()
    }
}

/// Sends each pod change to every subscriber still listening.
async fn fan_out(
    events: impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>>,
    mut subscribers: Vec<mpsc::UnboundedSender<Arc<Pod>>>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) | watcher::Event::Delete(p),
            ) => Arc::new(p),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "shared pod watch error; retrying");
                continue;
            }
        };
        subscribers.retain(|s| s.send(pod.clone()).is_ok());
        if subscribers.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_change_including_deletions() {
        let (tx1, rx1) = mpsc::unbounded_channel();
        let (tx2, rx2) = mpsc::unbounded_channel();
        let (gone, _) = mpsc::unbounded_channel::<Arc<Pod>>();
        let events = futures::stream::iter(vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(pod("a"))),
            Ok(watcher::Event::InitDone),
            Err(watcher::Error::NoResourceVersion),
            Ok(watcher::Event::Apply(pod("b"))),
            Ok(watcher::Event::Delete(pod("a"))),
        ]);
        fan_out(events, vec![tx1, gone, tx2]).await;
        for mut rx in [rx1, rx2] {
            let mut names = vec![];
            while let Ok(p) = rx.try_recv() {
                names.push(p.metadata.name.clone().unwrap_or_default());
            }
            assert_eq!(names, ["a", "b", "a"]);
        }
    }
}
