//! JSON Patch, JSON Merge Patch and Strategic Merge Patch.
//!
//! Placeholder for the OpenAPI work: only the patch metadata table, with a handful of entries.
//! The real module (written in parallel) replaces this file; the signatures below are the
//! contract the OpenAPI generator relies on.

/// How a list or map property merges in a strategic merge patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchMeta {
    /// `x-kubernetes-patch-strategy`: `merge`, `replace`, `retainKeys` or `merge,retainKeys`.
    pub strategy: &'static str,
    /// `x-kubernetes-patch-merge-key`, for lists of objects merged by key.
    pub merge_key: Option<&'static str>,
}

const fn merge_by(key: &'static str) -> PatchMeta {
    PatchMeta {
        strategy: "merge",
        merge_key: Some(key),
    }
}

static TABLE: &[(&str, &str, PatchMeta)] = &[
    ("io.k8s.api.core.v1.PodSpec", "containers", merge_by("name")),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        merge_by("name"),
    ),
    ("io.k8s.api.core.v1.Container", "env", merge_by("name")),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        merge_by("containerPort"),
    ),
];

/// The strategic-merge metadata of `property` in the OpenAPI definition `definition`
/// (e.g. `io.k8s.api.core.v1.PodSpec`, `containers`).
pub fn patch_meta(definition: &str, property: &str) -> Option<PatchMeta> {
    TABLE
        .iter()
        .find(|(d, p, _)| *d == definition && *p == property)
        .map(|(_, _, m)| *m)
}

/// Every entry of the table: (definition, property, metadata).
pub fn all_patch_meta() -> &'static [(&'static str, &'static str, PatchMeta)] {
    TABLE
}

// TEMPORARY shim (replaced by the real patch module at merge).
#[allow(missing_docs)]
pub fn apply_json_patch(doc: &serde_json::Value, patch: &serde_json::Value) -> Result<serde_json::Value, crate::ApiError> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| crate::ApiError::bad_request(e.to_string()))?;
    let mut d = doc.clone();
    json_patch::patch(&mut d, &p).map_err(|e| crate::ApiError::new(422, "Invalid", e.to_string()))?;
    Ok(d)
}
#[allow(missing_docs)]
pub fn apply_merge_patch(doc: &serde_json::Value, patch: &serde_json::Value) -> Result<serde_json::Value, crate::ApiError> {
    let mut d = doc.clone();
    json_patch::merge(&mut d, patch);
    Ok(d)
}
#[allow(missing_docs)]
pub struct PatchSchema;
#[allow(missing_docs)]
impl PatchSchema {
    pub fn for_resource(_r: &crate::ResourceInfo) -> Self {
        Self
    }
}
#[allow(missing_docs)]
pub fn apply_strategic_merge_patch(doc: &serde_json::Value, patch: &serde_json::Value, _s: &PatchSchema) -> Result<serde_json::Value, crate::ApiError> {
    apply_merge_patch(doc, patch)
}
