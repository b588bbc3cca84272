//! InterPodAffinity's unit tests, after the cases of upstream's `filtering_test.go` and
//! `scoring_test.go`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, PodAffinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
};

use super::*;
use crate::framework::{Framework, NoListers, Snapshot};
use crate::plugins::testing::{info, labelled, node, pinfo};

fn sel(key: &str, op: &str, values: &[&str]) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }]),
        match_labels: None,
    }
}

fn term(selector: LabelSelector, key: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(selector),
        topology_key: key.into(),
        ..Default::default()
    }
}

fn with_affinity(mut p: Pod, affinity: Vec<PodAffinityTerm>, anti: Vec<PodAffinityTerm>) -> Pod {
    p.spec.as_mut().unwrap().affinity = Some(Affinity {
        pod_affinity: (!affinity.is_empty()).then(|| PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(affinity),
            ..Default::default()
        }),
        pod_anti_affinity: (!anti.is_empty()).then(|| PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(anti),
            ..Default::default()
        }),
        ..Default::default()
    });
    p
}

fn with_preferred(
    mut p: Pod,
    affinity: Vec<(i32, PodAffinityTerm)>,
    anti: Vec<(i32, PodAffinityTerm)>,
) -> Pod {
    let w = |v: Vec<(i32, PodAffinityTerm)>| {
        Some(
            v.into_iter()
                .map(|(weight, pod_affinity_term)| WeightedPodAffinityTerm {
                    weight,
                    pod_affinity_term,
                })
                .collect(),
        )
    };
    p.spec.as_mut().unwrap().affinity = Some(Affinity {
        pod_affinity: Some(PodAffinity {
            preferred_during_scheduling_ignored_during_execution: w(affinity),
            ..Default::default()
        }),
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: w(anti),
            ..Default::default()
        }),
        ..Default::default()
    });
    p
}

/// Filter results of `pod` on each node, in order.
fn filter(pod: Pod, nodes: &[NodeInfo]) -> Vec<Result<(), Status>> {
    filter_with(pod, nodes, &NoListers)
}

fn filter_with(pod: Pod, nodes: &[NodeInfo], listers: &dyn Listers) -> Vec<Result<(), Status>> {
    let fw = Framework::new().with_filter(InterPodAffinity);
    let snap = Snapshot::new(nodes.iter().collect(), listers);
    let p = fw.prepare(&pinfo(pod), &snap).unwrap();
    nodes.iter().map(|n| fw.run_filters(&p, n)).collect()
}

fn scores(pod: Pod, nodes: &[NodeInfo]) -> Vec<i64> {
    let snap = Snapshot::new(nodes.iter().collect(), &NoListers);
    let p = pinfo(pod);
    let mut s = InterPodAffinity.score_all(&p, &snap, &snap.nodes);
    InterPodAffinity.normalize(&mut s);
    s
}

fn affinity_err() -> Result<(), Status> {
    Err(Status::unresolvable(ERR_AFFINITY))
}

fn anti_err() -> Result<(), Status> {
    Err(Status::unschedulable(vec![ERR_ANTI_AFFINITY.into()]))
}

fn existing_err() -> Result<(), Status> {
    Err(Status::unschedulable(vec![
        ERR_EXISTING_ANTI_AFFINITY.into(),
    ]))
}

const REGION: &str = "region";
const ZONE: &str = "zone";

fn machine(name: &str, labels: &[(&str, &str)], pods: &[Pod]) -> NodeInfo {
    info(node(name, "4", "8Gi", labels), pods)
}

#[test]
fn no_affinity_fits_an_empty_node() {
    let n = [machine("machine1", &[(REGION, "r1")], &[])];
    assert_eq!(filter(labelled("p", "default", &[]), &n), vec![Ok(())]);
}

#[test]
fn affinity_in_operator_matches_the_existing_pod() {
    let existing = labelled("e", "default", &[("service", "securityscan")]);
    let n = [machine("machine1", &[(REGION, "r1")], &[existing])];
    let p = with_affinity(
        labelled("p", "default", &[]),
        vec![term(
            sel("service", "In", &["securityscan", "value2"]),
            REGION,
        )],
        vec![],
    );
    assert_eq!(filter(p, &n), vec![Ok(())]);
    // NotIn the existing pod's value: no match.
    let existing = labelled("e", "default", &[("service", "securityscan")]);
    let n = [machine("machine1", &[(REGION, "r1")], &[existing])];
    let p = with_affinity(
        labelled("p", "default", &[]),
        vec![term(sel("service", "NotIn", &["securityscan"]), REGION)],
        vec![],
    );
    // The pod itself has no label service, so it matches NotIn: it is the "first pod" only if
    // no pod anywhere matches; the existing one does not, so it may go anywhere labelled.
    assert_eq!(filter(p, &n), vec![Ok(())]);
}

