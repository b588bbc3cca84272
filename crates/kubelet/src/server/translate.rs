//! kubectl's WebSocket protocols that containerd 1.6 does not speak, translated by the agent so
//! that kubectl v1.32 needs no fallback:
//!
//! - exec and attach over `v5.channel.k8s.io` ([`exec_v5`]): the agent accepts the WebSocket
//!   itself and drives an SPDY/3.1 session (`v4.channel.k8s.io`) with containerd, as upstream's
//!   API server does with its stream translator. Client messages are `[channel, data...]`:
//!   0 stdin, 4 terminal size; `[255, 0]` (v5's CLOSE) ends stdin, which v4 over WebSocket
//!   cannot say. The runtime's stdout and stderr come back on channels 1 and 2; the status it
//!   writes on its error stream (exit code included) on channel 3, then a normal close.
//! - port-forward over `SPDY/3.1+portforward.k8s.io` ([`port_forward_tunnel`]): the WebSocket
//!   carries SPDY frames in binary messages; the agent unwraps them onto an SPDY connection to
//!   containerd (`portforward.k8s.io`) and wraps the answers, without reading the SPDY itself.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::spdy::{self, Frame, HeaderEncoder};
use super::streams::{RuntimeConn, StdioOptions, dial};
use super::websocket::{self, Message};
use super::{Body, Error};

/// kubectl's exec/attach WebSocket protocol.
pub const V5: &str = "v5.channel.k8s.io";
/// kubectl's port-forward WebSocket protocol (SPDY tunnelled in WebSocket).
pub const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// The largest WebSocket message taken from the client.
const MAX_MESSAGE: usize = 4 << 20;
/// How long the runtime may take to accept the session's streams.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client may take to answer the closing handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// v5's stream-close signal.
const CLOSE_SIGNAL: u8 = 255;

/// Upgrades a connection to the runtime's streaming `url` to SPDY/3.1 with `protocol`.
async fn spdy_upgrade(url: &str, protocol: &str) -> Result<Upgraded, Error> {
    let RuntimeConn {
        mut sender,
        path,
        authority,
    } = dial(url).await?;
    let req = Request::post(path.as_str())
        .header(header::HOST, authority)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol)
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::internal(format!("building the runtime request: {e}")))?;
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|e| Error::internal(format!("the runtime's streaming server: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        let text = body.map(|b| String::from_utf8_lossy(&b).trim().to_string());
        return Err(Error::internal(format!(
            "the runtime's streaming server answered {status}: {}",
            text.unwrap_or_default()
        )));
    }
    hyper::upgrade::on(&mut resp)
        .await
        .map_err(|e| Error::internal(format!("upgrading to SPDY with the runtime: {e}")))
}

/// The `101` that accepts the client's WebSocket with `protocol`.
fn switching(req: &Request<Incoming>, protocol: &'static str) -> Result<Response<Body>, Error> {
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::bad_request("a WebSocket upgrade needs Sec-WebSocket-Key"))?;
    let accept = HeaderValue::from_str(&websocket::accept_key(key))
        .map_err(|e| Error::internal(format!("accept key: {e}")))?;
    let mut resp = Response::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    Ok(resp)
}

