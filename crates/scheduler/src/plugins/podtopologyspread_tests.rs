//! PodTopologySpread's unit tests, after the cases of upstream's `filtering_test.go` and
//! `scoring_test.go`.

use k8s_openapi::api::core::v1::{Taint, TopologySpreadConstraint};

use super::*;
use crate::framework::{Framework, Listers, NoListers, Snapshot};
use crate::plugins::testing::{info, labelled, node, pinfo};

fn exists(key: &str) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.into(),
            operator: "Exists".into(),
            values: None,
        }]),
        match_labels: None,
    }
}

fn constraint(skew: i32, key: &str, when: &str) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: skew,
        topology_key: key.into(),
        when_unsatisfiable: when.into(),
        label_selector: Some(exists("foo")),
        ..Default::default()
    }
}

fn incoming(cs: Vec<TopologySpreadConstraint>) -> Pod {
    let mut p = labelled("p", "default", &[("foo", "")]);
    p.spec.as_mut().unwrap().topology_spread_constraints = Some(cs);
    p
}

fn foo(name: &str) -> Pod {
    labelled(name, "default", &[("foo", "")])
}

fn n(name: &str, zone: Option<&str>, pods: usize) -> NodeInfo {
    let mut labels = vec![(HOSTNAME, name)];
    if let Some(z) = zone {
        labels.push(("zone", z));
    }
    let pods: Vec<Pod> = (0..pods).map(|i| foo(&format!("{name}-{i}"))).collect();
    info(node(name, "4", "8Gi", &labels), &pods)
}

fn filter(pod: Pod, nodes: &[NodeInfo]) -> Vec<Result<(), Status>> {
    let fw = Framework::new().with_filter(PodTopologySpread);
    let snap = Snapshot::new(nodes.iter().collect(), &NoListers);
    let p = fw.prepare(&pinfo(pod), &snap).unwrap();
    nodes.iter().map(|n| fw.run_filters(&p, n)).collect()
}

fn scores_with(pod: Pod, nodes: &[NodeInfo], listers: &dyn Listers) -> Vec<i64> {
    let snap = Snapshot::new(nodes.iter().collect(), listers);
    let p = pinfo(pod);
    let mut s = PodTopologySpread.score_all(&p, &snap, &snap.nodes);
    PodTopologySpread.normalize(&mut s);
    s
}

fn skew_err() -> Result<(), Status> {
    Err(Status::unschedulable(vec![ERR_CONSTRAINTS.into()]))
}

#[test]
fn no_existing_pods_every_node_fits() {
    let nodes = [n("node-a", Some("zone1"), 0), n("node-x", Some("zone2"), 0)];
    let p = incoming(vec![constraint(1, "zone", "DoNotSchedule")]);
    assert_eq!(filter(p, &nodes), vec![Ok(()), Ok(())]);
}

#[test]
fn pods_in_other_namespaces_do_not_count() {
    let other = labelled("o", "other", &[("foo", "")]);
    let nodes = [
        info(
            node("node-a", "4", "8Gi", &[("zone", "zone1")]),
            &[other.clone(), other],
        ),
        n("node-x", Some("zone2"), 0),
    ];
    let p = incoming(vec![constraint(1, "zone", "DoNotSchedule")]);
    assert_eq!(filter(p, &nodes), vec![Ok(()), Ok(())]);
}

#[test]
fn zones_one_to_two_with_a_node_missing_the_label() {
    let nodes = [
        n("node-a", Some("zone1"), 1),
        n("node-b", None, 1),
        n("node-x", Some("zone2"), 0),
        n("node-y", Some("zone2"), 2),
    ];
    let p = incoming(vec![constraint(1, "zone", "DoNotSchedule")]);
    assert_eq!(
        filter(p, &nodes),
        vec![
            Ok(()),
            Err(Status::unresolvable(ERR_MISSING_LABEL)),
            skew_err(),
            skew_err()
        ]
    );
}

#[test]
fn nodes_two_one_zero_three_only_the_empty_node_fits() {
    let nodes = [
        n("node-a", Some("zone1"), 2),
        n("node-b", Some("zone1"), 1),
        n("node-x", Some("zone2"), 0),
        n("node-y", Some("zone2"), 3),
    ];
    let p = incoming(vec![constraint(1, HOSTNAME, "DoNotSchedule")]);
    assert_eq!(
        filter(p.clone(), &nodes),
        vec![skew_err(), skew_err(), Ok(()), skew_err()]
    );
    // maxSkew 2 lets node-b in too.
    let p = incoming(vec![constraint(2, HOSTNAME, "DoNotSchedule")]);
    assert_eq!(
        filter(p, &nodes),
        vec![skew_err(), Ok(()), Ok(()), skew_err()]
    );
}

