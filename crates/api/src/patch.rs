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
