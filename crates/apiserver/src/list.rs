//! LIST: prefix reads with label and field selectors, pagination (limit/continue) at a
//! consistent revision, and resourceVersion semantics.

use std::sync::Arc;

use api::selector::{FieldSelector, LabelSelector};
use api::{ApiError, ResourceInfo};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use store::RangeRequest;

use crate::objects;
use crate::request::Query;
use crate::state::ApiState;

/// Which objects a list or watch wants.
pub struct Filter {
    res: Arc<ResourceInfo>,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    /// The filter from `labelSelector` and `fieldSelector`.
    pub fn from_query(res: &Arc<ResourceInfo>, query: &Query) -> Result<Self, ApiError> {
        Ok(Self {
            res: res.clone(),
            labels: query
                .non_empty("labelSelector")
                .map(LabelSelector::parse)
                .transpose()?,
            fields: query
                .non_empty("fieldSelector")
                .map(FieldSelector::parse)
                .transpose()?,
        })
    }

    /// Whether the filter selects everything.
    pub fn is_everything(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    /// Whether `obj` is selected; an unsupported field label is an error.
    pub fn matches(&self, obj: &Value) -> Result<bool, ApiError> {
        if let Some(l) = &self.labels
            && !l.matches(&objects::labels(obj))
        {
            return Ok(false);
        }
        if let Some(f) = &self.fields {
            return f.matches(|label| match label {
                "metadata.name" => Some(objects::name(obj).to_string()),
                "metadata.namespace" => Some(
                    objects::meta_str(obj, "namespace")
                        .unwrap_or("")
                        .to_string(),
                ),
                other => self.res.strategy.field(obj, other),
            });
        }
        Ok(true)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, start: &str) -> String {
    let json = serde_json::to_vec(&Continue {
        rv,
        start: start.to_string(),
    })
    .unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_continue(token: &str) -> Result<Continue, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::bad_request("invalid continue token"))
}

/// The store prefix holding a resource's objects in `ns` (all namespaces when None).
pub fn prefix(res: &ResourceInfo, ns: Option<&str>) -> String {
    match (res.namespaced, ns) {
        (true, Some(ns)) => format!("{}{ns}/", res.key_prefix()),
        _ => res.key_prefix(),
    }
}

/// Where a list starts: the revision to read at (None: latest) and the key to continue after.
fn start_position(query: &Query, prefix: &str) -> Result<(Option<i64>, Option<String>), ApiError> {
    let (mut revision, after) = match query.non_empty("continue") {
        Some(token) => {
            let c = decode_continue(token)?;
            if !c.start.starts_with(prefix) {
                return Err(ApiError::bad_request("invalid continue token"));
            }
            (Some(c.rv), Some(c.start))
        }
        None => (None, None),
    };
    if revision.is_none() {
        match (
            query.non_empty("resourceVersion"),
            query.get("resourceVersionMatch"),
        ) {
            (Some(rv), Some("Exact")) => {
                revision = Some(rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?)
            }
            (Some(rv), _) if rv != "0" && rv.parse::<i64>().is_err() => {
                return Err(ApiError::bad_request(format!(
                    "invalid resourceVersion {rv:?}"
                )));
            }
            _ => {}
        }
    }
    Ok((revision, after))
}

/// A page of matching objects.
pub struct Page {
    /// The objects, with resourceVersions.
    pub items: Vec<Value>,
    /// The revision the list was read at.
    pub revision: i64,
    /// A token for the next page, if any.
    pub continue_token: Option<String>,
    /// Objects left after this page (only known without selectors).
    pub remaining: Option<u64>,
}

impl ApiState {
    /// Reads the objects a list request selects.
    pub async fn list_page(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        query: &Query,
    ) -> Result<Page, ApiError> {
        let filter = Filter::from_query(res, query)?;
        let limit = query.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
        let prefix = prefix(res, ns);
        let (mut revision, mut after) = start_position(query, &prefix)?;
        let mut items = vec![];
        let batch = limit.map_or(1000, |l| l.max(100));
        loop {
            let resp = self
                .store
                .range(RangeRequest { prefix: prefix.clone(), after_key: after.clone(), limit: Some(batch), revision })
                .await
                .map_err(|e| match e {
                    store::Error::Compacted { .. } if query.non_empty("continue").is_some() => ApiError::new(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ),
                    e => objects::store_error(e, res.group, res.plural, ""),
                })?;
            revision = Some(resp.revision);
            let n = resp.kvs.len();
            for kv in &resp.kvs {
                let obj = objects::decode(kv)?;
                after = Some(kv.key.clone());
                if filter.matches(&obj)? {
                    items.push(obj);
                    if limit.is_some_and(|l| items.len() >= l) {
                        let last = kv.key.clone();
                        let more_in_batch = resp.kvs.last().is_some_and(|k| k.key != last);
                        let more = more_in_batch || resp.remaining > 0;
                        let remaining = filter.is_everything().then(|| {
                            let idx = resp.kvs.iter().position(|k| k.key == last).unwrap_or(n);
                            (n - idx - 1) as u64 + resp.remaining
                        });
                        return Ok(Page {
                            items,
                            revision: resp.revision,
                            continue_token: more.then(|| encode_continue(resp.revision, &last)),
                            remaining: remaining.filter(|_| more),
                        });
                    }
                }
            }
            if resp.remaining == 0 || n == 0 {
                return Ok(Page {
                    items,
                    revision: resp.revision,
                    continue_token: None,
                    remaining: None,
                });
            }
        }
    }

