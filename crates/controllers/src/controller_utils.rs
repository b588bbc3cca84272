//! Helpers shared by the workload controllers, after upstream's
//! `pkg/controller/controller_utils.go`: label selectors, controller references, claiming
//! (adopting orphans that match a selector and releasing owned objects that stop matching),
//! pod predicates (active, ready, available), the order in which surplus pods are deleted, and
//! the fresh read of the owner every workload reconcile starts with ([`fresh_owner`]).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// The annotation that lowers (or raises) the cost of deleting a pod when scaling down.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// A parsed label selector. An empty or invalid selector matches nothing, as upstream's
/// controllers treat it (apps/v1 validation rejects both anyway).
pub struct Selector(Option<api::selector::LabelSelector>);

impl Selector {
    /// Parses `sel`.
    pub fn new(sel: &LabelSelector) -> Self {
        Selector(
            api::selector::LabelSelector::from_k8s(sel)
                .ok()
                .filter(|s| !s.is_empty()),
        )
    }

    /// Whether `labels` match.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.as_ref().is_some_and(|s| s.matches(labels))
    }

    /// Whether the selector can match anything at all.
    pub fn is_valid(&self) -> bool {
        self.0.is_some()
    }
}

/// The controller reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A controller reference to `owner` (controller and blockOwnerDeletion set).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The preamble of a workload reconcile: a fresh read of the owner (the cache may lag, and
/// adoption must not race a deletion — upstream's `canAdopt` recheck), which must still be
/// the cached object (same uid), not being deleted unless `keep_deleting`, and have a valid,
/// non-empty selector. `None` when there is nothing to do.
pub async fn fresh_owner<K>(
    api: &Api<K>,
    cached: &K,
    keep_deleting: bool,
    selector_of: impl Fn(&K) -> Option<LabelSelector>,
) -> Result<Option<(K, Selector)>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let name = cached.meta().name.clone().unwrap_or_default();
    let fresh = match api.get_opt(&name).await? {
        Some(o) if o.meta().uid == cached.meta().uid => o,
        _ => return Ok(None),
    };
    if fresh.meta().deletion_timestamp.is_some() && !keep_deleting {
        return Ok(None);
    }
    let Some(sel) = selector_of(&fresh) else {
        return Ok(None);
    };
    let selector = Selector::new(&sel);
    if !selector.is_valid() {
        tracing::warn!(
            kind = %K::kind(&()),
            namespace = fresh.meta().namespace.as_deref().unwrap_or(""),
            name = %name,
            "empty or invalid selector, ignoring"
        );
        return Ok(None);
    }
    Ok(Some((fresh, selector)))
}

/// Maps an object (a pod, a ReplicaSet) to the controllers it concerns, for
/// `Controller::watches`: its controller when it has one of kind `O`, otherwise every `O` in
/// its namespace whose selector matches it (a candidate for adoption).
pub fn owners_of<K, O>(
    store: &Store<O>,
    obj: &K,
    selector_of: fn(&O) -> Option<&LabelSelector>,
) -> Vec<ObjectRef<O>>
where
    K: Resource,
    O: Resource<DynamicType = ()> + Clone,
{
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    if let Some(r) = controller_of(obj.meta()) {
        if r.kind == O::kind(&()) {
            return vec![ObjectRef::new(&r.name).within(&ns)];
        }
        return Vec::new();
    }
    let labels = obj.meta().labels.clone().unwrap_or_default();
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns.as_str()))
        .filter(|o| selector_of(o).is_some_and(|s| Selector::new(s).matches(&labels)))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Claims objects for a controller, as upstream's `ControllerRefManager`: returns those it
/// owns and that match `selector`, after adopting matching orphans (when `can_adopt`) and
/// releasing owned objects that no longer match. Objects being deleted are not adopted.
/// Adoption and release are merge patches conditioned on the object's resourceVersion; an
/// object that changed meanwhile is skipped (the next reconcile sees it again).
pub async fn claim<K>(
    api: &Api<K>,
    owner: &OwnerReference,
    selector: &Selector,
    objects: Vec<K>,
    can_adopt: bool,
) -> Result<Vec<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let mut owned = Vec::new();
    for obj in objects {
        let labels = obj.meta().labels.clone().unwrap_or_default();
        let matches = selector.matches(&labels);
        let refs = obj.meta().owner_references.clone().unwrap_or_default();
        match controller_of(obj.meta()) {
            Some(r) if r.uid == owner.uid => {
                if matches {
                    owned.push(obj);
                } else {
                    let kept: Vec<_> = refs.into_iter().filter(|r| r.uid != owner.uid).collect();
                    set_owner_refs(api, &obj, kept).await?;
                }
            }
            Some(_) => {}
            None => {
                if !can_adopt || !matches || obj.meta().deletion_timestamp.is_some() {
                    continue;
                }
                let mut refs = refs;
                refs.push(owner.clone());
                if let Some(adopted) = set_owner_refs(api, &obj, refs).await? {
                    owned.push(adopted);
                }
            }
        }
    }
    Ok(owned)
}

