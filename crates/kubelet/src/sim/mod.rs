//! The simulated node agent: nodes whose pods are reported Running without containers, as
//! kwok does.
//!
//! [`run_simulated_nodes`] registers `count` Nodes named `{prefix}-{i}` (8 CPUs, 32Gi, 110
//! pods, Ready, labelled `corten.dev/simulated=true`), creates one Lease per node in
//! `kube-node-lease` as it registers the node and renews it every 10 s, and watches every pod with ONE watcher (not one per node),
//! keeping those bound to its nodes:
//! - a pod bound to a sim node gets a Running status (conditions True, a pod IP from the
//!   node's range, container statuses running and ready) through `pods/status`;
//! - a pod being deleted has its containers stopped — at once, or after the seconds of the
//!   annotation `corten.dev/sim-termination-seconds: "N"` (a process slow to exit, never longer
//!   than the deletion's grace period) — then, as upstream's kubelet, gets a terminal status
//!   through `pods/status` (every container terminated with exit code 143, for SIGTERM, or 137
//!   when the grace period ran out: phase Failed) unless it had already finished, and is then
//!   removed for good (a delete with `gracePeriodSeconds=0`);
//! - a pod with `restartPolicy` Never or OnFailure and the annotation
//!   `corten.dev/sim-exit-code: "N"` ends about 1 s after it started: Succeeded if N is 0,
//!   Failed otherwise.
//!
//! On shutdown the nodes and their leases are deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Pod,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

mod podstatus;

use podstatus::{exit_code, exited_status, running_status, termination};

/// The label every simulated node carries.
pub const SIMULATED_LABEL: &str = "corten.dev/simulated";
/// The annotation that makes a pod exit (value: the exit code) about 1 s after it started.
pub const EXIT_CODE_ANNOTATION: &str = "corten.dev/sim-exit-code";
/// The annotation that makes a deleted pod's containers take that many seconds to stop.
pub const TERMINATION_SECONDS_ANNOTATION: &str = "corten.dev/sim-termination-seconds";
/// The kubelet version simulated nodes report.
pub const KUBELET_VERSION: &str = "v1.33.0-corten-sim";
/// The namespace of node leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How often leases are renewed.
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// Lease renewals in flight at once.
const LEASE_CONCURRENCY: usize = 64;
/// How long an exiting pod runs.
const EXIT_AFTER: Duration = Duration::from_secs(1);

/// One simulated node's addresses.
#[derive(Clone, Debug)]
struct SimNode {
    name: String,
    /// The node's InternalIP (10.99.x.y).
    ip: String,
    /// The first three octets of the node's pod range (10.x.y.0/24).
    pod_net: String,
}

impl SimNode {
    fn new(prefix: &str, i: usize) -> Self {
        // i < 254 * 256 covers any count worth simulating; beyond it addresses repeat.
        let (hi, lo) = ((i / 254) % 256, i % 254 + 1);
        let (phi, plo) = (128 + (i / 256) % 128, i % 256);
        SimNode {
            name: format!("{prefix}-{i}"),
            ip: format!("10.99.{hi}.{lo}"),
            pod_net: format!("10.{phi}.{plo}"),
        }
    }
}

/// Pod IPs handed out per node (a counter within the node's /24; freed IPs are not reused
/// until the counter wraps).
#[derive(Default)]
struct Ipam {
    next: HashMap<String, u32>,
}

impl Ipam {
    fn allocate(&mut self, node: &SimNode) -> String {
        let n = self.next.entry(node.name.clone()).or_insert(0);
        *n = (*n % 253) + 1;
        format!("{}.{}", node.pod_net, *n + 1)
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

/// The Node object a simulated node registers.
fn node_object(n: &SimNode) -> Node {
    let resources = quantities(&[
        ("cpu", "8"),
        ("memory", "32Gi"),
        ("pods", "110"),
        ("ephemeral-storage", "100Gi"),
    ]);
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), n.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("type".to_string(), "kwok".to_string()),
        (SIMULATED_LABEL.to_string(), "true".to_string()),
    ]);
    let t = now();
    Node {
        metadata: ObjectMeta {
            name: Some(n.name.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                "node.alpha.kubernetes.io/ttl".to_string(),
                "0".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(format!("{}.0/24", n.pod_net)),
            pod_cidrs: Some(vec![format!("{}.0/24", n.pod_net)]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            phase: Some("Running".into()),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("KubeletReady".into()),
                message: Some("kubelet is posting ready status".into()),
                last_heartbeat_time: Some(t.clone()),
                last_transition_time: Some(t),
            }]),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: n.ip.clone(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: n.name.clone(),
                },
            ]),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                boot_id: String::new(),
                container_runtime_version: "sim://0.1.0".into(),
                kernel_version: String::new(),
                kube_proxy_version: String::new(),
                kubelet_version: KUBELET_VERSION.into(),
                machine_id: String::new(),
                operating_system: "linux".into(),
                os_image: "corten simulated node".into(),
                system_uuid: String::new(),
                swap: None,
            }),
            ..Default::default()
        }),
    }
}

