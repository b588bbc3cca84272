//! The ingress's HTTP/1 fast path against real sockets: a hyper server (an independent HTTP
//! implementation) and hand-written backends behind it, clients speaking raw HTTP/1.x (to
//! control pipelining, HTTP/1.0, chunked uploads and `Expect`), and HTTP/2 prior knowledge
//! handed over to hyper.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ingress::http1::Timeouts;
use ingress::proxy::{Listener, Shared};
use ingress::{http1, routes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves the ingress's fast path on a free port with one rule per `(host, backend port)`;
/// returns its address.
async fn ingress(routes_to: &[(&str, u16)]) -> SocketAddr {
    ingress_with(routes_to, Timeouts::default()).await
}

/// [`ingress`] with its timeouts.
async fn ingress_with(routes_to: &[(&str, u16)], timeouts: Timeouts) -> SocketAddr {
    let mut ingresses = Vec::new();
    let (mut services, mut slices) = (Vec::new(), Vec::new());
    for (i, (host, port)) in routes_to.iter().enumerate() {
        let name = format!("svc{i}");
        let mut rule = serde_json::json!({"http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": name, "port": {"number": 80}}}}]}});
        if !host.is_empty() {
            rule["host"] = serde_json::json!(host);
        }
        ingresses.push(
            serde_json::from_value::<k8s_openapi::api::networking::v1::Ingress>(
                serde_json::json!({"metadata": {"name": format!("ing{i}"), "namespace": "default"},
                    "spec": {"rules": [rule]}}),
            )
            .unwrap(),
        );
        services.push(
            serde_json::from_value::<k8s_openapi::api::core::v1::Service>(serde_json::json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"ports": [{"port": 80, "targetPort": *port}]}}))
            .unwrap(),
        );
        slices.push(
            serde_json::from_value::<k8s_openapi::api::discovery::v1::EndpointSlice>(
                serde_json::json!({
                "metadata": {"name": format!("{name}-x"), "namespace": "default",
                    "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"port": *port, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}),
            )
            .unwrap(),
        );
    }
    let refs: Vec<_> = ingresses.iter().collect();
    let table = routes::build(&refs, &services, &slices);
    let shared = Shared {
        table: Arc::new(RwLock::new(Arc::new(table))),
        pool: Default::default(),
        backends: Default::default(),
        timeouts,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let info = Listener {
        scheme: "http",
        port: addr.port(),
    };
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            tokio::spawn(http1::serve(stream, shared.clone(), info, peer));
        }
    });
    addr
}

/// A hyper backend; returns its port and how many connections it accepted.
async fn hyper_backend() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(answer);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (port, accepted)
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// `/chunked`: a body of unknown length (sent chunked); `/echo`: the request body back;
/// anything else: the headers the backend saw, one per line.
async fn answer(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let body: Body = match req.uri().path() {
        "/chunked" => {
            let frames = ["hello ", "chunked ", "world"]
                .map(|s| Ok::<_, Infallible>(Frame::data(Bytes::from_static(s.as_bytes()))));
            StreamBody::new(futures::stream::iter(frames)).boxed()
        }
        "/nocontent" => {
            let mut resp = Response::new(Full::new(Bytes::new()).boxed());
            *resp.status_mut() = hyper::StatusCode::NO_CONTENT;
            return Ok(resp);
        }
        "/echo" => {
            let data = req.into_body().collect().await.unwrap().to_bytes();
            Full::new(data).boxed()
        }
        _ => {
            let mut seen = format!("{} {}\n", req.method(), req.uri());
            for (k, v) in req.headers() {
                seen.push_str(&format!("{k}: {}\n", v.to_str().unwrap()));
            }
            Full::new(Bytes::from(seen)).boxed()
        }
    };
    Ok(Response::new(body))
}

/// A response as a client reads it: status, lowercase headers, body.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response from `conn` (buffered bytes in `buf`), delimited as HTTP/1.1 says;
/// a chunked body is decoded here independently of the code under test.
async fn read_response(conn: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> Got {
    let (status, headers, len) = loop {
        let mut h = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut h);
        if let httparse::Status::Complete(len) = r.parse(buf).unwrap() {
            let headers = r
                .headers
                .iter()
                .map(|h| {
                    let v = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_ascii_lowercase(), v)
                })
                .collect::<Vec<_>>();
            break (r.code.unwrap(), headers, len);
        }
        fill(conn, buf).await;
    };
    buf.drain(..len);
    let mut got = Got {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status < 200 || status == 204 || status == 304 {
        return got;
    }
    if let Some(n) = got.header("content-length") {
        let n: usize = n.parse().unwrap();
        while buf.len() < n {
            fill(conn, buf).await;
        }
        got.body = buf.drain(..n).collect();
    } else if got.header("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                fill(conn, buf).await;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            while buf.len() < line_end + 2 + size + 2 {
                fill(conn, buf).await;
            }
            got.body
                .extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        conn.read_to_end(buf).await.unwrap();
        got.body = std::mem::take(buf);
    }
    got
}

