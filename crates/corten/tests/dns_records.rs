//! Cluster DNS end to end without a node agent: `corten server --dns-listen 127.0.0.1:PORT`
//! serves cluster.local from its watches, queried from the test with a small hickory-proto
//! client over UDP and TCP; names outside the cluster go to a tiny upstream on loopback.
//! (In-pod resolution through 10.43.0.10 is in `kubelet_dns.rs`.)

mod common;
mod dnsutil;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::{Cluster, free_port};
use dnsutil::{Upstream, answers, answers_of, query, query_message, query_tcp, raw_udp};
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

fn start(upstream: SocketAddr) -> (Cluster, SocketAddr) {
    // A free TCP port is almost always free for UDP too.
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let c = Cluster::start_with(&[
        "--dns-listen",
        &dns.to_string(),
        "--dns-upstream",
        &upstream.to_string(),
    ]);
    // Ready once the zone is loaded (SERVFAIL before).
    dnsutil::wait_answer(
        dns,
        "kubernetes.default.svc.cluster.local.",
        Duration::from_secs(20),
        |m| m.metadata.response_code == ResponseCode::NoError,
    );
    (c, dns)
}

fn soa_only(msg: &Message) -> bool {
    msg.answers.is_empty()
        && msg.authorities.len() == 1
        && msg.authorities[0].record_type() == RecordType::SOA
        && msg.metadata.authoritative
}

