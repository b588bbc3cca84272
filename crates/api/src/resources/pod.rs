//! core/v1 Pod: defaults (including what upstream's admission adds on create: the default
//! service account, the not-ready/unreachable tolerations and the priority), the initial status,
//! validation (with upstream's rule on what a pod update may change), the table (STATUS logic of
//! kubectl's `printPod`) and the field selectors.

use k8s_openapi::api::core::v1::{
    ContainerStatus, Pod, PodCondition, PodSpec, PodStatus, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::error::FieldCause;
use crate::resources::podspec;
use crate::strategy::Behavior;
use crate::table::{Column, age_cell, human_duration_since};

/// The taints upstream's DefaultTolerationSeconds admission tolerates for 300 s.
const DEFAULT_TOLERATED: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

const UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn tolerates(t: &Toleration, key: &str) -> bool {
    let effect_ok = matches!(t.effect.as_deref(), None | Some("") | Some("NoExecute"));
    let key_ok = match t.key.as_deref() {
        None | Some("") => t.operator.as_deref() == Some("Exists"),
        Some(k) => k == key,
    };
    effect_ok && key_ok
}

fn default_tolerations(spec: &mut PodSpec) {
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    for key in DEFAULT_TOLERATED {
        if !list.iter().any(|t| tolerates(t, key)) {
            list.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(300),
                value: None,
            });
        }
    }
}

/// The pod-only defaults on top of the pod spec defaults.
fn default_pod(spec: &mut PodSpec) {
    podspec::default_pod_spec(spec);
    spec.enable_service_links.get_or_insert(true);
    if spec
        .service_account_name
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        let sa = spec
            .service_account
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        spec.service_account_name = Some(sa);
    }
    spec.service_account.clone_from(&spec.service_account_name);
    default_tolerations(spec);
    if spec.priority.is_none() {
        spec.priority = match spec.priority_class_name.as_deref().unwrap_or("") {
            "" => Some(0),
            "system-node-critical" => Some(2_000_001_000),
            "system-cluster-critical" => Some(2_000_000_000),
            _ => None, // resolved from the PriorityClass by the API server
        };
    }
    spec.preemption_policy
        .get_or_insert_with(|| "PreemptLowerPriority".into());
}

/// A copy of the spec with the fields a pod update may change blanked out.
fn immutable_part(spec: &PodSpec, old_node_name: Option<&str>) -> Value {
    let mut s = spec.clone();
    for c in s
        .containers
        .iter_mut()
        .chain(s.init_containers.iter_mut().flatten())
    {
        c.image = None;
    }
    s.active_deadline_seconds = None;
    s.tolerations = None;
    s.termination_grace_period_seconds = None;
    s.scheduling_gates = None;
    if old_node_name.unwrap_or("").is_empty() {
        s.node_name = None; // set by binding
    }
    serde_json::to_value(s).unwrap_or_default()
}

