//! The agent's Node: registration with the machine's real capacity, addresses and versions,
//! the Lease in kube-node-lease renewed every 10 s, and the Ready / MemoryPressure /
//! DiskPressure / PIDPressure conditions kept true to the machine.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::runtime::containerd::RuntimeHealth;

/// The Node annotation naming where local-path volumes of this node live (read by the
/// controllers' local-path provisioner).
pub const LOCAL_PATH_ROOT_ANNOTATION: &str = "corten.io/local-path-root";

/// The directory local-path volumes live under: `DATA_DIR/agent/storage`.
pub fn local_path_root(data_dir: &Path) -> PathBuf {
    data_dir.join("agent").join("storage")
}

/// Removes the directories under the local-path root that no PersistentVolume names any more
/// (volumes with reclaim policy Delete whose claim was deleted).
pub async fn collect_local_volumes(client: &Client, data_dir: &Path) {
    let root = local_path_root(data_dir);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    let volumes: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    let Ok(list) = volumes.list(&Default::default()).await else {
        return;
    };
    let live: std::collections::HashSet<String> = list
        .items
        .iter()
        .filter_map(|v| v.spec.as_ref()?.host_path.as_ref().map(|h| h.path.clone()))
        .collect();
    for e in entries.flatten() {
        let path = e.path().to_string_lossy().into_owned();
        if !live.contains(&path) {
            tracing::info!(dir = %path, "removing the directory of a deleted local-path volume");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The most pods one node runs (upstream's default).
pub const MAX_PODS: u32 = 110;
/// How often the Lease is renewed and the status refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// What the agent says about its node.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// The Node's name.
    pub name: String,
    /// The address other nodes and the API server reach this one at.
    pub ip: IpAddr,
    /// The port of the agent's HTTPS endpoint (kubelet's 10250).
    pub agent_port: u16,
    /// The data directory whose file system is the node's ephemeral storage.
    pub data_dir: PathBuf,
    /// Extra labels (e.g. the control-plane role).
    pub labels: BTreeMap<String, String>,
}

/// Facts about the machine, read from /proc and the file system.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// MemTotal in bytes.
    pub memory_bytes: u64,
    /// MemAvailable in bytes.
    pub memory_available_bytes: u64,
    /// Size of the data dir's file system in bytes.
    pub disk_bytes: u64,
    /// Free bytes on it.
    pub disk_available_bytes: u64,
    /// pid_max and the number of processes now.
    pub pids: (u64, u64),
}

impl Machine {
    /// Reads the machine's numbers now.
    pub fn read(data_dir: &Path) -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem = |key: &str| {
            meminfo
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        let (disk_bytes, disk_available_bytes) = rustix::fs::statvfs(data_dir)
            .map(|s| (s.f_blocks * s.f_frsize, s.f_bavail * s.f_frsize))
            .unwrap_or((0, 0));
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(32768);
        let procs = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().parse::<u64>().is_ok())
                    .count() as u64
            })
            .unwrap_or(0);
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: mem("MemTotal:"),
            memory_available_bytes: mem("MemAvailable:"),
            disk_bytes,
            disk_available_bytes,
            pids: (pid_max, procs),
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// The agent's version as nodes report it (`kubeletVersion`).
pub fn agent_version() -> String {
    format!("v{}+corten-{}", api_version(), env!("CARGO_PKG_VERSION"))
}

fn api_version() -> &'static str {
    "1.33.0"
}

/// The Node object the agent registers (spec left to the control plane, except nothing).
pub fn node_object(id: &NodeIdentity, runtime_version: &str) -> Node {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), id.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            std::env::consts::ARCH.replace("x86_64", "amd64"),
        ),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
    ]);
    labels.extend(id.labels.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                LOCAL_PATH_ROOT_ANNOTATION.to_string(),
                local_path_root(&id.data_dir).to_string_lossy().into_owned(),
            )])),
            ..Default::default()
        },
        spec: None,
        status: Some(node_status(id, runtime_version, &RuntimeHealth::Up, true)),
    }
}

