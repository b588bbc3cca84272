//! ResourceQuota accounting (no I/O), shared by the quota controller and the API server's
//! quota admission, after upstream's `pkg/quota/v1/evaluator/core`: what one object counts
//! against a quota, quantities as integer milli-units, and the messages of a refused create.
//!
//! Counted: pods (`pods`, `count/pods`, `requests.cpu` / `cpu`, `requests.memory` / `memory`,
//! `limits.cpu`, `limits.memory`, `requests.ephemeral-storage`, `limits.ephemeral-storage` —
//! not counted once Succeeded or Failed), services (`services`, `services.loadbalancers`,
//! `services.nodeports`: every port of a NodePort or LoadBalancer service, only those naming
//! a node port when a LoadBalancer does not allocate them), persistentvolumeclaims
//! (`persistentvolumeclaims`, `requests.storage` — the request, or the allocated size when
//! larger — and both per StorageClass as `<class>.storageclass.storage.k8s.io/<name>`),
//! `configmaps`, `secrets`, `replicationcontrollers`, `resourcequotas`, and
//! `count/<resource>[.<group>]` of every namespaced kind. [`growth`] is what an update adds.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::resources::validation::parse_quantity;

/// Usage in milli-units per resource name.
pub type Usage = BTreeMap<String, i64>;

/// A quantity in milli-units (rounded up), 0 when it does not parse. Decimal quantities are
/// read exactly (`700m` is 700, not the 701 that `0.7 * 1000.0` rounds up to in floating
/// point); only ones beyond `i64` or with an unusual exponent go through `f64`.
pub fn milli(q: &str) -> i64 {
    exact_milli(q).unwrap_or_else(|| {
        let v = parse_quantity(q).unwrap_or(0.0) * 1000.0;
        // Quantities of any realistic size fit; the cast saturates otherwise.
        v.ceil() as i64
    })
}

/// `milli` in integer arithmetic: digits, an optional fraction, then a suffix.
fn exact_milli(q: &str) -> Option<i64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let (negative, num) = match num.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut mantissa: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(i128::from(b - b'0'))?;
    }
    let (binary, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        e if e.starts_with(['e', 'E']) => (1, e[1..].parse().ok()?),
        _ => return None,
    };
    // value * 1000 = mantissa * binary * 10^(exp10 + 3 - fraction digits)
    let scale = exp10 + 3 - i32::try_from(frac.len()).ok()?;
    let mut v = mantissa.checked_mul(binary)?;
    if scale >= 0 {
        v = v.checked_mul(10i128.checked_pow(u32::try_from(scale).ok()?)?)?;
    } else {
        let d = 10i128.checked_pow(scale.unsigned_abs())?;
        v = (v + d - 1) / d;
    }
    let v = i64::try_from(v).ok()?;
    Some(if negative { -v } else { v })
}

