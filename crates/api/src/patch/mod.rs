//! JSON Patch (RFC 6902), JSON Merge Patch (RFC 7386) and Strategic Merge Patch, applied to
//! JSON objects as upstream's API server applies them to a PATCH request's target.
//!
//! - `application/json-patch+json` is applied by [`apply_json_patch`];
//! - `application/merge-patch+json` by [`apply_merge_patch`];
//! - `application/strategic-merge-patch+json` by [`apply_strategic_merge_patch`] (what
//!   `kubectl apply`, `kubectl patch` and `kubectl edit` send), driven by the one table of
//!   patch metadata ([`patch_meta`], [`all_patch_meta`]) and the type information in a
//!   [`PatchSchema`].

// `ApiError` is the crate's one error type, returned as is by every function here.
#![allow(clippy::result_large_err)]

use serde_json::Value;

use crate::error::{ApiError, FieldCause};

mod meta;
mod schema;
mod strategic;

pub use meta::{PatchMeta, all_patch_meta, patch_meta};
pub use schema::PatchSchema;
pub use strategic::apply_strategic_merge_patch;

/// The deepest nesting a patch may have (deeper patches are rejected with 400 before they are
/// walked). Merging recurses once per level, so this bounds stack use: 256 levels fit a 2 MiB
/// thread stack even in debug builds, and are twice what serde_json's parser accepts (128), so
/// no object that reached the server as JSON is refused.
pub const MAX_DEPTH: usize = 256;

/// The most operations a JSON patch may have (upstream's `maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10000;

/// 422 as upstream answers a patch that cannot be applied: reason Invalid, kubectl's generic
/// message, and the specific error as an `UnexpectedServerResponse` cause.
pub(crate) fn unprocessable(detail: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
    );
    e.causes = vec![FieldCause {
        reason: "UnexpectedServerResponse",
        field: String::new(),
        message: detail.into(),
    }];
    e
}

/// Rejects a value nested deeper than [`MAX_DEPTH`], without recursion.
pub(crate) fn check_depth(v: &Value) -> Result<(), ApiError> {
    let mut stack: Vec<(&Value, usize)> = vec![(v, 1)];
    while let Some((v, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(ApiError::bad_request(format!(
                "patch is nested too deeply (more than {MAX_DEPTH} levels)"
            )));
        }
        match v {
            Value::Object(m) => stack.extend(m.values().map(|c| (c, depth + 1))),
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Applies a JSON Patch (RFC 6902). The patch must be an array of operations (else 400); an
/// operation that fails (a failed `test`, a missing path) gives 422 as upstream.
pub fn apply_json_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    let Some(ops) = patch.as_array() else {
        return Err(ApiError::bad_request(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
            go_type(patch)
        )));
    };
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!(
                "Request entity too large: The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
                ops.len()
            ),
        ));
    }
    check_depth(patch)?;
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &ops).map_err(|e| unprocessable(e.to_string()))?;
    Ok(out)
}

/// Applies a JSON Merge Patch (RFC 7386): objects merge recursively, `null` deletes, anything
/// else (lists included) replaces. The patch must be an object (400 otherwise).
pub fn apply_merge_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request("Invalid JSON Patch"));
    }
    check_depth(patch)?;
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

#[cfg(test)]
mod tests;
