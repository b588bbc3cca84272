//! A pod's status as kubectl expects it, computed from what the runtime reports: phase,
//! conditions, container and init container statuses (state, lastState, restartCount, ready,
//! started, image, imageID, containerID), pod and host IPs, start time.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::runtime::cri;

/// What the agent knows about one container of the pod spec.
#[derive(Debug, Clone, Default)]
pub struct ContainerView {
    /// The container's name in the spec.
    pub name: String,
    /// The image the spec names.
    pub image: String,
    /// The latest runtime container of this name.
    pub current: Option<cri::ContainerStatus>,
    /// The one before it (lastState).
    pub previous: Option<cri::ContainerStatus>,
    /// Why the container is waiting, when the agent holds it back (back-off, pull or config
    /// errors): reason and message.
    pub waiting: Option<(String, String)>,
    /// The readiness verdict.
    pub ready: bool,
    /// The startup verdict.
    pub started: bool,
}

impl ContainerView {
    /// A spec container as the runtime shows it: the newest runtime container of its name
    /// and the one before it (`by_name`: the pod's runtime containers by name, newest
    /// first); no verdicts, not held back.
    pub fn of(c: &Container, by_name: &HashMap<String, Vec<cri::ContainerStatus>>) -> Self {
        let mut all = by_name.get(&c.name).into_iter().flatten().cloned();
        ContainerView {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            current: all.next(),
            previous: all.next(),
            ..Default::default()
        }
    }
}

/// Nanoseconds since the epoch as an API time.
pub fn time_of(ns: i64) -> Option<Time> {
    if ns <= 0 {
        return None;
    }
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .ok()
        .map(|t| Time(t.round(jiff::Unit::Second).unwrap_or(t)))
}

fn terminated(s: &cri::ContainerStatus) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: s.exit_code,
        reason: Some(if s.reason.is_empty() {
            if s.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .to_string()
        } else {
            s.reason.clone()
        }),
        message: Some(s.message.clone()).filter(|m| !m.is_empty()),
        started_at: time_of(s.started_at),
        finished_at: time_of(s.finished_at),
        container_id: Some(format!("containerd://{}", s.id)),
        signal: None,
    }
}

/// Whether the runtime container is in this CRI state.
pub fn is(s: &cri::ContainerStatus, state: cri::ContainerState) -> bool {
    s.state == state as i32
}

/// The API status of one container.
pub fn container_status(v: &ContainerView, waiting_default: &str) -> ContainerStatus {
    let mut state = ContainerState::default();
    let mut last_state = v
        .previous
        .as_ref()
        .filter(|p| is(p, cri::ContainerState::ContainerExited))
        .map(|p| ContainerState {
            terminated: Some(terminated(p)),
            ..Default::default()
        });
    match (&v.waiting, &v.current) {
        (Some((reason, message)), current) => {
            state.waiting = Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: Some(message.clone()).filter(|m| !m.is_empty()),
            });
            if let Some(c) = current
                .as_ref()
                .filter(|c| is(c, cri::ContainerState::ContainerExited))
            {
                last_state = Some(ContainerState {
                    terminated: Some(terminated(c)),
                    ..Default::default()
                });
            }
        }
        (None, Some(c)) if is(c, cri::ContainerState::ContainerRunning) => {
            state.running = Some(ContainerStateRunning {
                started_at: time_of(c.started_at),
            });
        }
        (None, Some(c)) if is(c, cri::ContainerState::ContainerExited) => {
            state.terminated = Some(terminated(c));
        }
        _ => {
            state.waiting = Some(ContainerStateWaiting {
                reason: Some(waiting_default.into()),
                message: None,
            });
        }
    }
    let running = state.running.is_some();
    ContainerStatus {
        name: v.name.clone(),
        image: v.image.clone(),
        image_id: v
            .current
            .as_ref()
            .map(|c| c.image_ref.clone())
            .unwrap_or_default(),
        container_id: v.current.as_ref().map(|c| format!("containerd://{}", c.id)),
        ready: running && v.ready,
        started: Some(running && v.started),
        restart_count: v
            .current
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map_or(0, |m| m.attempt as i32),
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

/// Everything [`pod_status`] needs besides the container views.
pub struct PodFacts<'a> {
    /// The pod as the API has it (conditions' transition times, PodScheduled, qosClass).
    pub pod: &'a Pod,
    /// The sandbox's address, once it has one.
    pub pod_ip: Option<String>,
    /// The node's address.
    pub host_ip: String,
    /// When the agent first saw the pod.
    pub start_time: Time,
    /// Whether the sandbox is ready (PodReadyToStartContainers).
    pub sandbox_ready: bool,
    /// Whether the pod was deleted and its containers stopped: its phase is then terminal
    /// ([`deleted_phase`]).
    pub deleted: bool,
}