/// Creates (or takes over) a node, writes its status through `nodes/status`, then makes sure
/// its Lease exists (as a kubelet does right after registering), so that the renewals that
/// follow are plain updates.
async fn register(nodes: &Api<Node>, leases: &Api<Lease>, n: &SimNode) -> Result<(), kube::Error> {
    let node = node_object(n);
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = serde_json::json!({
                "metadata": {"labels": node.metadata.labels},
                "spec": {"unschedulable": null},
            });
            nodes
                .patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Err(e) => return Err(e),
    }
    let status = serde_json::json!({ "status": node.status });
    nodes
        .patch_status(&n.name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    create_lease(leases, &n.name, lease_spec(&n.name)).await
}

/// A node's Lease spec, renewed now.
fn lease_spec(node: &str) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(node.to_string()),
        lease_duration_seconds: Some(40),
        renew_time: Some(MicroTime(jiff::Timestamp::now())),
        ..Default::default()
    }
}

/// Creates a node's Lease; one that exists already is fine (the renewals update it).
async fn create_lease(leases: &Api<Lease>, node: &str, spec: LeaseSpec) -> Result<(), kube::Error> {
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            namespace: Some(LEASE_NAMESPACE.into()),
            ..Default::default()
        },
        spec: Some(spec),
    };
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Renews a node's Lease (created again if someone deleted it).
async fn renew_lease(leases: &Api<Lease>, node: &str) -> Result<(), kube::Error> {
    let spec = lease_spec(node);
    let patch = serde_json::json!({ "spec": spec });
    match leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => create_lease(leases, node, spec).await,
        Err(e) => Err(e),
    }
}

/// Runs `count` simulated nodes named `{prefix}-{i}` until `shutdown` turns true, then deletes
/// them (and their leases).
pub async fn run_simulated_nodes(
    client: Client,
    prefix: &str,
    count: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let sims: Vec<SimNode> = (0..count).map(|i| SimNode::new(prefix, i)).collect();
    let by_name: Arc<HashMap<String, SimNode>> =
        Arc::new(sims.iter().map(|n| (n.name.clone(), n.clone())).collect());
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);

    let mut tasks = tokio::task::JoinSet::new();
    {
        let (nodes, leases, sims) = (nodes.clone(), leases.clone(), sims.clone());
        tasks.spawn(async move {
            for n in &sims {
                // Registration is retried until it works: the API server may still be starting.
                while let Err(e) = register(&nodes, &leases, n).await {
                    tracing::warn!(node = %n.name, error = %e, "node registration failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            tracing::info!(count = sims.len(), "simulated nodes registered");
            renew_leases(leases, sims).await;
        });
    }
    tasks.spawn(pod_loop(client.clone(), by_name));

    let _ = shutdown.wait_for(|stop| *stop).await;
    tasks.abort_all();
    for n in &sims {
        let _ = nodes.delete(&n.name, &DeleteParams::default()).await;
        let _ = leases.delete(&n.name, &DeleteParams::default()).await;
    }
    tracing::info!(count = sims.len(), "simulated nodes deleted");
}

/// Renews every node's Lease once per [`LEASE_RENEW`], as that many kubelets would: the
/// renewals are spread evenly over the period (not sent in one burst, nor one after another,
/// which would let the last nodes' leases expire under a loaded API server), at most
/// [`LEASE_CONCURRENCY`] in flight.
async fn renew_leases(leases: Api<Lease>, sims: Vec<SimNode>) {
    if sims.is_empty() {
        return;
    }
    let pace = (LEASE_RENEW / sims.len() as u32).max(Duration::from_micros(100));
    let mut tick = tokio::time::interval(pace);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(LEASE_CONCURRENCY));
    for n in sims.iter().cycle() {
        tick.tick().await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let (leases, name) = (leases.clone(), n.name.clone());
        tokio::spawn(async move {
            if let Err(e) = renew_lease(&leases, &name).await {
                tracing::debug!(node = %name, error = %e, "lease renewal failed");
            }
            drop(permit);
        });
    }
}

/// What the pod loop remembers between events.
#[derive(Default)]
struct PodState {
    ipam: Ipam,
    /// Pods (by uid) whose exit is scheduled.
    exiting: HashSet<String>,
    /// Pods (by uid) whose deletion was sent.
    deleting: HashSet<String>,
    /// Pods (by uid) whose Running status is being written.
    starting: HashSet<String>,
}

/// Watches all pods and drives those bound to a simulated node.
async fn pod_loop(client: Client, nodes: Arc<HashMap<String, SimNode>>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let state = Arc::new(Mutex::new(PodState::default()));
    let mut events = watcher(pods, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            Ok(watcher::Event::Delete(p)) => {
                if let Ok(mut st) = state.lock() {
                    let uid = p.uid().unwrap_or_default();
                    st.exiting.remove(&uid);
                    st.deleting.remove(&uid);
                    st.starting.remove(&uid);
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "pod watch error");
                continue;
            }
        };
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .and_then(|n| nodes.get(n))
        else {
            continue;
        };
        handle_pod(&client, &state, node, pod);
    }
}

