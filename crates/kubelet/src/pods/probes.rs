//! Startup, liveness and readiness probes (exec, httpGet, tcpSocket, grpc) with their timing
//! fields. One task per running container runs its probes and publishes the results in a
//! [`ProbeState`] the pod worker reads; a change wakes the worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::events::{Kind, Recorder, container_path};
use crate::runtime::{Cri, cri};

/// What a container's probes say now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeState {
    /// The startup probe succeeded (true at once without one).
    pub started: bool,
    /// The readiness probe's verdict (true once started without one).
    pub ready: bool,
    /// The liveness or startup probe failed for good: the container must be restarted.
    pub failed: Option<String>,
}

/// The probe task of one container: dropped (aborted) with the handle.
pub struct ProbeHandle {
    /// The container these probes watch.
    pub container_id: String,
    /// Latest results.
    pub state: Arc<Mutex<ProbeState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProbeHandle {
    /// Results now.
    pub fn get(&self) -> ProbeState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Everything a probe task needs.
pub struct ProbeTarget {
    /// The runtime (exec probes).
    pub cri: Cri,
    /// The container's ID.
    pub container_id: String,
    /// The pod's address (httpGet, tcpSocket, grpc without host).
    pub pod_ip: String,
    /// The pod (events, named ports).
    pub pod: Pod,
    /// The container spec.
    pub container: Container,
    /// Events.
    pub events: Recorder,
    /// Woken when a result changes.
    pub wake: Arc<Notify>,
}

/// Starts the probes of a running container (just started, or adopted by a restarted agent).
pub fn start(t: ProbeTarget) -> ProbeHandle {
    let (ready, started) = initial(&t.pod, &t.container, &t.container_id);
    let initial = ProbeState {
        started,
        ready,
        failed: None,
    };
    let state = Arc::new(Mutex::new(initial));
    let container_id = t.container_id.clone();
    let task = tokio::spawn(run(t, state.clone()));
    ProbeHandle {
        container_id,
        state,
        task,
    }
}

/// (ready, started) of a container before its probes' first verdicts: without a readiness
/// (startup) probe it is ready (started) at once; with one, it is not, unless the pod's status
/// already says so for this very container, which a restarted agent keeps rather than
/// taking every running pod out of its Services until the probes run again.
pub fn initial(pod: &Pod, c: &Container, container_id: &str) -> (bool, bool) {
    let before = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find(|s| {
            s.name == c.name
                && s.container_id
                    .as_deref()
                    .is_some_and(|id| id.rsplit("://").next() == Some(container_id))
        });
    let was_ready = before.is_some_and(|s| s.ready);
    let was_started = before.is_some_and(|s| s.started == Some(true));
    let started = c.startup_probe.is_none() || was_started;
    (
        (started && c.readiness_probe.is_none()) || was_ready,
        started,
    )
}

fn update(state: &Mutex<ProbeState>, wake: &Notify, f: impl FnOnce(&mut ProbeState)) {
    if let Ok(mut s) = state.lock() {
        let before = s.clone();
        f(&mut s);
        if *s != before {
            wake.notify_one();
        }
    }
}

async fn run(t: ProbeTarget, state: Arc<Mutex<ProbeState>>) {
    let t = Arc::new(t);
    let started = state.lock().map(|s| s.started).unwrap_or(false);
    if let Some(p) = t.container.startup_probe.clone().filter(|_| !started) {
        match run_until_verdict(&t, &p, "Startup").await {
            true => update(&state, &t.wake, |s| {
                s.started = true;
                if t.container.readiness_probe.is_none() {
                    s.ready = true;
                }
            }),
            false => {
                update(&state, &t.wake, |s| {
                    s.failed = Some("failed startup probe, will be restarted".into())
                });
                return;
            }
        }
    }
    let liveness = t.container.liveness_probe.clone().map(|p| {
        let t = t.clone();
        let state = state.clone();
        tokio::spawn(async move {
            if !run_until_verdict_failure_only(&t, &p).await {
                update(&state, &t.wake, |s| {
                    s.failed = Some("failed liveness probe, will be restarted".into())
                });
            }
        })
    });
    if let Some(p) = t.container.readiness_probe.clone() {
        readiness_loop(&t, &p, &state).await;
    }
    if let Some(l) = liveness {
        let _ = l.await;
    }
}

fn timing(p: &Probe) -> (Duration, Duration, Duration, i32, i32) {
    (
        Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64),
        Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64),
        Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64),
        p.success_threshold.unwrap_or(1).max(1),
        p.failure_threshold.unwrap_or(3).max(1),
    )
}