#[test]
fn services_headless_srv_ptr_external_name_and_forwarding() {
    let upstream = Upstream::start(&[
        ("outside.example.", "192.0.2.44".parse().unwrap()),
        ("ext-target.example.", "192.0.2.45".parse().unwrap()),
    ]);
    let (c, dns) = start(upstream.addr);

    // The kube-dns Service, as in k3s, marked node-local for the proxy.
    let svc = c.get_json(&["get", "svc", "kube-dns", "-n", "kube-system"]);
    assert_eq!(svc["spec"]["clusterIP"], "10.43.0.10");
    assert_eq!(svc["metadata"]["labels"]["k8s-app"], "kube-dns");
    assert_eq!(
        svc["metadata"]["annotations"]["corten.io/node-local"],
        "true"
    );
    let ports: Vec<String> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}/{}/{}", p["name"], p["port"], p["protocol"]))
        .collect();
    assert_eq!(ports, [r#""dns"/53/"UDP""#, r#""dns-tcp"/53/"TCP""#]);

    // A ClusterIP service, over UDP and TCP; AAAA is no data; a missing name NXDOMAIN.
    let k = query(dns, "kubernetes.default.svc.cluster.local.", RecordType::A);
    assert_eq!(answers(&k), ["10.43.0.1"]);
    assert_eq!(k.answers[0].ttl, 5);
    assert!(k.metadata.authoritative);
    let t = query_tcp(dns, "kubernetes.default.svc.cluster.local.", RecordType::A);
    assert_eq!(answers(&t), ["10.43.0.1"]);
    let aaaa = query(
        dns,
        "kubernetes.default.svc.cluster.local.",
        RecordType::AAAA,
    );
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(soa_only(&aaaa), "{aaaa:?}");
    let nx = query(dns, "nope.default.svc.cluster.local.", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(soa_only(&nx), "{nx:?}");
    let kdns = query(
        dns,
        "kube-dns.kube-system.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(answers(&kdns), ["10.43.0.10"]);

    // A new service resolves within a second of its creation; SRV and PTR follow it.
    c.kubectl(&["create", "service", "clusterip", "fresh", "--tcp=8080:80"]);
    let took = dnsutil::wait_answer(
        dns,
        "fresh.default.svc.cluster.local.",
        Duration::from_secs(1),
        |m| !m.answers.is_empty(),
    );
    eprintln!("new service resolved {took:?} after kubectl returned");
    let ip = c.kubectl(&["get", "svc", "fresh", "-o", "jsonpath={.spec.clusterIP}"]);
    let fresh = query(dns, "fresh.default.svc.cluster.local.", RecordType::A);
    assert_eq!(answers(&fresh), [ip.as_str()]);
    let srv = query(
        dns,
        "_8080-80._tcp.fresh.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        answers(&srv),
        ["0 100 8080 fresh.default.svc.cluster.local."]
    );
    assert_eq!(answers(&srv.clone()).len(), 1);
    assert_eq!(srv.additionals.len(), 1, "the target's address comes along");
    let octets: Vec<&str> = ip.split('.').rev().collect();
    let ptr = query(
        dns,
        &format!("{}.in-addr.arpa.", octets.join(".")),
        RecordType::PTR,
    );
    assert_eq!(answers(&ptr), ["fresh.default.svc.cluster.local."]);
    // Deleted: NXDOMAIN as soon as the watch says so.
    c.kubectl(&["delete", "service", "fresh"]);
    dnsutil::wait_answer(
        dns,
        "fresh.default.svc.cluster.local.",
        Duration::from_secs(1),
        |m| m.metadata.response_code == ResponseCode::NXDomain,
    );

    // A headless service (Endpoints written by hand: no pods here).
    c.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: db}
subsets:
- addresses:
  - {ip: 10.42.0.5, hostname: db-0}
  - {ip: 10.42.0.6}
  notReadyAddresses:
  - {ip: 10.42.0.7}
  ports: [{name: pg, port: 5432, protocol: TCP}]
"#,
    );
    dnsutil::wait_answer(
        dns,
        "db.default.svc.cluster.local.",
        Duration::from_secs(2),
        |m| m.answers.len() == 2,
    );
    let mut ips = answers(&query(dns, "db.default.svc.cluster.local.", RecordType::A));
    ips.sort();
    assert_eq!(ips, ["10.42.0.5", "10.42.0.6"], "ready addresses only");
    let host = query(dns, "db-0.db.default.svc.cluster.local.", RecordType::A);
    assert_eq!(answers(&host), ["10.42.0.5"]);
    let other = query(
        dns,
        "10-42-0-6.db.default.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(answers(&other), ["10.42.0.6"]);
    let mut srv = answers(&query(
        dns,
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
    ));
    srv.sort();
    assert_eq!(
        srv,
        [
            "0 50 5432 10-42-0-6.db.default.svc.cluster.local.",
            "0 50 5432 db-0.db.default.svc.cluster.local."
        ]
    );
    let ptr = query(dns, "5.0.42.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(answers(&ptr), ["db-0.db.default.svc.cluster.local."]);
    // A large answer: truncated over UDP (no EDNS: 512 bytes), whole over TCP.
    let addresses: Vec<String> = (1..=100).map(|i| format!("{{ip: 10.42.1.{i}}}")).collect();
    c.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: big}}\nspec: {{clusterIP: None}}\n---\n\
         apiVersion: v1\nkind: Endpoints\nmetadata: {{name: big}}\nsubsets: [{{addresses: [{}]}}]\n",
        addresses.join(", ")
    ));
    dnsutil::wait_answer(
        dns,
        "big.default.svc.cluster.local.",
        Duration::from_secs(2),
        |m| m.metadata.truncation,
    );
    let udp = query(dns, "big.default.svc.cluster.local.", RecordType::A);
    assert!(udp.metadata.truncation && udp.answers.len() < 100);
    let tcp = query_tcp(dns, "big.default.svc.cluster.local.", RecordType::A);
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 100);

    // Pod records.
    let pod = query(dns, "10-42-0-9.default.pod.cluster.local.", RecordType::A);
    assert_eq!(answers(&pod), ["10.42.0.9"]);
    let pod = query(dns, "10-42-0-9.nowhere.pod.cluster.local.", RecordType::A);
    assert_eq!(pod.metadata.response_code, ResponseCode::NXDomain);

    // ExternalName: a CNAME, followed through the upstream.
    c.kubectl(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name",
        "ext-target.example",
    ]);
    dnsutil::wait_answer(
        dns,
        "ext.default.svc.cluster.local.",
        Duration::from_secs(2),
        |m| !m.answers.is_empty(),
    );
    let ext = query(dns, "ext.default.svc.cluster.local.", RecordType::A);
    assert_eq!(answers_of(&ext, RecordType::CNAME), ["ext-target.example."]);
    assert_eq!(answers_of(&ext, RecordType::A), ["192.0.2.45"]);

    // Other names go to the upstream, over UDP and TCP; its NXDOMAIN is passed on.
    let before = upstream.queries.load(std::sync::atomic::Ordering::Relaxed);
    let out = query(dns, "outside.example.", RecordType::A);
    assert_eq!(answers(&out), ["192.0.2.44"]);
    assert!(!out.metadata.authoritative);
    let out = query_tcp(dns, "outside.example.", RecordType::A);
    assert_eq!(answers(&out), ["192.0.2.44"]);
    let nx = query(dns, "unknown.example.", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(upstream.queries.load(std::sync::atomic::Ordering::Relaxed) >= before + 3);
}

