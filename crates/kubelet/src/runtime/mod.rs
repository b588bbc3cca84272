//! The container runtime: a CRI (runtime.v1) client over a unix socket, and the agent's own
//! supervised containerd ([`containerd`]).
//!
//! [`Cri`] is cheap to clone (tonic channels multiplex one connection); every pod worker holds
//! one.

pub mod containerd;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1 as cri;

/// The label carrying a pod's UID on its sandboxes and containers (as upstream's kubelet sets).
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// A connection to a CRI runtime: its runtime and image services.
#[derive(Clone)]
pub struct Cri {
    /// RuntimeService: sandboxes, containers, exec, logs reopening, status.
    pub runtime: RuntimeServiceClient<Channel>,
    /// ImageService: pull, list, status.
    pub images: ImageServiceClient<Channel>,
    /// The socket this client talks to.
    pub socket: PathBuf,
}

/// The socket path of a `unix:///path` endpoint (a bare path is accepted too).
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

impl Cri {
    /// Connects to the CRI socket at `socket` (lazily: the first call dials, and a runtime that
    /// restarts is redialled).
    pub fn connect(socket: PathBuf) -> Result<Self> {
        let path = socket.clone();
        let channel = Endpoint::try_from("http://[::1]:50051")
            .context("CRI endpoint")?
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            images: ImageServiceClient::new(channel).max_decoding_message_size(64 << 20),
            socket,
        })
    }

    /// Waits until the runtime answers CRI calls (containerd's CRI plugin initialises a moment
    /// after its socket appears).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.version().await {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The sandboxes of the pod with UID `uid` (by the label the agent puts on them).
    pub async fn pod_sandboxes(&self, uid: &str) -> Result<Vec<cri::PodSandbox>, tonic::Status> {
        Ok(self
            .runtime
            .clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: [(POD_UID_LABEL.to_string(), uid.to_string())].into(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items)
    }

    /// The containers of the pod with UID `uid`, in every sandbox of it.
    pub async fn pod_containers(&self, uid: &str) -> Result<Vec<cri::Container>, tonic::Status> {
        Ok(self
            .runtime
            .clone()
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    label_selector: [(POD_UID_LABEL.to_string(), uid.to_string())].into(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers)
    }

    /// The runtime's name and version (`containerd://1.6.20`), as Node.status.nodeInfo shows it.
    pub async fn version(&self) -> Result<String> {
        let v = self
            .runtime
            .clone()
            .version(cri::VersionRequest {
                version: "v1".into(),
            })
            .await
            .context("CRI Version")?
            .into_inner();
        Ok(format!(
            "{}://{}",
            v.runtime_name,
            v.runtime_version.trim_start_matches('v')
        ))
    }

    /// Whether the runtime reports itself ready, and its network ready; with the reason when not.
    pub async fn status(&self) -> Result<(bool, bool, String)> {
        let status = self
            .runtime
            .clone()
            .status(cri::StatusRequest { verbose: false })
            .await?
            .into_inner()
            .status
            .unwrap_or_default();
        let mut runtime_ready = false;
        let mut network_ready = false;
        let mut why = String::new();
        for c in status.conditions {
            let ok = c.status;
            if !ok && !c.message.is_empty() {
                why = format!("{}: {}", c.reason, c.message);
            }
            match c.r#type.as_str() {
                "RuntimeReady" => runtime_ready = ok,
                "NetworkReady" => network_ready = ok,
                _ => {}
            }
        }
        Ok((runtime_ready, network_ready, why))
    }
}