    /// LIST: the `<Kind>List` object.
    pub async fn list(
        &self,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        query: &Query,
    ) -> Result<Value, ApiError> {
        let page = self.list_page(res, ns, query).await?;
        Ok(list_object(res, page))
    }
}

/// Objects read from the store per chunk of a streamed list.
const STREAM_BATCH: usize = 1000;

struct Streamer {
    state: Arc<ApiState>,
    res: Arc<ResourceInfo>,
    filter: Filter,
    prefix: String,
    revision: Option<i64>,
    after: Option<String>,
    started: bool,
    wrote_item: bool,
    done: bool,
}

impl Streamer {
    /// Reads the next batch and renders it; the last chunk closes the list.
    async fn next_chunk(&mut self) -> Result<Bytes, ApiError> {
        let resp = self
            .state
            .store
            .range(RangeRequest {
                prefix: self.prefix.clone(),
                after_key: self.after.clone(),
                limit: Some(STREAM_BATCH),
                revision: self.revision,
            })
            .await
            .map_err(|e| objects::store_error(e, self.res.group, self.res.plural, ""))?;
        let mut out = Vec::with_capacity(resp.kvs.iter().map(|kv| kv.value.len() + 40).sum());
        if !self.started {
            self.started = true;
            out.extend_from_slice(
                format!(
                    "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"items\":[",
                    self.res.kind, self.res.api_version
                )
                .as_bytes(),
            );
        }
        self.revision = Some(resp.revision);
        for kv in &resp.kvs {
            self.after = Some(kv.key.clone());
            if !self.filter.is_everything() && !self.filter.matches(&objects::decode(kv)?)? {
                continue;
            }
            if self.wrote_item {
                out.push(b',');
            }
            objects::decode_raw(kv, &mut out)?;
            self.wrote_item = true;
        }
        if resp.remaining == 0 || resp.kvs.is_empty() {
            out.extend_from_slice(
                format!(
                    "],\"metadata\":{{\"resourceVersion\":\"{}\"}}}}",
                    resp.revision
                )
                .as_bytes(),
            );
            self.done = true;
        }
        Ok(Bytes::from(out))
    }
}

impl ApiState {
    /// An unpaginated LIST streamed in chunks straight from the store's bytes, so that memory
    /// stays bounded by a chunk however many objects there are. The first chunk is read before
    /// returning, so that bad requests still get a proper error status.
    pub async fn list_stream(
        self: &Arc<Self>,
        res: &Arc<ResourceInfo>,
        ns: Option<&str>,
        query: &Query,
    ) -> Result<impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static, ApiError>
    {
        let filter = Filter::from_query(res, query)?;
        let prefix = prefix(res, ns);
        let (revision, after) = start_position(query, &prefix)?;
        let mut streamer = Streamer {
            state: self.clone(),
            res: res.clone(),
            filter,
            prefix,
            revision,
            after,
            started: false,
            wrote_item: false,
            done: false,
        };
        let first = streamer.next_chunk().await?;
        let rest = futures::stream::unfold(streamer, |mut s| async move {
            if s.done {
                return None;
            }
            match s.next_chunk().await {
                Ok(chunk) => Some((Ok(chunk), s)),
                Err(e) => {
                    tracing::warn!(error = %e, "list stream failed midway");
                    s.done = true;
                    Some((Err(std::io::Error::other(e.message)), s))
                }
            }
        });
        Ok(futures::stream::once(async move { Ok(first) }).chain(rest))
    }
}

/// Wraps a page as a `<Kind>List`.
pub fn list_object(res: &ResourceInfo, page: Page) -> Value {
    let mut meta = json!({ "resourceVersion": page.revision.to_string() });
    if let Some(c) = page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = page.remaining {
        meta["remainingItemCount"] = json!(r);
    }
    json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version,
        "metadata": meta,
        "items": page.items,
    })
}
