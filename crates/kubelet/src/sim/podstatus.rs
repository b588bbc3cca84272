//! Pod statuses a simulated node reports: Running with ready containers, Succeeded or
//! Failed when a pod asks to exit (annotation [`EXIT_CODE_ANNOTATION`]), and Failed once a
//! deleted pod's containers stopped ([`termination`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, HostIP, Pod,
    PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{EXIT_CODE_ANNOTATION, TERMINATION_SECONDS_ANNOTATION, now};

/// How a deleted pod's containers stop: after how long, and with which exit code (143 for
/// SIGTERM; 137 when the grace period ran out and they were killed). `None` when the pod had
/// already finished (it keeps its status).
pub(super) fn termination(pod: &Pod) -> Option<(Duration, i32)> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .unwrap_or(0)
        .max(0);
    let wanted = pod
        .annotations()
        .get(TERMINATION_SECONDS_ANNOTATION)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0)
        .max(0);
    let (secs, code) = if wanted >= grace && wanted > 0 {
        (grace, 137)
    } else {
        (wanted, 143)
    };
    Some((Duration::from_secs(secs.unsigned_abs()), code))
}

pub(super) fn exit_code(pod: &Pod) -> Option<i32> {
    let policy = pod.spec.as_ref()?.restart_policy.as_deref()?;
    if policy != "Never" && policy != "OnFailure" {
        return None;
    }
    pod.annotations()
        .get(EXIT_CODE_ANNOTATION)?
        .trim()
        .parse()
        .ok()
}

fn condition(type_: &str, status: &str, reason: Option<&str>, t: &Time) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(Into::into),
        last_transition_time: Some(t.clone()),
        ..Default::default()
    }
}

/// A Running status for `pod` on `node`, with pod IP `ip`.
pub(super) fn running_status(pod: &Pod, host_ip: &str, ip: &str) -> PodStatus {
    let t = now();
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let container_statuses = containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: c.image.clone().unwrap_or_default(),
            container_id: Some(format!(
                "sim://{}-{}",
                pod.uid().unwrap_or_default(),
                c.name
            )),
            ready: true,
            started: Some(true),
            restart_count: 0,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(t.clone()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![
            condition("PodReadyToStartContainers", "True", None, &t),
            condition("Initialized", "True", None, &t),
            condition("Ready", "True", None, &t),
            condition("ContainersReady", "True", None, &t),
            condition("PodScheduled", "True", None, &t),
        ]),
        host_ip: Some(host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: host_ip.to_string(),
        }]),
        pod_ip: Some(ip.to_string()),
        pod_ips: Some(vec![PodIP { ip: ip.to_string() }]),
        start_time: Some(t),
        container_statuses: Some(container_statuses),
        qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()),
        ..Default::default()
    }
}

/// `status` after every container exited with `code`.
pub(super) fn exited_status(mut status: PodStatus, code: i32) -> PodStatus {
    let t = now();
    let (phase, reason) = if code == 0 {
        ("Succeeded", "Completed")
    } else {
        ("Failed", "Error")
    };
    status.phase = Some(phase.into());
    for c in status.container_statuses.iter_mut().flatten() {
        let started_at = c
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.clone());
        c.ready = false;
        c.started = Some(false);
        c.state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason.into()),
                started_at,
                finished_at: Some(t.clone()),
                container_id: c.container_id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    for c in status.conditions.iter_mut().flatten() {
        if matches!(
            c.type_.as_str(),
            "Ready" | "ContainersReady" | "PodReadyToStartContainers"
        ) {
            c.status = "False".into();
            c.reason = Some("PodCompleted".into());
            c.last_transition_time = Some(t.clone());
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn pod(policy: &str, exit: Option<&str>) -> Pod {
        let mut p = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("nginx".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        if let Some(code) = exit {
            p.metadata.annotations = Some(BTreeMap::from([(
                EXIT_CODE_ANNOTATION.to_string(),
                code.to_string(),
            )]));
        }
        p
    }

    #[test]
    fn deleted_pods_stop_within_their_grace_period() {
        let deleted = |grace: i64, wait: Option<&str>, phase: &str| {
            let mut p = pod("Always", None);
            p.metadata.deletion_grace_period_seconds = Some(grace);
            if let Some(w) = wait {
                p.metadata.annotations = Some(BTreeMap::from([(
                    TERMINATION_SECONDS_ANNOTATION.to_string(),
                    w.to_string(),
                )]));
            }
            p.status = Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            });
            p
        };
        assert_eq!(
            termination(&deleted(30, None, "Running")),
            Some((Duration::ZERO, 143))
        );
        assert_eq!(
            termination(&deleted(30, Some("5"), "Running")),
            Some((Duration::from_secs(5), 143))
        );
        assert_eq!(
            termination(&deleted(3, Some("5"), "Running")),
            Some((Duration::from_secs(3), 137)),
            "killed when the grace period ends"
        );
        assert_eq!(
            termination(&deleted(0, Some("5"), "Pending")),
            Some((Duration::ZERO, 137))
        );
        assert_eq!(termination(&deleted(30, Some("5"), "Succeeded")), None);
        let running = running_status(&pod("Always", None), "10.99.0.1", "10.128.0.2");
        let stopped = exited_status(running, 143);
        assert_eq!(stopped.phase.as_deref(), Some("Failed"));
        let state = stopped.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap();
        assert_eq!(state.terminated.unwrap().exit_code, 143);
    }

    #[test]
    fn running_status_reports_ready_containers() {
        let st = running_status(&pod("Always", None), "10.99.0.1", "10.128.0.2");
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(st.pod_ip.as_deref(), Some("10.128.0.2"));
        assert_eq!(st.host_ip.as_deref(), Some("10.99.0.1"));
        let cs = &st.container_statuses.unwrap()[0];
        assert!(cs.ready);
        assert_eq!(cs.restart_count, 0);
        assert!(cs.state.as_ref().unwrap().running.is_some());
        let conds = st.conditions.unwrap();
        for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
            assert!(
                conds.iter().any(|c| c.type_ == t && c.status == "True"),
                "{t}"
            );
        }
    }

    #[test]
    fn exit_code_needs_a_non_always_restart_policy() {
        assert_eq!(exit_code(&pod("Never", Some("0"))), Some(0));
        assert_eq!(exit_code(&pod("OnFailure", Some("3"))), Some(3));
        assert_eq!(exit_code(&pod("Always", Some("0"))), None);
        assert_eq!(exit_code(&pod("Never", None)), None);
        assert_eq!(exit_code(&pod("Never", Some("x"))), None);
    }

    #[test]
    fn exited_status_is_terminal() {
        let running = running_status(&pod("Never", None), "10.99.0.1", "10.0.0.2");
        let ok = exited_status(running.clone(), 0);
        assert_eq!(ok.phase.as_deref(), Some("Succeeded"));
        let term = ok.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(
            (term.exit_code, term.reason.as_deref()),
            (0, Some("Completed"))
        );
        let failed = exited_status(running, 2);
        assert_eq!(failed.phase.as_deref(), Some("Failed"));
        assert!(
            failed
                .conditions
                .unwrap()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False")
        );
    }
}