fn terminated_ok(v: &ContainerView) -> bool {
    v.waiting.is_none()
        && v.current
            .as_ref()
            .is_some_and(|c| is(c, cri::ContainerState::ContainerExited) && c.exit_code == 0)
}

fn terminated_failed(v: &ContainerView) -> bool {
    v.current
        .as_ref()
        .is_some_and(|c| is(c, cri::ContainerState::ContainerExited) && c.exit_code != 0)
}

/// The phase upstream's kubelet would report.
pub fn phase(restart_policy: &str, init: &[ContainerView], app: &[ContainerView]) -> &'static str {
    let init_done = init.iter().all(terminated_ok);
    if !init_done {
        if restart_policy == "Never" && init.iter().any(terminated_failed) {
            return "Failed";
        }
        return "Pending";
    }
    let mut running = 0;
    let mut waiting = 0;
    let mut stopped = 0;
    let mut succeeded = 0;
    for v in app {
        let cur = v.current.as_ref();
        if v.waiting.is_some() {
            // Waiting after having run counts as running (it restarts), as upstream does.
            if cur.is_some_and(|c| is(c, cri::ContainerState::ContainerExited)) {
                running += 1;
            } else {
                waiting += 1;
            }
        } else if cur.is_some_and(|c| is(c, cri::ContainerState::ContainerRunning)) {
            running += 1;
        } else if cur.is_some_and(|c| is(c, cri::ContainerState::ContainerExited)) {
            stopped += 1;
            if cur.is_some_and(|c| c.exit_code == 0) {
                succeeded += 1;
            }
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match restart_policy {
            "Always" => "Running",
            "OnFailure" if succeeded < stopped => "Running",
            _ if succeeded == stopped => "Succeeded",
            _ => "Failed",
        };
    }
    "Pending"
}

/// The phase of a deleted pod whose containers were stopped, as upstream's kubelet gives it
/// (`getPhase` of a terminal pod, then the status manager's `TerminatePod`, which turns
/// Pending or Running into Failed): Succeeded when every init and app container exited 0,
/// otherwise Failed — whatever the restart policy, as nothing restarts any more.
pub fn deleted_phase(init: &[ContainerView], app: &[ContainerView]) -> &'static str {
    let exited_ok = |v: &ContainerView| {
        v.current
            .as_ref()
            .is_some_and(|c| is(c, cri::ContainerState::ContainerExited) && c.exit_code == 0)
    };
    if !app.is_empty() && init.iter().chain(app).all(exited_ok) {
        "Succeeded"
    } else {
        "Failed"
    }
}

