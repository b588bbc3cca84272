//! Deployment arithmetic and bookkeeping, after upstream's
//! `pkg/controller/deployment/util/deployment_util.go`: the pod-template hash, maxSurge and
//! maxUnavailable resolution, revisions and the annotations carried by ReplicaSets, and sums
//! over ReplicaSets.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label a Deployment adds to its ReplicaSets' selectors and templates.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// A ReplicaSet's (and its Deployment's) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions of a ReplicaSet that was rolled back to.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations not copied onto its ReplicaSets.
const SKIP_COPY: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template hash: FNV-32a over the template's canonical JSON (upstream hashes a
/// deep print of the Go struct), then the collision count as 8 little-endian bytes when set,
/// and the decimal value mapped onto upstream's vowel-free alphabet (`SafeEncodeString`).
/// Stable for a given template and collision count.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let mut h = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    feed(&serde_json::to_vec(&canonical(template)).unwrap_or_default());
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&c.to_le_bytes());
        feed(&bytes);
    }
    h.to_string()
        .bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

/// A template as JSON with empty objects, empty lists and nulls removed, so that templates
/// equal in upstream's semantic sense (where an empty struct or list equals an absent one, as
/// `"resources": {}` written back by `kubectl rollout undo`) compare and hash equal.
fn canonical(template: &PodTemplateSpec) -> serde_json::Value {
    fn prune(v: serde_json::Value) -> Option<serde_json::Value> {
        use serde_json::Value;
        match v {
            Value::Null => None,
            Value::Object(m) => {
                let m: serde_json::Map<_, _> = m
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, prune(v)?)))
                    .collect();
                (!m.is_empty()).then_some(Value::Object(m))
            }
            Value::Array(a) => {
                let a: Vec<_> = a
                    .into_iter()
                    .map(|v| prune(v).unwrap_or(Value::Object(Default::default())))
                    .collect();
                (!a.is_empty()).then_some(Value::Array(a))
            }
            other => Some(other),
        }
    }
    prune(serde_json::to_value(template).unwrap_or_default()).unwrap_or_default()
}

/// Whether two templates are equal once the pod-template-hash label is removed from both.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH);
        }
        canonical(&t)
    };
    strip(a) == strip(b)
}

/// `value` of `total`: an absolute count or a percentage, rounded up or down.
pub fn scaled_value(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match value {
        None => 0,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let num = pct * i64::from(total);
            let v = if round_up {
                (num + 99) / 100
            } else {
                num / 100
            };
            i32::try_from(v).unwrap_or(i32::MAX)
        }
    }
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The Deployment's desired replicas.
pub fn desired(d: &Deployment) -> i32 {
    replicas(d)
}

/// Whether the Deployment uses the RollingUpdate strategy.
pub fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// maxSurge and maxUnavailable as counts (upstream's `ResolveFenceposts`): surge rounds up,
/// unavailable down, and when both come out 0 unavailable is 1 so a rollout can progress.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let total = replicas(d);
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), total, true);
    let unavailable = scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), total, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// maxSurge as a count (0 unless RollingUpdate).
pub fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) { fenceposts(d).0 } else { 0 }
}

/// maxUnavailable as a count, at most the replicas (0 unless RollingUpdate with replicas).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let total = replicas(d);
    if !is_rolling(d) || total == 0 {
        return 0;
    }
    fenceposts(d).1.min(total)
}

/// A ReplicaSet's spec.replicas.
pub fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// Sum of spec.replicas.
pub fn sum_spec(sets: &[ReplicaSet]) -> i32 {
    sets.iter().map(spec_replicas).sum()
}

/// Sum of status.replicas (pods that exist).
pub fn sum_actual(sets: &[ReplicaSet]) -> i32 {
    sets.iter()
        .map(|r| r.status.as_ref().map_or(0, |s| s.replicas))
        .sum()
}

/// Sum of status.readyReplicas.
pub fn sum_ready(sets: &[ReplicaSet]) -> i32 {
    sets.iter()
        .map(|r| {
            r.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        })
        .sum()
}

/// A ReplicaSet's available pods, capped at its spec.replicas: pods above that are about to
/// be deleted, so counting them would let a rolling update scale down too far while the
/// ReplicaSet's status lags (a tightening of upstream, which counts status alone).
pub fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
        .min(spec_replicas(rs))
}

/// Sum of [`available`].
pub fn sum_available(sets: &[ReplicaSet]) -> i32 {
    sets.iter().map(available).sum()
}

