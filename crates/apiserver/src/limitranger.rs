//! LimitRange admission, as upstream's LimitRanger plugin:
//! - mutating (before validation): a container without a limit (request) of a resource gets
//!   the `Container` range's `default` (`defaultRequest`), and the pod the annotation
//!   `kubernetes.io/limit-ranger: LimitRanger plugin set: cpu request for container app; ...`;
//! - validating (after it): `min` (requests and limits at least), `max` (limits, and requests,
//!   at most; a limit must then be given) and `maxLimitRequestRatio`, of each container
//!   against `Container` limits and of the pod's totals (containers summed, at least the
//!   largest init container) against `Pod` limits; a PersistentVolumeClaim's requests against
//!   `PersistentVolumeClaim` `min` / `max`. Refused with 403 and upstream's messages
//!   (`minimum cpu usage per Container is 100m, but request is 50m`, `maximum cpu usage per
//!   Pod is 1, but limit is 1200m`, `maximum storage usage per PersistentVolumeClaim is 2Gi,
//!   but request is 5Gi`; several in `[..., ...]`). The checks run on creates of both, and on
//!   updates of claims (a resize past `max` is refused), as upstream's plugin does.

use api::quota::{self, milli};
use api::{ApiError, ResourceInfo};
use serde_json::{Value, json};

use crate::objects;
use crate::state::ApiState;

/// The annotation naming what defaults were set.
const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Fills defaults into the pod's containers; returns what was set.
pub fn apply_defaults(pod: &mut Value, ranges: &[Value]) -> Vec<String> {
    let limits: Vec<Value> = items(ranges, "Container").cloned().collect();
    let mut set = vec![];
    for list in ["initContainers", "containers"] {
        let Some(containers) = pod["spec"][list].as_array_mut() else {
            continue;
        };
        for c in containers {
            let name = c["name"].as_str().unwrap_or("").to_string();
            for l in &limits {
                for (field, kind, word) in [
                    ("defaultRequest", "requests", "request"),
                    ("default", "limits", "limit"),
                ] {
                    for (res, q) in l[field].as_object().into_iter().flatten() {
                        if !c["resources"][kind][res].is_null() {
                            continue;
                        }
                        if !c["resources"].is_object() {
                            c["resources"] = json!({});
                        }
                        if !c["resources"][kind].is_object() {
                            c["resources"][kind] = json!({});
                        }
                        c["resources"][kind][res] = q.clone();
                        set.push(format!(
                            "{res} {word} for {} {name}",
                            &list[..list.len() - 1]
                        ));
                    }
                }
            }
        }
    }
    set.iter_mut()
        .for_each(|s| *s = s.replace("initContainer ", "init container "));
    set
}

/// An observed amount: its value in milli-units and how it is printed.
type Amount = Option<(i64, String)>;

fn amount(q: Option<&str>) -> Amount {
    q.map(|q| (milli(q), q.to_string()))
}

/// Upstream's `minConstraint` for one resource of a `kind` (`Container`, `Pod`).
fn min_constraint(kind: &str, res: &str, min: &str, req: &Amount, lim: &Amount) -> Option<String> {
    let enforced = milli(min);
    match (req, lim) {
        (None, _) => Some(format!(
            "minimum {res} usage per {kind} is {min}.  No request is specified"
        )),
        (Some((r, shown)), _) if *r < enforced => Some(format!(
            "minimum {res} usage per {kind} is {min}, but request is {shown}"
        )),
        (_, Some((l, shown))) if *l < enforced => Some(format!(
            "minimum {res} usage per {kind} is {min}, but limit is {shown}"
        )),
        _ => None,
    }
}

