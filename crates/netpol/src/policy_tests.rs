//! Unit tests of the policy translation.

use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn pod(ns: &str, name: &str, labels: &[(&str, &str)], addr: &str, node: &str) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ip: ip(addr),
        node: node.into(),
        named_ports: vec![("http".into(), Proto::Tcp, 8080)],
    }
}

fn policy(ns: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": ns},
        "spec": spec,
    }))
    .unwrap()
}

fn pods() -> Vec<PodInfo> {
    vec![
        pod("a", "web", &[("app", "web")], "10.42.0.5", "n1"),
        pod("a", "client", &[("role", "client")], "10.42.0.6", "n1"),
        pod("a", "other", &[], "10.42.1.7", "n2"),
        pod("b", "client", &[("role", "client")], "10.42.1.8", "n2"),
        pod("c", "web", &[("app", "web")], "10.42.0.9", "n1"),
    ]
}

fn namespaces() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for (ns, team) in [("a", "x"), ("b", "y")] {
        m.insert(
            ns.to_string(),
            BTreeMap::from([
                (NAMESPACE_NAME_LABEL.to_string(), ns.to_string()),
                ("team".to_string(), team.to_string()),
            ]),
        );
    }
    m
}

fn model(policies: &[NetworkPolicy]) -> Model {
    let (pods, nss) = (pods(), namespaces());
    build(
        policies,
        &Cluster {
            pods: &pods,
            namespaces: &nss,
        },
        "n1",
    )
}

fn ips(list: &[&str]) -> Peer {
    Peer::Ips(list.iter().map(|s| ip(s)).collect())
}

#[test]
fn unselected_pods_stay_open_and_deny_all_isolates() {
    let m = model(&[policy("a", serde_json::json!({"podSelector": {}}))]);
    // Only namespace a's pods on this node: web and client, both denied everything in.
    assert_eq!(
        m.ingress.keys().copied().collect::<Vec<_>>(),
        [ip("10.42.0.5"), ip("10.42.0.6")]
    );
    assert!(m.ingress.values().all(|v| v.is_empty()));
    assert!(m.egress.is_empty(), "policyTypes default to Ingress only");
    // c/web (same labels, other namespace) is not isolated.
    assert!(!m.ingress.contains_key(&ip("10.42.0.9")));
}

#[test]
fn pod_selector_peer_is_namespace_local() {
    let m = model(&[policy(
        "a",
        serde_json::json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}],
        }),
    )]);
    assert_eq!(m.ingress.len(), 1);
    let allowed = &m.ingress[&ip("10.42.0.5")];
    // a/client only, not b/client.
    assert_eq!(
        allowed,
        &[Match {
            peer: ips(&["10.42.0.6"]),
            proto: None,
            ports: Default::default()
        }]
    );
}

#[test]
fn namespace_selector_alone_and_combined() {
    let alone = model(&[policy(
        "a",
        serde_json::json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}]}],
        }),
    )]);
    assert_eq!(alone.ingress[&ip("10.42.0.5")][0].peer, ips(&["10.42.1.8"]));
    let both = model(&[policy(
        "a",
        serde_json::json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{
                "namespaceSelector": {"matchExpressions": [
                    {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": ["a", "b"]}]},
                "podSelector": {"matchLabels": {"role": "client"}},
            }]}],
        }),
    )]);
    assert_eq!(
        both.ingress[&ip("10.42.0.5")][0].peer,
        ips(&["10.42.0.6", "10.42.1.8"])
    );
    // A selector matching no pod allows nothing (and renders no empty set).
    let none = model(&[policy(
        "a",
        serde_json::json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "nobody"}}}]}],
        }),
    )]);
    assert!(none.ingress[&ip("10.42.0.5")].is_empty());
}