#[test]
fn affinity_does_not_match_pods_in_other_namespaces() {
    let existing = labelled("e", "ns2", &[("service", "securityscan")]);
    let n = [machine("machine1", &[(REGION, "r1")], &[existing])];
    let mut t = term(sel("service", "In", &["securityscan"]), REGION);
    t.namespaces = Some(vec!["ns3".into()]);
    let p = with_affinity(labelled("p", "default", &[]), vec![t], vec![]);
    assert_eq!(filter(p, &n), vec![affinity_err()]);
}

#[test]
fn affinity_within_the_topology_domain_of_a_matching_pod() {
    let existing = labelled("e", "default", &[("foo", "bar")]);
    let n = [
        machine("machine1", &[(REGION, "r1"), (ZONE, "z11")], &[existing]),
        machine("machine2", &[(REGION, "r1"), (ZONE, "z12")], &[]),
        machine("machine3", &[(REGION, "r2"), (ZONE, "z21")], &[]),
        machine("machine4", &[], &[]),
    ];
    let p = with_affinity(
        labelled("p", "default", &[]),
        vec![term(sel("foo", "In", &["bar"]), REGION)],
        vec![],
    );
    assert_eq!(
        filter(p, &n),
        vec![Ok(()), Ok(()), affinity_err(), affinity_err()]
    );
}

#[test]
fn the_first_pod_of_a_group_matching_its_own_affinity_may_go_anywhere_labelled() {
    let n = [
        machine("machine1", &[(REGION, "r1")], &[]),
        machine("machine2", &[], &[]),
    ];
    let p = with_affinity(
        labelled("p", "default", &[("foo", "bar")]),
        vec![term(sel("foo", "In", &["bar"]), REGION)],
        vec![],
    );
    assert_eq!(filter(p, &n), vec![Ok(()), affinity_err()]);
    // A pod that does not match its own term has to wait for a match.
    let n = [machine("machine1", &[(REGION, "r1")], &[])];
    let p = with_affinity(
        labelled("p", "default", &[]),
        vec![term(sel("foo", "In", &["bar"]), REGION)],
        vec![],
    );
    assert_eq!(filter(p, &n), vec![affinity_err()]);
}

#[test]
fn anti_affinity_keeps_the_pod_out_of_the_domain() {
    let existing = labelled("e", "default", &[("service", "securityscan")]);
    let n = [
        machine(
            "machine1",
            &[(ZONE, "z1"), ("kubernetes.io/hostname", "machine1")],
            &[existing],
        ),
        machine(
            "machine2",
            &[(ZONE, "z1"), ("kubernetes.io/hostname", "machine2")],
            &[],
        ),
        machine(
            "machine3",
            &[(ZONE, "z2"), ("kubernetes.io/hostname", "machine3")],
            &[],
        ),
    ];
    let p = with_affinity(
        labelled("p", "default", &[]),
        vec![],
        vec![term(sel("service", "In", &["securityscan"]), ZONE)],
    );
    assert_eq!(filter(p.clone(), &n), vec![anti_err(), anti_err(), Ok(())]);
    let p = with_affinity(
        labelled("p", "default", &[]),
        vec![],
        vec![term(
            sel("service", "In", &["securityscan"]),
            "kubernetes.io/hostname",
        )],
    );
    assert_eq!(filter(p, &n), vec![anti_err(), Ok(()), Ok(())]);
}