/// Upstream's `maxConstraint` for one resource of a `kind`.
fn max_constraint(kind: &str, res: &str, max: &str, req: &Amount, lim: &Amount) -> Option<String> {
    let enforced = milli(max);
    match (req, lim) {
        (_, None) => Some(format!(
            "maximum {res} usage per {kind} is {max}.  No limit is specified"
        )),
        (_, Some((l, shown))) if *l > enforced => Some(format!(
            "maximum {res} usage per {kind} is {max}, but limit is {shown}"
        )),
        (Some((r, shown)), _) if *r > enforced => Some(format!(
            "maximum {res} usage per {kind} is {max}, but request is {shown}"
        )),
        _ => None,
    }
}

/// Upstream's `limitRequestRatioConstraint` for one resource of a `kind`.
fn ratio_constraint(
    kind: &str,
    res: &str,
    ratio: &str,
    req: &Amount,
    lim: &Amount,
) -> Option<String> {
    let (l, _) = lim.as_ref()?;
    match req.as_ref().map(|(r, _)| *r).filter(|r| *r > 0) {
        None => Some(format!(
            "{res} max limit to request ratio per {kind} is {ratio}, but no request is specified or request is 0"
        )),
        Some(r) => {
            let actual = *l as f64 / r as f64;
            (actual > milli(ratio) as f64 / 1000.0).then(|| {
                format!(
                    "{res} max limit to request ratio per {kind} is {ratio}, but provided ratio is {actual:.6}"
                )
            })
        }
    }
}

/// Checks `req` / `lim` of every resource a limit item names (min, max, ratio) for `kind`.
fn check_item(
    kind: &str,
    item: &Value,
    req: impl Fn(&str) -> Amount,
    lim: impl Fn(&str) -> Amount,
) -> Vec<String> {
    let mut errs = vec![];
    let entries = |field: &str| {
        item[field]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("0").to_string()))
            .collect::<Vec<_>>()
    };
    // One error per constraint, the first that applies (upstream's minConstraint and
    // maxConstraint).
    for (res, min) in entries("min") {
        errs.extend(min_constraint(kind, &res, &min, &req(&res), &lim(&res)));
    }
    for (res, max) in entries("max") {
        errs.extend(max_constraint(kind, &res, &max, &req(&res), &lim(&res)));
    }
    for (res, ratio) in entries("maxLimitRequestRatio") {
        errs.extend(ratio_constraint(kind, &res, &ratio, &req(&res), &lim(&res)));
    }
    errs
}

/// A pod's total request or limit of a resource, as upstream's LimitRanger sums it: the
/// containers' sum, at least the largest init container's; `None` when no container names it.
fn pod_total(pod: &Value, kind: &str, res: &str) -> Amount {
    let of = |list: &str| -> Vec<i64> {
        pod["spec"][list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["resources"][kind][res].as_str().map(milli))
            .collect()
    };
    let (regular, init) = (of("containers"), of("initContainers"));
    if regular.is_empty() && init.is_empty() {
        return None;
    }
    let total = regular
        .iter()
        .sum::<i64>()
        .max(init.into_iter().max().unwrap_or(0));
    Some((total, quota::format(total)))
}

/// The limit items of one type.
fn items<'a>(ranges: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    ranges
        .iter()
        .flat_map(|r| r["spec"]["limits"].as_array().into_iter().flatten())
        .filter(move |l| l["type"] == kind)
}

/// What a pod breaks of the ranges: each container against the `Container` limits, then
/// the pod's totals against the `Pod` limits.
pub fn violations(pod: &Value, ranges: &[Value]) -> Vec<String> {
    let mut errs = vec![];
    let containers = ["initContainers", "containers"]
        .into_iter()
        .flat_map(|l| pod["spec"][l].as_array().into_iter().flatten());
    for c in containers {
        for l in items(ranges, "Container") {
            errs.extend(check_item(
                "Container",
                l,
                |r| amount(c["resources"]["requests"][r].as_str()),
                |r| amount(c["resources"]["limits"][r].as_str()),
            ));
        }
    }
    for l in items(ranges, "Pod") {
        errs.extend(check_item(
            "Pod",
            l,
            |r| pod_total(pod, "requests", r),
            |r| pod_total(pod, "limits", r),
        ));
    }
    errs
}