/// The full status.
pub fn pod_status(
    facts: &PodFacts<'_>,
    init: &[ContainerView],
    app: &[ContainerView],
) -> PodStatus {
    let pod = facts.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let restart_policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let phase = if facts.deleted {
        deleted_phase(init, app)
    } else {
        phase(&restart_policy, init, app)
    };
    let init_done = init.iter().all(terminated_ok);
    let old = pod.status.clone().unwrap_or_default();
    let old_conds = old.conditions.clone().unwrap_or_default();
    let now = Time(
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or(jiff::Timestamp::now()),
    );
    let cond = |type_: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let last = old_conds
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        PodCondition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.map(String::from),
            message,
            last_transition_time: Some(last),
            last_probe_time: None,
            ..Default::default()
        }
    };
    let unready: Vec<&str> = app
        .iter()
        .filter(|v| {
            !(v.ready
                && v.current
                    .as_ref()
                    .is_some_and(|c| is(c, cri::ContainerState::ContainerRunning))
                && v.waiting.is_none())
        })
        .map(|v| v.name.as_str())
        .collect();
    let incomplete: Vec<&str> = init
        .iter()
        .filter(|v| !terminated_ok(v))
        .map(|v| v.name.as_str())
        .collect();
    let terminal = phase == "Succeeded" || phase == "Failed";
    let containers_ready = if terminal {
        cond("ContainersReady", false, Some("PodCompleted"), None)
    } else if unready.is_empty() {
        cond("ContainersReady", true, None, None)
    } else {
        cond(
            "ContainersReady",
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let mut ready = containers_ready.clone();
    ready.type_ = "Ready".into();
    ready.last_transition_time = old_conds
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == ready.status)
        .and_then(|c| c.last_transition_time.clone())
        .or(Some(now.clone()));
    let initialized = if incomplete.is_empty() {
        cond(
            "Initialized",
            true,
            if terminal && !init.is_empty() {
                Some("PodCompleted")
            } else {
                None
            },
            None,
        )
    } else {
        cond(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
        )
    };
    let mut conditions = vec![
        cond(
            "PodReadyToStartContainers",
            facts.sandbox_ready && !terminal,
            None,
            None,
        ),
        initialized,
        ready,
        containers_ready,
    ];
    if let Some(s) = old_conds.iter().find(|c| c.type_ == "PodScheduled") {
        conditions.push(s.clone());
    } else {
        conditions.push(cond("PodScheduled", true, None, None));
    }
    let init_waiting = "PodInitializing";
    let app_waiting = if init_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(
            app.iter()
                .map(|v| container_status(v, app_waiting))
                .collect(),
        ),
        init_container_statuses: if init.is_empty() {
            None
        } else {
            Some(
                init.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let first_pending = init.iter().position(|x| !terminated_ok(x));
                        let default = if Some(i) == first_pending && v.current.is_none() {
                            "PodInitializing"
                        } else {
                            init_waiting
                        };
                        container_status(v, default)
                    })
                    .collect(),
            )
        },
        pod_ip: facts.pod_ip.clone(),
        pod_ips: facts.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        host_ip: Some(facts.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: facts.host_ip.clone(),
        }]),
        start_time: Some(
            old.start_time
                .clone()
                .unwrap_or_else(|| facts.start_time.clone()),
        ),
        qos_class: old.qos_class.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(name: &str) -> ContainerView {
        ContainerView {
            name: name.into(),
            current: Some(cri::ContainerStatus {
                id: "c1".into(),
                state: cri::ContainerState::ContainerRunning as i32,
                started_at: 1_700_000_000_000_000_000,
                ..Default::default()
            }),
            ready: true,
            started: true,
            ..Default::default()
        }
    }

    fn exited(name: &str, code: i32) -> ContainerView {
        ContainerView {
            name: name.into(),
            current: Some(cri::ContainerStatus {
                id: "c2".into(),
                state: cri::ContainerState::ContainerExited as i32,
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn deleted_pods_end_failed_unless_everything_exited_zero() {
        assert_eq!(deleted_phase(&[], &[exited("a", 143)]), "Failed");
        assert_eq!(
            deleted_phase(&[], &[exited("a", 0), exited("b", 137)]),
            "Failed"
        );
        assert_eq!(deleted_phase(&[], &[exited("a", 0)]), "Succeeded");
        assert_eq!(
            deleted_phase(&[exited("i", 0)], &[exited("a", 0), exited("b", 0)]),
            "Succeeded"
        );
        assert_eq!(
            deleted_phase(&[exited("i", 1)], &[ContainerView::default()]),
            "Failed",
            "never got past its init containers"
        );
        assert_eq!(
            deleted_phase(&[], &[ContainerView::default()]),
            "Failed",
            "never started"
        );
        assert_eq!(
            deleted_phase(&[], &[running("a")]),
            "Failed",
            "still running: not stopped, so not a success"
        );
    }

    #[test]
    fn phases_follow_upstream() {
        assert_eq!(phase("Always", &[], &[running("a")]), "Running");
        assert_eq!(phase("Always", &[], &[exited("a", 0)]), "Running");
        assert_eq!(phase("Never", &[], &[exited("a", 0)]), "Succeeded");
        assert_eq!(phase("Never", &[], &[exited("a", 1)]), "Failed");
        assert_eq!(phase("OnFailure", &[], &[exited("a", 1)]), "Running");
        assert_eq!(phase("OnFailure", &[], &[exited("a", 0)]), "Succeeded");
        assert_eq!(
            phase("Always", &[exited("i", 1)], &[ContainerView::default()]),
            "Pending"
        );
        assert_eq!(
            phase("Never", &[exited("i", 1)], &[ContainerView::default()]),
            "Failed"
        );
        assert_eq!(phase("Always", &[], &[ContainerView::default()]), "Pending");
    }

    #[test]
    fn crash_loop_shows_waiting_with_last_state() {
        let mut v = exited("a", 2);
        v.waiting = Some(("CrashLoopBackOff".into(), "back-off 10s".into()));
        let s = container_status(&v, "ContainerCreating");
        let st = s.state.unwrap();
        assert_eq!(
            st.waiting.unwrap().reason.as_deref(),
            Some("CrashLoopBackOff")
        );
        assert_eq!(s.last_state.unwrap().terminated.unwrap().exit_code, 2);
        assert!(!s.ready);
    }
}
