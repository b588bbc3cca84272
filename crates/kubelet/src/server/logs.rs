//! `GET /containerLogs/{ns}/{pod}/{container}`: a container's log, read from the CRI log file
//! the runtime writes (`DATA_DIR/agent/logs/NS_NAME_UID/CONTAINER/ATTEMPT.log`), as upstream's
//! `kuberuntime/logs` reads it.
//!
//! Each file line is `RFC3339NANO STREAM TAG MSG`: tag `F` ends a line, `P` is a piece of one
//! that the following records continue (its newline is dropped, so the pieces join). Options:
//! `tailLines` (the last N file lines), `sinceSeconds` / `sinceTime` (records older are
//! skipped), `timestamps` (each line prefixed with its RFC 3339 time and a space),
//! `limitBytes` (the output stops after that many bytes), `previous` (the container's last
//! terminated instance, from the pod's `lastState`), and `follow` (new records are streamed as
//! they come until the container stops running or the client goes away).

use std::io::SeekFrom;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;

use super::{Body, BoxError, Ctx, Error, query_pairs, resolve};
use crate::runtime::{Cri, cri};

/// How often a followed log is polled for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// How often a followed container's state is checked.
const STATE_CHECK: Duration = Duration::from_secs(1);
/// Output is sent in chunks of about this size (and at every end of file).
const CHUNK: usize = 32 * 1024;

/// The log options of a request (upstream's `PodLogOptions`, as the API server forwards them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Stream new records until the container stops.
    pub follow: bool,
    /// The previous (terminated) instance of the container.
    pub previous: bool,
    /// Prefix lines with their time.
    pub timestamps: bool,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Only records at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Reads the options from a query string; malformed values are a 400.
    pub fn parse(query: &str) -> Result<Self, Error> {
        let mut o = Self::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (k, v) in query_pairs(query) {
            match k.as_str() {
                "follow" => o.follow = parse_bool(&k, &v)?,
                "previous" => o.previous = parse_bool(&k, &v)?,
                "timestamps" => o.timestamps = parse_bool(&k, &v)?,
                "tailLines" => o.tail_lines = Some(parse_count(&k, &v)?),
                "limitBytes" => o.limit_bytes = Some(parse_count(&k, &v)?).filter(|n| *n > 0),
                "sinceSeconds" => since_seconds = Some(parse_count(&k, &v)?),
                "sinceTime" => {
                    since_time = Some(v.parse::<jiff::Timestamp>().map_err(|_| {
                        Error::bad_request(format!(
                            "invalid value for sinceTime: {v:?} is not an RFC 3339 time"
                        ))
                    })?)
                }
                _ => {}
            }
        }
        o.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err(Error::bad_request(
                    "at most one of `sinceTime` or `sinceSeconds` may be specified",
                ));
            }
            (Some(s), None) => jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_secs(
                    s.min(i64::MAX as u64) as i64
                ))
                .ok(),
            (None, t) => t,
        };
        Ok(o)
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, Error> {
    match v {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        _ => Err(Error::bad_request(format!(
            "invalid value for {key}: {v:?} is not a boolean"
        ))),
    }
}

fn parse_count(key: &str, v: &str) -> Result<u64, Error> {
    v.parse::<u64>().map_err(|_| {
        Error::bad_request(format!(
            "invalid value for {key}: {v:?} is not a non-negative integer"
        ))
    })
}

/// Serves one log request.
pub async fn serve(
    ctx: &Ctx,
    ns: &str,
    pod: &str,
    container: &str,
    query: &str,
) -> Result<Response<Body>, Error> {
    let opts = LogOptions::parse(query)?;
    let id = if opts.previous {
        previous_container(ctx, ns, pod, container).await?
    } else {
        current_container(ctx, ns, pod, container).await?
    };
    let status = resolve::status(&ctx.cri, &id).await?;
    if status.log_path.is_empty() {
        return Err(Error::internal(format!(
            "container {container:?} in pod {pod:?} has no log file"
        )));
    }
    let file = tokio::fs::File::open(&status.log_path).await.map_err(|e| {
        Error::internal(format!(
            "failed to open log file {:?} of container {container:?} in pod {pod:?}: {e}",
            status.log_path
        ))
    })?;
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let cri = ctx.cri.clone();
    tokio::spawn(async move {
        if let Err(e) = pump(&cri, &id, file, &opts, &tx).await {
            tracing::debug!(container = %id, "log stream ended: {e}");
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

/// The container instance plain logs read: the newest attempt, whatever its state.
async fn current_container(ctx: &Ctx, ns: &str, pod: &str, name: &str) -> Result<String, Error> {
    if let Some(c) = resolve::containers(&ctx.cri, ns, pod, name)
        .await?
        .into_iter()
        .next()
    {
        return Ok(c.id);
    }
    // Nothing in the runtime yet: say why, as upstream does, from the pod's status.
    let p = get_pod(ctx, ns, pod).await?;
    let status = container_status(&p, name)
        .ok_or_else(|| Error::not_found(format!("container {name:?} not found in pod {pod:?}")))?;
    let reason = status
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone())
        .unwrap_or_else(|| "ContainerCreating".into());
    let why = match reason.as_str() {
        "ErrImagePull" => "image can't be pulled".to_string(),
        "ImagePullBackOff" => "trying and failing to pull image".to_string(),
        r => r.to_string(),
    };
    Err(Error::bad_request(format!(
        "container {name:?} in pod {pod:?} is waiting to start: {why}"
    )))
}

/// The container instance `previous=true` reads: the pod's `lastState.terminated` one.
async fn previous_container(ctx: &Ctx, ns: &str, pod: &str, name: &str) -> Result<String, Error> {
    let p = get_pod(ctx, ns, pod).await?;
    let status = container_status(&p, name)
        .ok_or_else(|| Error::not_found(format!("container {name:?} not found in pod {pod:?}")))?;
    status
        .and_then(|s| s.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.container_id.as_deref())
        .map(|id| id.rsplit("://").next().unwrap_or(id).to_string())
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            Error::bad_request(format!(
                "previous terminated container {name:?} in pod {pod:?} not found"
            ))
        })
}

async fn get_pod(ctx: &Ctx, ns: &str, pod: &str) -> Result<Pod, Error> {
    kube::Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .get(pod)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => {
                Error::not_found(format!("pod {pod:?} does not exist"))
            }
            e => Error::internal(format!("reading pod {ns}/{pod}: {e}")),
        })
}

