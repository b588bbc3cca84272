//! Talking to a node agent: TLS that trusts only the cluster CA (the agent's serving
//! certificate must name the address dialled) and presents the API server's
//! `kube-apiserver-kubelet-client` certificate; one HTTP/1.1 connection per request.
//!
//! [`stream_log`] relays a log body frame by frame, never buffering it; [`upgrade`] forwards an
//! upgrade request and, when the agent switches protocols, copies bytes both ways between the
//! client's and the agent's connections until either closes. Failures to reach the agent are
//! `Status` errors naming the backend, as upstream's "error dialing backend".

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::ApiError;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

use super::{Location, is_upgrade_request};

/// How long dialling an agent (TCP and TLS) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an agent may take to answer with a status line.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this much of an agent's error body is read into the `Status` message.
const MAX_ERROR_BODY: usize = 50_000;

/// The TLS client identity and trust for reaching node agents.
pub struct AgentClient {
    tls: Arc<rustls::ClientConfig>,
}

impl AgentClient {
    /// Trusts `ca_pem` for agents' serving certificates and presents `cert_pem`/`key_pem`.
    pub fn new(ca_pem: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(ca.context("CA certificate is unreadable")?)
                .context("CA certificate is invalid")?;
        }
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .context("kubelet client certificate is unreadable")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .context("kubelet client key is unreadable")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .context("kubelet client certificate and key do not match")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: Arc::new(config),
        })
    }

    /// Opens an HTTP/1.1 connection to the agent; its driver task is returned for aborting.
    async fn dial(
        &self,
        loc: &Location,
    ) -> Result<
        (
            http1::SendRequest<Empty<Bytes>>,
            tokio::task::JoinHandle<()>,
        ),
        ApiError,
    > {
        let addr = authority(loc);
        let dialled = tokio::time::timeout(DIAL_TIMEOUT, async {
            let name = ServerName::try_from(loc.host.clone())
                .map_err(|e| format!("invalid agent address {:?}: {e}", loc.host))?;
            let tcp = tokio::net::TcpStream::connect((loc.host.as_str(), loc.port))
                .await
                .map_err(|e| format!("dial tcp {addr}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let tls = TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
            http1::Builder::new()
                .handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP handshake with {addr}: {e}"))
        })
        .await
        .unwrap_or_else(|_| Err(format!("dial tcp {addr}: timed out after {DIAL_TIMEOUT:?}")));
        let (sender, conn) = dialled.map_err(dial_error)?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "agent connection ended with an error");
            }
        });
        Ok((sender, driver))
    }
}

fn authority(loc: &Location) -> String {
    if loc.host.contains(':') {
        format!("[{}]:{}", loc.host, loc.port)
    } else {
        format!("{}:{}", loc.host, loc.port)
    }
}

/// Upstream reports an unreachable backend with reason Unknown (a plain 500).
fn dial_error(why: String) -> ApiError {
    ApiError::new(500, "", format!("error dialing backend: {why}"))
}

async fn send(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    req: http::Request<Empty<Bytes>>,
    loc: &Location,
) -> Result<http::Response<hyper::body::Incoming>, ApiError> {
    let addr = authority(loc);
    match tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req)).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(ApiError::new(
            500,
            "",
            format!("error talking to the node agent at {addr}: {e}"),
        )),
        Err(_) => Err(ApiError::timeout(format!(
            "the node agent at {addr} did not answer within {RESPONSE_TIMEOUT:?}"
        ))),
    }
}

/// Aborts the agent connection's driver when the relayed body is dropped (client gone).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `GET` the agent's log URL and relay the body as it arrives.
pub async fn stream_log(agents: &AgentClient, loc: &Location) -> Result<Response, ApiError> {
    let (mut sender, driver) = agents.dial(loc).await?;
    let guard = AbortOnDrop(driver);
    let req = http::Request::get(loc.path_and_query.as_str())
        .header(header::HOST, authority(loc))
        .header(header::USER_AGENT, "corten-apiserver")
        .body(Empty::new())
        .map_err(|e| ApiError::internal(format!("cannot build the agent request: {e}")))?;
    let resp = send(&mut sender, req, loc).await?;
    drop(sender);
    let status = resp.status();
    if !status.is_success() {
        return Err(agent_error(status, resp.into_body()).await);
    }
    // One frame in, one frame out; the guard lives as long as the client reads.
    let body = futures::stream::unfold((resp.into_body(), guard), |(mut body, guard)| async move {
        loop {
            match body.frame().await? {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => return Some((Ok(data), (body, guard))),
                    Err(_) => continue, // trailers
                },
                Err(e) => return Some((Err(e), (body, guard))),
            }
        }
    });
    let mut out = Response::new(Body::from_stream(body));
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(out)
}