/// The SPDY stream ids of one exec or attach session.
#[derive(Clone, Copy, Debug, Default)]
struct Streams {
    error: u32,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

/// Serves an exec or attach whose client speaks `v5.channel.k8s.io`, on the runtime's `url`.
pub async fn exec_v5(
    mut req: Request<Incoming>,
    url: &str,
    stdio: StdioOptions,
) -> Result<Response<Body>, Error> {
    let resp = switching(&req, V5)?;
    let client_upgrade = hyper::upgrade::on(&mut req);
    let runtime = TokioIo::new(spdy_upgrade(url, "v4.channel.k8s.io").await?);
    let (mut rr, mut rw) = tokio::io::split(runtime);

    // Open the streams containerd's v4 handler waits for, in client-go's order.
    let mut enc = HeaderEncoder::new().map_err(|e| Error::internal(e.to_string()))?;
    let mut next = 1u32;
    let mut open = |want: bool| {
        want.then(|| {
            let id = next;
            next += 2;
            id
        })
    };
    let ids = Streams {
        error: open(true).unwrap_or(1),
        stdin: open(stdio.stdin),
        stdout: open(stdio.stdout),
        stderr: open(stdio.stderr),
        resize: open(stdio.tty),
    };
    let mut frames = Vec::new();
    for (id, kind) in [
        (Some(ids.error), "error"),
        (ids.stdin, "stdin"),
        (ids.stdout, "stdout"),
        (ids.stderr, "stderr"),
        (ids.resize, "resize"),
    ] {
        if let Some(id) = id {
            let f = enc
                .syn_stream(id, &[("streamtype", kind)])
                .map_err(|e| Error::internal(e.to_string()))?;
            frames.extend_from_slice(&f);
        }
    }
    let count = frames_count(&ids);
    rw.write_all(&frames)
        .await
        .map_err(|e| Error::internal(format!("opening the runtime's streams: {e}")))?;

    // Wait until the runtime accepts them all; what comes meanwhile is kept in order.
    let mut early = Vec::new();
    let accepted = tokio::time::timeout(STREAM_TIMEOUT, async {
        let mut replies = 0;
        while replies < count {
            match spdy::read_frame(&mut rr).await {
                Ok(Some(Frame::Control { kind, .. })) if kind == spdy::kind::SYN_REPLY => {
                    replies += 1
                }
                Ok(Some(Frame::Control { kind, .. })) if kind == spdy::kind::RST_STREAM => {
                    return Err("the runtime refused a stream".to_string());
                }
                Ok(Some(f)) => early.push(f),
                Ok(None) => return Err("the runtime closed the connection".to_string()),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    })
    .await;
    match accepted {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Err(Error::internal(format!("starting the session: {why}"))),
        Err(_) => {
            return Err(Error::internal(
                "starting the session: the runtime did not accept its streams in time",
            ));
        }
    }
    tokio::spawn(async move {
        match client_upgrade.await {
            Ok(client) => pump_exec(TokioIo::new(client), rr, rw, ids, early).await,
            Err(e) => tracing::debug!("client upgrade failed: {e}"),
        }
    });
    Ok(resp)
}

fn frames_count(ids: &Streams) -> usize {
    1 + [ids.stdin, ids.stdout, ids.stderr, ids.resize]
        .iter()
        .filter(|s| s.is_some())
        .count()
}

/// Relays one session until the runtime ends it or the client leaves.
async fn pump_exec<C, RR, RW>(client: C, mut rr: RR, rw: RW, ids: Streams, early: Vec<Frame>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    RR: AsyncRead + Unpin,
    RW: AsyncWrite + Unpin,
{
    let (cr, cw) = tokio::io::split(client);
    let cw = Mutex::new(cw);
    let rw = Mutex::new(rw);

    let down = async {
        let mut status = Vec::new();
        let mut early = early.into_iter();
        loop {
            let frame = match early.next() {
                Some(f) => f,
                None => match spdy::read_frame(&mut rr).await {
                    Ok(Some(f)) => f,
                    _ => break,
                },
            };
            match frame {
                Frame::Data { stream, data, .. } => {
                    if !data.is_empty() {
                        let update = spdy::window_update(stream, data.len() as u32);
                        let _ = rw.lock().await.write_all(&update).await;
                    }
                    let channel = if Some(stream) == ids.stdout {
                        1
                    } else if Some(stream) == ids.stderr {
                        2
                    } else {
                        if stream == ids.error {
                            status.extend_from_slice(&data);
                        }
                        continue;
                    };
                    let mut msg = Vec::with_capacity(data.len() + 1);
                    msg.push(channel);
                    msg.extend_from_slice(&data);
                    if websocket::write_frame(&mut *cw.lock().await, websocket::BINARY, &msg)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Frame::Control { kind, body, .. } if kind == spdy::kind::PING => {
                    let _ = rw.lock().await.write_all(&spdy::ping(&body)).await;
                }
                Frame::Control { kind, .. } if kind == spdy::kind::GOAWAY => break,
                Frame::Control { .. } => {}
            }
        }
        let mut w = cw.lock().await;
        if !status.is_empty() {
            let mut msg = vec![3u8];
            msg.extend_from_slice(&status);
            let _ = websocket::write_frame(&mut *w, websocket::BINARY, &msg).await;
        }
        let _ = websocket::write_close(&mut *w, websocket::NORMAL_CLOSURE).await;
    };

    let up = async {
        let mut reader = websocket::Reader::new(cr, MAX_MESSAGE);
        let mut stdin_open = ids.stdin.is_some();
        loop {
            match reader.next().await {
                Ok(Some(Message::Binary(m))) if !m.is_empty() => {
                    let frame = match (m[0], &m[1..]) {
                        (0, data) if stdin_open => ids.stdin.map(|s| spdy::data(s, false, data)),
                        (4, data) => ids.resize.map(|s| spdy::data(s, false, data)),
                        (CLOSE_SIGNAL, [0]) if stdin_open => {
                            stdin_open = false;
                            ids.stdin.map(|s| spdy::data(s, true, &[]))
                        }
                        _ => None,
                    };
                    if let Some(f) = frame
                        && rw.lock().await.write_all(&f).await.is_err()
                    {
                        return;
                    }
                }
                Ok(Some(Message::Ping(p))) => {
                    let _ =
                        websocket::write_frame(&mut *cw.lock().await, websocket::PONG, &p).await;
                }
                Ok(Some(Message::Close(_))) | Ok(None) | Err(_) => return,
                Ok(Some(_)) => {}
            }
        }
    };

    tokio::pin!(down, up);
    tokio::select! {
        _ = &mut down => {
            // Let the client answer the close before the connection goes.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut up).await;
        }
        _ = &mut up => {
            // The client left: tell the runtime the session is over.
            let _ = rw.lock().await.write_all(&spdy::goaway(0)).await;
        }
    }
    let _ = rw.lock().await.shutdown().await;
    let _ = cw.lock().await.shutdown().await;
}

/// Serves a port-forward whose client tunnels SPDY in WebSocket, on the runtime's `url`.
pub async fn port_forward_tunnel(
    mut req: Request<Incoming>,
    url: &str,
) -> Result<Response<Body>, Error> {
    let resp = switching(&req, PORT_FORWARD_TUNNEL)?;
    let client_upgrade = hyper::upgrade::on(&mut req);
    let runtime = TokioIo::new(spdy_upgrade(url, "portforward.k8s.io").await?);
    tokio::spawn(async move {
        match client_upgrade.await {
            Ok(client) => pump_tunnel(TokioIo::new(client), runtime).await,
            Err(e) => tracing::debug!("client upgrade failed: {e}"),
        }
    });
    Ok(resp)
}

/// Unwraps the client's binary messages onto the runtime connection and wraps what comes back.
async fn pump_tunnel<C, R>(client: C, runtime: R)
where
    C: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + AsyncWrite + Unpin,
{
    let (cr, cw) = tokio::io::split(client);
    let (mut rr, mut rw) = tokio::io::split(runtime);
    let cw = Mutex::new(cw);
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut w = cw.lock().await;
                    if websocket::write_frame(&mut *w, websocket::BINARY, &buf[..n])
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = websocket::write_close(&mut *cw.lock().await, websocket::NORMAL_CLOSURE).await;
    };
    let up = async {
        let mut reader = websocket::Reader::new(cr, MAX_MESSAGE);
        loop {
            match reader.next().await {
                Ok(Some(Message::Binary(m))) => {
                    if rw.write_all(&m).await.is_err() {
                        return;
                    }
                }
                Ok(Some(Message::Ping(p))) => {
                    let _ =
                        websocket::write_frame(&mut *cw.lock().await, websocket::PONG, &p).await;
                }
                Ok(Some(Message::Close(_))) | Ok(None) | Err(_) => return,
                Ok(Some(_)) => {}
            }
        }
    };
    tokio::pin!(down, up);
    tokio::select! {
        _ = &mut down => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut up).await;
        }
        _ = &mut up => {}
    }
    let _ = cw.lock().await.shutdown().await;
}
