//! Starting a container of a pod: image, env, mounts, config, CreateContainer, StartContainer,
//! postStart; failures become the container's waiting reason and an event.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::container::{EnvContext, check_non_root, container_config, resolve_env};
use super::worker::Worker;
use super::{hooks, volumes};
use crate::events::{Kind, container_path};
use crate::runtime::cri;

/// What starting a container needs from the sync that asks for it.
pub(super) struct StartCtx<'a> {
    pub(super) sandbox_id: &'a str,
    pub(super) sandbox_cfg: &'a cri::PodSandboxConfig,
    pub(super) volumes: &'a HashMap<String, std::path::PathBuf>,
    pub(super) env: &'a EnvContext<'a>,
}

impl Worker {
    /// Pulls if needed, creates and starts container `c`; failures become the container's
    /// waiting reason and an event.
    pub(super) async fn start(
        &mut self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        init: bool,
        ctx: &StartCtx<'_>,
    ) {
        let path = container_path(&c.name, init);
        let events = self.shared.events.clone();
        let image_uid = match super::images::ensure(&self.shared, pod, c, path.clone()).await {
            Ok(uid) => uid,
            Err((reason, message)) => {
                self.waiting.insert(c.name.clone(), (reason, message));
                return;
            }
        };
        let env = match resolve_env(pod, c, ctx.env).await {
            Ok(e) => e,
            Err(e) => return self.config_error(pod, c, path, e.0),
        };
        if let Err(e) = check_non_root(pod, c, image_uid) {
            return self.config_error(pod, c, path, e.0);
        }
        let mut mounts = match volumes::container_mounts(c, ctx.volumes, pod) {
            Ok(m) => m,
            Err(e) => return self.config_error(pod, c, path, e.0),
        };
        if let Some(m) = self.termination_log(c, attempt) {
            mounts.push(m);
        }
        let config = container_config(pod, c, attempt, env, mounts);
        let mut rt = self.shared.cri.runtime.clone();
        let created = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: ctx.sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(ctx.sandbox_cfg.clone()),
            })
            .await;
        let id = match created {
            Ok(r) => r.into_inner().container_id,
            Err(s) => {
                let message = s.message().to_string();
                events.pod(
                    pod,
                    path,
                    Kind::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                self.waiting
                    .insert(c.name.clone(), ("CreateContainerError".into(), message));
                return;
            }
        };
        events.pod(
            pod,
            path.clone(),
            Kind::Normal,
            "Created",
            format!("Created container {}", c.name),
        );
        self.start_id(pod, c, &id, init).await;
    }

    pub(super) async fn start_created(
        &mut self,
        pod: &Pod,
        c: &Container,
        s: &cri::ContainerStatus,
        init: bool,
    ) {
        self.start_id(pod, c, &s.id, init).await;
    }

    pub(super) async fn start_id(&mut self, pod: &Pod, c: &Container, id: &str, init: bool) {
        let path = container_path(&c.name, init);
        let started = self
            .shared
            .cri
            .runtime
            .clone()
            .start_container(cri::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await;
        match started {
            Ok(_) => {
                self.waiting.remove(&c.name);
                self.shared.events.pod(
                    pod,
                    path,
                    Kind::Normal,
                    "Started",
                    format!("Started container {}", c.name),
                );
                if let Err(why) = hooks::post_start(&self.shared, pod, c, id).await {
                    self.shared.events.pod(
                        pod,
                        container_path(&c.name, init),
                        Kind::Warning,
                        "FailedPostStartHook",
                        why,
                    );
                    let _ = self
                        .shared
                        .cri
                        .runtime
                        .clone()
                        .stop_container(cri::StopContainerRequest {
                            container_id: id.to_string(),
                            timeout: 0,
                        })
                        .await;
                }
            }
            Err(s) => {
                let message = s.message().to_string();
                self.shared.events.pod(
                    pod,
                    path,
                    Kind::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                self.waiting
                    .insert(c.name.clone(), ("RunContainerError".into(), message));
                // A container that cannot start is removed so that the next sync recreates it.
                let _ = self
                    .shared
                    .cri
                    .runtime
                    .clone()
                    .remove_container(cri::RemoveContainerRequest {
                        container_id: id.to_string(),
                    })
                    .await;
            }
        }
    }

    /// The file behind the container's terminationMessagePath.
    pub(super) fn termination_log(&self, c: &Container, attempt: u32) -> Option<cri::Mount> {
        let target = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        let dir = volumes::pod_dir(&self.shared.pods_dir, &self.uid)
            .join("containers")
            .join(&c.name);
        std::fs::create_dir_all(&dir).ok()?;
        let file = dir.join(attempt.to_string());
        std::fs::write(&file, b"").ok()?;
        Some(cri::Mount {
            container_path: target,
            host_path: file.to_string_lossy().into_owned(),
            ..Default::default()
        })
    }

    /// A container whose config cannot be built waits with CreateContainerConfigError, and a
    /// Failed event says why.
    fn config_error(&mut self, pod: &Pod, c: &Container, path: Option<String>, message: String) {
        self.shared.events.pod(
            pod,
            path,
            Kind::Warning,
            "Failed",
            format!("Error: {message}"),
        );
        self.waiting.insert(
            c.name.clone(),
            ("CreateContainerConfigError".into(), message),
        );
    }
}