/// The `Status` for an agent's error answer (upstream's `GenericHttpResponseChecker`): the
/// agent's `Status` if it sent one, else its text under the code's reason.
async fn agent_error(status: StatusCode, body: hyper::body::Incoming) -> ApiError {
    let mut text = Vec::new();
    let mut body = body;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            text.extend_from_slice(&data);
            if text.len() >= MAX_ERROR_BODY {
                text.truncate(MAX_ERROR_BODY);
                break;
            }
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text)
        && v["kind"] == "Status"
        && let Some(message) = v["message"].as_str()
    {
        return ApiError::new(status.as_u16(), reason_of(status), message.to_string());
    }
    let text = String::from_utf8_lossy(&text).trim().to_string();
    match status.as_u16() {
        500 => ApiError::internal(text),
        code => ApiError::new(code, reason_of(status), text),
    }
}

fn reason_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

/// Request headers not forwarded to the agent: credentials meant for the API server, and
/// headers about this hop's framing (the upgrade's `Connection`/`Upgrade` do go through).
fn forwarded(name: &HeaderName) -> bool {
    let n = name.as_str();
    !(matches!(
        n,
        "authorization"
            | "host"
            | "content-length"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "keep-alive"
            | "cookie"
    ) || n.starts_with("proxy-")
        || n.starts_with("impersonate-"))
}

/// Response headers not relayed for a response that does not switch protocols.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade"
    ) || name.as_str().starts_with("proxy-")
}

/// Forwards an upgrade request (exec, attach, port-forward) and splices the connections.
pub async fn upgrade(
    agents: &AgentClient,
    loc: &Location,
    parts: &mut Parts,
) -> Result<Response, ApiError> {
    let client_upgrade = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .filter(|_| is_upgrade_request(&parts.headers))
        .ok_or_else(|| ApiError::bad_request("Upgrade request required"))?;
    let (mut sender, _driver) = agents.dial(loc).await?;
    let mut req = http::Request::builder()
        .method(parts.method.clone())
        .uri(loc.path_and_query.as_str())
        .body(Empty::new())
        .map_err(|e| ApiError::internal(format!("cannot build the agent request: {e}")))?;
    copy_headers(&parts.headers, req.headers_mut(), forwarded);
    req.headers_mut().insert(
        header::HOST,
        HeaderValue::from_str(&authority(loc))
            .map_err(|e| ApiError::internal(format!("agent address: {e}")))?,
    );
    let mut resp = send(&mut sender, req, loc).await?;
    drop(sender);
    let status = resp.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // Relay the agent's answer as it is (upstream does too): kubectl reads its errors.
        let (head, body) = resp.into_parts();
        let mut out = Response::new(Body::new(body));
        *out.status_mut() = status;
        copy_headers(&head.headers, out.headers_mut(), |n| !hop_by_hop(n));
        return Ok(out);
    }
    let agent_upgrade = hyper::upgrade::on(&mut resp);
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    copy_headers(resp.headers(), out.headers_mut(), |_| true);
    let what = format!("{} {}", parts.method, loc.path_and_query);
    tokio::spawn(async move {
        let (client, agent) = match tokio::try_join!(client_upgrade, agent_upgrade) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, %what, "upgrade failed");
                return;
            }
        };
        let (mut client, mut agent) = (TokioIo::new(client), TokioIo::new(agent));
        match tokio::io::copy_bidirectional(&mut client, &mut agent).await {
            Ok((up, down)) => tracing::debug!(%what, up, down, "stream closed"),
            Err(e) => tracing::debug!(error = %e, %what, "stream ended with an error"),
        }
    });
    Ok(out)
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, keep: impl Fn(&HeaderName) -> bool) {
    for (name, value) in from {
        if keep(name) {
            to.append(name.clone(), value.clone());
        }
    }
}
