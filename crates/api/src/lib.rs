//! corten's resource model, shared by the API server and every API client in the project.
//!
//! - [`registry`]: the one table of resources (group, version, kind, names, scope, verbs,
//!   subresources) from which routing, discovery, OpenAPI and tables are derived.
//! - [`strategy`]: how a resource behaves on create/update (defaults, validation, status split,
//!   table columns, field selectors), written once per resource under [`resources`].
//! - [`error`]: Kubernetes `Status` errors.
//! - [`selector`]: label and field selectors.
//! - [`patch`]: JSON Patch, JSON Merge Patch and Strategic Merge Patch.
//! - [`openapi`]: the OpenAPI v2 and v3 documents served to kubectl.
//! - [`protobuf`]: Kubernetes protobuf request bodies decoded into JSON.
//! - [`table`]: `meta.k8s.io/v1` Table rendering helpers.
//!
//! This crate does no I/O.

pub mod error;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod quota;
pub mod quota_scope;
pub mod registry;
pub mod resources;
pub mod selector;
pub mod strategy;
pub mod table;

pub use error::ApiError;
pub use registry::{Registry, ResourceInfo};

/// The Kubernetes version whose API corten serves (kubectl v1.32 accepts one minor of skew).
pub const KUBERNETES_VERSION: &str = "v1.33.0";