/// What a PersistentVolumeClaim breaks of the ranges' `PersistentVolumeClaim` limits: `min`
/// against its requests (upstream's `minConstraint`, no limits), `max` against its requests
/// (`maxRequestConstraint`).
pub fn claim_violations(pvc: &Value, ranges: &[Value]) -> Vec<String> {
    let kind = "PersistentVolumeClaim";
    let req = |r: &str| amount(pvc["spec"]["resources"]["requests"][r].as_str());
    let mut errs = vec![];
    for l in items(ranges, kind) {
        for (res, min) in l["min"].as_object().into_iter().flatten() {
            let min = min.as_str().unwrap_or("0");
            errs.extend(min_constraint(kind, res, min, &req(res), &None));
        }
        for (res, max) in l["max"].as_object().into_iter().flatten() {
            let max = max.as_str().unwrap_or("0");
            let err = match req(res) {
                None => Some(format!(
                    "maximum {res} usage per {kind} is {max}.  No request is specified"
                )),
                Some((r, shown)) if r > milli(max) => Some(format!(
                    "maximum {res} usage per {kind} is {max}, but request is {shown}"
                )),
                Some(_) => None,
            };
            errs.extend(err);
        }
    }
    errs
}

/// Whether LimitRanger validates a write, as upstream's `SupportsAttributes`: pods and
/// claims, never a subresource (`status`), and no pod update (a pod's resources cannot change
/// outside `pods/resize`, which corten does not serve); a claim's update is validated as its
/// create.
pub fn validates(res: &ResourceInfo, update: bool, subresource: Option<&str>) -> bool {
    if !res.group.is_empty() || subresource.is_some() {
        return false;
    }
    match res.plural {
        "pods" => !update,
        "persistentvolumeclaims" => true,
        _ => false,
    }
}

impl ApiState {
    /// The LimitRanges of a namespace.
    async fn limit_ranges(&self, ns: &str) -> Result<Vec<Value>, ApiError> {
        let Some(res) = self.registry.get("", "v1", "limitranges") else {
            return Ok(vec![]);
        };
        let kvs = self.range_few(format!("{}{ns}/", res.key_prefix())).await?;
        kvs.iter().map(objects::decode).collect()
    }

    /// LimitRanger's mutating half: defaults for a new pod.
    pub async fn default_limits(&self, pod: &mut Value) -> Result<(), ApiError> {
        let Some(ns) = objects::meta_str(pod, "namespace").map(str::to_string) else {
            return Ok(());
        };
        let ranges = self.limit_ranges(&ns).await?;
        let set = apply_defaults(pod, &ranges);
        if !set.is_empty() {
            let meta = objects::meta_mut(pod);
            let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
            if !annotations.is_object() {
                *annotations = json!({});
            }
            annotations[ANNOTATION] = json!(format!("LimitRanger plugin set: {}", set.join("; ")));
        }
        Ok(())
    }

