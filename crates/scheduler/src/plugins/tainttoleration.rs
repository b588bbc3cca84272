//! TaintToleration: a node's NoSchedule and NoExecute taints keep off pods that do not
//! tolerate them (filter); untolerated PreferNoSchedule taints make a node less attractive
//! (score: fewer is better).

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::framework::{Filter, NodeInfo, PodInfo, Score, Status, default_normalize};

/// The TaintToleration plugin.
pub struct TaintToleration;

impl TaintToleration {
    /// The plugin's name.
    pub const NAME: &'static str = "TaintToleration";
}

/// Upstream's `Toleration.ToleratesTaint`: effect and key match when set (an empty key with
/// `Exists` matches every taint), then `Equal` compares values and `Exists` ignores them.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

fn tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

impl Filter for TaintToleration {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Status> {
        let tols = tolerations(pod);
        let untolerated = taints(node).iter().find(|taint| {
            matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
                && !tols.iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            None => Ok(()),
            Some(taint) => Err(Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ))),
        }
    }
}

impl Score for TaintToleration {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// How many PreferNoSchedule taints the pod does not tolerate (only its tolerations with
    /// an empty or PreferNoSchedule effect count, as upstream).
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let tols: Vec<&Toleration> = tolerations(pod)
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .collect();
        taints(node)
            .iter()
            .filter(|taint| taint.effect == "PreferNoSchedule")
            .filter(|taint| !tols.iter().any(|t| tolerates(t, taint)))
            .count() as i64
    }

    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{info, node, pinfo, pod};

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some(op.into()),
            value: Some(value.into()),
            effect: Some(effect.into()),
            ..Default::default()
        }
    }

    fn tainted(taints: Vec<Taint>) -> NodeInfo {
        let mut n = node("a", "1", "1Gi", &[]);
        n.spec.as_mut().unwrap().taints = Some(taints);
        info(n, &[])
    }

    #[test]
    fn toleration_matching_follows_upstream() {
        let t = taint("key", "value", "NoSchedule");
        assert!(tolerates(&tol("key", "Equal", "value", "NoSchedule"), &t));
        assert!(tolerates(&tol("key", "", "value", ""), &t));
        assert!(!tolerates(&tol("key", "Equal", "other", "NoSchedule"), &t));
        assert!(tolerates(&tol("key", "Exists", "", "NoSchedule"), &t));
        assert!(tolerates(&tol("", "Exists", "", ""), &t));
        assert!(!tolerates(&tol("key", "Exists", "", "NoExecute"), &t));
        assert!(!tolerates(&tol("other", "Exists", "", ""), &t));
        assert!(!tolerates(&tol("key", "Bogus", "value", ""), &t));
    }

    #[test]
    fn untolerated_hard_taints_filter_the_node() {
        let n = tainted(vec![
            taint("soft", "x", "PreferNoSchedule"),
            taint("key", "value", "NoSchedule"),
        ]);
        let p = pod("", "");
        assert_eq!(
            TaintToleration.filter(&pinfo(p.clone()), &n),
            Err(Status::unresolvable(
                "node(s) had untolerated taint {key: value}"
            ))
        );
        let mut ok = p;
        ok.spec.as_mut().unwrap().tolerations = Some(vec![tol("key", "Equal", "value", "")]);
        assert!(TaintToleration.filter(&pinfo(ok), &n).is_ok());
        let exec = tainted(vec![taint("k", "", "NoExecute")]);
        assert!(TaintToleration.filter(&pinfo(pod("", "")), &exec).is_err());
    }

    #[test]
    fn prefer_no_schedule_lowers_the_score() {
        let clean = tainted(vec![]);
        let soft = tainted(vec![taint("soft", "x", "PreferNoSchedule")]);
        let p = pinfo(pod("", ""));
        let mut scores = vec![
            TaintToleration.score(&p, &clean),
            TaintToleration.score(&p, &soft),
        ];
        TaintToleration.normalize(&mut scores);
        assert_eq!(scores, vec![100, 0]);
        let mut tolerant = pod("", "");
        tolerant.spec.as_mut().unwrap().tolerations =
            Some(vec![tol("soft", "Exists", "", "PreferNoSchedule")]);
        assert_eq!(TaintToleration.score(&pinfo(tolerant), &soft), 0);
    }
}