#[test]
fn ports_protocols_ranges_and_named_ports() {
    let m = model(&[policy(
        "a",
        serde_json::json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"ports": [
                {"port": 80},
                {"port": 9000, "endPort": 9100},
                {"port": "http"},
                {"protocol": "UDP", "port": 53},
                {"protocol": "SCTP"},
                {"port": "nope"},
            ]}],
        }),
    )]);
    let allowed = &m.ingress[&ip("10.42.0.5")];
    assert_eq!(
        allowed,
        &[
            Match {
                peer: Peer::Any,
                proto: Some(Proto::Tcp),
                ports: [(80, 80), (8080, 8080), (9000, 9100)].into(),
            },
            Match {
                peer: Peer::Any,
                proto: Some(Proto::Udp),
                ports: [(53, 53)].into(),
            },
            Match {
                peer: Peer::Any,
                proto: Some(Proto::Sctp),
                ports: Default::default(),
            },
        ]
    );
}

#[test]
fn egress_ip_block_except_and_named_ports_on_peers() {
    let m = model(&[policy(
        "a",
        serde_json::json!({
            "podSelector": {"matchLabels": {"role": "client"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": "10.250.0.0/16", "except": ["10.250.3.0/24"]}}]},
                {"to": [{"namespaceSelector": {}}], "ports": [{"port": "http"}]},
                {"to": [{"ipBlock": {"cidr": "fd00::/8"}}]},
            ],
        }),
    )]);
    assert!(m.ingress.is_empty());
    let allowed = &m.egress[&ip("10.42.0.6")];
    assert_eq!(allowed.len(), 2, "{allowed:?}");
    assert!(allowed.contains(&Match {
        peer: Peer::Block {
            cidr: (ip("10.250.0.0"), 16),
            except: vec![(ip("10.250.3.0"), 24)],
        },
        proto: None,
        ports: Default::default(),
    }));
    // The named port resolves on every pod of every namespace that has it.
    assert!(allowed.contains(&Match {
        peer: ips(&[
            "10.42.0.5",
            "10.42.0.6",
            "10.42.0.9",
            "10.42.1.7",
            "10.42.1.8"
        ]),
        proto: Some(Proto::Tcp),
        ports: [(8080, 8080)].into(),
    }));
}

#[test]
fn policies_add_up_and_any_port_absorbs_ports() {
    let m = model(&[
        policy(
            "a",
            serde_json::json!({
                "podSelector": {},
                "ingress": [{"ports": [{"port": 80}]}],
            }),
        ),
        policy(
            "a",
            serde_json::json!({
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"ports": [{"protocol": "TCP"}]}, {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
                "policyTypes": ["Ingress", "Egress"],
            }),
        ),
    ]);
    assert_eq!(
        m.ingress[&ip("10.42.0.5")],
        [
            Match {
                peer: Peer::Any,
                proto: Some(Proto::Tcp),
                ports: Default::default()
            },
            Match {
                peer: Peer::Block {
                    cidr: (ip("0.0.0.0"), 0),
                    except: vec![]
                },
                proto: None,
                ports: Default::default()
            },
        ]
    );
    assert_eq!(m.ingress[&ip("10.42.0.6")].len(), 1);
    // Egress in policyTypes without rules: deny all egress.
    assert_eq!(m.egress[&ip("10.42.0.5")], []);
}

#[test]
fn pods_outside_pod_networking_are_ignored() {
    let mk = |host_network: bool, phase: &str, ip: Option<&str>| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "a"},
            "spec": {"hostNetwork": host_network, "nodeName": "n1",
                     "containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 80}]}]},
            "status": {"phase": phase, "podIP": ip},
        }))
        .unwrap()
    };
    let info = PodInfo::from_pod(&mk(false, "Running", Some("10.42.0.3"))).unwrap();
    assert_eq!(info.named_ports, [("web".to_string(), Proto::Tcp, 80)]);
    assert!(PodInfo::from_pod(&mk(true, "Running", Some("10.0.0.1"))).is_none());
    assert!(PodInfo::from_pod(&mk(false, "Succeeded", Some("10.42.0.3"))).is_none());
    assert!(PodInfo::from_pod(&mk(false, "Pending", None)).is_none());
    assert!(PodInfo::from_pod(&mk(false, "Running", Some("fd00::1"))).is_none());
}
