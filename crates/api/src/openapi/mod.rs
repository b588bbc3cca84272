//! The OpenAPI documents served to kubectl, derived from the [`Registry`].
//!
//! - `/openapi/v3` serves [`v3_index`]: `{"paths": {"api/v1": {"serverRelativeURL":
//!   "/openapi/v3/api/v1?hash=..."}, "apis/apps/v1": {...}}}`, one entry per group/version.
//! - `/openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>` serve [`v3_document`]: an
//!   OpenAPI 3.0 document with the group/version's paths and every schema they reach
//!   (`#/components/schemas/<name>`, upstream's definition names such as
//!   `io.k8s.api.core.v1.Pod`).
//! - `/openapi/v2` serves [`v2_document`]: one Swagger 2.0 document for every resource
//!   (`#/definitions/<name>`).
//!
//! kubectl reads the v3 documents: `kubectl explain` and strategic-merge patch metadata find a
//! kind's schema by its `x-kubernetes-group-version-kind` extension, and kubectl decides that the
//! server validates fields itself (`--validate=strict` without client-side validation) when the
//! PATCH operation of the kind lists a `fieldValidation` query parameter.
//!
//! Schemas come from k8s-openapi's `JsonSchema` impls (schemars), converted to what OpenAPI 3.0
//! and Swagger 2.0 parsers accept, with the `x-kubernetes-*` extensions upstream adds.
//!
//! The documents are large; generate them once and serve the bytes.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::registry::Registry;

use document::build_document;
use schema::Format;

mod document;
mod operation;
mod params;
mod paths;
mod schema;
#[cfg(test)]
mod tests;

/// The v3 documents of every group/version, with the index that lists them.
#[derive(Debug, Clone)]
pub struct V3Documents {
    /// The `/openapi/v3` discovery document ([`v3_index`]).
    pub index: Value,
    /// Each group/version's document, keyed by its path under `/openapi/v3/` (`api/v1`,
    /// `apis/apps/v1`).
    pub documents: BTreeMap<String, Value>,
}

/// The key of a group/version under `/openapi/v3/`: `api/v1` for core, else `apis/<group>/<version>`.
pub fn v3_path_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A stable hash of a document: FNV-1a (128 bits) of its compact JSON (`serde_json::to_vec`),
/// as 32 upper-case hex digits. Used for the `hash` query parameter of `serverRelativeURL`.
pub fn document_hash(doc: &Value) -> String {
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    content_hash(&bytes)
}

/// FNV-1a (128 bits) of `bytes`, as 32 upper-case hex digits.
pub fn content_hash(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = OFFSET;
    for &b in bytes {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    format!("{h:032X}")
}

/// Every group/version's v3 document and the index listing them (each generated once).
pub fn v3_all(registry: &Registry) -> V3Documents {
    let mut documents = BTreeMap::new();
    let mut paths = Map::new();
    for (group, version) in registry.group_versions() {
        let key = v3_path_key(group, version);
        let doc = build_document(registry, Format::V3, Some((group, version)));
        let url = format!("/openapi/v3/{key}?hash={}", document_hash(&doc));
        paths.insert(key.clone(), json!({ "serverRelativeURL": url }));
        documents.insert(key, doc);
    }
    V3Documents {
        index: json!({ "paths": paths }),
        documents,
    }
}

/// The `/openapi/v3` discovery document: one `serverRelativeURL` (with a content hash) per
/// group/version the registry serves.
pub fn v3_index(registry: &Registry) -> Value {
    v3_all(registry).index
}

/// The OpenAPI 3.0 document of one group/version (`""` for core), or None if the registry serves
/// no resource in it.
pub fn v3_document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let (g, v) = registry
        .group_versions()
        .into_iter()
        .find(|&(g, v)| g == group && v == version)?;
    Some(build_document(registry, Format::V3, Some((g, v))))
}

/// The Swagger 2.0 document of every resource (`/openapi/v2`, JSON).
pub fn v2_document(registry: &Registry) -> Value {
    build_document(registry, Format::V2, None)
}