#[test]
fn an_incoming_pod_that_does_not_match_itself_adds_nothing() {
    let nodes = [n("node-a", Some("zone1"), 1), n("node-x", Some("zone2"), 0)];
    let mut p = incoming(vec![constraint(1, HOSTNAME, "DoNotSchedule")]);
    p.metadata.labels = None;
    assert_eq!(filter(p, &nodes), vec![Ok(()), Ok(())]);
}

#[test]
fn fewer_domains_than_min_domains_treats_the_minimum_as_zero() {
    let nodes = [n("node-a", Some("zone1"), 1), n("node-x", Some("zone2"), 1)];
    let mut c = constraint(1, "zone", "DoNotSchedule");
    assert_eq!(
        filter(incoming(vec![c.clone()]), &nodes),
        vec![Ok(()), Ok(())]
    );
    c.min_domains = Some(3);
    assert_eq!(
        filter(incoming(vec![c]), &nodes),
        vec![skew_err(), skew_err()]
    );
}

#[test]
fn node_inclusion_policies() {
    let mut tainted = node("node-b", "4", "8Gi", &[(HOSTNAME, "node-b")]);
    tainted.spec.as_mut().unwrap().taints = Some(vec![Taint {
        key: "k".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    }]);
    let nodes = [n("node-a", None, 1), info(tainted, &[])];
    // Taints ignored by default: node-b is a domain with 0, so node-a (1 + 1 - 0) is too much.
    let c = constraint(1, HOSTNAME, "DoNotSchedule");
    assert_eq!(filter(incoming(vec![c.clone()]), &nodes)[0], skew_err());
    let mut honor = c.clone();
    honor.node_taints_policy = Some("Honor".into());
    assert_eq!(filter(incoming(vec![honor]), &nodes)[0], Ok(()));
    // nodeAffinityPolicy Honor (default): nodes the pod's selector excludes do not count.
    let mut p = incoming(vec![c.clone()]);
    p.spec.as_mut().unwrap().node_selector =
        Some([(HOSTNAME.to_string(), "node-a".to_string())].into());
    assert_eq!(filter(p.clone(), &nodes)[0], Ok(()));
    let mut ignore = c;
    ignore.node_affinity_policy = Some("Ignore".into());
    p.spec.as_mut().unwrap().topology_spread_constraints = Some(vec![ignore]);
    assert_eq!(filter(p, &nodes)[0], skew_err());
}

#[test]
fn score_fewer_matching_pods_is_better() {
    let nodes = [
        n("node-a", Some("zone1"), 2),
        n("node-b", Some("zone1"), 1),
        n("node-c", Some("zone2"), 0),
        n("node-d", Some("zone2"), 3),
    ];
    let p = incoming(vec![constraint(1, HOSTNAME, "ScheduleAnyway")]);
    assert_eq!(scores_with(p, &nodes, &NoListers), vec![20, 60, 100, 0]);
    let none = [n("node-a", Some("zone1"), 0), n("node-b", Some("zone1"), 0)];
    let p = incoming(vec![constraint(1, HOSTNAME, "ScheduleAnyway")]);
    assert_eq!(scores_with(p, &none, &NoListers), vec![100, 100]);
}

#[test]
fn score_by_zone_and_nodes_missing_the_key_score_zero() {
    let nodes = [
        n("node-a", Some("zone1"), 2),
        n("node-b", Some("zone1"), 0),
        n("node-x", Some("zone2"), 1),
        n("node-z", None, 0),
    ];
    let p = incoming(vec![constraint(1, "zone", "ScheduleAnyway")]);
    // zone1 has 2, zone2 has 1: zone2's node is best; node-z lacks the key.
    let s = scores_with(p, &nodes, &NoListers);
    assert_eq!(s[0], s[1]);
    assert!(s[2] > s[0], "{s:?}");
    assert_eq!(s[3], 0);
}

struct Owned;

impl Listers for Owned {
    fn namespace_labels(&self, _: &str) -> Option<std::collections::BTreeMap<String, String>> {
        None
    }
    fn default_spread_selector(&self, _: &Pod) -> Option<LabelSelector> {
        Some(exists("foo"))
    }
}

#[test]
fn system_defaults_spread_pods_of_the_same_owner() {
    let nodes = [n("node-a", None, 3), n("node-b", None, 0)];
    let p = foo("p");
    let s = scores_with(p.clone(), &nodes, &Owned);
    assert!(s[1] > s[0], "{s:?}");
    // Nothing selects the pod: no preference.
    assert_eq!(scores_with(p, &nodes, &NoListers), vec![100, 100]);
}
