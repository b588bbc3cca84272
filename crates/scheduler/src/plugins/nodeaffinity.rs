//! NodeAffinity: `spec.nodeSelector` and the required node affinity terms must match the node
//! (filter); matching preferred terms add their weights (score, normalised to 0-100).
//!
//! Terms are ORed, the requirements of one term ANDed. Label requirements support In, NotIn,
//! Exists, DoesNotExist, Gt and Lt; field requirements support `metadata.name` with In and
//! NotIn, as upstream's `nodeaffinity` helpers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};

use crate::framework::{Filter, NodeInfo, PodInfo, Score, Status, default_normalize};

/// Upstream's failure reason.
pub const ERR_REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// The NodeAffinity plugin.
pub struct NodeAffinity;

impl NodeAffinity {
    /// The plugin's name.
    pub const NAME: &'static str = "NodeAffinity";
}

/// Whether one label requirement matches `labels`.
fn label_requirement_matches(
    r: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let value = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if r.operator == "Gt" => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether one field requirement matches the node (only `metadata.name` is a node field).
fn field_requirement_matches(r: &NodeSelectorRequirement, node_name: &str) -> bool {
    if r.key != "metadata.name" {
        return false;
    }
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => values.iter().any(|v| v == node_name),
        "NotIn" => !values.iter().any(|v| v == node_name),
        _ => false,
    }
}

/// Whether `term` matches the node; an empty term matches nothing, as upstream.
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let empty = BTreeMap::new();
    let labels = node.labels().unwrap_or(&empty);
    exprs.iter().all(|r| label_requirement_matches(r, labels))
        && fields
            .iter()
            .all(|r| field_requirement_matches(r, &node.name))
}

impl Filter for NodeAffinity {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Result<(), Status> {
        let Some(spec) = pod.pod.spec.as_ref() else {
            return Ok(());
        };
        let empty = BTreeMap::new();
        let labels = node.labels().unwrap_or(&empty);
        let selector_ok = spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        let affinity_ok = required.is_none_or(|sel| {
            sel.node_selector_terms
                .iter()
                .any(|term| term_matches(term, node))
        });
        if selector_ok && affinity_ok {
            Ok(())
        } else {
            Err(Status::unresolvable(ERR_REASON))
        }
    }
}

impl Score for NodeAffinity {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// The sum of the weights of the preferred terms the node matches.
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        pod.pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter(|p| p.weight != 0 && term_matches(&p.preference, node))
            .map(|p| i64::from(p.weight))
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{info, node, pinfo, pod};
    use k8s_openapi::api::core::v1::{Affinity, NodeSelector, Pod, PreferredSchedulingTerm};

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn with_required(terms: Vec<NodeSelectorTerm>) -> Pod {
        let mut p = pod("", "");
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn exprs(reqs: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(reqs),
            match_fields: None,
        }
    }

    #[test]
    fn node_selector_must_match() {
        let n = info(node("a", "1", "1Gi", &[("disk", "ssd")]), &[]);
        let mut p = pod("", "");
        p.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([("disk".to_string(), "ssd".to_string())]));
        assert!(NodeAffinity.filter(&pinfo(p.clone()), &n).is_ok());
        p.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([("disk".to_string(), "hdd".to_string())]));
        assert_eq!(
            NodeAffinity.filter(&pinfo(p), &n),
            Err(Status::unresolvable(ERR_REASON))
        );
    }

    #[test]
    fn operators() {
        let n = info(node("a", "1", "1Gi", &[("zone", "z1"), ("gen", "5")]), &[]);
        let ok = |r: NodeSelectorRequirement| {
            NodeAffinity
                .filter(&pinfo(with_required(vec![exprs(vec![r])])), &n)
                .is_ok()
        };
        assert!(ok(req("zone", "In", &["z1", "z2"])));
        assert!(!ok(req("zone", "In", &["z2"])));
        assert!(ok(req("zone", "NotIn", &["z2"])));
        assert!(ok(req("missing", "NotIn", &["z2"])));
        assert!(!ok(req("zone", "NotIn", &["z1"])));
        assert!(ok(req("zone", "Exists", &[])));
        assert!(!ok(req("zone", "DoesNotExist", &[])));
        assert!(ok(req("missing", "DoesNotExist", &[])));
        assert!(ok(req("gen", "Gt", &["4"])));
        assert!(!ok(req("gen", "Gt", &["5"])));
        assert!(ok(req("gen", "Lt", &["6"])));
        assert!(!ok(req("zone", "Lt", &["6"])));
        assert!(!ok(req("gen", "Lt", &["x"])));
    }

    #[test]
    fn terms_are_ored_and_fields_match_the_name() {
        let n = info(node("a", "1", "1Gi", &[("zone", "z1")]), &[]);
        let by_name = |names: &[&str], op: &str| NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", op, names)]),
        };
        let p = with_required(vec![
            exprs(vec![req("zone", "In", &["z9"])]),
            by_name(&["a"], "In"),
        ]);
        assert!(NodeAffinity.filter(&pinfo(p), &n).is_ok());
        let p = with_required(vec![by_name(&["a"], "NotIn")]);
        assert!(NodeAffinity.filter(&pinfo(p), &n).is_err());
        let p = with_required(vec![NodeSelectorTerm::default()]);
        assert!(NodeAffinity.filter(&pinfo(p), &n).is_err());
    }

    #[test]
    fn preferred_terms_score_by_weight() {
        let a = info(node("a", "1", "1Gi", &[("zone", "z1")]), &[]);
        let b = info(node("b", "1", "1Gi", &[("zone", "z2")]), &[]);
        let mut p = pod("", "");
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 20,
                        preference: exprs(vec![req("zone", "In", &["z1"])]),
                    },
                    PreferredSchedulingTerm {
                        weight: 5,
                        preference: exprs(vec![req("zone", "Exists", &[])]),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let p = pinfo(p);
        let mut scores = vec![NodeAffinity.score(&p, &a), NodeAffinity.score(&p, &b)];
        assert_eq!(scores, vec![25, 5]);
        NodeAffinity.normalize(&mut scores);
        assert_eq!(scores, vec![100, 20]);
    }
}
