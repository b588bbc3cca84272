//! Unit tests of the zone's answers (service, headless host, SRV, pod, PTR, ExternalName,
//! negative answers).

use super::*;
use crate::records::service_records;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use serde_json::json;

fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn zone() -> Zone {
    let mut z = Zone::new("cluster.local", Some("10.43.0.10".parse().unwrap())).unwrap();
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.43.5.6", "ports": [{"name": "http", "port": 80}]}
    }))
    .unwrap();
    z.set_service(
        "default",
        "web",
        service_records(&web, None, "cluster.local"),
    );
    let db: Service = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "apps"},
        "spec": {"clusterIP": "None"}
    }))
    .unwrap();
    let ep: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "apps"},
        "subsets": [{
            "addresses": [{"ip": "10.42.0.5", "hostname": "db-0"}, {"ip": "10.42.0.6"}],
            "ports": [{"name": "pg", "port": 5432}]
        }]
    }))
    .unwrap();
    z.set_service(
        "apps",
        "db",
        service_records(&db, Some(&ep), "cluster.local"),
    );
    let ext: Service = serde_json::from_value(json!({
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "example.com"}
    }))
    .unwrap();
    z.set_service(
        "default",
        "ext",
        service_records(&ext, None, "cluster.local"),
    );
    z.set_namespace("empty", true);
    z.set_synced();
    z
}

fn answers(a: Answer) -> Vec<String> {
    match a {
        Answer::Records { answers, .. } => answers.iter().map(|r| r.data.to_string()).collect(),
        other => panic!("expected records, got {other:?}"),
    }
}

#[test]
fn cluster_ip_service_resolves() {
    let z = zone();
    let q = n("web.default.svc.cluster.local.");
    assert_eq!(answers(z.lookup(&q, RecordType::A)), ["10.43.5.6"]);
    assert_eq!(z.lookup(&q, RecordType::AAAA), Answer::NoData);
    assert_eq!(z.lookup(&q, RecordType::MX), Answer::NoData);
    assert_eq!(
        answers(z.lookup(&q, RecordType::SRV)),
        ["0 100 80 web.default.svc.cluster.local."]
    );
}

#[test]
fn headless_service_and_its_hosts() {
    let z = zone();
    let mut ips = answers(z.lookup(&n("db.apps.svc.cluster.local."), RecordType::A));
    ips.sort();
    assert_eq!(ips, ["10.42.0.5", "10.42.0.6"]);
    assert_eq!(
        answers(z.lookup(&n("db-0.db.apps.svc.cluster.local."), RecordType::A)),
        ["10.42.0.5"]
    );
    assert_eq!(
        answers(z.lookup(&n("10-42-0-6.db.apps.svc.cluster.local."), RecordType::A)),
        ["10.42.0.6"]
    );
    assert_eq!(
        z.lookup(&n("db-9.db.apps.svc.cluster.local."), RecordType::A),
        Answer::NxDomain
    );
    // Host names exist only for headless services.
    assert_eq!(
        z.lookup(&n("x.web.default.svc.cluster.local."), RecordType::A),
        Answer::NxDomain
    );
}

#[test]
fn srv_for_named_ports_with_target_addresses() {
    let z = zone();
    let a = z.lookup(&n("_pg._tcp.db.apps.svc.cluster.local."), RecordType::SRV);
    let Answer::Records {
        answers,
        additionals,
        ..
    } = a
    else {
        panic!("{a:?}")
    };
    let srv: Vec<String> = answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(
        srv,
        [
            "0 50 5432 db-0.db.apps.svc.cluster.local.",
            "0 50 5432 10-42-0-6.db.apps.svc.cluster.local."
        ]
    );
    assert_eq!(additionals.len(), 2);
    assert_eq!(
        additionals[0].name.to_string(),
        "db-0.db.apps.svc.cluster.local."
    );
    let web = z.lookup(
        &n("_http._tcp.web.default.svc.cluster.local."),
        RecordType::SRV,
    );
    assert_eq!(
        answers_of(&web),
        ["0 100 80 web.default.svc.cluster.local."]
    );
    assert_eq!(
        z.lookup(
            &n("_http._udp.web.default.svc.cluster.local."),
            RecordType::SRV
        ),
        Answer::NxDomain
    );
    assert_eq!(
        z.lookup(&n("_tcp.web.default.svc.cluster.local."), RecordType::SRV),
        Answer::NoData
    );
    assert_eq!(
        z.lookup(
            &n("_http._tcp.web.default.svc.cluster.local."),
            RecordType::A
        ),
        Answer::NoData
    );
}