/// The ReplicaSet's revision (0 when unset or unparsable).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The highest revision among `sets`.
pub fn max_revision(sets: &[ReplicaSet]) -> i64 {
    sets.iter().map(revision).max().unwrap_or(0)
}

/// Sets the annotations a Deployment puts on its new ReplicaSet (upstream's
/// `SetNewReplicaSetAnnotations`): the Deployment's own annotations (minus bookkeeping ones),
/// the revision `new_revision` if higher than the current one (keeping the old revision in
/// the revision history, as happens on a rollback), and the replica annotations on a new
/// ReplicaSet. Returns whether anything changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    annotations: &mut BTreeMap<String, String>,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if SKIP_COPY.contains(&k.as_str()) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = annotations.get(REVISION).cloned();
    let old_num: i64 = old.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    if old_num < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = match annotations.get(REVISION_HISTORY) {
                Some(h) if !h.is_empty() => format!("{h},{old}"),
                _ => old,
            };
            annotations.insert(REVISION_HISTORY.into(), history);
        }
    }
    if !exists {
        changed |= set_replicas_annotations(annotations, desired(d), desired(d) + max_surge(d));
    }
    changed
}

/// Sets the desired- and max-replicas annotations; returns whether they changed.
pub fn set_replicas_annotations(
    annotations: &mut BTreeMap<String, String>,
    desired: i32,
    max: i32,
) -> bool {
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if annotations.get(k) != Some(&v) {
            annotations.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

/// An annotation parsed as a count.
pub fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// How many replicas the new ReplicaSet should have now (upstream's `NewRSNewReplicas`):
/// for RollingUpdate, grow it as far as maxSurge allows; for Recreate, the full count.
/// Pods counted per ReplicaSet are the larger of spec and status replicas, so pods of a
/// scaled-down ReplicaSet that still exist keep the total within replicas + maxSurge.
pub fn new_rs_new_replicas(d: &Deployment, all: &[ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    if !is_rolling(d) {
        return desired(d);
    }
    let current: i32 = all
        .iter()
        .map(|r| spec_replicas(r).max(r.status.as_ref().map_or(0, |s| s.replicas)))
        .sum();
    let max_total = desired(d) + max_surge(d);
    if current >= max_total {
        return spec_replicas(new_rs);
    }
    let up = (max_total - current).min(desired(d) - spec_replicas(new_rs));
    spec_replicas(new_rs) + up.max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deploy(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(&deploy(10, pct("25%"), pct("25%"))), (3, 2));
        assert_eq!(fenceposts(&deploy(4, pct("25%"), pct("25%"))), (1, 1));
        assert_eq!(fenceposts(&deploy(1, pct("25%"), pct("25%"))), (1, 0));
        assert_eq!(
            fenceposts(&deploy(3, IntOrString::Int(0), IntOrString::Int(0))),
            (0, 1)
        );
        assert_eq!(
            max_unavailable(&deploy(2, pct("0%"), IntOrString::Int(5))),
            2
        );
    }

    #[test]
    fn hash_is_stable_and_depends_on_template_and_collisions() {
        let t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "x".into())])),
                ..Default::default()
            }),
            spec: None,
        };
        let h = pod_template_hash(&t, None);
        assert_eq!(h, pod_template_hash(&t.clone(), None));
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        assert_ne!(h, pod_template_hash(&t, Some(1)));
        let mut other = t.clone();
        if let Some(l) = other.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert("v".into(), "2".into());
        }
        assert_ne!(h, pod_template_hash(&other, None));
        let mut hashed = t.clone();
        if let Some(l) = hashed.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.insert(POD_TEMPLATE_HASH.into(), h.clone());
        }
        assert!(equal_ignore_hash(&t, &hashed));
        assert!(!equal_ignore_hash(&t, &other));
    }

    #[test]
    fn empty_structs_equal_absent_ones() {
        use k8s_openapi::api::core::v1::{Container, PodSpec};
        let with = |resources| PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    resources,
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let a = with(None);
        let b = with(Some(Default::default()));
        assert!(equal_ignore_hash(&a, &b));
        assert_eq!(pod_template_hash(&a, None), pod_template_hash(&b, None));
    }

    #[test]
    fn rollback_keeps_revision_history() {
        let d = deploy(1, IntOrString::Int(1), IntOrString::Int(0));
        let mut a = BTreeMap::from([(REVISION.to_string(), "1".to_string())]);
        assert!(set_new_rs_annotations(&d, &mut a, 3, true));
        assert_eq!(a[REVISION], "3");
        assert_eq!(a[REVISION_HISTORY], "1");
        assert!(!set_new_rs_annotations(&d, &mut a, 3, true));
    }
}
