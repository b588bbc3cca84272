//! End-to-end tests of the built-in ingress controller: real pods behind Ingress rules, reached
//! through the ingress's HTTP and HTTPS ports with curl (host and path routing, load spread,
//! `X-Forwarded-*`, TLS by SNI from a Secret and its replacement, HTTP/2), a WebSocket echo
//! through an upgrade, retries past a dead endpoint, 503 for a backend without endpoints, the
//! Ingress status and the access log.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::pods::{BUSYBOX, NGINX, wait_for};
use common::{Cluster, free_port};

/// `curl -s` with extra arguments; returns (exit code, body, `%{http_code} %{http_version}`).
fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, meta) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (
        out.status.code().unwrap_or(-1),
        body.to_string(),
        meta.to_string(),
    )
}

const APPS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: nginx, image: NGINX, ports: [{containerPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - name: httpd
        image: BUSYBOX
        command: ["sh", "-c"]
        args:
        - |
          mkdir -p /www/api /www/cgi-bin
          echo "api $(hostname)" > /www/api/index.html
          printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\nenv\n' > /www/cgi-bin/env
          chmod +x /www/cgi-bin/env
          exec httpd -f -p 8080 -h /www
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports: [{name: web, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody}
  ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: app}
spec:
  tls:
  - hosts: [secure.example.test]
    secretName: secure-tls
  rules:
  - http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {name: web}}}}
      - {path: /cgi-bin, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
      - {path: /empty, pathType: Exact, backend: {service: {name: nobody, port: {number: 80}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - host: secure.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
"#;

/// A self-signed certificate for `host` in `dir`: (cert path, key path).
fn certificate(dir: &std::path::Path, name: &str, host: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let crt_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&crt_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        crt_path.display().to_string(),
        key_path.display().to_string(),
    )
}

#[test]
fn ingress_routes_hosts_and_paths_over_http_https_and_websocket() {
    let c = Cluster::start_with_agent(&[]);
    let (http, https) = (c.ingress_http_port, c.ingress_https_port);
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = certificate(dir.path(), "first", "secure.example.test");
    c.kubectl(&[
        "create",
        "secret",
        "tls",
        "secure-tls",
        "--cert",
        &crt,
        "--key",
        &key,
    ]);
    c.apply(&APPS.replace("NGINX", NGINX).replace("BUSYBOX", BUSYBOX));

    // The built-in class exists and is the default.
    wait_for("the ingress class", 30, || {
        c.try_kubectl(&["get", "ingressclass", "corten"])
            .status
            .success()
    });
    let class = c.get_json(&["get", "ingressclass", "corten"]);
    assert_eq!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
        "true"
    );
    assert_eq!(class["spec"]["controller"], "corten.io/ingress-controller");

    let base = format!("http://127.0.0.1:{http}");
    wait_for("both api pods behind the ingress", 120, || {
        let seen: std::collections::HashSet<String> = (0..10)
            .map(|_| curl(&[&format!("{base}/api/")]).1)
            .filter(|b| b.starts_with("api "))
            .collect();
        seen.len() == 2
    });
    // Path routing: the rest goes to nginx; /apis is not under /api.
    wait_for("nginx behind the ingress", 60, || {
        curl(&[&format!("{base}/")]).1.contains("Welcome to nginx")
    });
    let (_, body, meta) = curl(&[&format!("{base}/apis")]);
    assert!(
        meta.starts_with("404") && body.contains("nginx"),
        "{meta} {body}"
    );

    // X-Forwarded-* reach the backend (a CGI script prints its environment).
    let (_, env, meta) = curl(&[
        "-H",
        "Host: shop.example.test:8080",
        &format!("{base}/cgi-bin/env"),
    ]);
    assert!(meta.starts_with("200"), "{meta} {env}");
    assert!(env.contains("HTTP_X_FORWARDED_FOR=127.0.0.1"), "{env}");
    assert!(env.contains("HTTP_X_FORWARDED_PROTO=http"), "{env}");
    assert!(
        env.contains("HTTP_X_FORWARDED_HOST=shop.example.test:8080"),
        "{env}"
    );

    // A backend without endpoints: 503 that says why.
    let (_, body, meta) = curl(&[&format!("{base}/empty")]);
    assert!(meta.starts_with("503"), "{meta} {body}");
    assert!(
        body.contains("no ready endpoints for service default/nobody"),
        "{body}"
    );

    // HTTP/2 without TLS (prior knowledge) and with TLS (ALPN), the certificate by SNI.
    let (_, _, meta) = curl(&["--http2-prior-knowledge", &format!("{base}/")]);
    assert_eq!(meta, "200 2", "h2c");
    let resolve = format!("secure.example.test:{https}:127.0.0.1");
    let secure = format!("https://secure.example.test:{https}/api/");
    let (code, body, meta) = curl(&["--resolve", &resolve, "--cacert", &crt, &secure]);
    assert_eq!((code, meta.as_str()), (0, "200 2"), "{body}");
    assert!(body.starts_with("api "), "{body}");
    // A name no Ingress covers gets the default certificate, which that CA does not sign.
    let other = format!("other.example.test:{https}:127.0.0.1");
    let (code, _, _) = curl(&[
        "--resolve",
        &other,
        "--cacert",
        &crt,
        &format!("https://other.example.test:{https}/"),
    ]);
    assert_eq!(code, 60, "curl should refuse the default certificate");
    let (code, _, meta) = curl(&["-k", "--http1.1", &format!("https://127.0.0.1:{https}/")]);
    assert_eq!((code, meta.as_str()), (0, "200 1.1"));

    // Replacing the Secret swaps the certificate.
    let (crt2, key2) = certificate(dir.path(), "second", "secure.example.test");
    let secret = c.kubectl(&[
        "create",
        "secret",
        "tls",
        "secure-tls",
        "--cert",
        &crt2,
        "--key",
        &key2,
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    c.apply(&secret);
    wait_for("the new certificate", 30, || {
        curl(&["--resolve", &resolve, "--cacert", &crt2, &secure]).0 == 0
    });
    assert_eq!(
        curl(&["--resolve", &resolve, "--cacert", &crt, &secure]).0,
        60
    );

    // The Ingress reports the node's address.
    let node_ip = c.kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    wait_for("the ingress status", 30, || {
        c.kubectl(&[
            "get",
            "ingress",
            "app",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ]) == node_ip
    });
    let table = c.kubectl(&["get", "ingress", "app"]);
    assert!(
        table.contains("corten") && table.contains(&node_ip),
        "{table}"
    );

    websocket_and_retries(&c, &base, &node_ip);

    // One access-log line per request (written in batches, within 100 ms).
    wait_for("the access log line", 5, || {
        let log = c.log();
        log.contains("ingress::access") && log.contains("\"GET 127.0.0.1/empty HTTP/1.1\" 503")
    });
}

/// A WebSocket echo server on the host behind a Service whose EndpointSlice (written by hand)
/// also lists a dead endpoint: every plain request still succeeds (the dead one is retried
/// past), and a WebSocket conversation goes through the upgrade.
fn websocket_and_retries(c: &Cluster, base: &str, node_ip: &str) {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let live = listener.local_addr().unwrap().port();
    let dead = free_port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || echo_server(conn));
        }
    });
    c.apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  ports: [{{name: ws, port: 80, targetPort: {live}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-manual
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: ws, port: {live}, protocol: TCP}}]
endpoints:
- addresses: ["{node_ip}"]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-dead
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: ws, port: {dead}, protocol: TCP}}]
endpoints:
- addresses: ["{node_ip}"]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: echo}}
spec:
  ingressClassName: corten
  rules:
  - host: echo.example.test
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: echo, port: {{name: ws}}}}}}}}
"#
    ));
    wait_for("the echo backend", 30, || {
        curl(&["-H", "Host: echo.example.test", &format!("{base}/")]).1 == "plain echo"
    });
    for _ in 0..20 {
        let (_, body, meta) = curl(&["-H", "Host: echo.example.test", &format!("{base}/")]);
        assert_eq!((meta.as_str(), body.as_str()), ("200 1.1", "plain echo"));
    }

    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let mut ws = TcpStream::connect(("127.0.0.1", port)).unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    write!(
        ws,
        "GET /chat HTTP/1.1\r\nHost: echo.example.test\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(ws.try_clone().unwrap());
    let head = read_head(&mut reader);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let accept = kubelet::server::websocket::accept_key(key);
    assert!(
        head.to_ascii_lowercase().contains(&format!(
            "sec-websocket-accept: {}",
            accept.to_ascii_lowercase()
        )),
        "{head}"
    );
    for msg in ["hello", "through the ingress"] {
        ws.write_all(&masked_frame(0x1, msg.as_bytes())).unwrap();
        let (opcode, payload) = read_frame(&mut reader);
        assert_eq!((opcode, payload.as_slice()), (0x1, msg.as_bytes()));
    }
}

