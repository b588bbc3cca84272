//! The guestbook's HTTP side for the test: a minimal HTTP/1.0 client (a fresh connection per
//! request, as a browser's first request makes), the API's two calls, and [`Traffic`], threads
//! that write and read entries in a loop and count what failed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// An HTTP answer.
pub struct Response {
    /// The status code.
    pub code: u16,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: String,
}

impl Response {
    /// The body as JSON (null if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.0 request (a fresh connection each time, as a browser's first request) to
/// `addr`; `Err` for anything below HTTP (refused, reset, timed out).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Response, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header in {text:?}"))?;
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        code,
        headers,
        body: body.to_string(),
    })
}

/// Posts an entry; returns its id.
pub fn post(addr: SocketAddr, text: &str) -> Result<i64, String> {
    let r = http(addr, "POST", "/api/entries", Some(&json!({ "text": text })))?;
    if r.code != 201 {
        return Err(format!("POST: {} {}", r.code, r.body.trim()));
    }
    r.json()["entry"]["id"]
        .as_i64()
        .ok_or_else(|| format!("POST: no id in {}", r.body))
}

/// Every entry, oldest first, as (id, text).
pub fn entries(addr: SocketAddr) -> Result<Vec<(i64, String)>, String> {
    let r = http(addr, "GET", "/api/entries", None)?;
    if r.code != 200 {
        return Err(format!("GET: {} {}", r.code, r.body.trim()));
    }
    Ok(r.json()["entries"]
        .as_array()
        .ok_or_else(|| format!("GET: no entries in {}", r.body))?
        .iter()
        .map(|e| {
            (
                e["id"].as_i64().unwrap_or(-1),
                e["text"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

/// What a [`Traffic`] loop saw.
#[derive(Default, Debug)]
pub struct Stats {
    /// Requests made.
    pub requests: usize,
    /// What failed, with when.
    pub failures: Vec<String>,
    /// Ids of the writes the API acknowledged.
    pub acked: Vec<i64>,
    /// Responses per backend version (X-Guestbook-Version).
    pub versions: BTreeMap<String, usize>,
}

/// Writer/reader threads against the guestbook: each posts an entry, then reads the latest
/// entries back through the same address and checks that its write is there, over and over
/// until stopped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<Stats>>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Traffic {
    /// Starts `threads` loops, spread over `addrs` in turn; entries are named
    /// `NAME-THREAD-N`.
    pub fn start(addrs: &[SocketAddr], name: &str, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(Stats::default()));
        let threads = (0..threads)
            .map(|t| {
                let (stop, stats, name) = (stop.clone(), stats.clone(), name.to_string());
                let addr = addrs[t % addrs.len()];
                let (post, get) = (format!("POST {addr}"), format!("GET {addr}"));
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let text = format!("{name}-{t}-{n}");
                        let r = http(addr, "POST", "/api/entries", Some(&json!({ "text": text })));
                        let id =
                            record(&stats, &post, &r, 201).and_then(|b| b["entry"]["id"].as_i64());
                        if let Some(id) = id {
                            stats.lock().unwrap().acked.push(id);
                            let r = http(addr, "GET", "/api/entries?limit=50", None);
                            if let Some(b) = record(&stats, &get, &r, 200) {
                                let seen = b["entries"]
                                    .as_array()
                                    .is_some_and(|es| es.iter().any(|e| e["id"] == id));
                                if !seen {
                                    stats.lock().unwrap().failures.push(format!(
                                        "{} {get} after POST: entry {id} missing in {}",
                                        jiff::Timestamp::now(),
                                        b["entries"]
                                    ));
                                }
                            }
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            stats,
            threads,
            started: Instant::now(),
        }
    }

    /// Stops the loops and returns (and prints) what they saw.
    pub fn finish(self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("traffic thread");
        }
        let stats = std::mem::take(&mut *self.stats.lock().unwrap());
        eprintln!(
            "traffic: {} requests in {:.1}s, {} writes acknowledged, {} failed, versions {:?}",
            stats.requests,
            self.started.elapsed().as_secs_f64(),
            stats.acked.len(),
            stats.failures.len(),
            stats.versions
        );
        stats
    }
}

/// Counts a response; returns its JSON body when it has the expected code.
fn record(
    stats: &Mutex<Stats>,
    what: &str,
    r: &Result<Response, String>,
    want: u16,
) -> Option<Value> {
    let mut s = stats.lock().unwrap();
    s.requests += 1;
    match r {
        Ok(r) if r.code == want => {
            if let Some(v) = r.headers.get("x-guestbook-version") {
                *s.versions.entry(v.clone()).or_default() += 1;
            }
            Some(r.json())
        }
        Ok(r) => {
            let body = r.body.split("<title>").nth(1).unwrap_or(&r.body);
            let body = body.split("</title>").next().unwrap_or(body).trim();
            s.failures.push(format!(
                "{} {what}: {} {body}",
                jiff::Timestamp::now(),
                r.code
            ));
            None
        }
        Err(e) => {
            s.failures
                .push(format!("{} {what}: {e}", jiff::Timestamp::now()));
            None
        }
    }
}
