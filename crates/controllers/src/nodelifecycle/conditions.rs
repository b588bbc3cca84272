//! The pure half of the node lifecycle controller: which conditions turn Unknown when a node
//! stops posting status, and which taints a node's conditions call for (upstream's
//! `TaintNodesByCondition` NoSchedule taints for Ready and `spec.unschedulable`, and the
//! NoExecute `not-ready` / `unreachable` taints that the taint-eviction controller acts on).
//!
//! Deliberately unlike upstream, the pressure conditions (MemoryPressure, DiskPressure,
//! PIDPressure, NetworkUnavailable) do not taint the node: corten's agent reports DiskPressure
//! from the host's free space (under 10 %), and on shared development machines that would
//! stop all scheduling on the node. Taints with those keys are left alone.

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The taint of a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is Unknown (it stopped posting status).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a cordoned node.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// The conditions a node's kubelet keeps, which go Unknown when it stops posting status.
pub const KUBELET_CONDITIONS: [&str; 4] =
    ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The status of the node's condition `type_`, if it has one.
pub fn condition_status<'a>(node: &'a Node, type_: &str) -> Option<&'a str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// Sets the kubelet's conditions to Unknown, as upstream's `tryUpdateNodeHealth` does when the
/// grace period has passed: existing ones get reason `NodeStatusUnknown`, missing ones are
/// added with `NodeStatusNeverUpdated`; heartbeat times are kept. Returns whether anything
/// changed.
pub fn mark_unknown(status: &mut NodeStatus, created: Option<&Time>, now: &Time) -> bool {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(now.clone());
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: created.cloned(),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
        }
    }
    changed
}

/// The (key, effect) of every taint the node's Ready condition and `spec.unschedulable` call
/// for.
pub fn wanted_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![];
    let ready_key = match condition_status(node, "Ready") {
        Some("False") => Some(TAINT_NOT_READY),
        Some("Unknown") => Some(TAINT_UNREACHABLE),
        _ => None,
    };
    if let Some(key) = ready_key {
        out.push((key, "NoSchedule"));
        out.push((key, "NoExecute"));
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        out.push((TAINT_UNSCHEDULABLE, "NoSchedule"));
    }
    out
}

/// Whether a taint is one this controller manages (and so may add or remove).
fn managed(taint: &Taint) -> bool {
    let keys = [TAINT_NOT_READY, TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE];
    let effect_ok = match taint.key.as_str() {
        TAINT_NOT_READY | TAINT_UNREACHABLE => {
            matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
        }
        _ => taint.effect == "NoSchedule",
    };
    effect_ok && keys.into_iter().any(|k| k == taint.key)
}

/// The node's taints with the managed ones brought in line with [`wanted_taints`], or `None`
/// when they already are. Other taints are kept as they are; new NoExecute taints get
/// `timeAdded`.
pub fn reconcile_taints(node: &Node, now: &Time) -> Option<Vec<Taint>> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let wanted = wanted_taints(node);
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || wanted.iter().any(|(k, e)| *k == t.key && *e == t.effect))
        .cloned()
        .collect();
    for (key, effect) in &wanted {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: key.to_string(),
                effect: effect.to_string(),
                value: None,
                time_added: (*effect == "NoExecute").then(|| now.clone()),
            });
        }
    }
    (out != current).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(ready: Option<&str>, taints: serde_json::Value, unschedulable: bool) -> Node {
        let conds = ready
            .map(|s| json!([{"type": "Ready", "status": s, "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]))
            .unwrap_or(json!([]));
        serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": {"taints": taints, "unschedulable": unschedulable},
            "status": {"conditions": conds},
        }))
        .unwrap()
    }

    fn now() -> Time {
        Time("2026-01-01T00:01:00Z".parse().unwrap())
    }

    fn keys(t: &[Taint]) -> Vec<(String, String)> {
        t.iter()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect()
    }

    #[test]
    fn unknown_node_gets_unreachable_taints_with_time_added() {
        let n = node(
            Some("Unknown"),
            json!([{"key": "user", "effect": "NoSchedule"}]),
            false,
        );
        let t = reconcile_taints(&n, &now()).unwrap();
        assert_eq!(
            keys(&t),
            [
                ("user".into(), "NoSchedule".into()),
                (TAINT_UNREACHABLE.into(), "NoSchedule".into()),
                (TAINT_UNREACHABLE.into(), "NoExecute".into()),
            ]
        );
        assert!(t[1].time_added.is_none());
        assert_eq!(t[2].time_added, Some(now()));
    }

    #[test]
    fn not_ready_replaces_unreachable_and_ready_clears_all() {
        let tainted = json!([
            {"key": TAINT_UNREACHABLE, "effect": "NoExecute"},
            {"key": TAINT_UNREACHABLE, "effect": "NoSchedule"},
            {"key": "user", "effect": "NoExecute"},
        ]);
        let t = reconcile_taints(&node(Some("False"), tainted.clone(), false), &now()).unwrap();
        assert_eq!(
            keys(&t),
            [
                ("user".into(), "NoExecute".into()),
                (TAINT_NOT_READY.into(), "NoSchedule".into()),
                (TAINT_NOT_READY.into(), "NoExecute".into()),
            ]
        );
        let t = reconcile_taints(&node(Some("True"), tainted, false), &now()).unwrap();
        assert_eq!(keys(&t), [("user".into(), "NoExecute".into())]);
        assert_eq!(
            reconcile_taints(&node(Some("True"), json!([]), false), &now()),
            None
        );
    }

    #[test]
    fn cordoned_node_gets_unschedulable_taint() {
        let t = reconcile_taints(&node(Some("True"), json!([]), true), &now()).unwrap();
        assert_eq!(
            keys(&t),
            [(TAINT_UNSCHEDULABLE.into(), "NoSchedule".into())]
        );
    }

    #[test]
    fn conditions_turn_unknown_once_and_missing_ones_are_added() {
        let mut n = node(Some("True"), json!([]), false);
        let status = n.status.as_mut().unwrap();
        assert!(mark_unknown(status, None, &now()));
        let conds = status.conditions.as_ref().unwrap();
        assert_eq!(conds.len(), 4);
        assert!(conds.iter().all(|c| c.status == "Unknown"));
        assert_eq!(conds[0].reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            conds[0].message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(
            conds[0].last_heartbeat_time,
            Some(Time("2026-01-01T00:00:00Z".parse().unwrap()))
        );
        assert_eq!(conds[1].reason.as_deref(), Some("NodeStatusNeverUpdated"));
        assert!(!mark_unknown(status, None, &now()));
    }
}
