//! Stopping a pod: graceful termination (preStop, the stop signal, SIGKILL when the grace
//! period ends), its terminal status (as upstream's kubelet: phase Failed unless every
//! container exited 0, the containers' exit codes), removal of its sandboxes, volumes and
//! logs, and of the pod object.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};

use super::sandbox::LABEL_CONTAINER_NAME;
use super::status::ContainerView;
use super::worker::{Step, Worker};
use super::{hooks, volumes};
use crate::events::{Kind, container_path};
use crate::runtime::cri;

impl Worker {
    pub(super) async fn stop_sandboxes(&self) {
        let mut rt = self.shared.cri.runtime.clone();
        let Ok(list) = self.shared.cri.pod_sandboxes(&self.uid).await else {
            return;
        };
        for s in list {
            if s.state == cri::PodSandboxState::SandboxReady as i32 {
                let _ = rt
                    .stop_pod_sandbox(cri::StopPodSandboxRequest {
                        pod_sandbox_id: s.id,
                    })
                    .await;
            }
        }
    }

    pub(super) async fn terminate_and_delete(&mut self, pod: &Pod) -> Step {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or(pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0);
        self.stop_containers(Duration::from_secs(grace as u64), Some(pod))
            .await;
        self.write_terminal_status(pod).await;
        self.remove_sandboxes_and_volumes().await;
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => Step::Done,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Step::Done,
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), "deleting the pod object: {e}");
                Step::Continue
            }
        }
    }

    /// Stops every container (preStop hooks, then the stop signal, SIGKILL after `grace`),
    /// removes the sandboxes, volumes and logs of the pod.
    pub(super) async fn remove_everything(&mut self, grace: Duration, pod: Option<&Pod>) {
        self.stop_containers(grace, pod).await;
        self.remove_sandboxes_and_volumes().await;
    }

    /// A deleted pod's last status, once its containers stopped (skipped when it had already
    /// finished): the containers as the runtime last saw them, phase Succeeded or Failed.
    async fn write_terminal_status(&mut self, pod: &Pod) {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return;
        }
        let by_name = self.containers_by_name().await.unwrap_or_default();
        let views = |list: &[Container]| -> Vec<ContainerView> {
            list.iter()
                .map(|c| ContainerView::of(c, &by_name))
                .collect()
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let init = views(spec.init_containers.as_deref().unwrap_or_default());
        let app = views(&spec.containers);
        let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        self.waiting.clear();
        self.write_status_of(pod, pod_ip, false, &init, &app, true)
            .await;
    }

    /// Stops every container of the pod: preStop hooks, then the stop signal, SIGKILL after
    /// `grace`.
    async fn stop_containers(&mut self, grace: Duration, pod: Option<&Pod>) {
        self.probes.clear();
        let containers = self
            .shared
            .cri
            .pod_containers(&self.uid)
            .await
            .unwrap_or_default();
        let mut stops = tokio::task::JoinSet::new();
        for c in containers
            .into_iter()
            .filter(|c| c.state == cri::ContainerState::ContainerRunning as i32)
        {
            let name = c
                .labels
                .get(LABEL_CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            let shared = self.shared.clone();
            let pod = pod.cloned();
            stops.spawn(async move {
                let started = tokio::time::Instant::now();
                if let Some(pod) = &pod {
                    let spec_c = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.iter().find(|x| x.name == name))
                        .cloned();
                    shared.events.pod(
                        pod,
                        container_path(&name, false),
                        Kind::Normal,
                        "Killing",
                        format!("Stopping container {name}"),
                    );
                    if let Some(spec_c) = spec_c {
                        let ip = pod
                            .status
                            .as_ref()
                            .and_then(|s| s.pod_ip.clone())
                            .unwrap_or_default();
                        hooks::pre_stop(&shared, pod, &spec_c, &c.id, &ip, grace).await;
                    }
                }
                let left = grace.saturating_sub(started.elapsed());
                let _ = shared
                    .cri
                    .runtime
                    .clone()
                    .stop_container(cri::StopContainerRequest {
                        container_id: c.id.clone(),
                        timeout: left.as_secs_f64().ceil() as i64,
                    })
                    .await;
            });
        }
        while stops.join_next().await.is_some() {}
    }

    /// Removes the pod's sandboxes (and with them its containers), volumes and logs.
    async fn remove_sandboxes_and_volumes(&mut self) {
        let mut rt = self.shared.cri.runtime.clone();
        if let Ok(list) = self.shared.cri.pod_sandboxes(&self.uid).await {
            for s in list {
                let _ = rt
                    .stop_pod_sandbox(cri::StopPodSandboxRequest {
                        pod_sandbox_id: s.id.clone(),
                    })
                    .await;
                let _ = rt
                    .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                        pod_sandbox_id: s.id,
                    })
                    .await;
            }
        }
        volumes::teardown(&self.shared.pods_dir, &self.uid);
        super::remove_logs_of(&self.shared.logs_dir, &self.uid);
    }
}
