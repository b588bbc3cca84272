//! One pod's worker: brings the runtime in line with the pod spec, again and again (on every
//! change of the pod, probe verdict, or once a second), and writes the pod's status.
//!
//! A sync: volumes, then the sandbox, then init containers in order, then the containers, each
//! restarted per restartPolicy with exponential back-off (10 s doubling to 5 min, reset after
//! 10 minutes of running); probes per running container. A pod being deleted is terminated
//! gracefully (preStop, SIGTERM, grace period, SIGKILL), gets its terminal status (Failed
//! unless every container exited 0) and is then removed from the API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::{Notify, watch};

use super::container::EnvContext;
use super::probes::{self, ProbeHandle, ProbeTarget};
use super::sandbox::{LABEL_CONTAINER_NAME, sandbox_config};
use super::start::StartCtx;
use super::status::{ContainerView, PodFacts, is, pod_status};
use super::{Shared, hooks, volumes};
use crate::events::{Kind, container_path};
use crate::runtime::cri;

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);

pub(super) struct Backoff {
    pub(super) delay: Duration,
}

/// The worker of one pod (by UID).
pub struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) uid: String,
    pub(super) pod: watch::Receiver<Option<Pod>>,
    pub(super) wake: Arc<Notify>,
    pub(super) probes: HashMap<String, ProbeHandle>,
    pub(super) backoff: HashMap<String, Backoff>,
    pub(super) waiting: HashMap<String, (String, String)>,
    pub(super) first_seen: Time,
    pub(super) last_status: Option<serde_json::Value>,
    pub(super) last_mount_error: Option<String>,
    /// When a back-off ends (the worker wakes then).
    pub(super) next_wake: Option<tokio::time::Instant>,
}

pub(super) enum Step {
    /// Keep going (wait for the next wake-up).
    Continue,
    /// The pod is gone and cleaned up: the worker ends.
    Done,
}

impl Worker {
    /// A worker fed the pod's latest version through `pod` (`None` once the API has no pod).
    pub fn new(shared: Arc<Shared>, uid: String, pod: watch::Receiver<Option<Pod>>) -> Self {
        Self {
            shared,
            uid,
            pod,
            wake: Arc::new(Notify::new()),
            probes: HashMap::new(),
            backoff: HashMap::new(),
            waiting: HashMap::new(),
            first_seen: Time(
                jiff::Timestamp::now()
                    .round(jiff::Unit::Second)
                    .unwrap_or(jiff::Timestamp::now()),
            ),
            last_status: None,
            last_mount_error: None,
            next_wake: None,
        }
    }