#[test]
fn bad_input_gets_errors_and_never_stops_the_server() {
    // An upstream that never answers: forwarding ends in SERVFAIL.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (mut c, dns) = start(silent.local_addr().unwrap());
    let wait = Duration::from_secs(2);

    // Garbage with a header: FORMERR. Shorter than a header: no answer.
    let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0xff; 40]);
    let reply = raw_udp(dns, &garbage, wait).expect("an answer to garbage");
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert!(raw_udp(dns, &[1, 2, 3], Duration::from_millis(300)).is_none());

    // Two questions: FORMERR. Another opcode: NOTIMP. Another class: REFUSED.
    let mut two = query_message("a.default.svc.cluster.local.", RecordType::A);
    two.add_query(query_message("b.default.svc.cluster.local.", RecordType::A).queries[0].clone());
    let reply = Message::from_vec(&raw_udp(dns, &two.to_vec().unwrap(), wait).unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    let mut notify = query_message("cluster.local.", RecordType::SOA);
    notify.metadata.op_code = OpCode::Notify;
    let reply = Message::from_vec(&raw_udp(dns, &notify.to_vec().unwrap(), wait).unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);
    let mut chaos = query_message("version.bind.", RecordType::TXT);
    chaos.queries[0].set_query_class(DNSClass::CH);
    let reply = Message::from_vec(&raw_udp(dns, &chaos.to_vec().unwrap(), wait).unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    // A response sent as a query is ignored (no reflection).
    let mut response = query_message("cluster.local.", RecordType::SOA);
    response.metadata.message_type = hickory_proto::op::MessageType::Response;
    assert!(raw_udp(dns, &response.to_vec().unwrap(), Duration::from_millis(300)).is_none());
    // A label that is not UTF-8 inside the zone: NXDOMAIN.
    let mut odd = query_message("x.default.svc.cluster.local.", RecordType::A)
        .to_vec()
        .unwrap();
    let at = odd.windows(2).position(|w| w == [1, b'x']).unwrap();
    odd[at + 1] = 0xfe;
    let reply = Message::from_vec(&raw_udp(dns, &odd, wait).unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    // A TCP client that sends half a message and goes away.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(dns).unwrap();
        let _ = s.write_all(&[0, 40, 1, 2, 3]);
    }

    // No upstream answers: SERVFAIL (after the upstream timeout).
    let out = query(dns, "outside.example.", RecordType::A);
    assert_eq!(out.metadata.response_code, ResponseCode::ServFail);

    // Still serving, and stops cleanly.
    let k = query(dns, "kubernetes.default.svc.cluster.local.", RecordType::A);
    assert_eq!(answers(&k), ["10.43.0.1"]);
    assert!(c.stop(), "server did not stop cleanly: {}", c.log());
    assert!(
        raw_udp(
            dns,
            &query_message("cluster.local.", RecordType::SOA)
                .to_vec()
                .unwrap(),
            Duration::from_millis(300)
        )
        .is_none(),
        "still answering after stop"
    );
}
