//! LimitRange admission for pods, as upstream's LimitRanger plugin, for limits of type
//! `Container`:
//! - mutating (before validation): a container without a limit (request) of a resource gets
//!   the range's `default` (`defaultRequest`), and the pod the annotation
//!   `kubernetes.io/limit-ranger: LimitRanger plugin set: cpu request for container app; ...`;
//! - validating (after it): `min` (requests and limits at least), `max` (limits, and requests,
//!   at most; a limit must then be given) and `maxLimitRequestRatio`, refused with 403 and
//!   upstream's messages (`minimum cpu usage per Container is 100m, but request is 50m`; several
//!   in `[..., ...]`).
//!
//! Limits of type `Pod` and `PersistentVolumeClaim` are not enforced yet.

use api::quota::milli;
use api::{ApiError, ResourceInfo};
use serde_json::{Value, json};

use crate::objects;
use crate::state::ApiState;

/// The annotation naming what defaults were set.
const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// The `Container` limits of the ranges.
fn container_limits(ranges: &[Value]) -> Vec<&Value> {
    ranges
        .iter()
        .flat_map(|r| r["spec"]["limits"].as_array().into_iter().flatten())
        .filter(|l| l["type"] == "Container")
        .collect()
}

/// Fills defaults into the pod's containers; returns what was set.
pub fn apply_defaults(pod: &mut Value, ranges: &[Value]) -> Vec<String> {
    let limits: Vec<Value> = container_limits(ranges).into_iter().cloned().collect();
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

/// What the pod's containers break of the ranges' min / max / maxLimitRequestRatio.
pub fn violations(pod: &Value, ranges: &[Value]) -> Vec<String> {
    let limits = container_limits(ranges);
    let mut errs = vec![];
    let containers = ["initContainers", "containers"]
        .into_iter()
        .flat_map(|l| pod["spec"][l].as_array().into_iter().flatten());
    for c in containers {
        let req = |r: &str| c["resources"]["requests"][r].as_str();
        let lim = |r: &str| c["resources"]["limits"][r].as_str();
        for l in &limits {
            // One error per constraint, the first that applies (upstream's minConstraint
            // and maxConstraint).
            for (res, min) in l["min"].as_object().into_iter().flatten() {
                let min_s = min.as_str().unwrap_or("0");
                let err = match (req(res), lim(res)) {
                    (None, _) => Some(format!(
                        "minimum {res} usage per Container is {min_s}.  No request is specified"
                    )),
                    (Some(r), _) if milli(r) < milli(min_s) => Some(format!(
                        "minimum {res} usage per Container is {min_s}, but request is {r}"
                    )),
                    (_, Some(lv)) if milli(lv) < milli(min_s) => Some(format!(
                        "minimum {res} usage per Container is {min_s}, but limit is {lv}"
                    )),
                    _ => None,
                };
                errs.extend(err);
            }
            for (res, max) in l["max"].as_object().into_iter().flatten() {
                let max_s = max.as_str().unwrap_or("0");
                let err = match (req(res), lim(res)) {
                    (_, None) => Some(format!(
                        "maximum {res} usage per Container is {max_s}.  No limit is specified"
                    )),
                    (_, Some(lv)) if milli(lv) > milli(max_s) => Some(format!(
                        "maximum {res} usage per Container is {max_s}, but limit is {lv}"
                    )),
                    (Some(r), _) if milli(r) > milli(max_s) => Some(format!(
                        "maximum {res} usage per Container is {max_s}, but request is {r}"
                    )),
                    _ => None,
                };
                errs.extend(err);
            }
            for (res, ratio) in l["maxLimitRequestRatio"].as_object().into_iter().flatten() {
                let ratio_s = ratio.as_str().unwrap_or("0");
                let Some(lv) = lim(res) else { continue };
                match req(res).map(milli).filter(|r| *r > 0) {
                    None => errs.push(format!(
                        "{res} max limit to request ratio per Container is {ratio_s}, but no request is specified or request is 0"
                    )),
                    Some(r) => {
                        let actual = milli(lv) as f64 / r as f64;
                        if actual > milli(ratio_s) as f64 / 1000.0 {
                            errs.push(format!(
                                "{res} max limit to request ratio per Container is {ratio_s}, but provided ratio is {actual:.6}"
                            ));
                        }
                    }
                }
            }
        }
    }
    errs
}

impl ApiState {
    /// The LimitRanges of a namespace.
    async fn limit_ranges(&self, ns: &str) -> Result<Vec<Value>, ApiError> {
        let Some(res) = self.registry.get("", "v1", "limitranges") else {
            return Ok(vec![]);
        };
        let range = store::RangeRequest {
            prefix: format!("{}{ns}/", res.key_prefix()),
            ..Default::default()
        };
        let list = self.store.range(range).await.map_err(ApiError::internal)?;
        list.kvs.iter().map(objects::decode).collect()
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

    /// LimitRanger's validating half: refuses a new pod that breaks a LimitRange.
    pub async fn admit_limits(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        pod: &Value,
    ) -> Result<(), ApiError> {
        if !(res.group.is_empty() && res.plural == "pods") {
            return Ok(());
        }
        let Some(ns) = ns else { return Ok(()) };
        let errs = violations(pod, &self.limit_ranges(ns).await?);
        let msg = match errs.as_slice() {
            [] => return Ok(()),
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let name = objects::name(pod);
        let mut e = ApiError::forbidden(format!("pods \"{name}\" is forbidden: {msg}"));
        e.kind = Some("pods".into());
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
}
