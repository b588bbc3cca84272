//! Strategic merge patch, as upstream's `strategicpatch.StrategicMergeMapPatch` applies it on
//! the server (apimachinery `util/strategicpatch/patch.go`):
//!
//! - maps merge recursively and `null` deletes a key;
//! - lists whose field has strategy `merge` merge: lists of objects by their merge key, lists of
//!   primitives as sets; other lists are replaced;
//! - directives: `$patch: replace | delete | merge` in a map, `{$patch: delete, <key>: v}` and
//!   `{$patch: replace}` items in a merged list, `$setElementOrder/<field>`, `$retainKeys` and
//!   `$deleteFromPrimitiveList/<field>`.
//!
//! Departures from upstream, all on inputs kubectl does not send: a new value (one the original
//! lacks) is merged into an empty value, so directives inside it are applied rather than stored;
//! `$deleteFromPrimitiveList` on a missing list is a no-op; `{$patch: merge}` in a list is
//! accepted as the default it names; malformed patches are 400 rather than 500.

use serde_json::{Map, Value};

use super::meta::PatchMeta;
use super::schema::{PatchSchema, SchemaNode};
use super::{MAX_DEPTH, check_depth, unprocessable};
use crate::error::ApiError;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

type Result<T> = std::result::Result<T, ApiError>;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

fn compact(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn no_merge_key(item: &Map<String, Value>, key: &str) -> ApiError {
    bad(format!(
        "map: {} does not contain declared merge key: {key}",
        compact(item)
    ))
}

fn bad_patch_type(directive: &Value, map: &Map<String, Value>) -> ApiError {
    let d = directive
        .as_str()
        .map_or_else(|| compact(directive), str::to_string);
    bad(format!("unknown patch type: {d} in map: {}", compact(map)))
}

fn too_deep() -> ApiError {
    bad(format!(
        "patch is nested too deeply (more than {MAX_DEPTH} levels)"
    ))
}

/// Applies a strategic merge patch to `doc`. The patch must be a JSON object; `schema` gives
/// the types (see [`PatchSchema::for_resource`]).
pub fn apply_strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    schema: &PatchSchema,
) -> Result<Value> {
    let Value::Object(patch) = patch else {
        return Err(bad("invalid JSON document"));
    };
    check_depth(&Value::Object(patch.clone()))?;
    let original = match doc {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => return Err(bad("invalid JSON document")),
    };
    merge_map(original, patch.clone(), schema.root(), 0).map(Value::Object)
}

/// Numbers compare by value (as Go's float64s do), everything else structurally.
fn value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || x.as_f64().is_some_and(|x| y.as_f64() == Some(x))
        }
        _ => a == b,
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    node: SchemaNode<'_>,
    depth: usize,
) -> Result<Map<String, Value>> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    if let Some(directive) = patch.remove(DIRECTIVE) {
        match directive.as_str() {
            // The patch is the new value; it is still merged into nothing so that nested
            // directives and nulls are not stored.
            Some("replace") => return merge_map(Map::new(), patch, node, depth + 1),
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => return Err(bad_patch_type(&directive, &patch)),
        }
    }
    apply_retain_keys(&mut original, &mut patch)?;
    apply_set_element_order(&mut original, &mut patch, node, depth)?;

    for (key, patch_value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            if field.is_empty() {
                return Err(bad("invalid patch format of primitive list"));
            }
            let Value::Array(to_delete) = patch_value else {
                return Err(bad("invalid patch format of primitive list"));
            };
            if let Some(Value::Array(current)) = original.get_mut(field) {
                current.retain(|v| !to_delete.iter().any(|d| value_eq(v, d)));
            }
            continue;
        }
        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        let child = node.field(&key);
        let meta = node.meta(&key);
        let merged = match (original.remove(&key), patch_value) {
            (Some(Value::Object(o)), Value::Object(p)) if !meta.is_some_and(|m| m.replaces()) => {
                Value::Object(merge_map(o, p, child, depth + 1)?)
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                Value::Array(merge_list(o, p, child.items(), meta, depth + 1)?)
            }
            // Absent, of another type, or replaced whole: the patch value is the new value.
            (_, Value::Object(p)) => Value::Object(merge_map(Map::new(), p, child, depth + 1)?),
            (_, Value::Array(p)) => {
                Value::Array(merge_list(vec![], p, child.items(), meta, depth + 1)?)
            }
            (_, scalar) => scalar,
        };
        original.insert(key, merged);
    }
    Ok(original)
}