    /// Runs until the pod is gone and its runtime objects are removed.
    pub async fn run(mut self) {
        loop {
            let pod = self.pod.borrow_and_update().clone();
            // The sync futures are large (tens of KB of state): boxed, they take memory only
            // while a sync runs, not for as long as the pod's task waits (most of its life).
            let step = match pod {
                Some(p) => Box::pin(self.sync(&p)).await,
                None => {
                    Box::pin(self.remove_everything(Duration::from_secs(2), None)).await;
                    Step::Done
                }
            };
            if let Step::Done = step {
                return;
            }
            let wake = self.wake.clone();
            // State changes arrive through `pod` (the manager's relist) and `wake` (probes);
            // the timer refreshes volumes and ends back-offs.
            let idle = tokio::time::Instant::now() + Duration::from_secs(10);
            let until = self.next_wake.take().map_or(idle, |t| t.min(idle));
            tokio::select! {
                r = self.pod.changed() => if r.is_err() {
                    // The manager dropped us (shutdown): leave the containers running.
                    return;
                },
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn sync(&mut self, pod: &Pod) -> Step {
        if pod.metadata.deletion_timestamp.is_some() {
            return self.terminate_and_delete(pod).await;
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            self.probes.clear();
            self.stop_sandboxes().await;
            return Step::Continue;
        }
        if let Err(e) = self.sync_running(pod).await {
            tracing::warn!(pod = %pod.name_any(), "sync: {e:#}");
        }
        Step::Continue
    }

    async fn sync_running(&mut self, pod: &Pod) -> anyhow::Result<()> {
        let shared = self.shared.clone();
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        // Volumes first: a pod whose volumes cannot be set up does not start.
        let env_ctx = EnvContext {
            client: &shared.client,
            host_ip: &shared.node_ip,
            pod_ip: "",
            node_allocatable: shared.allocatable,
        };
        let volumes = match volumes::prepare(&shared.pods_dir, pod, &env_ctx).await {
            Ok(v) => {
                self.last_mount_error = None;
                v
            }
            Err(e) => {
                // Volumes often wait for another controller (a claim being bound): look again soon.
                self.next_wake = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                if self.last_mount_error.as_deref() != Some(&e.0) {
                    shared
                        .events
                        .pod(pod, None, Kind::Warning, "FailedMount", e.0.clone());
                    self.last_mount_error = Some(e.0);
                }
                self.write_status(pod, None, false, &[], &[]).await;
                return Ok(());
            }
        };
        // The sandbox.
        let (sandbox_id, sandbox_cfg, pod_ip) = match self.ensure_sandbox(pod).await {
            Ok(s) => s,
            Err(e) => {
                shared.events.pod(
                    pod,
                    None,
                    Kind::Warning,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
                self.write_status(pod, None, false, &[], &[]).await;
                return Ok(());
            }
        };
        let env_ctx = EnvContext {
            pod_ip: &pod_ip,
            ..env_ctx
        };
        let by_name = self.containers_by_name().await?;
        let ctx = StartCtx {
            sandbox_id: &sandbox_id,
            sandbox_cfg: &sandbox_cfg,
            volumes: &volumes,
            env: &env_ctx,
        };
        // Init containers, in order; each must succeed before the next.
        let mut init_done = true;
        for c in spec.init_containers.iter().flatten() {
            let latest = by_name.get(&c.name).and_then(|v| v.first());
            match latest {
                None => {
                    self.start(pod, c, 0, true, &ctx).await;
                    init_done = false;
                }
                Some(s) if is(s, cri::ContainerState::ContainerExited) && s.exit_code == 0 => {
                    continue;
                }
                Some(s) if is(s, cri::ContainerState::ContainerExited) => {
                    if policy != "Never" && self.may_restart(pod, c, s) {
                        let attempt = attempt_of(s) + 1;
                        self.start(pod, c, attempt, true, &ctx).await;
                    }
                    init_done = false;
                }
                Some(s) if is(s, cri::ContainerState::ContainerCreated) => {
                    self.start_created(pod, c, s, true).await;
                    init_done = false;
                }
                Some(_) => init_done = false,
            }
            break;
        }
        if init_done {
            for c in &spec.containers {
                let latest = by_name.get(&c.name).and_then(|v| v.first()).cloned();
                match latest {
                    None => self.start(pod, c, 0, false, &ctx).await,
                    Some(s) if is(&s, cri::ContainerState::ContainerRunning) => {
                        self.check_probes(pod, c, &s, &pod_ip).await;
                    }
                    Some(s) if is(&s, cri::ContainerState::ContainerExited) => {
                        self.probes.remove(&c.name);
                        let restart = match policy.as_str() {
                            "Always" => true,
                            "OnFailure" => s.exit_code != 0,
                            _ => false,
                        };
                        if restart && self.may_restart(pod, c, &s) {
                            self.start(pod, c, attempt_of(&s) + 1, false, &ctx).await;
                        }
                    }
                    Some(s) if is(&s, cri::ContainerState::ContainerCreated) => {
                        self.start_created(pod, c, &s, false).await;
                    }
                    Some(_) => {}
                }
            }
        }
        let by_name = self.containers_by_name().await?;
        // Containers started in this pass get their probes now, not on the next pass.
        if init_done {
            for c in &spec.containers {
                if let Some(s) = by_name.get(&c.name).and_then(|v| v.first())
                    && is(s, cri::ContainerState::ContainerRunning)
                    && self
                        .probes
                        .get(&c.name)
                        .is_none_or(|p| p.container_id != s.id)
                {
                    self.check_probes(pod, c, s, &pod_ip).await;
                }
            }
        }
        let views = |list: &[Container]| -> Vec<ContainerView> {
            list.iter()
                .map(|c| {
                    let view = ContainerView::of(c, &by_name);
                    let current = &view.current;
                    // Only this container's own verdicts count; before the first, see
                    // probes::initial (a probe means "not yet", never "ready").
                    let probes = self
                        .probes
                        .get(&c.name)
                        .filter(|p| current.as_ref().is_some_and(|s| s.id == p.container_id))
                        .map(|p| p.get());
                    let running = current
                        .as_ref()
                        .is_some_and(|s| is(s, cri::ContainerState::ContainerRunning));
                    let (ready, started) = match (&probes, current) {
                        (Some(p), _) => (p.ready, p.started),
                        (None, Some(s)) => probes::initial(pod, c, &s.id),
                        (None, None) => (false, false),
                    };
                    ContainerView {
                        ready: running && ready,
                        started: running && started,
                        waiting: self.waiting.get(&c.name).cloned().filter(|_| !running),
                        ..view
                    }
                })
                .collect()
        };
        let init_views = views(spec.init_containers.as_deref().unwrap_or_default());
        let app_views = views(&spec.containers);
        let phase = self
            .write_status(pod, Some(pod_ip.clone()), true, &init_views, &app_views)
            .await;
        if phase == "Succeeded" || phase == "Failed" {
            self.probes.clear();
            self.stop_sandboxes().await;
        }
        Ok(())
    }

    /// Whether an exited container may start again now (back-off); records CrashLoopBackOff
    /// when it may not.
    fn may_restart(&mut self, pod: &Pod, c: &Container, s: &cri::ContainerStatus) -> bool {
        let finished = system_time(s.finished_at);
        let ran = Duration::from_nanos((s.finished_at - s.started_at).max(0) as u64);
        if ran >= BACKOFF_RESET {
            self.backoff.remove(&c.name);
        }
        let now = SystemTime::now();
        match self.backoff.get_mut(&c.name) {
            None => {
                self.backoff.insert(
                    c.name.clone(),
                    Backoff {
                        delay: BACKOFF_START,
                    },
                );
                true
            }
            Some(b) => {
                if now < finished + b.delay {
                    let left = (finished + b.delay).duration_since(now).unwrap_or_default();
                    let at = tokio::time::Instant::now() + left;
                    self.next_wake = Some(self.next_wake.map_or(at, |t| t.min(at)));
                    let message = format!(
                        "back-off {}s restarting failed container={} pod={}_{}({})",
                        b.delay.as_secs(),
                        c.name,
                        pod.name_any(),
                        pod.namespace().unwrap_or_default(),
                        self.uid
                    );
                    if self.waiting.get(&c.name).map(|w| w.0.as_str()) != Some("CrashLoopBackOff") {
                        self.shared.events.pod(
                            pod,
                            container_path(&c.name, false),
                            Kind::Warning,
                            "BackOff",
                            format!(
                                "Back-off restarting failed container {} in pod {}_{}({})",
                                c.name,
                                pod.name_any(),
                                pod.namespace().unwrap_or_default(),
                                self.uid
                            ),
                        );
                    }
                    self.waiting
                        .insert(c.name.clone(), ("CrashLoopBackOff".into(), message));
                    false
                } else {
                    b.delay = (b.delay * 2).min(BACKOFF_MAX);
                    true
                }
            }
        }
    }

    async fn check_probes(
        &mut self,
        pod: &Pod,
        c: &Container,
        s: &cri::ContainerStatus,
        pod_ip: &str,
    ) {
        let has_probes =
            c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some();
        if !has_probes {
            return;
        }
        let stale = self
            .probes
            .get(&c.name)
            .is_none_or(|p| p.container_id != s.id);
        if stale {
            self.probes.insert(
                c.name.clone(),
                probes::start(ProbeTarget {
                    cri: self.shared.cri.clone(),
                    container_id: s.id.clone(),
                    pod_ip: pod_ip.to_string(),
                    pod: pod.clone(),
                    container: c.clone(),
                    events: self.shared.events.clone(),
                    wake: self.wake.clone(),
                }),
            );
            return;
        }
        let failed = self.probes.get(&c.name).and_then(|p| p.get().failed);
        if let Some(why) = failed {
            self.probes.remove(&c.name);
            self.shared.events.pod(
                pod,
                container_path(&c.name, false),
                Kind::Normal,
                "Killing",
                format!("Container {} {why}", c.name),
            );
            let grace = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30);
            hooks::pre_stop(
                &self.shared,
                pod,
                c,
                &s.id,
                pod_ip,
                Duration::from_secs(grace as u64),
            )
            .await;
            let _ = self
                .shared
                .cri
                .runtime
                .clone()
                .stop_container(cri::StopContainerRequest {
                    container_id: s.id.clone(),
                    timeout: grace,
                })
                .await;
        }
    }

    async fn ensure_sandbox(
        &mut self,
        pod: &Pod,
    ) -> anyhow::Result<(String, cri::PodSandboxConfig, String)> {
        let mut rt = self.shared.cri.runtime.clone();
        let mut sandboxes = self.shared.cri.pod_sandboxes(&self.uid).await?;
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        if let Some(s) = sandboxes
            .iter()
            .find(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
        {
            let attempt = s.metadata.as_ref().map_or(0, |m| m.attempt);
            let cfg = sandbox_config(pod, attempt, &self.shared.logs_dir, &self.shared.dns);
            let ip = self.sandbox_ip(&s.id).await;
            return Ok((s.id.clone(), cfg, ip));
        }
        let attempt = sandboxes
            .first()
            .and_then(|s| s.metadata.as_ref())
            .map_or(0, |m| m.attempt + 1);
        for old in &sandboxes {
            let _ = rt
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: old.id.clone(),
                })
                .await;
        }
        let cfg = sandbox_config(pod, attempt, &self.shared.logs_dir, &self.shared.dns);
        std::fs::create_dir_all(&cfg.log_directory)?;
        let id = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner()
            .pod_sandbox_id;
        let ip = self.sandbox_ip(&id).await;
        if ip != self.shared.node_ip
            && let Ok(addr) = ip.parse()
            && let Err(e) = crate::network::forget_neighbour(addr).await
        {
            tracing::warn!(uid = %self.uid, "{e:#}");
        }
        Ok((id, cfg, ip))
    }

    async fn sandbox_ip(&self, id: &str) -> String {
        let status = self
            .shared
            .cri
            .runtime
            .clone()
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().status);
        let ip = status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        if ip.is_empty() {
            // hostNetwork pods have the node's address.
            self.shared.node_ip.clone()
        } else {
            ip
        }
    }

    /// The pod's runtime containers by name, newest attempt first, with full status.
    pub(super) async fn containers_by_name(
        &self,
    ) -> anyhow::Result<HashMap<String, Vec<cri::ContainerStatus>>> {
        let mut rt = self.shared.cri.runtime.clone();
        let list = self.shared.cri.pod_containers(&self.uid).await?;
        let mut by_name: HashMap<String, Vec<cri::Container>> = HashMap::new();
        for c in list {
            let name = c
                .labels
                .get(LABEL_CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            by_name.entry(name).or_default().push(c);
        }
        let mut out = HashMap::new();
        for (name, mut list) in by_name {
            list.sort_by_key(|c| {
                std::cmp::Reverse((c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at))
            });
            let mut statuses = Vec::new();
            for c in list.into_iter().take(2) {
                if let Ok(r) = rt
                    .container_status(cri::ContainerStatusRequest {
                        container_id: c.id.clone(),
                        verbose: false,
                    })
                    .await
                    && let Some(s) = r.into_inner().status
                {
                    statuses.push(s);
                }
            }
            out.insert(name, statuses);
        }
        Ok(out)
    }

    /// Writes the status when it changed; returns the phase.
    async fn write_status(
        &mut self,
        pod: &Pod,
        pod_ip: Option<String>,
        sandbox_ready: bool,
        init: &[ContainerView],
        app: &[ContainerView],
    ) -> String {
        self.write_status_of(pod, pod_ip, sandbox_ready, init, app, false)
            .await
    }

    /// [`Worker::write_status`], for a deleted pod whose containers stopped when `deleted`.
    pub(super) async fn write_status_of(
        &mut self,
        pod: &Pod,
        pod_ip: Option<String>,
        sandbox_ready: bool,
        init: &[ContainerView],
        app: &[ContainerView],
        deleted: bool,
    ) -> String {
        let spec = pod.spec.clone().unwrap_or_default();
        let default_views = |list: &[Container]| -> Vec<ContainerView> {
            list.iter()
                .map(|c| ContainerView {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    waiting: self.waiting.get(&c.name).cloned(),
                    ..Default::default()
                })
                .collect()
        };
        let (init, app) = if app.is_empty() {
            (
                default_views(spec.init_containers.as_deref().unwrap_or_default()),
                default_views(&spec.containers),
            )
        } else {
            (init.to_vec(), app.to_vec())
        };
        let facts = PodFacts {
            pod,
            pod_ip: pod_ip.filter(|ip| !ip.is_empty()),
            host_ip: self.shared.node_ip.clone(),
            start_time: self.first_seen.clone(),
            sandbox_ready,
            deleted,
        };
        let status = pod_status(&facts, &init, &app);
        let phase = status.phase.clone().unwrap_or_default();
        let value = serde_json::json!({"status": status});
        if self.last_status.as_ref() == Some(&value) {
            return phase;
        }
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        match api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&value),
            )
            .await
        {
            Ok(_) => self.last_status = Some(value),
            Err(e) => tracing::debug!(pod = %pod.name_any(), "status update: {e}"),
        }
        phase
    }
}

pub(super) fn attempt_of(s: &cri::ContainerStatus) -> u32 {
    s.metadata.as_ref().map_or(0, |m| m.attempt)
}

fn system_time(ns: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}
