//! The ReplicaSet and Deployment controllers end to end, through kubectl and kube-rs.
//!
//! Pods run on three simulated nodes (`corten sim-nodes`), placed there by the scheduler.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Cluster, SimNodes};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::Value;

fn eventually(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn client(kubeconfig: std::path::PathBuf) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Pods at one moment, as a watch saw them.
#[derive(Debug, Clone)]
struct Snapshot {
    total: usize,
    ready: usize,
    images: BTreeSet<String>,
}

/// Watches the pods matching a label selector with a kube-rs watcher and records a
/// [`Snapshot`] after every event, to check a rollout's bounds at every step.
struct PodWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Snapshot>>>,
}

impl PodWatch {
    fn start(c: &Cluster, selector: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let synced = Arc::new(AtomicBool::new(false));
        let (flag, synced2) = (stop.clone(), synced.clone());
        let kubeconfig = c.kubeconfig();
        let selector = selector.to_string();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let api: Api<Pod> = Api::namespaced(client(kubeconfig).await, "default");
                let mut stream =
                    watcher::watcher(api, watcher::Config::default().labels(&selector)).boxed();
                let (mut pods, mut init) = (BTreeMap::new(), BTreeMap::new());
                let mut snaps = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    let Ok(Some(Ok(event))) =
                        tokio::time::timeout(Duration::from_millis(100), stream.next()).await
                    else {
                        continue;
                    };
                    match event {
                        Event::Init => init.clear(),
                        Event::InitApply(p) => {
                            init.insert(p.name_any(), p);
                        }
                        Event::InitDone => {
                            pods = std::mem::take(&mut init);
                            synced2.store(true, Ordering::Relaxed);
                        }
                        Event::Apply(p) => {
                            pods.insert(p.name_any(), p);
                        }
                        Event::Delete(p) => {
                            pods.remove(&p.name_any());
                        }
                    }
                    if synced2.load(Ordering::Relaxed) {
                        let live: Vec<&Pod> = pods
                            .values()
                            .filter(|p| p.metadata.deletion_timestamp.is_none())
                            .collect();
                        snaps.push(Snapshot {
                            total: live.len(),
                            ready: live.iter().filter(|p| is_ready(p)).count(),
                            images: live
                                .iter()
                                .flat_map(|p| p.spec.iter().flat_map(|s| s.containers.iter()))
                                .filter_map(|c| c.image.clone())
                                .collect(),
                        });
                    }
                }
                snaps
            })
        });
        eventually("pod watch synced", 10, || synced.load(Ordering::Relaxed));
        PodWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Snapshot> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pods_of(c: &Cluster, selector: &str) -> Vec<Value> {
    let list = c.get_json(&["get", "pods", "-l", selector]);
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn names(pods: &[Value]) -> BTreeSet<String> {
    pods.iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

const RS: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: frontend
spec:
  replicas: 3
  selector:
    matchLabels:
      tier: frontend
  template:
    metadata:
      labels:
        tier: frontend
    spec:
      containers:
      - name: app
        image: nginx:1
";

#[test]
fn replicaset_keeps_its_pods() {
    let c = Cluster::start();
    let _nodes = SimNodes::start(&c, 3);
    c.apply(RS);
    eventually("3 ready replicas", 30, || {
        let rs = c.get_json(&["get", "rs", "frontend"]);
        rs["status"]["readyReplicas"] == 3
            && rs["status"]["availableReplicas"] == 3
            && rs["status"]["fullyLabeledReplicas"] == 3
            && rs["status"]["observedGeneration"] == rs["metadata"]["generation"]
    });
    let pods = pods_of(&c, "tier=frontend");
    assert_eq!(pods.len(), 3);
    let uid = c.get_json(&["get", "rs", "frontend"])["metadata"]["uid"].clone();
    for p in &pods {
        assert!(
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("frontend-")
        );
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ReplicaSet");
        assert_eq!(owner["uid"], uid);
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
    }

    // A deleted pod is replaced.
    let victim = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    c.kubectl(&["delete", "pod", &victim]);
    eventually("replacement pod", 30, || {
        let now = names(&pods_of(&c, "tier=frontend"));
        now.len() == 3 && !now.contains(&victim)
    });

    // Scale up and down.
    c.kubectl(&["scale", "rs", "frontend", "--replicas=5"]);
    eventually("5 pods", 30, || {
        pods_of(&c, "tier=frontend").len() == 5
            && c.get_json(&["get", "rs", "frontend"])["status"]["readyReplicas"] == 5
    });
    c.kubectl(&["scale", "rs", "frontend", "--replicas=1"]);
    eventually("1 pod", 30, || {
        pods_of(&c, "tier=frontend").len() == 1
            && c.get_json(&["get", "rs", "frontend"])["status"]["replicas"] == 1
    });

    // An orphan matching the selector is adopted (and, being one too many, one pod goes).
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stray\n  labels:\n    tier: frontend\nspec:\n  containers:\n  - name: app\n    image: nginx:1\n",
    );
    eventually("orphan adopted and surplus deleted", 30, || {
        let pods = pods_of(&c, "tier=frontend");
        pods.len() == 1 && pods[0]["metadata"]["ownerReferences"][0]["uid"] == uid
    });

    // A pod relabelled out of the selector is released and replaced.
    let owned = names(&pods_of(&c, "tier=frontend"));
    let pod = owned.iter().next().unwrap().clone();
    c.kubectl(&["label", "pod", &pod, "tier=debug", "--overwrite"]);
    eventually("released pod replaced", 30, || {
        let released = c.get_json(&["get", "pod", &pod]);
        released["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|a| a.is_empty())
            && pods_of(&c, "tier=frontend").len() == 1
    });
}

fn deployment(name: &str, replicas: i32, strategy: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  strategy:
    type: {strategy}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: app
        image: {image}
"
    )
}

fn rollout_status(c: &Cluster, name: &str) -> String {
    c.kubectl(&[
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "--timeout=60s",
    ])
}

fn condition(d: &Value, kind: &str) -> Value {
    d["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
        .unwrap_or(Value::Null)
}

fn image_of(d: &Value) -> String {
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn deployment_rolls_out_within_surge_and_unavailability_and_rolls_back() {
    let c = Cluster::start();
    let _nodes = SimNodes::start(&c, 3);
    c.apply(&deployment("web", 4, "RollingUpdate", "nginx:1"));
    let out = rollout_status(&c, "web");
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = c.get_json(&["get", "deployment", "web"]);
    assert_eq!(d["status"]["availableReplicas"], 4);
    assert_eq!(d["status"]["updatedReplicas"], 4);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        condition(&d, "Available")["reason"],
        "MinimumReplicasAvailable"
    );
    assert_eq!(
        condition(&d, "Progressing")["reason"],
        "NewReplicaSetAvailable"
    );
    let rs = c.get_json(&["get", "rs", "-l", "app=web"]);
    let first = &rs["items"][0];
    let hash = first["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(first["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(
        first["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );

    // Roll to a new image: 25% of 4 is maxSurge 1 and maxUnavailable 1.
    let watch = PodWatch::start(&c, "app=web");
    c.kubectl(&["set", "image", "deployment/web", "app=nginx:2"]);
    let out = rollout_status(&c, "web");
    assert!(out.contains("successfully rolled out"), "{out}");
    eventually("old pods gone", 30, || {
        pods_of(&c, "app=web")
            .iter()
            .all(|p| p["spec"]["containers"][0]["image"] == "nginx:2")
    });
    let snaps = watch.finish();
    assert!(
        snaps.iter().any(|s| s.images.contains("nginx:2")),
        "{snaps:?}"
    );
    let most = snaps.iter().map(|s| s.total).max().unwrap_or(0);
    let fewest_ready = snaps.iter().map(|s| s.ready).min().unwrap_or(0);
    assert!(most <= 5, "more than replicas + maxSurge pods: {snaps:?}");
    assert!(
        fewest_ready >= 3,
        "fewer than replicas - maxUnavailable ready: {snaps:?}"
    );

    let history = c.kubectl(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");

    // Undo returns to the first template, which becomes revision 3.
    c.kubectl(&["rollout", "undo", "deployment/web"]);
    let out = rollout_status(&c, "web");
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = c.get_json(&["get", "deployment", "web"]);
    assert_eq!(image_of(&d), "nginx:1");
    eventually("revision 3 on the deployment", 20, || {
        c.get_json(&["get", "deployment", "web"])["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
            == "3"
    });
    let sets = c.get_json(&["get", "rs", "-l", "app=web"]);
    let items = sets["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let back = items
        .iter()
        .find(|r| r["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1")
        .unwrap();
    assert_eq!(back["metadata"]["name"], first["metadata"]["name"]);
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    eventually("all pods back on nginx:1", 30, || {
        let pods = pods_of(&c, "app=web");
        pods.len() == 4
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1")
    });
}

#[test]
fn recreate_removes_old_pods_before_new_ones_start() {
    let c = Cluster::start();
    let _nodes = SimNodes::start(&c, 3);
    c.apply(&deployment("batch", 3, "Recreate", "busybox:1"));
    rollout_status(&c, "batch");
    let watch = PodWatch::start(&c, "app=batch");
    c.kubectl(&["set", "image", "deployment/batch", "app=busybox:2"]);
    let out = rollout_status(&c, "batch");
    assert!(out.contains("successfully rolled out"), "{out}");
    let snaps = watch.finish();
    assert!(
        snaps.iter().all(|s| s.images.len() <= 1),
        "old and new pods at once: {snaps:?}"
    );
    assert!(
        snaps.iter().any(|s| s.total == 0),
        "old pods never all gone: {snaps:?}"
    );
    let sets = c.get_json(&["get", "rs", "-l", "app=batch"]);
    let replicas: BTreeSet<i64> = sets["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["spec"]["replicas"].as_i64().unwrap())
        .collect();
    assert_eq!(replicas, BTreeSet::from([0, 3]));
}

#[test]
fn paused_deployment_waits_for_resume_and_old_revisions_are_cleaned_up() {
    let c = Cluster::start();
    let _nodes = SimNodes::start(&c, 3);
    c.apply(&deployment("api", 2, "RollingUpdate", "app:1"));
    rollout_status(&c, "api");
    c.kubectl(&[
        "patch",
        "deployment",
        "api",
        "-p",
        r#"{"spec":{"revisionHistoryLimit":1}}"#,
    ]);
    c.kubectl(&["rollout", "pause", "deployment/api"]);
    c.kubectl(&["set", "image", "deployment/api", "app=app:2"]);
    eventually("paused change observed", 20, || {
        let d = c.get_json(&["get", "deployment", "api"]);
        d["status"]["observedGeneration"] == d["metadata"]["generation"]
            && condition(&d, "Progressing")["reason"] == "DeploymentPaused"
    });
    // Nothing rolls while paused.
    std::thread::sleep(Duration::from_secs(1));
    let sets = c.get_json(&["get", "rs", "-l", "app=api"]);
    assert_eq!(sets["items"].as_array().unwrap().len(), 1);

    c.kubectl(&["rollout", "resume", "deployment/api"]);
    let out = rollout_status(&c, "api");
    assert!(out.contains("successfully rolled out"), "{out}");
    c.kubectl(&["set", "image", "deployment/api", "app=app:3"]);
    rollout_status(&c, "api");
    // revisionHistoryLimit 1: the new ReplicaSet and one old one remain.
    eventually("oldest replica set deleted", 20, || {
        let sets = c.get_json(&["get", "rs", "-l", "app=api"]);
        let revs: BTreeSet<String> = sets["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| {
                r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        revs == BTreeSet::from(["2".to_string(), "3".to_string()])
    });
}
