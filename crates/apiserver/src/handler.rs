//! The request pipeline: open endpoints (health, `/version`, `/cacerts`, and node credentials,
//! which check their own tokens), authentication, routing to discovery, OpenAPI, metrics, the
//! streaming subresources proxied to node agents, or a resource verb; body limits, and errors
//! rendered as `Status`.

use std::sync::Arc;
use std::time::Instant;

use api::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::auth::{self, ClientCertUser};
use crate::body::{self, MAX_BODY, PatchType};
use crate::discovery;
use crate::generic::Reply;
use crate::request::{self, Query, RequestInfo, Route};
use crate::state::ApiState;
use crate::table::{self, IncludeObject};
use crate::watch::Render;
use crate::{nodeauth, nodeproxy};

fn json_response(code: u16, body: &Value, content_type: &str) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    raw_response(code, Bytes::from(bytes), content_type)
}

fn raw_response(code: u16, bytes: Bytes, content_type: &str) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

fn error_response(e: &ApiError) -> Response {
    let mut resp = json_response(e.code, &e.to_json(), "application/json");
    if e.code == 401 {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"corten\""),
        );
    }
    resp
}

fn text(code: u16, body: &'static str) -> Response {
    raw_response(
        code,
        Bytes::from_static(body.as_bytes()),
        "text/plain; charset=utf-8",
    )
}

/// The `/version` document.
pub fn version() -> Value {
    let v = api::KUBERNETES_VERSION.trim_start_matches('v');
    let mut parts = v.split('.');
    json!({
        "major": parts.next().unwrap_or("1"),
        "minor": parts.next().unwrap_or("0"),
        "gitVersion": format!("{}+corten-{}", api::KUBERNETES_VERSION, env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
        "cortenVersion": env!("CARGO_PKG_VERSION"),
    })
}

/// `GET /cacerts`: the cluster CA, open as k3s's, so that an agent holding only the join token
/// can fetch it and check it against the token's `K10<sha256>` prefix.
fn cacerts(state: &ApiState) -> Response {
    match state.node_signer.as_ref() {
        Some(signer) => raw_response(
            200,
            Bytes::from(signer.ca_pem().to_string()),
            "text/plain; charset=utf-8",
        ),
        None => error_response(&not_found_path("/cacerts")),
    }
}

/// `POST /corten/v1/node-credentials` (authenticated by the join token; see [`nodeauth`]).
async fn node_credentials(state: &ApiState, parts: &http::request::Parts, body: Body) -> Response {
    if parts.method != Method::POST {
        return error_response(&ApiError::method_not_allowed(format!(
            "{} is not supported on {}",
            parts.method,
            nodeauth::PATH
        )));
    }
    let result = match read_body(body).await {
        Ok(bytes) => nodeauth::serve(
            state,
            &parts.headers,
            parts.extensions.get::<ClientCertUser>(),
            &bytes,
        ),
        Err(e) => Err(e),
    };
    match result.and_then(|c| serde_json::to_value(c).map_err(ApiError::internal)) {
        Ok(v) => json_response(200, &v, "application/json"),
        Err(e) => error_response(&e),
    }
}

/// The single entry point for every request.
pub async fn handle(State(state): State<Arc<ApiState>>, req: Request) -> Response {
    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => return text(200, "ok"),
        "/version" => return json_response(200, &version(), "application/json"),
        "/cacerts" => return cacerts(&state),
        nodeauth::PATH => {
            let resp = node_credentials(&state, &parts, body).await;
            state.metrics.observe(
                parts.method.as_str(),
                "",
                resp.status().as_u16(),
                started.elapsed(),
            );
            return resp;
        }
        _ => {}
    }
    let cert_user = parts.extensions.get::<ClientCertUser>();
    let Some(user) = auth::authenticate(&state, &parts.headers, cert_user) else {
        state
            .metrics
            .observe(parts.method.as_str(), "", 401, started.elapsed());
        return error_response(&ApiError::unauthorized());
    };
    parts.extensions.insert(user.clone());
    let query = Query::parse(parts.uri.query());
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();

    let route = request::parse(&parts.method, &path, query.flag("watch"));
    // Streaming subresources keep the connection (and its upgrade): no body is read.
    if let Some(Route::Resource(info)) = &route
        && let Some(kind) = nodeproxy::streaming_kind(info)
    {
        let resp = match info.namespace {
            Some(_) => nodeproxy::serve(&state, info, kind, &mut parts).await,
            None => Err(not_found_path(&path)),
        }
        .unwrap_or_else(|e| error_response(&e));
        let code = resp.status().as_u16();
        state
            .metrics
            .observe("CONNECT", "pods", code, started.elapsed());
        tracing::debug!(user = %user.name, groups = ?user.groups, method = %parts.method, path, code, "streaming request");
        return resp;
    }
    let (verb, resource) = match &route {
        Some(Route::Resource(i)) => (i.verb.to_uppercase(), i.resource.clone()),
        _ => (parts.method.as_str().to_string(), String::new()),
    };
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(e) => {
            state
                .metrics
                .observe(&verb, &resource, e.code, started.elapsed());
            return error_response(&e);
        }
    };
    let result = match (path.as_str(), route) {
        ("/metrics", _) => Ok(raw_response(
            200,
            Bytes::from(state.metrics.render()),
            "text/plain; version=0.0.4",
        )),
        ("/openapi/v2", _) => openapi_v2(&state, &accept),
        ("/openapi/v3", _) => Ok(openapi_v3_index(&state)),
        (p, _) if p.starts_with("/openapi/v3/") => {
            openapi_v3(&state, &p["/openapi/v3/".len()..], &query)
        }
        (_, Some(Route::CoreVersions)) if discovery::wants_aggregated(&accept) => {
            Ok(json_response(
                200,
                &discovery::aggregated(state.registry, true),
                discovery::AGGREGATED_CONTENT_TYPE,
            ))
        }
        (_, Some(Route::Groups)) if discovery::wants_aggregated(&accept) => Ok(json_response(
            200,
            &discovery::aggregated(state.registry, false),
            discovery::AGGREGATED_CONTENT_TYPE,
        )),
        (_, Some(Route::CoreVersions)) => Ok(json_response(
            200,
            &discovery::core_versions(&state.advertise),
            "application/json",
        )),
        (_, Some(Route::Groups)) => Ok(json_response(
            200,
            &discovery::group_list(state.registry),
            "application/json",
        )),
        (_, Some(Route::Group(g))) => discovery::group(state.registry, &g)
            .map(|v| json_response(200, &v, "application/json"))
            .ok_or_else(|| not_found_path(&path)),
        (_, Some(Route::ResourceList { group, version })) => {
            discovery::resource_list(state.registry, &group, &version)
                .map(|v| json_response(200, &v, "application/json"))
                .ok_or_else(|| not_found_path(&path))
        }
        (_, Some(Route::Resource(info))) => {
            serve_resource(&state, &info, &query, &accept, &content_type, &bytes).await
        }
        (_, None) => Err(not_found_path(&path)),
    };
    let resp = result.unwrap_or_else(|e| error_response(&e));
    state
        .metrics
        .observe(&verb, &resource, resp.status().as_u16(), started.elapsed());
    tracing::debug!(user = %user.name, groups = ?user.groups, method = %parts.method, path, code = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
    resp
}