#[test]
fn existing_pods_anti_affinity_is_respected_without_symmetry() {
    // The incoming pod has no terms, but the placed pod's anti-affinity selects it.
    let existing = with_affinity(
        labelled("e", "default", &[]),
        vec![],
        vec![term(sel("security", "In", &["S1"]), ZONE)],
    );
    let n = [
        machine("machine1", &[(ZONE, "z1")], &[existing]),
        machine("machine2", &[(ZONE, "z1")], &[]),
        machine("machine3", &[(ZONE, "z2")], &[]),
    ];
    let p = labelled("p", "default", &[("security", "S1")]);
    assert_eq!(filter(p, &n), vec![existing_err(), existing_err(), Ok(())]);
    let other = labelled("q", "default", &[("security", "S2")]);
    assert_eq!(filter(other, &n), vec![Ok(()), Ok(()), Ok(())]);
}

struct Namespaces;

impl Listers for Namespaces {
    fn namespace_labels(&self, ns: &str) -> Option<BTreeMap<String, String>> {
        Some(BTreeMap::from([("team".to_string(), ns.to_string())]))
    }
    fn default_spread_selector(&self, _: &Pod) -> Option<LabelSelector> {
        None
    }
}

#[test]
fn namespace_selector_picks_the_namespaces() {
    let existing = labelled("e", "team1", &[("foo", "bar")]);
    let n = [machine("machine1", &[(REGION, "r1")], &[existing])];
    let mut t = term(sel("foo", "In", &["bar"]), REGION);
    t.namespace_selector = Some(sel("team", "In", &["team1"]));
    let p = with_affinity(labelled("p", "default", &[]), vec![t.clone()], vec![]);
    assert_eq!(filter_with(p, &n, &Namespaces), vec![Ok(())]);
    t.namespace_selector = Some(sel("team", "In", &["team2"]));
    let p = with_affinity(labelled("p", "default", &[]), vec![t.clone()], vec![]);
    assert_eq!(filter_with(p, &n, &Namespaces), vec![affinity_err()]);
    // An empty namespaceSelector means all namespaces.
    t.namespace_selector = Some(LabelSelector::default());
    let p = with_affinity(labelled("p", "default", &[]), vec![], vec![t]);
    assert_eq!(filter_with(p, &n, &NoListers), vec![anti_err()]);
}

#[test]
fn match_label_keys_add_the_pods_own_values() {
    let old = labelled("e", "default", &[("app", "web"), ("rev", "1")]);
    let n = [machine(
        "machine1",
        &[("kubernetes.io/hostname", "machine1")],
        &[old],
    )];
    let mut t = term(sel("app", "In", &["web"]), "kubernetes.io/hostname");
    t.match_label_keys = Some(vec!["rev".into()]);
    // Anti-affinity only against the same revision: the old one does not count.
    let p = with_affinity(
        labelled("p", "default", &[("app", "web"), ("rev", "2")]),
        vec![],
        vec![t.clone()],
    );
    assert_eq!(filter(p, &n), vec![Ok(())]);
    let p = with_affinity(
        labelled("p", "default", &[("app", "web"), ("rev", "1")]),
        vec![],
        vec![t],
    );
    assert_eq!(filter(p, &n), vec![anti_err()]);
}

#[test]
fn preferred_affinity_scores_the_matching_domain_highest() {
    let existing = labelled("e", "default", &[("security", "S1")]);
    let n = [
        machine("machine1", &[(REGION, "China")], &[existing]),
        machine("machine2", &[(REGION, "India")], &[]),
        machine("machine3", &[(REGION, "China")], &[]),
    ];
    let p = with_preferred(
        labelled("p", "default", &[]),
        vec![(5, term(sel("security", "In", &["S1"]), REGION))],
        vec![],
    );
    assert_eq!(scores(p, &n), vec![100, 0, 100]);
    let p = with_preferred(
        labelled("p", "default", &[]),
        vec![],
        vec![(5, term(sel("security", "In", &["S1"]), REGION))],
    );
    assert_eq!(scores(p, &n), vec![0, 100, 0]);
}

#[test]
fn placed_pods_preferences_and_hard_affinity_count_too() {
    let existing = with_affinity(
        labelled("e", "default", &[]),
        vec![term(sel("security", "In", &["S1"]), REGION)],
        vec![],
    );
    let n = [
        machine("machine1", &[(REGION, "China")], &[existing]),
        machine("machine2", &[(REGION, "India")], &[]),
    ];
    assert_eq!(
        scores(labelled("p", "default", &[("security", "S1")]), &n),
        vec![100, 0]
    );
    assert_eq!(scores(labelled("p", "default", &[]), &n), vec![0, 0]);
}