/// Sends `raw` on `conn` and reads the response.
async fn ask(conn: &mut TcpStream, buf: &mut Vec<u8>, raw: &[u8]) -> Got {
    conn.write_all(raw).await.unwrap();
    read_response(conn, buf, false).await
}

async fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
        .await
        .expect("a response within 10 s")
        .unwrap();
    assert!(
        n > 0,
        "connection closed early: {}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

/// Whether the ingress closed `conn` (reads EOF within 5 s).
async fn closed(conn: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), conn.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn keep_alive_pipelining_and_forwarded_headers() {
    let (port, accepted) = hyper_backend().await;
    let addr = ingress(&[("", port)]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..3 {
        let got = ask(
            &mut c,
            &mut buf,
            format!(
                "GET /n{i}?q HTTP/1.1\r\nHost: Shop.test:81\r\nX-Forwarded-For: 9.9.9.9\r\n\
                 Connection: keep-alive, x-private\r\nX-Private: 1\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(got.status, 200);
        let seen = got.text();
        assert!(seen.starts_with(&format!("GET /n{i}?q\n")), "{seen}");
        assert!(seen.contains("host: Shop.test:81\n"), "{seen}");
        assert!(
            seen.contains("x-forwarded-for: 9.9.9.9, 127.0.0.1\n"),
            "{seen}"
        );
        assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
        assert!(seen.contains("x-forwarded-host: Shop.test:81\n"), "{seen}");
        assert!(!seen.contains("x-private"), "{seen}");
        assert_eq!(got.header("connection"), None);
    }
    // Two requests in one write: two responses, in order.
    c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_response(&mut c, &mut buf, false)
            .await
            .text()
            .starts_with("GET /a\n")
    );
    assert!(
        read_response(&mut c, &mut buf, false)
            .await
            .text()
            .starts_with("GET /b\n")
    );
    // One backend connection carried them all.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // HEAD gets the head only, and the connection stays usable.
    c.write_all(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut c, &mut buf, true).await;
    assert_eq!(head.status, 200);
    assert!(
        read_response(&mut c, &mut buf, false)
            .await
            .text()
            .starts_with("GET /after\n")
    );
    // Connection: close is honoured.
    let got = ask(
        &mut c,
        &mut buf,
        b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(got.header("connection"), Some("close"));
    assert!(closed(&mut c).await);
}

#[tokio::test]
async fn chunked_bodies_both_ways_and_expect_continue() {
    let (port, _) = hyper_backend().await;
    let addr = ingress(&[("", port)]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    // A chunked response passes through to an HTTP/1.1 client.
    let got = ask(
        &mut c,
        &mut buf,
        b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(got.header("transfer-encoding"), Some("chunked"));
    assert_eq!(got.text(), "hello chunked world");
    // A chunked upload, sent in pieces.
    c.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwi")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.write_all(b"ki\r\n5\r\npedia\r\n0\r\n\r\n").await.unwrap();
    assert_eq!(
        read_response(&mut c, &mut buf, false).await.text(),
        "wikipedia"
    );
    // A large upload with Expect: 100-continue: the ingress says continue, then streams it.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let interim = ask(
        &mut c,
        &mut buf,
        format!(
            "PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(interim.status, 100);
    let got = ask(&mut c, &mut buf, &big).await;
    assert_eq!((got.status, got.body.len()), (200, big.len()));
    assert!(got.body == big);

    // An HTTP/1.0 client gets a chunked response decoded, delimited by the close.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /chunked HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(raw.contains("Connection: close\r\n"), "{raw}");
    assert!(
        !raw.to_ascii_lowercase().contains("transfer-encoding"),
        "{raw}"
    );
    assert!(raw.ends_with("\r\n\r\nhello chunked world"), "{raw}");
}

/// A backend that answers each connection's first request, then closes it without saying
/// so; it counts its connections.
async fn one_shot_backend() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
            });
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn pooled_connections_the_backend_closed_are_replaced() {
    let (port, accepted) = one_shot_backend().await;
    let addr = ingress(&[("", port)]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..6 {
        let got = ask(&mut c, &mut buf, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(
            (got.status, got.text().as_str()),
            (200, "ok"),
            "request {i}"
        );
        if i % 2 == 0 {
            // Sometimes the close is seen before the next request, sometimes only after it.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn errors_are_plain_answers() {
    let (port, _) = hyper_backend().await;
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let addr = ingress(&[("live.test", port), ("dead.test", dead_port)]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let got = ask(
        &mut c,
        &mut buf,
        b"GET / HTTP/1.1\r\nHost: nobody.test\r\n\r\n",
    )
    .await;
    assert_eq!(
        (got.status, got.text().as_str()),
        (404, "default backend - 404\n")
    );
    let got = ask(
        &mut c,
        &mut buf,
        b"GET / HTTP/1.1\r\nHost: dead.test\r\n\r\n",
    )
    .await;
    assert_eq!(got.status, 502);
    assert!(got.text().contains("no backend answered"), "{}", got.text());
    // The connection still serves after those.
    c.write_all(b"GET /ok HTTP/1.1\r\nHost: live.test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut c, &mut buf, false).await.status, 200);
    // Request smuggling shapes and garbage are refused, and the connection closed.
    for bad in [
        "POST / HTTP/1.1\r\nHost: live.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "\x16\x03\x01\x00\x05hello\r\n\r\n",
    ] {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let got = ask(&mut c, &mut buf, bad.as_bytes()).await;
        assert_eq!(got.status, 400, "{bad:?}: {}", got.text());
        assert!(closed(&mut c).await);
    }
}

#[tokio::test]
async fn upgrades_are_spliced() {
    // A backend that switches protocols and then echoes bytes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(head.contains("upgrade: echo\r\n") && head.contains("connection: upgrade\r\n"));
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n",
        )
        .await
        .unwrap();
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
    });
    let addr = ingress(&[("", port)]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(
        b"GET /e HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly ",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let got = read_response(&mut c, &mut buf, false).await;
    assert_eq!(got.status, 101);
    assert_eq!(got.header("upgrade"), Some("echo"));
    c.write_all(b"bytes").await.unwrap();
    while buf.len() < "early bytes".len() {
        fill(&mut c, &mut buf).await;
    }
    assert_eq!(buf, b"early bytes");
}

#[tokio::test]
async fn http2_prior_knowledge_goes_to_hyper() {
    let (port, _) = hyper_backend().await;
    let addr = ingress(&[("", port)]).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("http://h2.test/over-h2")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = String::from_utf8_lossy(&body);
    assert!(seen.starts_with("GET /over-h2\n"), "{seen}");
}

#[tokio::test]
async fn a_small_body_goes_out_with_its_head() {
    // A backend that sends the head, then the body 100 ms later (as a file server's
    // `writev` + `sendfile` can): the client still gets both in one write.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"later").await.unwrap();
        let _ = s.read(&mut buf).await;
    });
    let addr = ingress(&[("", port)]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = Vec::new();
    fill(&mut c, &mut first).await;
    let first = String::from_utf8(first).unwrap();
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(first.ends_with("\r\n\r\nlater"), "one read: {first:?}");
}

#[tokio::test]
async fn bodies_keep_their_framing_whatever_the_headers_say() {
    let (port, _) = hyper_backend().await;
    let addr = ingress(&[("", port)]).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    // A Connection token naming Content-Length must not turn the body into a second request.
    let inner = "GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n";
    let got = ask(
        &mut c,
        &mut buf,
        format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\n\
             Content-Length: {}\r\n\r\n{inner}",
            inner.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!((got.status, got.text().as_str()), (200, inner));
    // Pipelined uploads, then a 204 and a HEAD: each answer where it belongs.
    c.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nonePOST /echo HTTP/1.1\r\n\
          Host: x\r\nContent-Length: 3\r\n\r\ntwoGET /nocontent HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(read_response(&mut c, &mut buf, false).await.text(), "one");
    assert_eq!(read_response(&mut c, &mut buf, false).await.text(), "two");
    assert_eq!(read_response(&mut c, &mut buf, false).await.status, 204);
    assert!(
        read_response(&mut c, &mut buf, false)
            .await
            .text()
            .starts_with("GET /after\n")
    );
    // An HTTP/1.0 client asking for keep-alive, with a body.
    let got = ask(
        &mut c,
        &mut buf,
        b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(got.header("connection"), Some("keep-alive"));
    assert_eq!(got.text(), "abc");
    c.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_response(&mut c, &mut buf, false)
            .await
            .text()
            .starts_with("GET /again\n")
    );
    // A malformed chunked upload is the client's fault: 400.
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    c.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.write_all(b"2;\nxx\r\n0\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut c, &mut buf, false).await.status, 400);
}

#[tokio::test]
async fn a_backend_that_does_not_answer_gets_504() {
    // Accepts, reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    let timeouts = Timeouts {
        client: Duration::from_secs(60),
        backend: Duration::from_millis(300),
    };
    let addr = ingress_with(&[("", port)], timeouts).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let started = std::time::Instant::now();
    let got = ask(&mut c, &mut buf, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(got.status, 504, "{}", got.text());
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A client that sends half a head and stops is let go after the client timeout.
    let timeouts = Timeouts {
        client: Duration::from_millis(300),
        backend: Duration::from_secs(60),
    };
    let addr = ingress_with(&[("", port)], timeouts).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    assert!(closed(&mut c).await);
}