/// Reads a request body up to [`MAX_BODY`]. A larger body is drained (up to a bound) before the
/// 413 is sent, so that the client reads the answer instead of a reset connection.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    const DRAIN_LIMIT: usize = 64 << 20;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("error reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= MAX_BODY {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    Ok(buf.freeze())
}

fn not_found_path(path: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    )
}

fn cached(cell: &std::sync::OnceLock<Bytes>, make: impl FnOnce() -> Value) -> Bytes {
    cell.get_or_init(|| Bytes::from(serde_json::to_vec(&make()).unwrap_or_default()))
        .clone()
}

fn openapi_v2(state: &ApiState, accept: &str) -> Result<Response, ApiError> {
    // kubectl asks for the protobuf form only, which corten does not produce: it uses v3.
    if !(accept.is_empty() || accept.contains("json") || accept.contains("*/*")) {
        return Err(ApiError::new(
            406,
            "NotAcceptable",
            "only application/json is served for /openapi/v2; use /openapi/v3",
        ));
    }
    Ok(raw_response(
        200,
        cached(&state.openapi.v2, || {
            api::openapi::v2_document(state.registry)
        }),
        "application/json",
    ))
}

fn openapi_v3_cache(state: &ApiState) -> &(Bytes, std::collections::HashMap<String, Bytes>) {
    state.openapi.v3.get_or_init(|| {
        let all = api::openapi::v3_all(state.registry);
        let bytes = |v: &Value| Bytes::from(serde_json::to_vec(v).unwrap_or_default());
        (
            bytes(&all.index),
            all.documents
                .iter()
                .map(|(k, v)| (k.clone(), bytes(v)))
                .collect(),
        )
    })
}

fn openapi_v3_index(state: &ApiState) -> Response {
    raw_response(200, openapi_v3_cache(state).0.clone(), "application/json")
}

fn openapi_v3(state: &ApiState, gv_path: &str, query: &Query) -> Result<Response, ApiError> {
    let doc = openapi_v3_cache(state)
        .1
        .get(gv_path)
        .ok_or_else(|| not_found_path(&format!("/openapi/v3/{gv_path}")))?;
    let mut resp = raw_response(200, doc.clone(), "application/json");
    if query
        .get("hash")
        .is_some_and(|h| h == api::openapi::content_hash(doc))
    {
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, immutable"),
        );
    }
    Ok(resp)
}