/// Replaces an object's ownerReferences if it has not changed since it was read.
async fn set_owner_refs<K>(
    api: &Api<K>,
    obj: &K,
    refs: Vec<OwnerReference>,
) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let patch = json!({
        "metadata": {
            "resourceVersion": obj.meta().resource_version,
            "ownerReferences": refs,
        }
    });
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {
            tracing::debug!(name = %obj.name_any(), code = s.code, "ownerReferences not updated");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A pod to create from `template` for the controller `owner`, named `<prefix>-<random>` by the
/// API server (generateName), with the template's labels, annotations and spec.
pub fn pod_from_template(template: &PodTemplateSpec, prefix: &str, owner: OwnerReference) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// A ControllerRevision's `data` for a DaemonSet or StatefulSet template, as upstream's
/// `getPatch`: a strategic merge patch that replaces `spec.template` (what `kubectl rollout
/// undo` applies).
pub fn revision_data(template: &PodTemplateSpec) -> RawExtension {
    let mut template = serde_json::to_value(template).unwrap_or_default();
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".into(), json!("replace"));
    }
    RawExtension(json!({ "spec": { "template": template } }))
}

/// Whether a pod counts towards its controller: not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// When the pod's Ready condition turned true, if it is ready.
fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether the pod's Ready condition is true.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since + SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now,
    }
}

/// How long until a ready pod becomes available, if it is ready but not yet available.
pub fn until_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<SignedDuration> {
    let since = ready_since(pod)??;
    let at = since + SignedDuration::from_secs(i64::from(min_ready_seconds));
    (at > now).then(|| at.duration_since(now))
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.annotations()
        .get(POD_DELETION_COST)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// Sorts pods so that those to delete first come first, as upstream's `ActivePodsWithRanks`:
/// unscheduled before scheduled; pending before unknown before running; not ready before
/// ready; lower pod-deletion-cost first; more pods of the same controller on the node first;
/// ready for less time first; more restarts first; newer first.
pub fn sort_for_deletion(pods: &mut [Pod]) {
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for p in pods.iter() {
        let node = node_of(p);
        if !node.is_empty() {
            *per_node.entry(node.to_string()).or_default() += 1;
        }
    }
    let rank = |p: &Pod| per_node.get(node_of(p)).copied().unwrap_or(0);
    pods.sort_by(|a, b| {
        let assigned = |p: &Pod| !node_of(p).is_empty();
        assigned(a)
            .cmp(&assigned(b))
            .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
            .then_with(|| is_ready(a).cmp(&is_ready(b)))
            .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
            .then_with(|| rank(b).cmp(&rank(a)))
            .then_with(
                || match (ready_since(a).flatten(), ready_since(b).flatten()) {
                    // Ready more recently first.
                    (Some(x), Some(y)) => y.cmp(&x),
                    _ => Ordering::Equal,
                },
            )
            .then_with(|| restarts(b).cmp(&restarts(a)))
            .then_with(|| {
                let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                created(b).cmp(&created(a))
            })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(name: &str, phase: &str, ready: bool, node: &str, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(Timestamp::from_second(created).unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn deletion_order_follows_upstream_ranks() {
        let mut pods = vec![
            pod("old-ready", "Running", true, "n1", 100),
            pod("new-ready", "Running", true, "n1", 200),
            pod("not-ready", "Running", false, "n1", 50),
            pod("pending", "Pending", false, "n1", 10),
            pod("unscheduled", "Pending", false, "", 1),
        ];
        sort_for_deletion(&mut pods);
        let names: Vec<_> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "not-ready",
                "new-ready",
                "old-ready"
            ]
        );
    }

    #[test]
    fn availability_honours_min_ready_seconds() {
        let p = pod("p", "Running", true, "", 100);
        let now = Timestamp::from_second(105).unwrap();
        assert!(is_available(&p, 0, now));
        assert!(is_available(&p, 5, now));
        assert!(!is_available(&p, 6, now));
        assert_eq!(
            until_available(&p, 10, now),
            Some(SignedDuration::from_secs(5))
        );
        assert!(!is_available(&pod("q", "Running", false, "", 1), 0, now));
    }

    #[test]
    fn empty_selector_matches_nothing() {
        let s = Selector::new(&LabelSelector::default());
        assert!(!s.matches(&BTreeMap::from([("a".into(), "b".into())])));
        let s = Selector::new(&LabelSelector {
            match_labels: Some(BTreeMap::from([("a".into(), "b".into())])),
            ..Default::default()
        });
        assert!(s.matches(&BTreeMap::from([("a".into(), "b".into())])));
        assert!(!s.matches(&BTreeMap::new()));
    }
}