/// `$retainKeys: [..]`: keys of the original not listed are cleared; every non-null key the
/// patch sets must be listed.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<()> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = retain else {
        return Err(bad("invalid patch format of retainKeys"));
    };
    let keep = |k: &str| list.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !keep(k) {
            return Err(bad("invalid patch format of retainKeys"));
        }
    }
    original.retain(|k, _| keep(k));
    Ok(())
}

/// `$setElementOrder/<field>: [..]`: merges `<field>` and puts the items the order list names
/// in that order, server-only items keeping their place relative to them.
fn apply_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    node: SchemaNode<'_>,
    depth: usize,
) -> Result<()> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in keys {
        let Some(Value::Array(order)) = patch.remove(&key) else {
            return Err(bad("invalid patch format of setElementOrder list"));
        };
        let field = &key[SET_ELEMENT_ORDER.len()..];
        if field.is_empty() {
            return Err(bad("invalid patch format of setElementOrder list"));
        }
        let meta = node.meta(field);
        let merge_key = meta.and_then(|m| m.merge_key);
        let original_list = match original.get(field) {
            Some(Value::Array(a)) => Some(a.clone()),
            _ => None,
        };
        let patch_list = match patch.get(field) {
            Some(Value::Array(_)) => match patch.remove(field) {
                Some(Value::Array(a)) => Some(a),
                _ => None,
            },
            // A null or a non-list is handled (deleted or replaced) by the caller's loop.
            Some(_) => continue,
            None => None,
        };
        if let Some(p) = &patch_list {
            validate_against_order(p, &order, merge_key)?;
        }
        let items = node.field(field).items();
        let merged = match (original_list.clone(), patch_list) {
            (Some(o), None) => o,
            (o, Some(p)) => merge_list(o.unwrap_or_default(), p, items, meta, depth + 1)?,
            (None, None) => continue,
        };
        let order_ids: Vec<Value> = order
            .iter()
            .map(|item| {
                ident(item, merge_key)
                    .cloned()
                    .ok_or_else(|| missing_key(item, merge_key))
            })
            .collect::<Result<_>>()?;
        let server_ids = idents(original_list.as_deref().unwrap_or_default(), merge_key);
        original.insert(
            field.to_string(),
            Value::Array(normalize_order(merged, &order_ids, &server_ids, merge_key)),
        );
    }
    Ok(())
}

fn missing_key(item: &Value, key: Option<&str>) -> ApiError {
    match (item, key) {
        (Value::Object(m), Some(k)) => no_merge_key(m, k),
        _ => bad("invalid patch format of setElementOrder list"),
    }
}

/// The items the patch list sets (deletions aside) must appear in the order list, in order.
fn validate_against_order(patch: &[Value], order: &[Value], merge_key: Option<&str>) -> Result<()> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let is_directive = |v: &Value| v.as_object().is_some_and(|m| m.contains_key(DIRECTIVE));
    let items: Vec<&Value> = patch
        .iter()
        .filter(|v| merge_key.is_none() || !is_directive(v))
        .collect();
    let (mut pi, mut si) = (0, 0);
    while pi < items.len() && si < order.len() {
        if is_directive(items[pi]) {
            pi += 1;
            continue;
        }
        let a = ident(items[pi], merge_key).ok_or_else(|| missing_key(items[pi], merge_key))?;
        let b = ident(&order[si], merge_key).ok_or_else(|| missing_key(&order[si], merge_key))?;
        if value_eq(a, b) {
            pi += 1;
        }
        si += 1;
    }
    if pi < items.len() {
        return Err(bad(format!(
            "The order in patch list:\n{}\n doesn't match $setElementOrder list:\n{}\n",
            compact(&patch),
            compact(&order)
        )));
    }
    Ok(())
}

/// What identifies a list item: its merge key's value, or the item itself for primitives.
fn ident<'v>(item: &'v Value, merge_key: Option<&str>) -> Option<&'v Value> {
    match merge_key {
        Some(k) => item.get(k),
        None => Some(item),
    }
}

fn idents(items: &[Value], merge_key: Option<&str>) -> Vec<Value> {
    items
        .iter()
        .filter_map(|i| ident(i, merge_key).cloned())
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    String,
    Number,
    Bool,
    Null,
}