/// Probes until it succeeds (true) or fails failureThreshold times in a row (false).
async fn run_until_verdict(t: &ProbeTarget, p: &Probe, what: &str) -> bool {
    let (delay, period, timeout, _, failures) = timing(p);
    tokio::time::sleep(delay).await;
    let mut failed = 0;
    loop {
        match probe_once(t, p, timeout).await {
            Ok(()) => return true,
            Err(why) => {
                failed += 1;
                unhealthy(t, what, &why);
                if failed >= failures {
                    return false;
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// Liveness: probes forever; returns false after failureThreshold consecutive failures.
async fn run_until_verdict_failure_only(t: &ProbeTarget, p: &Probe) -> bool {
    let (delay, period, timeout, _, failures) = timing(p);
    tokio::time::sleep(delay).await;
    let mut failed = 0;
    loop {
        match probe_once(t, p, timeout).await {
            Ok(()) => failed = 0,
            Err(why) => {
                failed += 1;
                unhealthy(t, "Liveness", &why);
                if failed >= failures {
                    return false;
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

async fn readiness_loop(t: &ProbeTarget, p: &Probe, state: &Mutex<ProbeState>) {
    let (delay, period, timeout, successes, failures) = timing(p);
    tokio::time::sleep(delay).await;
    let (mut ok_run, mut fail_run) = (0, 0);
    loop {
        let started = state.lock().map(|s| s.started).unwrap_or(false);
        if started {
            match probe_once(t, p, timeout).await {
                Ok(()) => {
                    ok_run += 1;
                    fail_run = 0;
                    if ok_run >= successes {
                        update(state, &t.wake, |s| s.ready = true);
                    }
                }
                Err(why) => {
                    fail_run += 1;
                    ok_run = 0;
                    unhealthy(t, "Readiness", &why);
                    if fail_run >= failures {
                        update(state, &t.wake, |s| s.ready = false);
                    }
                }
            }
        }
        tokio::time::sleep(period).await;
    }
}

fn unhealthy(t: &ProbeTarget, what: &str, why: &str) {
    t.events.pod(
        &t.pod,
        container_path(&t.container.name, false),
        Kind::Warning,
        "Unhealthy",
        format!("{what} probe failed: {why}"),
    );
}

fn port_of(port: &IntOrString, c: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(i) => u16::try_from(*i).map_err(|_| format!("invalid port {i}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("port {name} not found")),
    }
}

/// Runs one probe; `Err` carries the failure message kubectl shows.
pub async fn probe_once(t: &ProbeTarget, p: &Probe, timeout: Duration) -> Result<(), String> {
    if let Some(e) = &p.exec {
        let resp = t
            .cri
            .runtime
            .clone()
            .exec_sync(cri::ExecSyncRequest {
                container_id: t.container_id.clone(),
                cmd: e.command.clone().unwrap_or_default(),
                timeout: timeout.as_secs() as i64,
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        if resp.exit_code == 0 {
            return Ok(());
        }
        let out = String::from_utf8_lossy(&resp.stdout).trim().to_string();
        return Err(if out.is_empty() {
            format!("command exited with {}", resp.exit_code)
        } else {
            out
        });
    }
    if let Some(h) = &p.http_get {
        let port = port_of(&h.port, &t.container)?;
        let host = h
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or(t.pod_ip.clone());
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let mut headers = String::new();
        for hd in h.http_headers.iter().flatten() {
            headers.push_str(&format!("{}: {}\r\n", hd.name, hd.value));
        }
        let fut = async {
            let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
            let line = String::from_utf8_lossy(&buf[..n]);
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| "malformed HTTP response".to_string())?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        };
        return match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "Get \"http://{host}:{port}{path}\": context deadline exceeded"
            )),
        };
    }
    if let Some(s) = &p.tcp_socket {
        let port = port_of(&s.port, &t.container)?;
        let host = s
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or(t.pod_ip.clone());
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    if let Some(g) = &p.grpc {
        return grpc_check(
            &t.pod_ip,
            g.port,
            g.service.clone().unwrap_or_default(),
            timeout,
        )
        .await;
    }
    Err("probe has no handler".into())
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// grpc.health.v1.Health/Check; SERVING (1) is success.
async fn grpc_check(ip: &str, port: i32, service: String, timeout: Duration) -> Result<(), String> {
    let addr = format!("http://{ip}:{port}");
    let fut = async {
        let channel = tonic::transport::Endpoint::from_shared(addr.clone())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| {
                format!(
                    "failed to connect service \"{ip}:{port}\" within {}s: {e}",
                    timeout.as_secs()
                )
            })?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| e.to_string())?;
        let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let resp: tonic::Response<HealthCheckResponse> = grpc
            .unary(
                tonic::Request::new(HealthCheckRequest { service }),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map_err(|s| format!("rpc error: code = {:?} desc = {}", s.code(), s.message()))?;
        match resp.into_inner().status {
            1 => Ok(()),
            s => Err(format!(
                "service unhealthy (responded with \"{}\")",
                match s {
                    2 => "NOT_SERVING",
                    3 => "SERVICE_UNKNOWN",
                    _ => "UNKNOWN",
                }
            )),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, ExecAction, PodStatus};

    fn container(readiness: bool, startup: bool) -> Container {
        let probe = || Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..Default::default()
        };
        Container {
            name: "c".into(),
            readiness_probe: readiness.then(probe),
            startup_probe: startup.then(probe),
            ..Default::default()
        }
    }

    fn pod_with(id: &str, ready: bool) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "c".into(),
                    container_id: Some(format!("containerd://{id}")),
                    ready,
                    started: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_probe_means_not_ready_until_its_verdict() {
        let fresh = Pod::default();
        assert_eq!(initial(&fresh, &container(false, false), "a"), (true, true));
        assert_eq!(initial(&fresh, &container(true, false), "a"), (false, true));
        assert_eq!(
            initial(&fresh, &container(false, true), "a"),
            (false, false)
        );
        assert_eq!(initial(&fresh, &container(true, true), "a"), (false, false));
    }

    #[test]
    fn an_adopted_container_keeps_its_reported_readiness() {
        let c = container(true, true);
        assert_eq!(initial(&pod_with("a", true), &c, "a"), (true, true));
        assert_eq!(initial(&pod_with("a", false), &c, "a"), (false, true));
        // The status is about an earlier container of that name: no verdict carries over.
        assert_eq!(initial(&pod_with("old", true), &c, "a"), (false, false));
    }
}