/// The Node's status as the machine is now.
pub fn node_status(
    id: &NodeIdentity,
    runtime_version: &str,
    health: &RuntimeHealth,
    network_ready: bool,
) -> NodeStatus {
    let m = Machine::read(&id.data_dir);
    let q = |s: String| Quantity(s);
    let capacity = BTreeMap::from([
        ("cpu".to_string(), q(m.cpus.to_string())),
        (
            "memory".to_string(),
            q(format!("{}Ki", m.memory_bytes / 1024)),
        ),
        ("pods".to_string(), q(MAX_PODS.to_string())),
        (
            "ephemeral-storage".to_string(),
            q(format!("{}Ki", m.disk_bytes / 1024)),
        ),
    ]);
    let now = Time(jiff::Timestamp::now());
    let cond = |type_: &str, ok: bool, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    let memory_pressure = m.memory_available_bytes < 100 * 1024 * 1024;
    let disk_pressure = m.disk_bytes > 0 && m.disk_available_bytes * 10 < m.disk_bytes;
    let pid_pressure = m.pids.1 * 10 > m.pids.0 * 9;
    let ready = match health {
        RuntimeHealth::Up if network_ready => cond(
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
        ),
        RuntimeHealth::Up => cond(
            "Ready",
            false,
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false (waiting for the pod CIDR)",
        ),
        RuntimeHealth::Down(why) => cond(
            "Ready",
            false,
            "KubeletNotReady",
            &format!("container runtime is down: {why}"),
        ),
    };
    NodeStatus {
        capacity: Some(capacity.clone()),
        allocatable: Some(capacity),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: id.ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: id.name.clone(),
            },
        ]),
        conditions: Some(vec![
            if memory_pressure {
                cond(
                    "MemoryPressure",
                    true,
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                )
            } else {
                cond(
                    "MemoryPressure",
                    false,
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                )
            },
            if disk_pressure {
                cond(
                    "DiskPressure",
                    true,
                    "KubeletHasDiskPressure",
                    "kubelet has disk pressure",
                )
            } else {
                cond(
                    "DiskPressure",
                    false,
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                )
            },
            if pid_pressure {
                cond(
                    "PIDPressure",
                    true,
                    "KubeletHasInsufficientPID",
                    "kubelet has insufficient PID available",
                )
            } else {
                cond(
                    "PIDPressure",
                    false,
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                )
            },
            ready,
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(id.agent_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.replace("x86_64", "amd64"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: runtime_version.into(),
            kernel_version: rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
            kube_proxy_version: agent_version(),
            kubelet_version: agent_version(),
            machine_id: read_trimmed("/etc/machine-id"),
            operating_system: "linux".into(),
            os_image: os_image(),
            system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates the Node, or refreshes its labels and status if it exists.
pub async fn register(client: &Client, id: &NodeIdentity, runtime_version: &str) -> Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = node_object(id, runtime_version);
    match nodes.create(&PostParams::default(), &node).await {
        Ok(n) => {
            tracing::info!(node = %id.name, "node registered");
            // Creation drops status: write it through the status subresource.
            let status = serde_json::json!({"status": node.status});
            Ok(nodes
                .patch_status(
                    &n.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await?)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let labels = serde_json::json!({"metadata": {
                "labels": node.metadata.labels,
                "annotations": node.metadata.annotations,
            }});
            nodes
                .patch(&id.name, &PatchParams::default(), &Patch::Merge(&labels))
                .await?;
            let status = serde_json::json!({"status": node.status});
            Ok(nodes
                .patch_status(&id.name, &PatchParams::default(), &Patch::Merge(&status))
                .await?)
        }
        Err(e) => Err(e).context("registering the node"),
    }
}

/// Renews the node's Lease and refreshes its status every [`HEARTBEAT`] until shutdown.
pub async fn heartbeat(
    client: Client,
    id: NodeIdentity,
    runtime_version: String,
    mut health: watch::Receiver<RuntimeHealth>,
    mut network_ready: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut last: Option<(RuntimeHealth, bool)> = None;
    loop {
        if let Err(e) = renew_lease(&client, &id).await {
            tracing::warn!("renewing the node lease: {e:#}");
        }
        let h = health.borrow().clone();
        let net = *network_ready.borrow();
        let status = node_status(&id, &runtime_version, &h, net);
        let mut patch = serde_json::json!({"status": status});
        // Transition times only move when a condition's status changes.
        if last.as_ref() == Some(&(h.clone(), net))
            && let Ok(current) = nodes.get_status(&id.name).await
        {
            keep_transition_times(&mut patch, &current);
        }
        if let Err(e) = nodes
            .patch_status(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!("updating the node status: {e:#}");
        }
        last = Some((h, net));
        collect_local_volumes(&client, &id.data_dir).await;
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = health.changed() => {}
            // The network turning ready is reported at once, not a heartbeat later.
            Ok(()) = network_ready.changed() => {}
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
    }
}

fn keep_transition_times(patch: &mut serde_json::Value, current: &Node) {
    let Some(conds) = current.status.as_ref().and_then(|s| s.conditions.as_ref()) else {
        return;
    };
    let Some(new) = patch["status"]["conditions"].as_array_mut() else {
        return;
    };
    for c in new {
        if let Some(old) = conds
            .iter()
            .find(|o| Some(o.type_.as_str()) == c["type"].as_str())
            && Some(old.status.as_str()) == c["status"].as_str()
            && let Some(t) = &old.last_transition_time
        {
            c["lastTransitionTime"] = serde_json::to_value(t).unwrap_or_default();
        }
    }
}

async fn renew_lease(client: &Client, id: &NodeIdentity) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = MicroTime(jiff::Timestamp::now());
    match leases.get_opt(&id.name).await? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(now);
            spec.holder_identity = Some(id.name.clone());
            spec.lease_duration_seconds = Some(40);
            leases
                .replace(&id.name, &PostParams::default(), &lease)
                .await?;
        }
        None => {
            let nodes: Api<Node> = Api::all(client.clone());
            let owner = nodes.get(&id.name).await.ok().map(|n| OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: id.name.clone(),
                uid: n.uid().unwrap_or_default(),
                ..Default::default()
            });
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(id.name.clone()),
                    owner_references: owner.map(|o| vec![o]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(id.name.clone()),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            leases.create(&PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}

/// Waits until the control plane has given the node a pod CIDR, and returns it.
pub async fn wait_for_pod_cidr(client: &Client, name: &str) -> Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut logged = false;
    loop {
        if let Some(cidr) = nodes
            .get_opt(name)
            .await?
            .and_then(|n| n.spec?.pod_cidr)
            .filter(|c| !c.is_empty())
        {
            return Ok(cidr);
        }
        if !logged {
            tracing::info!(
                node = name,
                "waiting for the control plane to assign a pod CIDR"
            );
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
