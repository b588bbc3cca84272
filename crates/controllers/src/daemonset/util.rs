//! DaemonSet logic without I/O, after upstream's `pkg/controller/daemon` and
//! `daemon/util`: which nodes should run a daemon pod (`NodeShouldRunDaemonPod`, with the
//! tolerations every daemon pod gets), the pod for a node (pinned by a required node affinity
//! on `metadata.name`), which pod on a node is updated, and the rolling update's choices
//! (`rollingUpdate` with and without surge).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use scheduler::framework::{Filter, NodeInfo, PodInfo};
use scheduler::plugins::nodeaffinity::NodeAffinity as NodeAffinityPlugin;
use scheduler::plugins::tainttoleration::tolerates;

use crate::controller_utils::{controller_ref, is_available, pod_from_template};
use crate::deployment::util::scaled_value;

/// The pod label naming the revision (ControllerRevision hash) a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The pod label carrying the template generation (deprecated upstream, still set).
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// The annotation upstream's API server keeps the template generation in.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// The tolerations upstream adds to every daemon pod (`AddOrUpdateDaemonPodTolerations`);
/// host-network pods also tolerate `network-unavailable`.
pub fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

/// Adds the default daemon tolerations that `spec` does not already have (same key, effect
/// and operator).
fn add_default_tolerations(spec: &mut PodSpec) {
    let host_network = spec.host_network == Some(true);
    let tols = spec.tolerations.get_or_insert_with(Vec::new);
    for t in default_tolerations(host_network) {
        let present = tols
            .iter()
            .any(|x| x.key == t.key && x.effect == t.effect && x.operator == t.operator);
        if !present {
            tols.push(t);
        }
    }
}

/// Upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required node affinity becomes
/// one term matching the field `metadata.name` In `[node]`.
pub fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let required = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(required);
}

/// The node a daemon pod is for: `spec.nodeName`, else its `metadata.name` affinity field.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// The template generation (the upstream annotation, else the object's generation).
pub fn template_generation(ds: &DaemonSet) -> i64 {
    ds.annotations()
        .get(TEMPLATE_GENERATION_ANNOTATION)
        .and_then(|v| v.parse().ok())
        .or(ds.metadata.generation)
        .unwrap_or(1)
}

/// The pod for `node` at revision `hash`: the template with the default tolerations, the
/// revision and generation labels, pinned to the node; named `NAME-xxxxx` by the server.
pub fn pod_for(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut pod = pod_from_template(&template, &ds.name_any(), controller_ref(ds));
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(REVISION_LABEL.into(), hash.into());
    labels.insert(
        TEMPLATE_GENERATION_LABEL.into(),
        template_generation(ds).to_string(),
    );
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    add_default_tolerations(spec);
    pin_to_node(spec, node);
    pod
}

/// Upstream's `NodeShouldRunDaemonPod`: whether a daemon pod should run on `node`, and
/// whether one already there may keep running (it tolerates the node's NoExecute taints).
pub fn should_run(ds: &DaemonSet, node: &Arc<Node>) -> (bool, bool) {
    let Some(template) = ds.spec.as_ref().map(|s| &s.template) else {
        return (false, false);
    };
    let name = node.name_any();
    let mut spec = template.spec.clone().unwrap_or_default();
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return (false, false);
    }
    add_default_tolerations(&mut spec);
    pin_to_node(&mut spec, &name);
    // The pinned affinity replaces the template's: check the template's own first.
    let own = Pod {
        spec: template.spec.clone(),
        ..Default::default()
    };
    let info = NodeInfo::new(node.clone());
    if NodeAffinityPlugin
        .filter(&PodInfo::new(Arc::new(own)), &info)
        .is_err()
    {
        return (false, false);
    }
    let taints: &[Taint] = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let tols = spec.tolerations.as_deref().unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .any(|t| t.effect == effect && !tols.iter().any(|x| tolerates(x, t)))
    };
    if untolerated("NoSchedule") || untolerated("NoExecute") {
        return (false, !untolerated("NoExecute"));
    }
    (true, true)
}

/// Whether a pod is at revision `hash`.
pub fn is_updated(pod: &Pod, hash: &str) -> bool {
    pod.labels().get(REVISION_LABEL).map(String::as_str) == Some(hash)
}

