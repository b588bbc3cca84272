//! The one registry of resources. Routing, discovery, OpenAPI and table printing are all
//! derived from it; nothing else lists resources.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::strategy::{Behavior, Strategy, Typed};

/// Everything the API server needs to know about one resource.
pub struct ResourceInfo {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Version, e.g. `v1`.
    pub version: &'static str,
    /// `group/version`, or `version` for core.
    pub api_version: &'static str,
    /// Kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// Plural resource name used in URLs, e.g. `deployments`.
    pub plural: &'static str,
    /// Singular name, e.g. `deployment`.
    pub singular: String,
    /// Short names, e.g. `deploy`.
    pub short_names: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Supported verbs.
    pub verbs: &'static [&'static str],
    /// Categories, e.g. `all`.
    pub categories: &'static [&'static str],
    /// Subresources, e.g. `status`, `scale`.
    pub subresources: &'static [&'static str],
    /// The resource's behaviour.
    pub strategy: Box<dyn Strategy>,
    /// The JSON schema of the type, for OpenAPI (schemars).
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

impl ResourceInfo {
    /// The entry for a k8s-openapi type.
    pub fn of<T: Behavior + schemars::JsonSchema>() -> Self {
        Self {
            group: T::GROUP,
            version: T::VERSION,
            api_version: T::API_VERSION,
            kind: T::KIND,
            plural: T::URL_PATH_SEGMENT,
            singular: T::KIND.to_ascii_lowercase(),
            short_names: T::SHORT_NAMES,
            namespaced: std::any::TypeId::of::<T::Scope>()
                == std::any::TypeId::of::<k8s_openapi::NamespaceResourceScope>(),
            verbs: T::VERBS,
            categories: T::CATEGORIES,
            subresources: T::SUBRESOURCES,
            strategy: Box::new(Typed::<T>::default()),
            schema: |g| g.subschema_for::<T>(),
        }
    }

    /// Whether the resource has a `status` subresource (and so a spec/status split).
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    /// Whether `verb` is allowed.
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// The storage key prefix for this resource: `/registry/<group>/<plural>/`.
    pub fn key_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        }
    }

    /// The storage key for one object (`namespace` is ignored for cluster-scoped resources).
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }
}

/// All resources corten serves.
pub struct Registry {
    resources: Vec<Arc<ResourceInfo>>,
    by_path: HashMap<(&'static str, &'static str, &'static str), usize>,
}

impl Registry {
    /// Builds the registry from [`crate::resources::all`].
    pub fn new() -> Self {
        Self::from_resources(crate::resources::all())
    }

    /// A registry of the given resources.
    pub fn from_resources(list: Vec<ResourceInfo>) -> Self {
        let resources: Vec<Arc<ResourceInfo>> = list.into_iter().map(Arc::new).collect();
        let by_path = resources
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.group, r.version, r.plural), i))
            .collect();
        Self { resources, by_path }
    }

    /// The process-wide registry.
    pub fn global() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(Registry::new)
    }

    /// Looks a resource up by URL coordinates.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<ResourceInfo>> {
        self.by_path
            .get(&(group, version, plural))
            .map(|&i| &self.resources[i])
    }

    /// Looks a resource up by kind within a group/version.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<&Arc<ResourceInfo>> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// Every resource.
    pub fn all(&self) -> &[Arc<ResourceInfo>] {
        &self.resources
    }

    /// The group/versions served, core (`""`, `v1`) first, each once, in registry order.
    pub fn group_versions(&self) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<(&'static str, &'static str)> = vec![];
        for r in &self.resources {
            if !out.contains(&(r.group, r.version)) {
                out.push((r.group, r.version));
            }
        }
        out
    }

    /// The resources of one group/version.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a Arc<ResourceInfo>> + 'a {
        self.resources
            .iter()
            .filter(move |r| r.group == group && r.version == version)
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}