/// Milli-units written back as a quantity: whole units plainly (`2`, `536870912` as `512Mi`
/// when it is a whole number of Ki/Mi/Gi/Ti), the rest as `NNNm`.
pub fn format(milli_value: i64) -> String {
    if milli_value % 1000 != 0 {
        return format!("{milli_value}m");
    }
    let units = milli_value / 1000;
    if units >= 1024 {
        for (suffix, size) in [
            ("Ti", 1i64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if units % size == 0 {
                return format!("{}{suffix}", units / size);
            }
        }
    }
    units.to_string()
}

/// The legacy object-count names of core kinds (`configmaps` as well as
/// `count/configmaps`).
const LEGACY_COUNTS: [&str; 6] = [
    "pods",
    "services",
    "configmaps",
    "secrets",
    "replicationcontrollers",
    "resourcequotas",
];

/// The `count/` name of a resource: `count/pods`, `count/deployments.apps`.
pub fn count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// Whether a pod has finished (it no longer counts).
fn terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// A pod's request or limit of `resource`: the sum over its containers, at least the
/// largest init container's. `None` for a container that lacks it.
fn pod_amount(pod: &Value, kind: &str, resource: &str) -> i64 {
    let of = |c: &Value| {
        c["resources"][kind][resource]
            .as_str()
            .map(milli)
            .or_else(|| {
                // A limit without a request: the request defaults to the limit.
                (kind == "requests")
                    .then(|| c["resources"]["limits"][resource].as_str().map(milli))
                    .flatten()
            })
            .unwrap_or(0)
    };
    let sum: i64 = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(of)
        .sum();
    let init = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(of)
        .max()
        .unwrap_or(0);
    sum.max(init)
}

/// The middle of the per-StorageClass quota names:
/// `gold.storageclass.storage.k8s.io/requests.storage`.
pub const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// A claim's StorageClass: the beta annotation, else `spec.storageClassName`.
fn claim_class(pvc: &Value) -> &str {
    pvc["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"]
        .as_str()
        .or_else(|| pvc["spec"]["storageClassName"].as_str())
        .unwrap_or("")
}

/// The storage a claim counts (upstream's `getStorageUsage`): its request, or what was
/// allocated to it when that is more (a resize that did not finish), in whole bytes.
fn claim_storage(pvc: &Value) -> Option<i64> {
    let whole = |m: i64| m.saturating_add(999) / 1000 * 1000;
    let requested = whole(milli(
        pvc["spec"]["resources"]["requests"]["storage"].as_str()?,
    ));
    let allocated = pvc["status"]["allocatedResources"]["storage"]
        .as_str()
        .map_or(0, |q| whole(milli(q)));
    Some(requested.max(allocated))
}

/// `new - old` per resource, never below zero, without the resources that did not grow
/// (upstream's `SubtractWithNonNegativeResult`, then `RemoveZeros`): what an update adds.
pub fn growth(new: &Usage, old: &Usage) -> Usage {
    new.iter()
        .map(|(k, v)| (k.clone(), v - old.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// What one object counts against quotas.
pub fn usage(group: &str, plural: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    if group.is_empty() && plural == "pods" && terminal(obj) {
        return u;
    }
    u.insert(count_name(group, plural), 1000);
    if group.is_empty() && LEGACY_COUNTS.contains(&plural) {
        u.insert(plural.to_string(), 1000);
    }
    match (group, plural) {
        ("", "pods") => {
            for res in ["cpu", "memory", "ephemeral-storage"] {
                let req = pod_amount(obj, "requests", res);
                u.insert(format!("requests.{res}"), req);
                if res != "ephemeral-storage" {
                    u.insert(res.to_string(), req);
                }
                u.insert(format!("limits.{res}"), pod_amount(obj, "limits", res));
            }
        }
        ("", "services") => {
            let type_ = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
            let ports = obj["spec"]["ports"].as_array().map(Vec::as_slice);
            let ports = ports.unwrap_or_default();
            let node_ports = match type_ {
                "NodePort" => ports.len(),
                // Without node port allocation only the ports that name one count.
                "LoadBalancer" if obj["spec"]["allocateLoadBalancerNodePorts"] == false => ports
                    .iter()
                    .filter(|p| p["nodePort"].as_i64().is_some_and(|n| n != 0))
                    .count(),
                "LoadBalancer" => ports.len(),
                _ => 0,
            };
            let lbs = i64::from(type_ == "LoadBalancer");
            u.insert("services.loadbalancers".into(), lbs * 1000);
            u.insert(
                "services.nodeports".into(),
                i64::try_from(node_ports).unwrap_or(0) * 1000,
            );
        }
        ("", "persistentvolumeclaims") => {
            u.insert("persistentvolumeclaims".into(), 1000);
            let class = claim_class(obj);
            if !class.is_empty() {
                u.insert(
                    format!("{class}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"),
                    1000,
                );
            }
            if let Some(storage) = claim_storage(obj) {
                u.insert("requests.storage".into(), storage);
                if !class.is_empty() {
                    u.insert(
                        format!("{class}{STORAGE_CLASS_SUFFIX}requests.storage"),
                        storage,
                    );
                }
            }
        }
        _ => {}
    }
    u
}

/// The resources a pod's containers must state because a quota limits them (upstream's
/// "must specify" check): `requests.cpu for: app` per missing resource, sorted.
pub fn missing_specs(pod: &Value, hard: &Usage) -> Vec<String> {
    let mut out = vec![];
    for (kind, short) in [("requests", "requests"), ("limits", "limits")] {
        for res in ["cpu", "memory"] {
            let name = format!("{short}.{res}");
            let tracked =
                hard.contains_key(&name) || (kind == "requests" && hard.contains_key(res));
            if !tracked {
                continue;
            }
            let lacking: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| {
                    c["resources"][kind][res].is_null()
                        && (kind == "limits" || c["resources"]["limits"][res].is_null())
                })
                .filter_map(|c| c["name"].as_str())
                .collect();
            if !lacking.is_empty() {
                out.push(format!("{name} for: {}", lacking.join(",")));
            }
        }
    }
    out
}

/// A quota's `hard` or `used` map in milli-units.
pub fn parse_list(list: &Value) -> Usage {
    list.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|q| (k.clone(), milli(q))))
        .collect()
}

/// `k=v,k=v` of the given resources, as upstream prints them.
pub fn pretty(usage: &Usage, keys: &[&String]) -> String {
    keys.iter()
        .map(|k| format!("{k}={}", format(usage.get(*k).copied().unwrap_or(0))))
        .collect::<Vec<_>>()
        .join(",")
}

/// The resources of `delta` that would go over `hard` on top of `used`, sorted.
pub fn exceeded<'a>(hard: &'a Usage, used: &Usage, delta: &Usage) -> Vec<&'a String> {
    hard.iter()
        .filter(|(k, limit)| {
            let add = delta.get(*k).copied().unwrap_or(0);
            add > 0 && used.get(*k).copied().unwrap_or(0) + add > **limit
        })
        .map(|(k, _)| k)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_usage_sums_containers_and_counts() {
        let pod = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
                {"name": "b", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}},
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
        }});
        let u = usage("", "pods", &pod);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["count/pods"], 1000);
        assert_eq!(u["requests.cpu"], 2000, "the init container's 2 beats 750m");
        assert_eq!(u["requests.memory"], 192 * 1024 * 1024 * 1000);
        assert_eq!(u["limits.cpu"], 1500);
        assert_eq!(format(u["requests.memory"]), "192Mi");
        assert_eq!(format(750), "750m");
        assert_eq!(format(2000), "2");
        let done = json!({"spec": {}, "status": {"phase": "Succeeded"}});
        assert!(usage("", "pods", &done).is_empty());
    }

    #[test]
    fn milli_units_are_exact() {
        assert_eq!(milli("700m"), 700);
        assert_eq!(milli("0.7"), 700);
        assert_eq!(milli("1.1"), 1100);
        assert_eq!(milli("1"), 1000);
        assert_eq!(milli("128Mi"), 128 * 1024 * 1024 * 1000);
        assert_eq!(milli("1.5Gi"), 3 * 512 * 1024 * 1024 * 1000);
        assert_eq!(milli("2k"), 2_000_000);
        assert_eq!(milli("1e3"), 1_000_000);
        assert_eq!(milli("1n"), 1, "rounded up");
        assert_eq!(milli("250u"), 1);
        assert_eq!(milli("-2"), -2000);
        assert_eq!(milli("x"), 0);
        assert_eq!(milli(""), 0);
    }

    #[test]
    fn counts_of_other_kinds() {
        let svc = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}});
        let u = usage("", "services", &svc);
        assert_eq!(
            (
                u["services"],
                u["services.loadbalancers"],
                u["services.nodeports"]
            ),
            (1000, 1000, 2000)
        );
        let u = usage("apps", "deployments", &json!({}));
        assert_eq!(u.keys().collect::<Vec<_>>(), ["count/deployments.apps"]);
        let pvc = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        assert_eq!(
            format(usage("", "persistentvolumeclaims", &pvc)["requests.storage"]),
            "1Gi"
        );
    }

    #[test]
    fn claims_by_storage_class_and_allocation() {
        let pvc = json!({
            "metadata": {"annotations": {}},
            "spec": {"storageClassName": "gold", "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"allocatedResources": {"storage": "2Gi"}},
        });
        let u = usage("", "persistentvolumeclaims", &pvc);
        assert_eq!(format(u["requests.storage"]), "2Gi", "allocated is larger");
        assert_eq!(
            format(u["gold.storageclass.storage.k8s.io/requests.storage"]),
            "2Gi"
        );
        assert_eq!(
            u["gold.storageclass.storage.k8s.io/persistentvolumeclaims"],
            1000
        );
        let beta = json!({
            "metadata": {"annotations": {"volume.beta.kubernetes.io/storage-class": "old"}},
            "spec": {"storageClassName": "gold", "resources": {"requests": {"storage": "1500m"}}},
        });
        let u = usage("", "persistentvolumeclaims", &beta);
        assert_eq!(u["requests.storage"], 2000, "whole bytes, rounded up");
        assert!(u.contains_key("old.storageclass.storage.k8s.io/requests.storage"));
        assert!(!u.contains_key("gold.storageclass.storage.k8s.io/requests.storage"));
        let classless = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        let u = usage("", "persistentvolumeclaims", &classless);
        assert_eq!(
            u.keys().collect::<Vec<_>>(),
            [
                "count/persistentvolumeclaims",
                "persistentvolumeclaims",
                "requests.storage"
            ]
        );
    }

    #[test]
    fn growth_is_what_an_update_adds() {
        let small = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        let big = json!({"spec": {"resources": {"requests": {"storage": "3Gi"}}}});
        let (s, b) = (
            usage("", "persistentvolumeclaims", &small),
            usage("", "persistentvolumeclaims", &big),
        );
        let g = growth(&b, &s);
        assert_eq!(g.keys().collect::<Vec<_>>(), ["requests.storage"]);
        assert_eq!(format(g["requests.storage"]), "2Gi");
        assert!(growth(&s, &b).is_empty(), "shrinking adds nothing");
        let svc = |t: &str| json!({"spec": {"type": t, "ports": [{"port": 80}]}});
        let g = growth(
            &usage("", "services", &svc("NodePort")),
            &usage("", "services", &svc("ClusterIP")),
        );
        assert_eq!(g.keys().collect::<Vec<_>>(), ["services.nodeports"]);
        let lb = json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
            "ports": [{"port": 80, "nodePort": 30080}, {"port": 443}]}});
        let u = usage("", "services", &lb);
        assert_eq!(
            (u["services.loadbalancers"], u["services.nodeports"]),
            (1000, 1000)
        );
    }

    #[test]
    fn exceeded_and_missing() {
        let hard = parse_list(&json!({"pods": "2", "requests.cpu": "1"}));
        let used = parse_list(&json!({"pods": "2", "requests.cpu": "500m"}));
        let pod = json!({"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "100m"}}}]}});
        let delta = usage("", "pods", &pod);
        let over = exceeded(&hard, &used, &delta);
        assert_eq!(over, ["pods"]);
        assert_eq!(pretty(&delta, &over), "pods=1");
        assert!(missing_specs(&pod, &hard).is_empty());
        let bare = json!({"spec": {"containers": [{"name": "app"}]}});
        assert_eq!(missing_specs(&bare, &hard), ["requests.cpu for: app"]);
    }
}