fn answers_of(a: &Answer) -> Vec<String> {
    match a {
        Answer::Records { answers, .. } => answers.iter().map(|r| r.data.to_string()).collect(),
        other => panic!("expected records, got {other:?}"),
    }
}

#[test]
fn external_name_is_a_cname_to_chase() {
    let z = zone();
    let a = z.lookup(&n("ext.default.svc.cluster.local."), RecordType::A);
    let Answer::Records { answers, chase, .. } = a else {
        panic!("{a:?}")
    };
    assert_eq!(answers[0].record_type(), RecordType::CNAME);
    assert_eq!(answers[0].data.to_string(), "example.com.");
    assert_eq!(chase, Some(n("example.com.")));
    let a = z.lookup(&n("ext.default.svc.cluster.local."), RecordType::CNAME);
    assert!(matches!(a, Answer::Records { chase: None, .. }));
}

#[test]
fn pod_records_need_an_existing_namespace() {
    let z = zone();
    assert_eq!(
        answers(z.lookup(&n("10-42-3-4.empty.pod.cluster.local."), RecordType::A)),
        ["10.42.3.4"]
    );
    assert_eq!(
        answers(z.lookup(&n("10-42-3-4.default.pod.cluster.local."), RecordType::A)),
        ["10.42.3.4"],
        "a namespace with services exists"
    );
    assert_eq!(
        z.lookup(&n("10-42-3-4.nope.pod.cluster.local."), RecordType::A),
        Answer::NxDomain
    );
    assert_eq!(
        z.lookup(&n("web.default.pod.cluster.local."), RecordType::A),
        Answer::NxDomain
    );
}

#[test]
fn negative_answers_and_empty_non_terminals() {
    let z = zone();
    for name in [
        "nope.default.svc.cluster.local.",
        "web.nope.svc.cluster.local.",
        "a.b.c.d.e.f.cluster.local.",
        "other.cluster.local.",
    ] {
        assert_eq!(
            z.lookup(&n(name), RecordType::A),
            Answer::NxDomain,
            "{name}"
        );
    }
    for name in [
        "cluster.local.",
        "svc.cluster.local.",
        "default.svc.cluster.local.",
        "empty.svc.cluster.local.",
        "pod.cluster.local.",
    ] {
        assert_eq!(z.lookup(&n(name), RecordType::A), Answer::NoData, "{name}");
    }
    assert_eq!(
        answers(z.lookup(&n("cluster.local."), RecordType::NS)),
        ["ns.dns.cluster.local."]
    );
    assert_eq!(
        answers(z.lookup(&n("ns.dns.cluster.local."), RecordType::A)),
        ["10.43.0.10"]
    );
    assert_eq!(
        z.soa().data.to_string().split(' ').next(),
        Some("ns.dns.cluster.local.")
    );
    assert_eq!(z.lookup(&n("example.com."), RecordType::A), Answer::NotOurs);
}

#[test]
fn not_ready_until_synced() {
    let z = Zone::new("cluster.local", None).unwrap();
    assert_eq!(
        z.lookup(&n("web.default.svc.cluster.local."), RecordType::A),
        Answer::NotReady
    );
}

#[test]
fn ptr_for_cluster_ips_and_headless_hosts() {
    let mut z = zone();
    let ptr =
        |z: &Zone, ip: &str| z.lookup(&n(&reverse_name(ip.parse().unwrap())), RecordType::PTR);
    assert_eq!(
        answers(ptr(&z, "10.43.5.6")),
        ["web.default.svc.cluster.local."]
    );
    assert_eq!(
        answers(ptr(&z, "10.42.0.5")),
        ["db-0.db.apps.svc.cluster.local."]
    );
    assert_eq!(ptr(&z, "10.42.9.9"), Answer::NotOurs, "unknown: forwarded");
    // Deleting the service takes its reverse records with it.
    z.set_service("default", "web", None);
    assert_eq!(ptr(&z, "10.43.5.6"), Answer::NotOurs);
    assert_eq!(
        z.lookup(&n("web.default.svc.cluster.local."), RecordType::A),
        Answer::NxDomain
    );
    assert_eq!(z.len(), 2);
}

#[test]
fn reverse_names_round_trip() {
    for ip in ["10.42.0.5", "fd00::1:2", "::1"] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(reverse_ip(&n(&reverse_name(ip))), Some(ip));
    }
    assert_eq!(reverse_ip(&n("300.0.0.10.in-addr.arpa.")), None);
    assert_eq!(reverse_ip(&n("0.10.in-addr.arpa.")), None);
    assert_eq!(reverse_ip(&n("example.com.")), None);
}
