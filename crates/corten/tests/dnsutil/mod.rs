//! DNS helpers for the cluster DNS tests: a small client (UDP and TCP, hickory-proto messages)
//! and a tiny upstream resolver on loopback that the server under test forwards to (so no
//! test depends on, or sends traffic to, the machine's real resolvers).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// A query message for `name` (`qtype`), recursion desired.
pub fn query_message(name: &str, qtype: RecordType) -> Message {
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    msg
}

fn rand_id() -> u16 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (n ^ (n >> 16)) as u16
}

/// Sends `bytes` over UDP and returns the first datagram back (None after `timeout`).
pub fn raw_udp(server: SocketAddr, bytes: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    socket.send_to(bytes, server).ok()?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Asks `server` over UDP (three tries, 2 s each); panics without an answer.
pub fn query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let msg = query_message(name, qtype);
    let bytes = msg.to_vec().expect("encode");
    for _ in 0..3 {
        if let Some(answer) = raw_udp(server, &bytes, Duration::from_secs(2)) {
            let answer = Message::from_vec(&answer).expect("decode answer");
            assert_eq!(answer.metadata.id, msg.metadata.id);
            return answer;
        }
    }
    panic!("no answer from {server} for {name} {qtype}");
}

/// Asks `server` over TCP.
pub fn query_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let msg = query_message(name, qtype);
    let bytes = msg.to_vec().expect("encode");
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(2)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).expect("write");
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).expect("length");
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).expect("answer");
    Message::from_vec(&buf).expect("decode answer")
}

/// The answer section's data, as text (`10.43.0.1`, `0 100 80 web.default.svc...`).
pub fn answers(msg: &Message) -> Vec<String> {
    msg.answers.iter().map(|r| r.data.to_string()).collect()
}

/// The answer section's data of type `t`, as text.
pub fn answers_of(msg: &Message, t: RecordType) -> Vec<String> {
    msg.answers
        .iter()
        .filter(|r| r.record_type() == t)
        .map(|r| r.data.to_string())
        .collect()
}

/// Polls `server` for `name`'s A records until `done` holds for the answer; returns how long
/// it took (panics after `limit`).
pub fn wait_answer(
    server: SocketAddr,
    name: &str,
    limit: Duration,
    done: impl Fn(&Message) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let msg = query(server, name, RecordType::A);
        if done(&msg) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{name}: still {:?} {:?} after {limit:?}",
            msg.metadata.response_code,
            answers(&msg)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tiny upstream resolver on 127.0.0.1 (UDP and TCP on the same port): A records for the
/// names it was given, NXDOMAIN for everything else. Stops when dropped.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How many queries it has answered.
    pub queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Upstream {
    /// Starts one that knows `names` (lowercase, fully qualified: `outside.example.`).
    pub fn start(names: &[(&str, Ipv4Addr)]) -> Self {
        // The kernel picks a free UDP port; the same TCP port may be taken (by another test's
        // connection), so try again with another one until both are ours.
        let (udp, tcp, addr) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let addr = udp.local_addr().ok()?;
                let tcp = TcpListener::bind(addr).ok()?;
                Some((udp, tcp, addr))
            })
            .expect("a port free for both UDP and TCP on 127.0.0.1");
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let names: Arc<HashMap<String, Ipv4Addr>> =
            Arc::new(names.iter().map(|(n, ip)| (n.to_string(), *ip)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        {
            let (names, stop, queries) = (names.clone(), stop.clone(), queries.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some(answer) = answer(&names, &buf[..n]) {
                        queries.fetch_add(1, Ordering::Relaxed);
                        let _ = udp.send_to(&answer, from);
                    }
                }
            });
        }
        {
            let (stop, queries) = (stop.clone(), queries.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut s, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).is_err() {
                        continue;
                    }
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    if s.read_exact(&mut q).is_err() {
                        continue;
                    }
                    if let Some(a) = answer(&names, &q) {
                        queries.fetch_add(1, Ordering::Relaxed);
                        let mut framed = (a.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&a);
                        let _ = s.write_all(&framed);
                    }
                }
            });
        }
        Upstream {
            addr,
            queries,
            stop,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(names: &HashMap<String, Ipv4Addr>, query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let mut reply = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = q.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    let name = question.name().to_lowercase().to_string();
    match names.get(&name) {
        Some(ip) => {
            if question.query_type() == RecordType::A {
                reply.add_answer(Record::from_rdata(
                    question.name().clone(),
                    60,
                    RData::A(A(*ip)),
                ));
            }
        }
        None => reply.metadata.response_code = ResponseCode::NXDomain,
    }
    reply.to_vec().ok()
}