impl Behavior for Pod {
    const SHORT_NAMES: &'static [&'static str] = &["po"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [&'static str] = &[
        "attach",
        "binding",
        "ephemeralcontainers",
        "eviction",
        "exec",
        "log",
        "portforward",
        "proxy",
        "resize",
        "status",
    ];

    fn apply_defaults(&mut self) {
        default_pod(self.spec.get_or_insert_with(PodSpec::default));
    }

    fn prepare_for_create(&mut self) {
        let spec = self.spec.get_or_insert_with(PodSpec::default);
        default_pod(spec);
        let gated = spec
            .scheduling_gates
            .as_ref()
            .is_some_and(|g| !g.is_empty());
        self.status = Some(PodStatus {
            phase: Some("Pending".into()),
            qos_class: Some(podspec::qos_class(spec).into()),
            conditions: gated.then(|| {
                vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("SchedulingGated".into()),
                    message: Some("Scheduling is blocked due to non-empty scheduling gates".into()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldCause> {
        let Some(spec) = &self.spec else {
            return vec![FieldCause::required("spec.containers")];
        };
        let mut causes = podspec::validate_pod_spec(spec, "spec");
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            let old_node = old_spec.node_name.as_deref();
            if immutable_part(spec, old_node) != immutable_part(old_spec, old_node) {
                causes.push(FieldCause::forbidden("spec", UPDATE_FORBIDDEN));
            }
            if let Some(old_t) = &old_spec.tolerations {
                let new_t = spec.tolerations.as_deref().unwrap_or_default();
                if old_t.iter().any(|t| !new_t.contains(t)) {
                    causes.push(FieldCause::forbidden(
                        "spec.tolerations",
                        "existing toleration can not be modified except its tolerationSeconds",
                    ));
                }
            }
        }
        causes
    }

    fn columns() -> Vec<Column> {
        vec![
            Column::new(
                "Ready",
                "string",
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            Column::new(
                "Status",
                "string",
                "The aggregate status of the containers in this pod.",
            ),
            Column::new(
                "Restarts",
                "string",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            Column::age(),
            Column::wide(
                "IP",
                "string",
                "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            Column::wide(
                "Node",
                "string",
                "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
            ),
            Column::wide(
                "Nominated Node",
                "string",
                "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
            ),
            Column::wide(
                "Readiness Gates",
                "string",
                "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
            ),
        ]
    }

    fn cells(&self) -> Vec<Value> {
        let row = status_row(self);
        let spec = self.spec.as_ref();
        let status = self.status.as_ref();
        let none = |s: Option<&str>| s.filter(|s| !s.is_empty()).unwrap_or("<none>").to_string();
        let ip = status
            .and_then(|s| s.pod_ips.as_ref())
            .and_then(|ips| ips.first())
            .map(|ip| ip.ip.as_str());
        let gates = spec
            .and_then(|s| s.readiness_gates.as_ref())
            .filter(|g| !g.is_empty())
            .map(|gates| {
                let conds = status
                    .and_then(|s| s.conditions.as_deref())
                    .unwrap_or_default();
                let ok = gates
                    .iter()
                    .filter(|g| {
                        conds
                            .iter()
                            .find(|c| c.type_ == g.condition_type)
                            .is_some_and(|c| c.status == "True")
                    })
                    .count();
                format!("{ok}/{}", gates.len())
            });
        vec![
            Value::String(format!("{}/{}", row.ready, row.total)),
            Value::String(row.reason),
            Value::String(row.restarts),
            age_cell(&self.metadata),
            Value::String(none(ip)),
            Value::String(none(spec.and_then(|s| s.node_name.as_deref()))),
            Value::String(none(status.and_then(|s| s.nominated_node_name.as_deref()))),
            Value::String(gates.unwrap_or_else(|| "<none>".into())),
        ]
    }

    fn field(&self, label: &str) -> Option<String> {
        let spec = self.spec.as_ref();
        let status = self.status.as_ref();
        let s = |v: Option<&String>| v.cloned().unwrap_or_default();
        Some(match label {
            "spec.nodeName" | "spec.host" => s(spec.and_then(|x| x.node_name.as_ref())),
            "spec.restartPolicy" => s(spec.and_then(|x| x.restart_policy.as_ref())),
            "spec.schedulerName" => s(spec.and_then(|x| x.scheduler_name.as_ref())),
            "spec.serviceAccountName" => s(spec.and_then(|x| x.service_account_name.as_ref())),
            "spec.hostNetwork" => spec
                .and_then(|x| x.host_network)
                .unwrap_or(false)
                .to_string(),
            "status.phase" => s(status.and_then(|x| x.phase.as_ref())),
            "status.podIP" => status
                .and_then(|x| x.pod_ips.as_ref())
                .and_then(|i| i.first())
                .map(|i| i.ip.clone())
                .unwrap_or_default(),
            // Accepted by upstream's label conversion but absent from its selectable set: empty.
            "status.podIPs" => String::new(),
            "status.nominatedNodeName" => s(status.and_then(|x| x.nominated_node_name.as_ref())),
            _ => return None,
        })
    }
}

/// READY, STATUS and RESTARTS of a pod, as kubectl's `printPod` computes them.
struct StatusRow {
    ready: usize,
    total: usize,
    reason: String,
    restarts: String,
}

fn last_terminated(c: &ContainerStatus) -> Option<jiff::Timestamp> {
    c.last_state
        .as_ref()?
        .terminated
        .as_ref()?
        .finished_at
        .as_ref()
        .map(|t: &Time| t.0)
}

fn later(a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>) -> Option<jiff::Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn status_row(pod: &Pod) -> StatusRow {
    let default_spec = PodSpec::default();
    let default_status = PodStatus::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let status = pod.status.as_ref().unwrap_or(&default_status);
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let init_specs = spec.init_containers.as_deref().unwrap_or_default();
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| c.name == name && c.restart_policy.as_deref() == Some("Always"))
    };

    let phase = status.phase.clone().unwrap_or_default();
    let mut reason = status
        .reason
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| phase.clone());
    if conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"))
    {
        reason = "SchedulingGated".into();
    }
    let total = spec.containers.len() + init_specs.iter().filter(|c| restartable(&c.name)).count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart = None;
    let mut sidecar_restarts = 0;
    let mut sidecar_last_restart = None;

    let mut initializing = false;
    for (i, c) in status.init_container_statuses.iter().flatten().enumerate() {
        restarts += c.restart_count;
        last_restart = later(last_restart, last_terminated(c));
        if restartable(&c.name) {
            sidecar_restarts += c.restart_count;
            sidecar_last_restart = later(sidecar_last_restart, last_terminated(c));
        }
        let state = c.state.clone().unwrap_or_default();
        let terminated = state.terminated.as_ref();
        if terminated.is_some_and(|t| t.exit_code == 0) {
            continue;
        }
        if restartable(&c.name) && c.started == Some(true) {
            if c.ready {
                ready += 1;
            }
            continue;
        }
        let waiting = state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref())
            .filter(|r| !r.is_empty() && *r != "PodInitializing");
        reason = if let Some(t) = terminated {
            match t.reason.as_deref().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None => match t.signal.filter(|s| *s != 0) {
                    Some(sig) => format!("Init:Signal:{sig}"),
                    None => format!("Init:ExitCode:{}", t.exit_code),
                },
            }
        } else if let Some(w) = waiting {
            format!("Init:{w}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    let initialized = conditions
        .iter()
        .any(|c| c.type_ == "Initialized" && c.status == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let mut has_running = false;
        for c in status.container_statuses.iter().flatten().rev() {
            restarts += c.restart_count;
            last_restart = later(last_restart, last_terminated(c));
            let state = c.state.clone().unwrap_or_default();
            let waiting = state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .filter(|r| !r.is_empty());
            if let Some(w) = waiting {
                reason = w;
            } else if let Some(t) = &state.terminated {
                reason = match (
                    t.reason.as_deref().filter(|r| !r.is_empty()),
                    t.signal.filter(|s| *s != 0),
                ) {
                    (Some(r), _) => r.to_string(),
                    (None, Some(sig)) => format!("Signal:{sig}"),
                    (None, None) => format!("ExitCode:{}", t.exit_code),
                };
            } else if c.ready && state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            reason = if pod_ready {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    if pod.metadata.deletion_timestamp.is_some() {
        if status.reason.as_deref() == Some("NodeLost") {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }
    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration_since(t)),
        _ => restarts.to_string(),
    };
    StatusRow {
        ready,
        total,
        reason,
        restarts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap_or_default()
    }

    fn status_of(v: Value) -> String {
        pod(v).cells()[1].as_str().unwrap_or_default().to_string()
    }

    #[test]
    fn defaults_match_upstream() {
        let mut p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "nginx:1.27"}]}}));
        p.prepare_for_create();
        p.apply_defaults();
        let v = serde_json::to_value(&p).unwrap_or_default();
        let s = &v["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["securityContext"], json!({}));
        assert_eq!(s["enableServiceLinks"], true);
        assert_eq!(s["serviceAccountName"], "default");
        assert_eq!(s["priority"], 0);
        assert_eq!(s["preemptionPolicy"], "PreemptLowerPriority");
        assert_eq!(s["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(s["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            s["containers"][0]["terminationMessagePath"],
            "/dev/termination-log"
        );
        assert_eq!(s["containers"][0]["terminationMessagePolicy"], "File");
        assert_eq!(s["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            s["tolerations"],
            json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}])
        );
        assert_eq!(
            v["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
        // Idempotent: defaulting again adds nothing.
        let mut again = p.clone();
        again.apply_defaults();
        assert_eq!(again, p);
    }

    #[test]
    fn existing_toleration_is_kept() {
        let mut p = pod(
            json!({"spec": {"containers": [{"name": "a", "image": "x"}], "tolerations": [{"operator": "Exists"}]}}),
        );
        p.apply_defaults();
        assert_eq!(p.spec.and_then(|s| s.tolerations).map(|t| t.len()), Some(1));
    }

    #[test]
    fn status_column_cases() {
        let running = json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "a", "image": "x", "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]}});
        assert_eq!(status_of(running.clone()), "Running");
        assert_eq!(pod(running).cells()[0], "1/1");
        let creating = json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending",
            "containerStatuses": [{"name": "a", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(status_of(creating), "ContainerCreating");
        let crash = json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "a", "image": "x", "imageID": "", "ready": false, "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2020-01-01T00:00:00Z"}}}]}});
        let cells = pod(crash).cells();
        assert_eq!(cells[1], "CrashLoopBackOff");
        assert!(
            cells[2].as_str().unwrap_or_default().starts_with("5 ("),
            "{:?}",
            cells[2]
        );
        let completed = json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Succeeded",
            "containerStatuses": [{"name": "a", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        assert_eq!(status_of(completed), "Completed");
        let init = json!({"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]}, "status": {"phase": "Pending",
            "initContainerStatuses": [{"name": "i", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": {"running": {}}}],
            "containerStatuses": [{"name": "a", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]}});
        assert_eq!(status_of(init), "Init:0/1");
        let terminating = json!({"metadata": {"deletionTimestamp": "2020-01-01T00:00:00Z"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}});
        assert_eq!(status_of(terminating), "Terminating");
        let exit = json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Failed",
            "containerStatuses": [{"name": "a", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 2}}}]}});
        assert_eq!(status_of(exit), "ExitCode:2");
    }

    #[test]
    fn updates_may_change_only_images() {
        let old = pod(
            json!({"spec": {"containers": [{"name": "a", "image": "x"}], "restartPolicy": "Always"}}),
        );
        let mut new = old.clone();
        if let Some(s) = new.spec.as_mut() {
            s.containers[0].image = Some("y".into());
        }
        assert!(new.validate(Some(&old)).is_empty());
        if let Some(s) = new.spec.as_mut() {
            s.containers[0].name = "b".into();
        }
        assert!(new.validate(Some(&old)).iter().any(|c| c.field == "spec"));
    }

    #[test]
    fn field_selectors() {
        let p = pod(
            json!({"spec": {"containers": [], "nodeName": "n1"}, "status": {"phase": "Running"}}),
        );
        assert_eq!(p.field("spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(p.field("status.phase").as_deref(), Some("Running"));
        assert_eq!(p.field("spec.hostNetwork").as_deref(), Some("false"));
        assert_eq!(p.field("spec.bogus"), None);
    }
}