fn reply_response(reply: Reply) -> Response {
    let mut resp = json_response(reply.code, &reply.body, "application/json");
    for w in reply.warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

async fn serve_resource(
    state: &Arc<ApiState>,
    info: &RequestInfo,
    query: &Query,
    accept: &str,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let res = state
        .registry
        .get(&info.group, &info.version, &info.resource)
        .ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource".to_string(),
            )
        })?
        .clone();
    if res.namespaced != info.namespace.is_some()
        && !(res.namespaced && matches!(info.verb, "list" | "watch"))
    {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let verb_allowed = match info.subresource.as_deref() {
        None => res.allows(info.verb),
        Some(sub) => res.subresources.contains(&sub),
    };
    if !verb_allowed {
        return Err(ApiError::method_not_allowed(format!(
            "{} is not supported on {}",
            info.verb, info.resource
        )));
    }
    let ns = info.namespace.as_deref();
    let name = info.name.as_deref().unwrap_or("");
    let sub = info.subresource.as_deref();
    let as_table = table::wants_table(accept);
    let include = IncludeObject::from_query(query.get("includeObject"));
    match (info.verb, sub) {
        ("get", None) => {
            let obj = state.get(&res, ns, name).await?;
            if as_table {
                let rv = crate::objects::meta_str(&obj, "resourceVersion")
                    .unwrap_or("")
                    .to_string();
                return Ok(json_response(
                    200,
                    &table::table(&res, &[obj], json!({"resourceVersion": rv}), include),
                    "application/json",
                ));
            }
            Ok(json_response(200, &obj, "application/json"))
        }
        ("get", Some("status")) => Ok(json_response(
            200,
            &state.get(&res, ns, name).await?,
            "application/json",
        )),
        ("get", Some("scale")) => Ok(json_response(
            200,
            &state.get_scale(&res, ns, name).await?,
            "application/json",
        )),
        ("list", None) => {
            if as_table {
                let page = state.list_page(&res, ns, query).await?;
                let mut meta = json!({"resourceVersion": page.revision.to_string()});
                if let Some(c) = &page.continue_token {
                    meta["continue"] = json!(c);
                }
                if let Some(r) = page.remaining {
                    meta["remainingItemCount"] = json!(r);
                }
                return Ok(json_response(
                    200,
                    &table::table(&res, &page.items, meta, include),
                    "application/json",
                ));
            }
            // Unpaginated lists stream from the store's bytes, so memory stays bounded.
            if query.int("limit")?.unwrap_or(0) <= 0 {
                let stream = state.list_stream(&res, ns, query).await?;
                let mut resp = Response::new(Body::from_stream(stream));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return Ok(resp);
            }
            Ok(json_response(
                200,
                &state.list(&res, ns, query).await?,
                "application/json",
            ))
        }
        ("watch", None) => {
            let render = if as_table {
                Render::Table(include)
            } else {
                Render::Object
            };
            let name = info.name.as_deref();
            let rx = state.watch(&res, ns, name, query, render).await?;
            let mut resp = Response::new(Body::from_stream(crate::watch::body(rx)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
        ("create", None) => {
            let obj = body::decode_object(content_type, body)?;
            Ok(reply_response(state.create(&res, ns, obj, query).await?))
        }
        ("create", Some("binding")) => {
            let obj = body::decode_object(content_type, body)?;
            Ok(reply_response(
                state.bind(&res, ns, name, obj, query).await?,
            ))
        }
        ("create", Some("eviction")) => {
            let eviction = if body.is_empty() {
                serde_json::json!({})
            } else {
                body::decode_object(content_type, body)?
            };
            Ok(reply_response(
                state.evict(&res, ns, name, &eviction, query).await?,
            ))
        }
        ("update", None | Some("status") | Some("finalize")) => {
            let obj = body::decode_object(content_type, body)?;
            Ok(reply_response(
                state.update(&res, ns, name, sub, obj, query).await?,
            ))
        }
        ("update", Some("scale")) => {
            let obj = body::decode_object(content_type, body)?;
            Ok(reply_response(
                state.update_scale(&res, ns, name, obj, query).await?,
            ))
        }
        ("patch", None | Some("status")) => {
            let patch_type = PatchType::from_content_type(content_type)?;
            let patch = body::decode(content_type, body)?;
            Ok(reply_response(
                state
                    .patch(&res, ns, name, sub, patch_type, patch, query)
                    .await?,
            ))
        }
        ("patch", Some("scale")) => {
            let patch_type = PatchType::from_content_type(content_type)?;
            let patch = body::decode(content_type, body)?;
            Ok(reply_response(
                state
                    .patch_scale(&res, ns, name, patch_type, patch, query)
                    .await?,
            ))
        }
        ("delete", None) => {
            let options = if body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                body::decode_object(content_type, body)?
            };
            Ok(reply_response(
                state.delete(&res, ns, name, &options, query).await?,
            ))
        }
        ("deletecollection", None) => {
            let options = if body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                body::decode_object(content_type, body)?
            };
            Ok(reply_response(
                state.delete_collection(&res, ns, &options, query).await?,
            ))
        }
        (verb, Some(sub)) => Err(ApiError::new(
            404,
            "NotFound",
            format!(
                "{verb} on {}/{sub} is not served by corten yet",
                info.resource
            ),
        )),
        (verb, None) => Err(ApiError::method_not_allowed(format!(
            "{verb} is not supported on {}",
            info.resource
        ))),
    }
}