/// The backend: a plain request gets "plain echo"; a WebSocket upgrade gets the handshake,
/// then every text frame echoed.
fn echo_server(conn: TcpStream) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let head = read_head(&mut reader);
        if head.is_empty() {
            return;
        }
        let key = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_string())
        });
        let Some(key) = key else {
            let _ = out.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\r\nplain echo",
            );
            continue;
        };
        let accept = kubelet::server::websocket::accept_key(&key);
        let _ = write!(
            out,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        loop {
            let (opcode, payload) = read_frame(&mut reader);
            if opcode != 0x1 {
                return;
            }
            let mut frame = vec![0x81, payload.len() as u8];
            frame.extend(payload);
            if out.write_all(&frame).is_err() {
                return;
            }
        }
    }
}

/// An HTTP head up to the blank line ("" at end of stream).
fn read_head(r: &mut impl BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

/// A short masked (client-to-server) frame.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend(mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A short frame, unmasking it if masked: (opcode, payload); opcode 0 at end of stream.
fn read_frame(r: &mut impl Read) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    if r.read_exact(&mut head).is_err() {
        return (0, vec![]);
    }
    let len = usize::from(head[1] & 0x7f);
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        r.read_exact(&mut mask).unwrap();
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).unwrap();
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    (head[0] & 0x0f, payload)
}