/// Upstream's `findUpdatedPodsOnNode`: the node's updated and old pod (pods being deleted
/// ignored); `None` when there are several of either.
pub fn updated_and_old<'a>(
    pods: &'a [Pod],
    hash: &str,
) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let slot = if is_updated(p, hash) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p);
    }
    Some((new, old))
}

/// maxSurge and maxUnavailable as counts of `desired` (both round up, as upstream's
/// `SurgeCount` / `UnavailableCount`); when both are 0, one pod may be unavailable.
pub fn surge_and_unavailable(ds: &DaemonSet, desired: i32) -> (i32, i32) {
    let ru = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref());
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), desired, true);
    let unavailable = scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), desired, true);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// What one rolling-update step does: old pods to delete and nodes that get a new pod.
#[derive(Debug, Default, PartialEq)]
pub struct RollingStep {
    /// Names of old pods to delete.
    pub delete: Vec<String>,
    /// Nodes to create an updated pod on (surge).
    pub create: Vec<String>,
}

/// Upstream's `rollingUpdate`: without surge, deletes old pods while at most
/// `max_unavailable` nodes lack an available pod (unavailable old pods are always
/// replaced); with surge, starts updated pods beside old ones on at most `max_surge` nodes,
/// and deletes an old pod once its node's updated pod is available.
pub fn rolling_step(
    by_node: &BTreeMap<String, Vec<Pod>>,
    hash: &str,
    max_surge: i32,
    max_unavailable: i32,
    min_ready: i32,
    now: Timestamp,
) -> RollingStep {
    let available = |p: &Pod| is_available(p, min_ready, now);
    let mut step = RollingStep::default();
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut candidates = Vec::new();
        for pods in by_node.values() {
            match updated_and_old(pods, hash) {
                None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                Some((Some(new), None)) => {
                    if !available(new) {
                        unavailable += 1;
                    }
                }
                Some((None, Some(old))) => {
                    if !available(old) {
                        step.delete.push(old.name_any());
                    } else if unavailable < max_unavailable {
                        candidates.push(old.name_any());
                    }
                }
            }
        }
        let room = usize::try_from((max_unavailable - unavailable).max(0)).unwrap_or(0);
        step.delete.extend(candidates.into_iter().take(room));
        return step;
    }
    let mut surged = 0;
    let mut candidates = Vec::new();
    for (node, pods) in by_node {
        match updated_and_old(pods, hash) {
            None => surged += 1,
            Some((_, None)) => {}
            Some((None, Some(old))) => {
                if !available(old) {
                    step.create.push(node.clone());
                } else if surged < max_surge {
                    candidates.push(node.clone());
                }
            }
            Some((Some(new), Some(old))) => {
                if available(new) {
                    step.delete.push(old.name_any());
                } else {
                    surged += 1;
                }
            }
        }
    }
    let room = usize::try_from((max_surge - surged).max(0)).unwrap_or(0);
    step.create.extend(candidates.into_iter().take(room));
    step
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(extra: serde_json::Value) -> DaemonSet {
        let mut v = json!({
            "metadata": {"name": "agent", "namespace": "default", "uid": "u", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                "template": {"metadata": {"labels": {"app": "a"}},
                    "spec": {"containers": [{"name": "c", "image": "x"}]}}}
        });
        if let (Some(spec), Some(extra)) = (
            v["spec"]["template"]["spec"].as_object_mut(),
            extra.as_object(),
        ) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "spec": {"taints": taints}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn eligibility_follows_selector_affinity_and_taints() {
        let plain = ds(json!({}));
        assert_eq!(
            should_run(&plain, &node("n", json!({}), json!([]))),
            (true, true)
        );
        let selected = ds(json!({"nodeSelector": {"disk": "ssd"}}));
        assert_eq!(
            should_run(&selected, &node("n", json!({}), json!([]))),
            (false, false)
        );
        assert_eq!(
            should_run(&selected, &node("n", json!({"disk": "ssd"}), json!([]))),
            (true, true)
        );
        let no_schedule = node(
            "n",
            json!({}),
            json!([{"key": "k", "effect": "NoSchedule"}]),
        );
        assert_eq!(should_run(&plain, &no_schedule), (false, true));
        let no_execute = node("n", json!({}), json!([{"key": "k", "effect": "NoExecute"}]));
        assert_eq!(should_run(&plain, &no_execute), (false, false));
        let tolerant = ds(json!({"tolerations": [{"key": "k", "operator": "Exists"}]}));
        assert_eq!(should_run(&tolerant, &no_execute), (true, true));
        // The default tolerations cover cordoned and not-ready nodes.
        let cordoned = node(
            "n",
            json!({}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                   {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
        );
        assert_eq!(should_run(&plain, &cordoned), (true, true));
        let affinity = ds(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}),
        );
        assert_eq!(
            should_run(&affinity, &node("n", json!({"zone": "b"}), json!([]))),
            (false, false)
        );
        assert_eq!(
            should_run(&affinity, &node("n", json!({"zone": "a"}), json!([]))),
            (true, true)
        );
    }

    #[test]
    fn pods_are_pinned_and_labelled() {
        let pod = pod_for(&ds(json!({})), "node-1", "h1");
        assert_eq!(target_node(&pod).as_deref(), Some("node-1"));
        assert_eq!(pod.labels()[REVISION_LABEL], "h1");
        assert_eq!(pod.labels()[TEMPLATE_GENERATION_LABEL], "2");
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
        let tols = pod.spec.as_ref().unwrap().tolerations.as_ref().unwrap();
        assert_eq!(tols.len(), 6);
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(
            v["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchFields"][0],
            json!({"key": "metadata.name", "operator": "In", "values": ["node-1"]})
        );
    }

    fn pod(name: &str, hash: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {REVISION_LABEL: hash}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready",
                "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    #[test]
    fn rolling_without_surge_respects_max_unavailable() {
        let now = Timestamp::now();
        let mut by_node = BTreeMap::new();
        for i in 0..4 {
            by_node.insert(format!("n{i}"), vec![pod(&format!("old{i}"), "old", true)]);
        }
        let step = rolling_step(&by_node, "new", 0, 1, 0, now);
        assert_eq!(step.delete, ["old0"]);
        // One node is mid-update (its new pod not ready yet): nothing more goes.
        by_node.insert("n0".into(), vec![pod("new0", "new", false)]);
        assert_eq!(
            rolling_step(&by_node, "new", 0, 1, 0, now),
            RollingStep::default()
        );
        // With two allowed, one more goes; an unavailable old pod is always replaced.
        by_node.insert("n3".into(), vec![pod("old3", "old", false)]);
        let step = rolling_step(&by_node, "new", 0, 2, 0, now);
        assert_eq!(step.delete, ["old3", "old1"]);
        // A node without pods counts as unavailable.
        by_node.insert("n0".into(), vec![]);
        by_node.insert("n3".into(), vec![pod("new3", "new", true)]);
        assert_eq!(
            rolling_step(&by_node, "new", 0, 1, 0, now),
            RollingStep::default()
        );
    }

    #[test]
    fn rolling_with_surge_starts_new_pods_first() {
        let now = Timestamp::now();
        let mut by_node = BTreeMap::new();
        for i in 0..3 {
            by_node.insert(format!("n{i}"), vec![pod(&format!("old{i}"), "old", true)]);
        }
        let step = rolling_step(&by_node, "new", 1, 0, 0, now);
        assert_eq!(step.create, ["n0"]);
        by_node.insert(
            "n0".into(),
            vec![pod("old0", "old", true), pod("new0", "new", false)],
        );
        assert_eq!(
            rolling_step(&by_node, "new", 1, 0, 0, now),
            RollingStep::default()
        );
        by_node.insert(
            "n0".into(),
            vec![pod("old0", "old", true), pod("new0", "new", true)],
        );
        let step = rolling_step(&by_node, "new", 1, 0, 0, now);
        assert_eq!(step.delete, ["old0"]);
        assert_eq!(step.create, ["n1"]);
    }

    #[test]
    fn fenceposts_round_up() {
        let mut d = ds(json!({}));
        d.spec.as_mut().unwrap().update_strategy = serde_json::from_value(
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%", "maxSurge": 0}}),
        )
        .unwrap();
        assert_eq!(surge_and_unavailable(&d, 3), (0, 1));
        assert_eq!(surge_and_unavailable(&d, 25), (0, 3));
        d.spec.as_mut().unwrap().update_strategy = None;
        assert_eq!(surge_and_unavailable(&d, 3), (0, 1));
    }
}