/// `Some(status)` when the pod has a container `name` (its status, if reported yet).
fn container_status<'a>(
    pod: &'a Pod,
    name: &str,
) -> Option<Option<&'a k8s_openapi::api::core::v1::ContainerStatus>> {
    let spec = pod.spec.as_ref()?;
    let declared = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == name)
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| c.name == name);
    if !declared {
        return None;
    }
    let status = pod.status.as_ref().and_then(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
            .chain(s.ephemeral_container_statuses.iter().flatten())
            .find(|c| c.name == name)
    });
    Some(status)
}

/// One record of a CRI log file.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The time, as written (RFC 3339 with nanoseconds).
    pub time: &'a [u8],
    /// `stdout` or `stderr`.
    pub stream: &'a [u8],
    /// Whether the line continues in the next record.
    pub partial: bool,
    /// The message (with its newline for a full line, without for a partial one).
    pub message: &'a [u8],
}

/// Parses one file line (with its newline); `None` for a malformed one.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let mut message = parts.next()?;
    if time.is_empty() || !matches!(stream, b"stdout" | b"stderr") {
        return None;
    }
    let partial = tag.split(|b| *b == b':').next() == Some(b"P");
    if partial && message.last() == Some(&b'\n') {
        message = &message[..message.len() - 1];
    }
    Some(Record {
        time,
        stream,
        partial,
        message,
    })
}

/// Turns records into output, applying `since`, `timestamps` and `limitBytes`.
#[derive(Debug)]
pub struct Writer {
    since: Option<jiff::Timestamp>,
    timestamps: bool,
    remaining: Option<u64>,
    mid_line: bool,
    /// Output not sent yet.
    pub out: Vec<u8>,
}

impl Writer {
    /// A writer for these options.
    pub fn new(opts: &LogOptions) -> Self {
        Self {
            since: opts.since,
            timestamps: opts.timestamps,
            remaining: opts.limit_bytes,
            mid_line: false,
            out: Vec::new(),
        }
    }

    /// Whether `limitBytes` has been reached.
    pub fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Adds one file line's output.
    pub fn line(&mut self, line: &[u8]) {
        let Some(r) = parse_record(line) else {
            return;
        };
        if let Some(since) = self.since {
            let t = std::str::from_utf8(r.time)
                .ok()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            if t.is_some_and(|t| t < since) {
                return;
            }
        }
        let start = self.out.len();
        if self.timestamps && !self.mid_line {
            self.out.extend_from_slice(r.time);
            self.out.push(b' ');
        }
        self.out.extend_from_slice(r.message);
        self.mid_line = r.partial;
        if let Some(remaining) = self.remaining.as_mut() {
            let added = (self.out.len() - start) as u64;
            if added >= *remaining {
                self.out.truncate(start + *remaining as usize);
                *remaining = 0;
            } else {
                *remaining -= added;
            }
        }
    }
}

/// The offset where the file's last `n` lines start.
async fn tail_start(file: &mut tokio::fs::File, n: u64) -> std::io::Result<u64> {
    let len = file.metadata().await?.len();
    if n == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut count = 0;
    let mut buf = vec![0u8; 16 * 1024];
    while pos > 0 {
        let size = pos.min(buf.len() as u64) as usize;
        pos -= size as u64;
        file.seek(SeekFrom::Start(pos)).await?;
        file.read_exact(&mut buf[..size]).await?;
        for i in (0..size).rev() {
            let at = pos + i as u64;
            if buf[i] == b'\n' && at + 1 != len {
                count += 1;
                if count == n {
                    return Ok(at + 1);
                }
            }
        }
    }
    Ok(0)
}

