//! Helpers on JSON objects: metadata access, encoding for the store, timestamps, names.

use api::ApiError;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use store::KeyValue;

/// The object's `metadata` map (created if missing).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The object's name.
pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

/// Labels as pairs.
pub fn labels(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The store form of an object: JSON without `metadata.resourceVersion` (the store's
/// `mod_revision` is the resourceVersion).
pub fn encode(obj: &Value) -> Result<Bytes, ApiError> {
    let mut obj = obj.clone();
    meta_mut(&mut obj).remove("resourceVersion");
    serde_json::to_vec(&obj)
        .map(Bytes::from)
        .map_err(ApiError::internal)
}

/// The API form of a stored object: its JSON with `metadata.resourceVersion` set.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is unreadable: {e}", kv.key)))?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

/// The API form of a stored object as JSON bytes, without building a tree of the whole object:
/// only the top level is split (into raw values) and `metadata` is parsed to set
/// `resourceVersion`. Used where many objects stream out (lists).
pub fn decode_raw(kv: &KeyValue, out: &mut Vec<u8>) -> Result<(), ApiError> {
    use serde_json::value::RawValue;
    let unreadable = |e: serde_json::Error| {
        ApiError::internal(format!("stored object {} is unreadable: {e}", kv.key))
    };
    let top: std::collections::BTreeMap<String, &RawValue> =
        serde_json::from_slice(&kv.value).map_err(unreadable)?;
    let mut meta: Map<String, Value> = match top.get("metadata") {
        Some(raw) => serde_json::from_str(raw.get()).map_err(unreadable)?,
        None => Map::new(),
    };
    meta.insert(
        "resourceVersion".into(),
        Value::String(kv.mod_revision.to_string()),
    );
    out.push(b'{');
    let mut first = true;
    let mut wrote_meta = false;
    for (k, v) in &top {
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut *out, k).map_err(ApiError::internal)?;
        out.push(b':');
        if k == "metadata" {
            serde_json::to_writer(&mut *out, &meta).map_err(ApiError::internal)?;
            wrote_meta = true;
        } else {
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    if !wrote_meta {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(b"\"metadata\":");
        serde_json::to_writer(&mut *out, &meta).map_err(ApiError::internal)?;
    }
    out.push(b'}');
    Ok(())
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, rev: i64) {
    meta_mut(obj).insert("resourceVersion".into(), Value::String(rev.to_string()));
}

/// Now, as a Kubernetes `Time` (RFC 3339, seconds).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `seconds` from now, as a Kubernetes `Time`.
pub fn now_plus(seconds: i64) -> String {
    let t = jiff::Timestamp::now().as_second() + seconds;
    jiff::Timestamp::from_second(t)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A random suffix for `generateName`, from upstream's alphabet (no vowels, no confusables).
pub fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Maps store errors to API errors for the object `name` of resource `plural` in `group`.
pub fn store_error(e: store::Error, group: &str, plural: &str, name: &str) -> ApiError {
    match e {
        store::Error::AlreadyExists(_) => ApiError::already_exists(group, plural, name),
        store::Error::NotFound(_) => ApiError::not_found(group, plural, name),
        store::Error::Conflict { .. } => ApiError::conflict(
            group,
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ),
        store::Error::Compacted {
            requested,
            compacted,
        } => ApiError::gone(requested, compacted),
        store::Error::FutureRevision { requested, current } => ApiError::timeout(format!(
            "Too large resource version: {requested}, current: {current}"
        )),
        other => ApiError::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_decoding_matches_tree_decoding() {
        for value in [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"x": "y"}}, "data": {"k": "\"metadata\":{"}}),
            json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "data": {"metadata": {"name": "inner"}}, "metadata": {"name": "r"}, "revision": 1}),
            json!({"kind": "X"}),
        ] {
            let kv = KeyValue {
                key: "/k".into(),
                value: Bytes::from(serde_json::to_vec(&value).unwrap()),
                create_revision: 3,
                mod_revision: 7,
            };
            let mut raw = vec![];
            decode_raw(&kv, &mut raw).unwrap();
            let parsed: Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(parsed, decode(&kv).unwrap());
            assert_eq!(parsed["metadata"]["resourceVersion"], "7");
        }
    }
}
