//! kube-rs against `corten server`: a reflector survives a restart, pagination, conflicts on
//! stale updates, and a watch from a compacted revision gets 410 and the watcher relists.

mod common;

use std::time::Duration;

use common::Cluster;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};

async fn client(c: &Cluster) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(c.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), name.to_string())].into()),
        ..Default::default()
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reflector_survives_a_restart() {
    let mut c = Cluster::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    api.create(&PostParams::default(), &cm("before"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store();
    let stream =
        reflector(writer, watcher(api.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    eventually("initial sync", || {
        reader
            .state()
            .iter()
            .any(|o| o.metadata.name.as_deref() == Some("before"))
    })
    .await;

    tokio::task::block_in_place(|| c.restart());
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    api.create(&PostParams::default(), &cm("after"))
        .await
        .unwrap();
    api.delete("before", &Default::default()).await.unwrap();
    eventually("reflector catches up after restart", || {
        let names: Vec<String> = reader
            .state()
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        names.contains(&"after".to_string()) && !names.contains(&"before".to_string())
    })
    .await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_walks_every_object_once() {
    let c = Cluster::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    for i in 0..23 {
        api.create(&PostParams::default(), &cm(&format!("page-{i:02}")))
            .await
            .unwrap();
    }
    let mut names = vec![];
    let mut params = ListParams::default().limit(5);
    let mut pages = 0;
    loop {
        let list = api.list(&params).await.unwrap();
        pages += 1;
        assert!(list.items.len() <= 5);
        names.extend(list.items.iter().filter_map(|o| o.metadata.name.clone()));
        match list.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
        // Writes between pages do not disturb the snapshot.
        if pages == 2 {
            api.create(&PostParams::default(), &cm("page-99-late"))
                .await
                .unwrap();
        }
    }
    let expected: Vec<String> = (0..23).map(|i| format!("page-{i:02}")).collect();
    assert_eq!(
        names, expected,
        "every object once, in order, from one snapshot"
    );
    assert_eq!(pages, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_update_conflicts() {
    let c = Cluster::start();
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    let created = api
        .create(&PostParams::default(), &cm("cas"))
        .await
        .unwrap();
    let mut first = created.clone();
    first.data = Some([("k".to_string(), "one".to_string())].into());
    api.replace("cas", &PostParams::default(), &first)
        .await
        .unwrap();
    let mut stale = created;
    stale.data = Some([("k".to_string(), "two".to_string())].into());
    match api.replace("cas", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409);
            assert_eq!(s.reason, "Conflict");
        }
        other => panic!("expected a 409 Conflict, got {other:?}"),
    }
    assert_eq!(api.get("cas").await.unwrap().data.unwrap()["k"], "one");
}

#[tokio::test(flavor = "multi_thread")]
async fn compacted_watch_gets_410_and_the_watcher_relists() {
    let mut c = Cluster::start_with(&[
        "--compaction-interval-seconds",
        "1",
        "--compaction-retain-revisions",
        "1",
    ]);
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    let first = api
        .create(&PostParams::default(), &cm("old"))
        .await
        .unwrap();
    let old_rv = first.metadata.resource_version.clone().unwrap();

    // A reflector that is watching from some revision when the server goes away.
    let (reader, writer) = reflector::store();
    let stream =
        reflector(writer, watcher(api.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    eventually("initial sync", || reader.state().len() == 1).await;

    // Writes elsewhere move the revision on while the reflector's watch sees nothing, so the
    // revision it would resume from gets compacted.
    let other: Api<ConfigMap> = Api::namespaced(client(&c).await, "kube-public");
    for i in 0..5 {
        other
            .create(&PostParams::default(), &cm(&format!("new-{i}")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await; // let compaction pass old_rv

    // A raw watch from the compacted revision gets a 410 ERROR event.
    let mut events = api
        .watch(&WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    match events.next().await {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!(e.code, 410, "{e:?}"),
        other => panic!("expected a 410 error event, got {other:?}"),
    }

    // After a restart the reflector resumes from a compacted revision: it must relist.
    tokio::task::block_in_place(|| c.restart());
    let api: Api<ConfigMap> = Api::namespaced(client(&c).await, "default");
    api.delete("old", &Default::default()).await.unwrap();
    api.create(&PostParams::default(), &cm("after-restart"))
        .await
        .unwrap();
    eventually("reflector relists to the current state", || {
        let names: Vec<String> = reader
            .state()
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        names == ["after-restart"]
    })
    .await;
    task.abort();
    // The new server process saw the watcher's relist (this test itself never lists).
    let metrics = c.kubectl(&["get", "--raw", "/metrics"]);
    assert!(
        metrics.lines().any(|l| l.starts_with("apiserver_request_total{verb=\"LIST\",resource=\"configmaps\"")),
        "no relist after the 410: {metrics}"
    );
}
