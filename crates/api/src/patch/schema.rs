//! The type information strategic merge patch needs: for each JSON object in a patched
//! document, the OpenAPI definition it is an instance of (to consult [`super::patch_meta`]) and
//! the schemas of its properties and list items. It is read from the JSON schema schemars
//! generates for the k8s-openapi types, whose definitions are named like upstream's OpenAPI
//! definitions (`io.k8s.api.core.v1.PodSpec`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

use super::meta::{PatchMeta, patch_meta};
use crate::registry::ResourceInfo;

/// A resolved JSON schema with its definitions, walkable by property and list item.
#[derive(Clone, Debug, Default)]
pub struct PatchSchema {
    root: Value,
    definitions: Map<String, Value>,
    ref_prefix: String,
}

/// Where the walker is: the definition name of the current object (if it is a named
/// definition) and its schema.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SchemaNode<'a> {
    schema: &'a PatchSchema,
    definition: Option<&'a str>,
    value: Option<&'a Value>,
}

impl PatchSchema {
    /// The schema of a type implementing `JsonSchema` (e.g. a k8s-openapi resource).
    pub fn for_type<T: JsonSchema>() -> Self {
        Self::from_generator_fn(|g| g.subschema_for::<T>())
    }

    /// The schema produced by a generator function, such as [`ResourceInfo::schema`].
    pub fn from_generator_fn(f: impl FnOnce(&mut SchemaGenerator) -> Schema) -> Self {
        let mut generator = SchemaGenerator::default();
        let root = f(&mut generator).to_value();
        let ref_prefix = format!(
            "#{}/",
            generator.settings().definitions_path.trim_end_matches('/')
        );
        let definitions = generator.take_definitions(false);
        Self {
            root,
            definitions,
            ref_prefix,
        }
    }

    /// A schema that knows no types: every list is replaced, every map merged (what upstream
    /// does for JSON merge patch).
    pub fn empty() -> Self {
        Self::default()
    }

    /// The cached schema of a registered resource, built on first use.
    pub fn for_resource(info: &ResourceInfo) -> Arc<PatchSchema> {
        type Cache = Mutex<HashMap<(&'static str, &'static str, &'static str), Arc<PatchSchema>>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let key = (info.group, info.version, info.kind);
        let cache = CACHE.get_or_init(Default::default);
        if let Some(s) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Arc::clone(s);
        }
        // Built outside the lock: generation walks the whole type tree.
        let built = Arc::new(Self::from_generator_fn(info.schema));
        let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(guard.entry(key).or_insert(built))
    }

    /// The definition name of the root type (e.g. `io.k8s.api.apps.v1.Deployment`).
    pub fn root_definition(&self) -> Option<&str> {
        self.root().definition
    }

    /// The names of all definitions reachable from the root.
    pub fn definition_names(&self) -> impl Iterator<Item = &str> {
        self.definitions.keys().map(String::as_str)
    }

    /// The schema of one definition, if present.
    pub fn definition(&self, name: &str) -> Option<&Value> {
        self.definitions.get(name)
    }

    pub(crate) fn root(&self) -> SchemaNode<'_> {
        self.resolve(Some(&self.root))
    }

    fn definition_for_ref<'a>(&'a self, reference: &str) -> Option<(&'a str, &'a Value)> {
        let encoded = reference
            .strip_prefix(&self.ref_prefix)
            .or_else(|| reference.rsplit('/').next())?;
        let name = decode_ref_name(encoded);
        self.definitions
            .get_key_value(&name)
            .map(|(k, v)| (k.as_str(), v))
    }

    fn resolve<'a>(&'a self, value: Option<&'a Value>) -> SchemaNode<'a> {
        let mut node = SchemaNode {
            schema: self,
            definition: None,
            value,
        };
        // Bounded: definitions may refer to each other.
        for _ in 0..16 {
            let Some(v) = node.value else { break };
            if let Some(reference) = v.get("$ref").and_then(Value::as_str) {
                match self.definition_for_ref(reference) {
                    Some((name, def)) => {
                        node.definition = Some(name);
                        node.value = Some(def);
                        continue;
                    }
                    None => {
                        node.value = None;
                        break;
                    }
                }
            }
            let structural = ["properties", "items", "additionalProperties"]
                .iter()
                .any(|k| v.get(k).is_some());
            if !structural {
                // `allOf: [{$ref}]`, `anyOf: [{$ref}, {type: null}]` wrappers.
                let inner = ["allOf", "anyOf", "oneOf"].iter().find_map(|k| {
                    v.get(k)?
                        .as_array()?
                        .iter()
                        .find(|s| s.get("type").and_then(Value::as_str) != Some("null"))
                });
                if let Some(inner) = inner {
                    node.value = Some(inner);
                    continue;
                }
            }
            break;
        }
        node
    }
}

fn decode_ref_name(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 3;
            }
            (b'~', Some(b'1'), _) => {
                out.push(b'/');
                i += 2;
            }
            (b'~', Some(b'0'), _) => {
                out.push(b'~');
                i += 2;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<'a> SchemaNode<'a> {
    /// The definition name of this object, if it is a named definition.
    #[cfg(test)]
    pub(crate) fn definition(&self) -> Option<&'a str> {
        self.definition
    }

    /// The patch metadata of one of this object's properties.
    pub(crate) fn meta(&self, property: &str) -> Option<PatchMeta> {
        patch_meta(self.definition?, property)
    }

    /// The schema of a property (or of a map value, for maps with `additionalProperties`).
    pub(crate) fn field(&self, property: &str) -> SchemaNode<'a> {
        let v = self.value.and_then(|v| {
            v.get("properties")
                .and_then(|p| p.get(property))
                .or_else(|| v.get("additionalProperties").filter(|a| a.is_object()))
        });
        self.schema.resolve(v)
    }

    /// The schema of list items.
    pub(crate) fn items(&self) -> SchemaNode<'a> {
        self.schema.resolve(self.value.and_then(|v| v.get("items")))
    }
}