/// The one kind of the items of both lists (None if both are empty).
fn element_kind(a: &[Value], b: &[Value]) -> Result<Option<Kind>> {
    let mut kind = None;
    for v in a.iter().chain(b) {
        let k = match v {
            Value::Array(_) => return Err(unprocessable("lists of lists are not supported")),
            Value::Object(_) => Kind::Object,
            Value::String(_) => Kind::String,
            Value::Number(_) => Kind::Number,
            Value::Bool(_) => Kind::Bool,
            Value::Null => Kind::Null,
        };
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => {
                return Err(bad(format!(
                    "list element types are not identical: {}",
                    compact(&[a, b])
                )));
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    items: SchemaNode<'_>,
    meta: Option<PatchMeta>,
    depth: usize,
) -> Result<Vec<Value>> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    let Some(meta) = meta.filter(PatchMeta::merges) else {
        // Not a merging list: the patch replaces it (its objects merged into nothing, so that
        // directives are not stored).
        return patch
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => merge_map(Map::new(), m, items, depth + 1).map(Value::Object),
                other => Ok(other),
            })
            .collect();
    };
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    match element_kind(&original, &patch)? {
        Some(Kind::Object) => {
            let Some(key) = meta.merge_key else {
                return Err(bad("cannot merge lists without merge key for type map"));
            };
            merge_object_list(original, patch, key, items, depth)
        }
        _ => {
            // A set of primitives: the union, patch items ordered as in the patch.
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.iter().chain(&patch) {
                if !merged.iter().any(|m| value_eq(m, v)) {
                    merged.push(v.clone());
                }
            }
            Ok(normalize_order(merged, &patch, &original, None))
        }
    }
}

fn merge_object_list(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    items: SchemaNode<'_>,
    depth: usize,
) -> Result<Vec<Value>> {
    // Special items first: deletions by key, and a replace marker.
    let mut rest: Vec<Map<String, Value>> = vec![];
    let mut replace = false;
    for item in patch {
        let Value::Object(mut m) = item else {
            return Err(bad("invalid element in merging list"));
        };
        match m.remove(DIRECTIVE) {
            None => rest.push(m),
            Some(d) => match d.as_str() {
                Some("delete") => {
                    let Some(value) = m.get(key) else {
                        m.insert(DIRECTIVE.into(), d);
                        return Err(no_merge_key(&m, key));
                    };
                    original.retain(|o| !o.get(key).is_some_and(|v| value_eq(v, value)));
                }
                Some("replace") => replace = true,
                // `merge` is the default; an item carrying only the marker says nothing else.
                Some("merge") => {
                    if m.contains_key(key) {
                        rest.push(m);
                    }
                }
                _ => return Err(bad_patch_type(&d, &m)),
            },
        }
    }
    if replace {
        return rest
            .into_iter()
            .map(|m| merge_map(Map::new(), m, items, depth + 1).map(Value::Object))
            .collect();
    }

    let mut patch_ids = Vec::with_capacity(rest.len());
    for m in &rest {
        patch_ids.push(m.get(key).cloned().ok_or_else(|| no_merge_key(m, key))?);
    }
    let server_ids = idents(&original, Some(key));
    let mut merged = original;
    for (m, id) in rest.into_iter().zip(&patch_ids) {
        let found = merged
            .iter()
            .position(|o| o.get(key).is_some_and(|v| value_eq(v, id)));
        match found {
            Some(i) => {
                let existing = match std::mem::take(&mut merged[i]) {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                merged[i] = Value::Object(merge_map(existing, m, items, depth + 1)?);
            }
            None => merged.push(Value::Object(merge_map(Map::new(), m, items, depth + 1)?)),
        }
    }
    Ok(normalize_order(merged, &patch_ids, &server_ids, Some(key)))
}

fn position(ids: &[Value], id: Option<&Value>) -> Option<usize> {
    let id = id?;
    ids.iter().position(|v| value_eq(v, id))
}

/// Upstream's `normalizeElementOrder`: items named by the patch (`patch_order`) come in patch
/// order, the others ("server-only") in their original order, and the two runs are interleaved
/// by their positions in the original list.
fn normalize_order(
    merged: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Vec<Value> {
    let (mut from_patch, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| position(patch_order, ident(item, merge_key)).is_some());
    from_patch
        .sort_by_key(|item| position(patch_order, ident(item, merge_key)).unwrap_or(usize::MAX));
    server_only
        .sort_by_key(|item| position(server_order, ident(item, merge_key)).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(from_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = from_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => {
                let li = position(server_order, ident(l, merge_key));
                let ri = position(server_order, ident(r, merge_key));
                matches!((li, ri), (Some(li), Some(ri)) if li < ri)
            }
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}