/// Reads the file into `tx` until the end (or, following, until the container stops).
async fn pump(
    cri: &Cri,
    id: &str,
    mut file: tokio::fs::File,
    opts: &LogOptions,
    tx: &mpsc::Sender<Bytes>,
) -> anyhow::Result<()> {
    let start = match opts.tail_lines {
        Some(n) => tail_start(&mut file, n).await?,
        None => 0,
    };
    file.seek(SeekFrom::Start(start)).await?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut writer = Writer::new(opts);
    let mut pending = Vec::new();
    let mut follow = opts.follow;
    let mut last_check: Option<tokio::time::Instant> = None;
    loop {
        let n = reader.read_until(b'\n', &mut pending).await?;
        if n > 0 && pending.last() == Some(&b'\n') {
            writer.line(&pending);
            pending.clear();
            if writer.done() {
                break;
            }
            if writer.out.len() >= CHUNK {
                tx.send(Bytes::from(std::mem::take(&mut writer.out)))
                    .await?;
            }
            continue;
        }
        // The end of the file (perhaps in a line still being written).
        if !writer.out.is_empty() {
            tx.send(Bytes::from(std::mem::take(&mut writer.out)))
                .await?;
        }
        if !follow {
            break;
        }
        if tx.is_closed() {
            return Ok(());
        }
        if last_check.is_none_or(|t| t.elapsed() >= STATE_CHECK) {
            last_check = Some(tokio::time::Instant::now());
            if !running(cri, id).await {
                // One more pass reads what the container wrote last.
                follow = false;
                continue;
            }
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
    if !pending.is_empty() && !writer.done() {
        writer.line(&pending);
    }
    if !writer.out.is_empty() {
        tx.send(Bytes::from(std::mem::take(&mut writer.out)))
            .await?;
    }
    Ok(())
}

async fn running(cri: &Cri, id: &str) -> bool {
    resolve::status(cri, id)
        .await
        .is_ok_and(|s| s.state == cri::ContainerState::ContainerRunning as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(opts: &LogOptions, lines: &[&str]) -> String {
        let mut w = Writer::new(opts);
        for l in lines {
            w.line(l.as_bytes());
        }
        String::from_utf8(w.out).unwrap()
    }

    const LOG: &[&str] = &[
        "2026-01-01T00:00:01.5Z stdout F one\n",
        "2026-01-01T00:00:02.25Z stderr P tw\n",
        "2026-01-01T00:00:02.5Z stderr F o\n",
        "garbage\n",
        "2026-01-01T00:00:03Z stdout F three\n",
    ];

    #[test]
    fn partial_lines_join_and_malformed_ones_are_skipped() {
        assert_eq!(output(&LogOptions::default(), LOG), "one\ntwo\nthree\n");
    }

    #[test]
    fn timestamps_prefix_each_line_once() {
        let opts = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            output(&opts, LOG),
            "2026-01-01T00:00:01.5Z one\n2026-01-01T00:00:02.25Z two\n2026-01-01T00:00:03Z three\n"
        );
    }

    #[test]
    fn since_and_limit_bytes() {
        let opts = LogOptions {
            since: Some("2026-01-01T00:00:02.4Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(output(&opts, LOG), "o\nthree\n");
        let opts = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        let mut w = Writer::new(&opts);
        w.line(LOG[0].as_bytes());
        assert!(!w.done());
        w.line(LOG[4].as_bytes());
        assert!(w.done());
        assert_eq!(w.out, b"one\nth");
    }

    #[test]
    fn options_parse_like_upstream() {
        let o = LogOptions::parse("follow=true&tailLines=3&timestamps=1&limitBytes=10").unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(3), Some(10)));
        let o = LogOptions::parse("sinceTime=2026-01-02T03%3A04%3A05Z").unwrap();
        assert_eq!(o.since, Some("2026-01-02T03:04:05Z".parse().unwrap()));
        let o = LogOptions::parse("sinceSeconds=60").unwrap();
        let ago = jiff::Timestamp::now().duration_since(o.since.unwrap());
        assert!((59..=61).contains(&ago.as_secs()), "{ago:?}");
        for bad in [
            "follow=maybe",
            "tailLines=-1",
            "sinceTime=yesterday",
            "sinceSeconds=1&sinceTime=2026-01-01T00:00:00Z",
        ] {
            assert_eq!(LogOptions::parse(bad).unwrap_err().code, 400, "{bad}");
        }
    }

    #[tokio::test]
    async fn tail_finds_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        std::fs::write(&p, "a\nbb\nccc\n").unwrap();
        let mut f = tokio::fs::File::open(&p).await.unwrap();
        assert_eq!(tail_start(&mut f, 1).await.unwrap(), 5);
        assert_eq!(tail_start(&mut f, 2).await.unwrap(), 2);
        assert_eq!(tail_start(&mut f, 3).await.unwrap(), 0);
        assert_eq!(tail_start(&mut f, 10).await.unwrap(), 0);
        assert_eq!(tail_start(&mut f, 0).await.unwrap(), 9);
    }
}