/// Reacts to one pod bound to a simulated node (the API calls run in their own tasks).
fn handle_pod(client: &Client, state: &Arc<Mutex<PodState>>, node: &SimNode, pod: Pod) {
    let Ok(mut st) = state.lock() else { return };
    let uid = pod.uid().unwrap_or_default();
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if pod.metadata.deletion_timestamp.is_some() {
        if st.deleting.insert(uid.clone()) {
            let name = pod.name_any();
            let stop = termination(&pod);
            tokio::spawn(async move {
                if let Some((after, code)) = stop {
                    tokio::time::sleep(after).await;
                    let status = exited_status(pod.status.clone().unwrap_or_default(), code);
                    let patch = serde_json::json!({ "status": status });
                    if let Err(e) = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        tracing::debug!(pod = %name, error = %e, "terminal pod status failed");
                    }
                }
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                if let Err(e) = api.delete(&name, &dp).await {
                    tracing::debug!(pod = %name, error = %e, "final pod delete failed");
                }
            });
        }
        return;
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    if phase == "Succeeded" || phase == "Failed" {
        return;
    }
    if phase != "Running" {
        if !st.starting.insert(uid.clone()) {
            return;
        }
        let ip = st.ipam.allocate(node);
        let status = running_status(&pod, &node.ip, &ip);
        let name = pod.name_any();
        let state = state.clone();
        tokio::spawn(async move {
            let patch = serde_json::json!({ "status": status });
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "pod status update failed");
                // Forget it, so that the next event about this pod tries again.
                if let Ok(mut st) = state.lock() {
                    st.starting.remove(&uid);
                }
            }
        });
        return;
    }
    if let Some(code) = exit_code(&pod)
        && st.exiting.insert(uid)
    {
        let name = pod.name_any();
        let status = pod.status.clone().unwrap_or_default();
        tokio::spawn(async move {
            tokio::time::sleep(EXIT_AFTER).await;
            let status = exited_status(status, code);
            let patch = serde_json::json!({ "status": status });
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "pod exit update failed");
            }
        });
    }
}

/// The exit code a pod asks for: only with restartPolicy Never or OnFailure.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_and_ranges_are_distinct() {
        let a = SimNode::new("sim", 0);
        let b = SimNode::new("sim", 300);
        assert_eq!(a.name, "sim-0");
        assert_eq!(a.ip, "10.99.0.1");
        assert_ne!(a.ip, b.ip);
        assert_ne!(a.pod_net, b.pod_net);
        let mut ipam = Ipam::default();
        assert_eq!(ipam.allocate(&a), format!("{}.2", a.pod_net));
        assert_eq!(ipam.allocate(&a), format!("{}.3", a.pod_net));
        assert_eq!(ipam.allocate(&b), format!("{}.2", b.pod_net));
    }

    #[test]
    fn node_object_is_ready_with_capacity() {
        let n = node_object(&SimNode::new("sim", 1));
        let st = n.status.unwrap();
        assert_eq!(st.allocatable.unwrap()["cpu"].0, "8");
        assert_eq!(st.capacity.unwrap()["memory"].0, "32Gi");
        let ready = &st.conditions.unwrap()[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(st.node_info.unwrap().kubelet_version, KUBELET_VERSION);
        assert_eq!(n.metadata.labels.unwrap()[SIMULATED_LABEL], "true");
    }
}