    /// LimitRanger's validating half: refuses a pod or PersistentVolumeClaim that breaks a
    /// LimitRange — on create (`old` is `None`), and on an update of a claim (a resize), which
    /// upstream validates too ([`validates`]).
    pub async fn admit_limits(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        pod: &Value,
        old: Option<&Value>,
        subresource: Option<&str>,
    ) -> Result<(), ApiError> {
        if !validates(res, old.is_some(), subresource) {
            return Ok(());
        }
        let check: fn(&Value, &[Value]) -> Vec<String> = match (res.group, res.plural) {
            ("", "pods") => violations,
            ("", "persistentvolumeclaims") => claim_violations,
            _ => return Ok(()),
        };
        let Some(ns) = ns else { return Ok(()) };
        let errs = check(pod, &self.limit_ranges(ns).await?);
        let msg = match errs.as_slice() {
            [] => return Ok(()),
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let name = objects::name(pod);
        let plural = res.plural;
        let mut e = ApiError::forbidden(format!("{plural} \"{name}\" is forbidden: {msg}"));
        e.kind = Some(plural.into());
        e.name = Some(name.to_string());
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Value {
        json!({"spec": {"limits": [{"type": "Container",
            "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "250m", "memory": "64Mi"},
            "min": {"cpu": "100m"}, "max": {"cpu": "1"}, "maxLimitRequestRatio": {"cpu": "4"}}]}})
    }

    #[test]
    fn defaults_fill_only_what_is_missing() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "app"},
            {"name": "own", "resources": {"requests": {"cpu": "300m"}}},
        ]}});
        let set = apply_defaults(&mut pod, &[range()]);
        let c = &pod["spec"]["containers"];
        assert_eq!(c[0]["resources"]["requests"]["cpu"], "250m");
        assert_eq!(c[0]["resources"]["limits"]["cpu"], "500m");
        assert_eq!(c[1]["resources"]["requests"]["cpu"], "300m");
        assert_eq!(c[1]["resources"]["requests"]["memory"], "64Mi");
        assert_eq!(set[0], "cpu request for container app");
        assert!(violations(&pod, &[range()]).is_empty());
    }

    #[test]
    fn min_max_and_ratio_with_upstream_messages() {
        let pod = json!({"spec": {"containers": [{"name": "a",
            "resources": {"requests": {"cpu": "50m"}, "limits": {"cpu": "2"}}}]}});
        assert_eq!(
            violations(&pod, &[range()]),
            [
                "minimum cpu usage per Container is 100m, but request is 50m",
                "maximum cpu usage per Container is 1, but limit is 2",
                "cpu max limit to request ratio per Container is 4, but provided ratio is 40.000000",
            ]
        );
        let bare = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(
            violations(&bare, &[range()]),
            [
                "minimum cpu usage per Container is 100m.  No request is specified",
                "maximum cpu usage per Container is 1.  No limit is specified",
            ]
        );
    }

    #[test]
    fn which_writes_are_validated() {
        let registry = api::registry::Registry::global();
        let get = |plural| registry.get("", "v1", plural).expect("core resource");
        let (pods, pvcs) = (get("pods"), get("persistentvolumeclaims"));
        assert!(validates(pods, false, None));
        assert!(!validates(pods, true, None), "pod resources cannot change");
        assert!(validates(pvcs, false, None));
        assert!(validates(pvcs, true, None), "a resize is checked");
        assert!(!validates(pvcs, true, Some("status")));
        assert!(!validates(get("configmaps"), false, None));
    }

    #[test]
    fn pod_totals_and_claims() {
        let ranges = [json!({"spec": {"limits": [
            {"type": "Pod", "max": {"cpu": "1"}, "min": {"memory": "64Mi"}},
            {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}]}})];
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"memory": "32Mi"}, "limits": {"cpu": "700m"}}},
            {"name": "b", "resources": {"requests": {"memory": "16Mi"}, "limits": {"cpu": "500m"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"memory": "40Mi"}}}]}});
        assert_eq!(
            violations(&pod, &ranges),
            [
                "minimum memory usage per Pod is 64Mi, but request is 48Mi",
                "maximum cpu usage per Pod is 1, but limit is 1200m",
            ]
        );
        let fits = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"memory": "64Mi"}, "limits": {"cpu": "1"}}}]}});
        assert!(violations(&fits, &ranges).is_empty());
        let claim = |size: &str| json!({"spec": {"resources": {"requests": {"storage": size}}}});
        assert_eq!(
            claim_violations(&claim("5Gi"), &ranges),
            ["maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"]
        );
        assert_eq!(
            claim_violations(&claim("512Mi"), &ranges),
            ["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 512Mi"]
        );
        assert!(claim_violations(&claim("1Gi"), &ranges).is_empty());
    }
}
