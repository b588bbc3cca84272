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

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::transform::RemoveRefSiblings;
use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceInfo};

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

// ---------------------------------------------------------------------------------------------
// Formats and schema generation

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// Swagger 2.0: `#/definitions/`, parameters carry `type`, bodies are `in: body` parameters.
    V2,
    /// OpenAPI 3.0: `#/components/schemas/`, parameters carry `schema`, `requestBody`.
    V3,
}

impl Format {
    fn ref_prefix(self) -> &'static str {
        match self {
            Format::V2 => "#/definitions/",
            Format::V3 => "#/components/schemas/",
        }
    }

    fn generator(self) -> SchemaGenerator {
        let settings = match self {
            // OpenAPI 3.0 dialect: `$ref` siblings move into `allOf` (as upstream's v3 does),
            // `const` becomes `enum`, `nullable` instead of `type: [.., "null"]`.
            Format::V3 => SchemaSettings::openapi3().with(|s| s.meta_schema = None),
            // Swagger 2.0 keeps `$ref` siblings (`description` next to `$ref`, as upstream's v2).
            Format::V2 => SchemaSettings::draft07().with(|s| {
                s.meta_schema = None;
                s.definitions_path = "/definitions".into();
                s.transforms.retain(|t| !t.is::<RemoveRefSiblings>());
            }),
        };
        settings.into_generator()
    }

    fn schema_ref(self, name: &str) -> Value {
        json!({ "$ref": format!("{}{name}", self.ref_prefix()) })
    }
}

/// The definition name a generated subschema refers to (`{"$ref": "#/components/schemas/X"}` ->
/// `X`). A type whose schema is inlined is stored under `fallback`.
fn definition_name(
    generator: &mut SchemaGenerator,
    schema: schemars::Schema,
    fallback: &str,
) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str)
        && let Some(name) = r.rsplit('/').next()
    {
        return name.replace("~1", "/").replace("~0", "~");
    }
    generator
        .definitions_mut()
        .insert(fallback.to_string(), schema.to_value());
    fallback.to_string()
}

/// Upstream's definition-name prefix for a group/version: `io.k8s.api.core.v1`,
/// `io.k8s.api.apps.v1`, `io.k8s.api.rbac.v1` (rbac.authorization.k8s.io).
fn upstream_package(group: &str, version: &str) -> String {
    let short = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    format!("io.k8s.api.{short}.{version}")
}

/// Walks every schema object under `schema` (properties, items, additionalProperties,
/// compositions), calling `f` on each before its children.
fn walk_schemas(schema: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    let Value::Object(obj) = schema else { return };
    f(obj);
    for key in ["properties", "patternProperties", "definitions", "$defs"] {
        if let Some(Value::Object(m)) = obj.get_mut(key) {
            for v in m.values_mut() {
                walk_schemas(v, f);
            }
        }
    }
    for key in [
        "additionalProperties",
        "items",
        "not",
        "additionalItems",
        "contains",
        "propertyNames",
    ] {
        match obj.get_mut(key) {
            Some(Value::Array(a)) => a.iter_mut().for_each(|v| walk_schemas(v, f)),
            Some(v) => walk_schemas(v, f),
            None => {}
        }
    }
    for key in ["allOf", "anyOf", "oneOf", "prefixItems"] {
        if let Some(Value::Array(a)) = obj.get_mut(key) {
            a.iter_mut().for_each(|v| walk_schemas(v, f));
        }
    }
}

/// Keywords of the OpenAPI 3.0 Schema Object (besides `x-` extensions).
const V3_KEYWORDS: &[&str] = &[
    "$ref",
    "title",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "enum",
    "type",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "items",
    "properties",
    "additionalProperties",
    "description",
    "format",
    "default",
    "nullable",
    "discriminator",
    "readOnly",
    "writeOnly",
    "xml",
    "externalDocs",
    "example",
    "deprecated",
];

/// Keywords of the Swagger 2.0 Schema Object (besides `x-` extensions).
const V2_KEYWORDS: &[&str] = &[
    "$ref",
    "format",
    "title",
    "description",
    "default",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "enum",
    "additionalProperties",
    "type",
    "items",
    "allOf",
    "properties",
    "discriminator",
    "readOnly",
    "xml",
    "externalDocs",
    "example",
];

/// Makes one schema object acceptable to the format's parsers: no `$schema`, `const`, type
/// arrays, `examples`, boolean subschemas or other keywords the format lacks.
fn sanitize(format: Format, obj: &mut Map<String, Value>) {
    if let Some(c) = obj.remove("const") {
        obj.entry("enum").or_insert_with(|| Value::Array(vec![c]));
    }
    if let Some(Value::Array(examples)) = obj.remove("examples")
        && let Some(first) = examples.into_iter().next()
    {
        obj.entry("example").or_insert(first);
    }
    if let Some(Value::Array(types)) = obj.get("type").cloned() {
        obj.remove("type");
        let nullable = types.iter().any(|t| t == "null");
        let mut rest: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
        match rest.len() {
            0 => {}
            1 => {
                obj.insert("type".into(), rest.remove(0));
            }
            _ if format == Format::V3 => {
                let any: Vec<Value> = rest.into_iter().map(|t| json!({ "type": t })).collect();
                obj.insert("anyOf".into(), Value::Array(any));
            }
            _ => {}
        }
        if nullable {
            obj.insert("nullable".into(), Value::Bool(true));
        }
    }
    if format == Format::V2
        && let Some(n) = obj.remove("nullable")
    {
        obj.insert("x-nullable".into(), n);
    }
    // Boolean subschemas (JSON Schema) are not schemas in either format.
    let fix_bool = |v: &mut Value| {
        if let Value::Bool(b) = *v {
            *v = if b || format == Format::V2 {
                json!({})
            } else {
                json!({ "not": {} })
            };
        }
    };
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        props.values_mut().for_each(fix_bool);
    }
    for key in ["items", "not"] {
        if let Some(v) = obj.get_mut(key) {
            fix_bool(v);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(a)) = obj.get_mut(key) {
            a.iter_mut().for_each(fix_bool);
        }
    }
    if let Some(Value::Array(items)) = obj.get("items") {
        // Tuple items: neither format has them; keep the first item's schema.
        let first = items.first().cloned().unwrap_or_else(|| json!({}));
        obj.insert("items".into(), first);
    }
    let keywords = match format {
        Format::V2 => V2_KEYWORDS,
        Format::V3 => V3_KEYWORDS,
    };
    obj.retain(|k, _| k.starts_with("x-") || keywords.contains(&k.as_str()));
}

const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// Converts generated definitions into the format's dialect and adds upstream's extensions:
/// IntOrString/Quantity shapes, `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`.
fn transform_definitions(format: Format, defs: &mut Map<String, Value>) {
    for def in defs.values_mut() {
        walk_schemas(def, &mut |obj| sanitize(format, obj));
        // k8s-openapi lists `metadata` as required (its Rust field is not optional); upstream's
        // schemas never require it (kubectl explain would print `-required-`).
        if let Some(obj) = def.as_object_mut()
            && let Some(Value::Array(required)) = obj.get_mut("required")
        {
            required.retain(|r| r != "metadata");
            if required.is_empty() {
                obj.remove("required");
            }
        }
    }
    if let Some(Value::Object(ios)) = defs.get_mut(INT_OR_STRING) {
        ios.insert("format".into(), "int-or-string".into());
        ios.insert("x-kubernetes-int-or-string".into(), Value::Bool(true));
        match format {
            Format::V2 => {
                ios.insert("type".into(), "string".into());
            }
            Format::V3 => {
                ios.insert(
                    "oneOf".into(),
                    json!([{ "type": "integer" }, { "type": "string" }]),
                );
            }
        }
    }
    if let Some(Value::Object(q)) = defs.get_mut(QUANTITY) {
        q.insert("x-kubernetes-int-or-string".into(), Value::Bool(true));
        match format {
            Format::V2 => {
                q.insert("type".into(), "string".into());
            }
            Format::V3 => {
                q.insert(
                    "oneOf".into(),
                    json!([{ "type": "string" }, { "type": "number" }]),
                );
            }
        }
    }
    for (definition, property, meta) in crate::patch::all_patch_meta() {
        let prop = defs
            .get_mut(*definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(*property))
            .and_then(Value::as_object_mut);
        if let Some(prop) = prop {
            prop.insert("x-kubernetes-patch-strategy".into(), meta.strategy.into());
            if let Some(key) = meta.merge_key {
                prop.insert("x-kubernetes-patch-merge-key".into(), key.into());
            }
        }
    }
}

/// Runs the schema transformation on schemars output: every definition the generator holds,
/// converted to `format` with upstream's extensions (see [`transform_definitions`]).
fn take_definitions(format: Format, generator: &mut SchemaGenerator) -> Map<String, Value> {
    let mut defs = generator.take_definitions(true);
    transform_definitions(format, &mut defs);
    defs
}

fn gvk_value(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

// ---------------------------------------------------------------------------------------------
// Paths and operations

/// Definition names of the common types operations refer to.
struct Common {
    status: String,
    delete_options: String,
    patch: String,
    list_meta: String,
}

impl Common {
    fn new(generator: &mut SchemaGenerator) -> Self {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
        let s = generator.subschema_for::<meta::Status>();
        let status = definition_name(generator, s, "io.k8s.apimachinery.pkg.apis.meta.v1.Status");
        let s = generator.subschema_for::<meta::DeleteOptions>();
        let delete_options = definition_name(
            generator,
            s,
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        );
        let s = generator.subschema_for::<meta::Patch>();
        let patch = definition_name(generator, s, "io.k8s.apimachinery.pkg.apis.meta.v1.Patch");
        let s = generator.subschema_for::<meta::ListMeta>();
        let list_meta = definition_name(
            generator,
            s,
            "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
        );
        Self {
            status,
            delete_options,
            patch,
            list_meta,
        }
    }
}

/// A query or path parameter.
struct Param {
    name: &'static str,
    location: &'static str,
    ty: &'static str,
    description: &'static str,
}

const fn query(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: "query",
        ty,
        description,
    }
}

const NAME: Param = Param {
    name: "name",
    location: "path",
    ty: "string",
    description: "name of the object",
};
const NAMESPACE: Param = Param {
    name: "namespace",
    location: "path",
    ty: "string",
    description: "object name and auth scope, such as for teams and projects",
};
const PRETTY: Param = query(
    "pretty",
    "string",
    "If 'true', then the output is pretty printed.",
);
const DRY_RUN: Param = query(
    "dryRun",
    "string",
    "When present, indicates that modifications should not be persisted. The only valid value is 'All': all dry run stages are processed.",
);
const FIELD_MANAGER: Param = query(
    "fieldManager",
    "string",
    "A name associated with the actor or entity that is making these changes.",
);
const FIELD_VALIDATION: Param = query(
    "fieldValidation",
    "string",
    "How the server handles objects with unknown or duplicate fields: Ignore, Warn or Strict.",
);
const FORCE: Param = query(
    "force",
    "boolean",
    "Force an Apply request to take ownership of conflicting fields (apply patches only).",
);

const LIST_PARAMS: &[Param] = &[
    query(
        "allowWatchBookmarks",
        "boolean",
        "Requests watch events with type BOOKMARK.",
    ),
    query(
        "continue",
        "string",
        "The continue token of a previous paginated list call.",
    ),
    query(
        "fieldSelector",
        "string",
        "A selector to restrict the list of returned objects by their fields.",
    ),
    query(
        "labelSelector",
        "string",
        "A selector to restrict the list of returned objects by their labels.",
    ),
    query(
        "limit",
        "integer",
        "The maximum number of responses to return for a list call.",
    ),
    query(
        "resourceVersion",
        "string",
        "Constrains which resource versions the request may be served from.",
    ),
    query(
        "resourceVersionMatch",
        "string",
        "How resourceVersion is applied to list calls: Exact or NotOlderThan.",
    ),
    query(
        "sendInitialEvents",
        "boolean",
        "With watch=true, starts the watch stream with synthetic events of the current state.",
    ),
    query(
        "timeoutSeconds",
        "integer",
        "Timeout for the list/watch call.",
    ),
    query(
        "watch",
        "boolean",
        "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
    ),
];

const DELETE_PARAMS: &[Param] = &[
    query(
        "gracePeriodSeconds",
        "integer",
        "The duration in seconds before the object should be deleted.",
    ),
    query(
        "orphanDependents",
        "boolean",
        "Deprecated: use propagationPolicy.",
    ),
    query(
        "propagationPolicy",
        "string",
        "Whether and how garbage collection is performed: Orphan, Background or Foreground.",
    ),
];

const LOG_PARAMS: &[Param] = &[
    query(
        "container",
        "string",
        "The container for which to stream logs.",
    ),
    query("follow", "boolean", "Follow the log stream of the pod."),
    query(
        "limitBytes",
        "integer",
        "The number of bytes to read from the server before terminating the log output.",
    ),
    query(
        "previous",
        "boolean",
        "Return previous terminated container logs.",
    ),
    query(
        "sinceSeconds",
        "integer",
        "A relative time in seconds before the current time from which to show logs.",
    ),
    query(
        "tailLines",
        "integer",
        "The number of lines from the end of the logs to show.",
    ),
    query(
        "timestamps",
        "boolean",
        "Add an RFC3339 timestamp at the beginning of every line of log output.",
    ),
];

const EXEC_PARAMS: &[Param] = &[
    query(
        "command",
        "string",
        "The command to execute (repeated for each argument).",
    ),
    query(
        "container",
        "string",
        "The container in which to execute the command.",
    ),
    query(
        "stderr",
        "boolean",
        "Redirect the standard error stream of the pod.",
    ),
    query(
        "stdin",
        "boolean",
        "Redirect the standard input stream of the pod.",
    ),
    query(
        "stdout",
        "boolean",
        "Redirect the standard output stream of the pod.",
    ),
    query("tty", "boolean", "Allocate a terminal."),
];

const PORTFORWARD_PARAMS: &[Param] = &[query("ports", "integer", "List of ports to forward.")];
const PROXY_PARAMS: &[Param] = &[query("path", "string", "The path of the request to proxy.")];

const JSON_YAML: &[&str] = &["application/json", "application/yaml"];
const WATCHABLE: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;stream=watch",
];
const TEXT: &[&str] = &["text/plain"];
const CONNECT: &[&str] = &["*/*"];
const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// What an operation returns: a definition, or a plain string (logs, connect).
#[derive(Clone)]
enum Body {
    Def(String),
    Text,
}

/// One operation, format-independent.
struct Operation<'a> {
    method: &'static str,
    action: &'static str,
    id: String,
    description: String,
    gvk: Option<Value>,
    params: Vec<&'a Param>,
    request: Option<(Body, &'static [&'static str], bool)>,
    responses: Vec<(&'static str, &'static str, Option<Body>)>,
    produces: &'static [&'static str],
    tag: String,
}

impl Operation<'_> {
    fn render(&self, format: Format) -> Value {
        let schema = |b: &Body| match b {
            Body::Def(d) => format.schema_ref(d),
            Body::Text => json!({ "type": "string" }),
        };
        let mut params: Vec<Value> = self
            .params
            .iter()
            .map(|p| {
                let mut v =
                    json!({ "name": p.name, "in": p.location, "description": p.description });
                if p.location == "path" {
                    v["required"] = Value::Bool(true);
                }
                match format {
                    Format::V2 => v["type"] = p.ty.into(),
                    Format::V3 => v["schema"] = json!({ "type": p.ty }),
                }
                v
            })
            .collect();
        let mut op = Map::new();
        op.insert("description".into(), self.description.clone().into());
        op.insert("operationId".into(), self.id.clone().into());
        op.insert("tags".into(), json!([self.tag]));
        let mut responses = Map::new();
        for (code, description, body) in &self.responses {
            let mut r = json!({ "description": description });
            if let Some(b) = body {
                match format {
                    Format::V2 => r["schema"] = schema(b),
                    Format::V3 => {
                        let content: Map<String, Value> = self
                            .produces
                            .iter()
                            .map(|ct| (ct.to_string(), json!({ "schema": schema(b) })))
                            .collect();
                        r["content"] = Value::Object(content);
                    }
                }
            }
            responses.insert(code.to_string(), r);
        }
        responses.insert("401".into(), json!({ "description": "Unauthorized" }));
        match (&self.request, format) {
            (Some((b, types, required)), Format::V3) => {
                let content: Map<String, Value> = types
                    .iter()
                    .map(|ct| (ct.to_string(), json!({ "schema": schema(b) })))
                    .collect();
                op.insert(
                    "requestBody".into(),
                    json!({ "content": content, "required": required }),
                );
            }
            (Some((b, types, required)), Format::V2) => {
                params.insert(0, json!({ "name": "body", "in": "body", "required": required, "schema": schema(b) }));
                op.insert("consumes".into(), json!(types));
            }
            (None, Format::V2) => {
                op.insert("consumes".into(), json!(["*/*"]));
            }
            (None, Format::V3) => {}
        }
        if format == Format::V2 {
            op.insert("produces".into(), json!(self.produces));
            op.insert("schemes".into(), json!(["https"]));
        }
        op.insert("parameters".into(), Value::Array(params));
        op.insert("responses".into(), Value::Object(responses));
        op.insert("x-kubernetes-action".into(), self.action.into());
        if let Some(gvk) = &self.gvk {
            op.insert("x-kubernetes-group-version-kind".into(), gvk.clone());
        }
        Value::Object(op)
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Upstream's operation-id infix for a group/version: `CoreV1`, `AppsV1`,
/// `RbacAuthorizationV1`, `NetworkingV1`.
fn group_version_camel(group: &str, version: &str) -> String {
    let group = group.strip_suffix(".k8s.io").unwrap_or(group);
    let g: String = if group.is_empty() {
        "Core".into()
    } else {
        group.split(['.', '-']).map(capitalize).collect()
    };
    format!("{g}{}", capitalize(version))
}

/// Upstream's tag for a group/version: `core_v1`, `apps_v1`, `rbacAuthorization_v1`.
fn tag(group: &str, version: &str) -> String {
    let camel = group_version_camel(group, version);
    let g = camel.strip_suffix(&capitalize(version)).unwrap_or(&camel);
    let mut chars = g.chars();
    let lower: String = chars
        .next()
        .map(|c| c.to_ascii_lowercase())
        .into_iter()
        .chain(chars)
        .collect();
    format!("{lower}_{version}")
}

/// Adds a resource's paths (collection, item, list-all, subresources) to `paths`.
fn resource_paths(
    format: Format,
    generator: &mut SchemaGenerator,
    common: &Common,
    r: &ResourceInfo,
    kind_def: &str,
    list_def: Option<&str>,
    paths: &mut Map<String, Value>,
) {
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");
    let gv = group_version_camel(r.group, r.version);
    let ns = if r.namespaced { "Namespaced" } else { "" };
    let kind = r.kind;
    let gvk = Some(gvk_value(r.group, r.version, kind));
    let tag = tag(r.group, r.version);
    let scope: Vec<&Param> = if r.namespaced {
        vec![&NAMESPACE]
    } else {
        vec![]
    };
    let with_name = |extra: &[&'static Param]| -> Vec<&'static Param> {
        let mut v: Vec<&'static Param> = vec![&NAME];
        if r.namespaced {
            v.push(&NAMESPACE);
        }
        v.extend_from_slice(extra);
        v
    };
    let def = |d: &str| Some(Body::Def(d.to_string()));
    let write = [&PRETTY, &DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION];
    let mut ops: Vec<(String, Operation<'_>)> = vec![];
    let op = |method, action, id: String, description: String| Operation {
        method,
        action,
        id,
        description,
        gvk: gvk.clone(),
        params: vec![],
        request: None,
        responses: vec![],
        produces: JSON_YAML,
        tag: tag.clone(),
    };

    if r.allows("list") {
        let list_body = list_def.map(|d| Body::Def(d.to_string()));
        let mut params = scope.clone();
        params.push(&PRETTY);
        params.extend(LIST_PARAMS.iter());
        ops.push((
            collection.clone(),
            Operation {
                params,
                responses: vec![("200", "OK", list_body.clone())],
                produces: WATCHABLE,
                ..op(
                    "get",
                    "list",
                    format!("list{gv}{ns}{kind}"),
                    format!("list or watch objects of kind {kind}"),
                )
            },
        ));
        if r.namespaced {
            let mut params: Vec<&Param> = vec![&PRETTY];
            params.extend(LIST_PARAMS.iter());
            ops.push((
                format!("{base}/{}", r.plural),
                Operation {
                    params,
                    responses: vec![("200", "OK", list_body)],
                    produces: WATCHABLE,
                    ..op(
                        "get",
                        "list",
                        format!("list{gv}{kind}ForAllNamespaces"),
                        format!("list or watch objects of kind {kind}"),
                    )
                },
            ));
        }
    }
    if r.allows("create") {
        let mut params = scope.clone();
        params.extend(write);
        ops.push((
            collection.clone(),
            Operation {
                params,
                request: Some((Body::Def(kind_def.into()), &["*/*"], true)),
                responses: vec![
                    ("200", "OK", def(kind_def)),
                    ("201", "Created", def(kind_def)),
                    ("202", "Accepted", def(kind_def)),
                ],
                ..op(
                    "post",
                    "post",
                    format!("create{gv}{ns}{kind}"),
                    format!("create a {kind}"),
                )
            },
        ));
    }
    if r.allows("deletecollection") {
        let mut params = scope.clone();
        params.extend([&PRETTY, &DRY_RUN]);
        params.extend(DELETE_PARAMS.iter());
        params.extend(
            LIST_PARAMS
                .iter()
                .filter(|p| !matches!(p.name, "watch" | "allowWatchBookmarks")),
        );
        ops.push((
            collection.clone(),
            Operation {
                params,
                request: Some((Body::Def(common.delete_options.clone()), &["*/*"], false)),
                responses: vec![("200", "OK", def(&common.status))],
                ..op(
                    "delete",
                    "deletecollection",
                    format!("delete{gv}Collection{ns}{kind}"),
                    format!("delete collection of {kind}"),
                )
            },
        ));
    }
    if r.allows("get") {
        ops.push((
            item.clone(),
            Operation {
                params: with_name(&[&PRETTY]),
                responses: vec![("200", "OK", def(kind_def))],
                ..op(
                    "get",
                    "get",
                    format!("read{gv}{ns}{kind}"),
                    format!("read the specified {kind}"),
                )
            },
        ));
    }
    if r.allows("update") {
        ops.push((
            item.clone(),
            Operation {
                params: with_name(&write),
                request: Some((Body::Def(kind_def.into()), &["*/*"], true)),
                responses: vec![
                    ("200", "OK", def(kind_def)),
                    ("201", "Created", def(kind_def)),
                ],
                ..op(
                    "put",
                    "put",
                    format!("replace{gv}{ns}{kind}"),
                    format!("replace the specified {kind}"),
                )
            },
        ));
    }
    if r.allows("patch") {
        ops.push((
            item.clone(),
            Operation {
                params: with_name(&[&PRETTY, &DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION, &FORCE]),
                request: Some((Body::Def(common.patch.clone()), PATCH_TYPES, true)),
                responses: vec![
                    ("200", "OK", def(kind_def)),
                    ("201", "Created", def(kind_def)),
                ],
                ..op(
                    "patch",
                    "patch",
                    format!("patch{gv}{ns}{kind}"),
                    format!("partially update the specified {kind}"),
                )
            },
        ));
    }
    if r.allows("delete") {
        let mut extra: Vec<&'static Param> = vec![&PRETTY, &DRY_RUN];
        extra.extend(DELETE_PARAMS.iter());
        ops.push((
            item.clone(),
            Operation {
                params: with_name(&extra),
                request: Some((Body::Def(common.delete_options.clone()), &["*/*"], false)),
                responses: vec![
                    ("200", "OK", def(&common.status)),
                    ("202", "Accepted", def(&common.status)),
                ],
                ..op(
                    "delete",
                    "delete",
                    format!("delete{gv}{ns}{kind}"),
                    format!("delete a {kind}"),
                )
            },
        ));
    }

    for &sub in r.subresources {
        let path = format!("{item}/{sub}");
        let s = capitalize(sub);
        match sub {
            // The object itself, read and written through the subresource.
            "status" | "ephemeralcontainers" | "resize" | "scale" => {
                let (sub_def, sub_gvk) = if sub == "scale" {
                    let sc = generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
                    (
                        definition_name(generator, sc, "io.k8s.api.autoscaling.v1.Scale"),
                        Some(gvk_value("autoscaling", "v1", "Scale")),
                    )
                } else {
                    (kind_def.to_string(), gvk.clone())
                };
                let body = def(&sub_def);
                ops.push((
                    path.clone(),
                    Operation {
                        params: with_name(&[&PRETTY]),
                        responses: vec![("200", "OK", body.clone())],
                        gvk: sub_gvk.clone(),
                        ..op(
                            "get",
                            "get",
                            format!("read{gv}{ns}{kind}{s}"),
                            format!("read {sub} of the specified {kind}"),
                        )
                    },
                ));
                ops.push((
                    path.clone(),
                    Operation {
                        params: with_name(&write),
                        request: Some((Body::Def(sub_def.clone()), &["*/*"], true)),
                        responses: vec![
                            ("200", "OK", body.clone()),
                            ("201", "Created", body.clone()),
                        ],
                        gvk: sub_gvk.clone(),
                        ..op(
                            "put",
                            "put",
                            format!("replace{gv}{ns}{kind}{s}"),
                            format!("replace {sub} of the specified {kind}"),
                        )
                    },
                ));
                ops.push((
                    path,
                    Operation {
                        params: with_name(&[
                            &PRETTY,
                            &DRY_RUN,
                            &FIELD_MANAGER,
                            &FIELD_VALIDATION,
                            &FORCE,
                        ]),
                        request: Some((Body::Def(common.patch.clone()), PATCH_TYPES, true)),
                        responses: vec![("200", "OK", body.clone()), ("201", "Created", body)],
                        gvk: sub_gvk,
                        ..op(
                            "patch",
                            "patch",
                            format!("patch{gv}{ns}{kind}{s}"),
                            format!("partially update {sub} of the specified {kind}"),
                        )
                    },
                ));
            }
            // Namespace finalize: replace only.
            "finalize" => ops.push((
                path,
                Operation {
                    params: with_name(&write),
                    request: Some((Body::Def(kind_def.into()), &["*/*"], true)),
                    responses: vec![
                        ("200", "OK", def(kind_def)),
                        ("201", "Created", def(kind_def)),
                    ],
                    ..op(
                        "put",
                        "put",
                        format!("replace{gv}{ns}{kind}{s}"),
                        format!("replace finalize of the specified {kind}"),
                    )
                },
            )),
            // Create-only subresources with their own kinds.
            "binding" | "eviction" => {
                let (sub_def, sub_gvk) = if sub == "binding" {
                    let b = generator.subschema_for::<k8s_openapi::api::core::v1::Binding>();
                    (
                        definition_name(generator, b, "io.k8s.api.core.v1.Binding"),
                        gvk_value("", "v1", "Binding"),
                    )
                } else {
                    let e = generator.subschema_for::<k8s_openapi::api::policy::v1::Eviction>();
                    (
                        definition_name(generator, e, "io.k8s.api.policy.v1.Eviction"),
                        gvk_value("policy", "v1", "Eviction"),
                    )
                };
                ops.push((
                    path,
                    Operation {
                        params: with_name(&write),
                        request: Some((Body::Def(sub_def.clone()), &["*/*"], true)),
                        responses: vec![
                            ("200", "OK", def(&sub_def)),
                            ("201", "Created", def(&sub_def)),
                            ("202", "Accepted", def(&sub_def)),
                        ],
                        gvk: Some(sub_gvk),
                        ..op(
                            "post",
                            "post",
                            format!("create{gv}{ns}{kind}{s}"),
                            format!("create {sub} of a {kind}"),
                        )
                    },
                ));
            }
            "log" => {
                let mut extra: Vec<&'static Param> = vec![&PRETTY];
                extra.extend(LOG_PARAMS.iter());
                ops.push((
                    path,
                    Operation {
                        params: with_name(&extra),
                        responses: vec![("200", "OK", Some(Body::Text))],
                        produces: TEXT,
                        ..op(
                            "get",
                            "get",
                            format!("read{gv}{ns}{kind}{s}"),
                            format!("read log of the specified {kind}"),
                        )
                    },
                ));
            }
            // Streaming subresources (exec, attach, portforward, proxy, ...).
            _ => {
                let extra: &[Param] = match sub {
                    "exec" | "attach" => EXEC_PARAMS,
                    "portforward" => PORTFORWARD_PARAMS,
                    "proxy" => PROXY_PARAMS,
                    _ => &[],
                };
                for (method, m) in [("get", "Get"), ("post", "Post")] {
                    let mut params = with_name(&[]);
                    params.extend(extra.iter());
                    ops.push((
                        path.clone(),
                        Operation {
                            params,
                            responses: vec![("200", "OK", Some(Body::Text))],
                            produces: CONNECT,
                            gvk: None,
                            ..op(
                                method,
                                "connect",
                                format!("connect{m}{gv}{ns}{kind}{s}"),
                                format!("connect {method} requests to {sub} of {kind}"),
                            )
                        },
                    ));
                }
            }
        }
    }
    for (path, operation) in ops {
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[operation.method] = operation.render(format);
    }
}

/// The List kind's definition for a resource (`io.k8s.api.core.v1.PodList`), upstream's shape.
fn list_definition(format: Format, r: &ResourceInfo, kind_def: &str, list_meta: &str) -> Value {
    let metadata_description = "Standard list metadata.";
    let metadata = match format {
        Format::V2 => {
            json!({ "$ref": format!("{}{list_meta}", format.ref_prefix()), "description": metadata_description })
        }
        Format::V3 => {
            json!({ "allOf": [format.schema_ref(list_meta)], "description": metadata_description })
        }
    };
    json!({
        "description": format!("{}List is a list of {} objects.", r.kind, r.kind),
        "type": "object",
        "properties": {
            "apiVersion": { "description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string" },
            "items": { "description": format!("List of {}.", r.plural), "type": "array", "items": format.schema_ref(kind_def) },
            "kind": { "description": "Kind is a string value representing the REST resource this object represents.", "type": "string" },
            "metadata": metadata,
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": [gvk_value(r.group, r.version, &format!("{}List", r.kind))],
    })
}

/// Builds one document: the v3 document of `only` (a group/version), or the v2 document of
/// every resource.
fn build_document(registry: &Registry, format: Format, only: Option<(&str, &str)>) -> Value {
    let mut generator = format.generator();
    let common = Common::new(&mut generator);
    let mut paths = Map::new();
    let mut kinds: Vec<(String, Value)> = vec![];
    let mut lists: Vec<(String, Value)> = vec![];
    for r in registry.all() {
        if only.is_some_and(|(g, v)| r.group != g || r.version != v) {
            continue;
        }
        let fallback = format!("{}.{}", upstream_package(r.group, r.version), r.kind);
        let schema = (r.schema)(&mut generator);
        let kind_def = definition_name(&mut generator, schema, &fallback);
        kinds.push((kind_def.clone(), gvk_value(r.group, r.version, r.kind)));
        let list_def = r.allows("list").then(|| format!("{kind_def}List"));
        if let Some(list_def) = &list_def {
            lists.push((
                list_def.clone(),
                list_definition(format, r, &kind_def, &common.list_meta),
            ));
        }
        resource_paths(
            format,
            &mut generator,
            &common,
            r,
            &kind_def,
            list_def.as_deref(),
            &mut paths,
        );
    }
    let mut defs = take_definitions(format, &mut generator);
    for (name, gvk) in kinds {
        if let Some(Value::Object(def)) = defs.get_mut(&name) {
            let entry = def
                .entry("x-kubernetes-group-version-kind")
                .or_insert_with(|| json!([]));
            if let Value::Array(list) = entry
                && !list.contains(&gvk)
            {
                list.push(gvk);
            }
        }
    }
    for (name, list) in lists {
        defs.entry(name).or_insert(list);
    }
    let info = json!({ "title": "Kubernetes", "version": crate::KUBERNETES_VERSION });
    match format {
        Format::V3 => json!({
            "openapi": "3.0.0",
            "info": info,
            "paths": paths,
            "components": {
                "schemas": defs,
                "securitySchemes": { "BearerToken": { "type": "apiKey", "name": "authorization", "in": "header", "description": "Bearer Token authentication" } },
            },
            "security": [{ "BearerToken": [] }],
        }),
        Format::V2 => json!({
            "swagger": "2.0",
            "info": info,
            "paths": paths,
            "definitions": defs,
            "securityDefinitions": { "BearerToken": { "type": "apiKey", "name": "authorization", "in": "header", "description": "Bearer Token authentication" } },
            "security": [{ "BearerToken": [] }],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::{apps::v1::Deployment, core::v1 as core};
    use std::collections::HashSet;

    const VERBS: &[&str] = &[
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];

    /// A registry entry built by hand for a k8s-openapi type, for the OpenAPI shape only: the
    /// strategy is Namespace's (the OpenAPI generator never calls it).
    fn entry<T: schemars::JsonSchema + k8s_openapi::Resource + 'static>(
        subresources: &'static [&'static str],
    ) -> ResourceInfo {
        ResourceInfo {
            group: T::GROUP,
            version: T::VERSION,
            api_version: T::API_VERSION,
            kind: T::KIND,
            plural: T::URL_PATH_SEGMENT,
            singular: T::KIND.to_ascii_lowercase(),
            short_names: &[],
            namespaced: std::any::TypeId::of::<T::Scope>()
                == std::any::TypeId::of::<k8s_openapi::NamespaceResourceScope>(),
            verbs: VERBS,
            categories: &[],
            subresources,
            strategy: Box::new(crate::strategy::Typed::<core::Namespace>::default()),
            schema: |g| g.subschema_for::<T>(),
        }
    }

    /// The served registry plus Pod and Deployment (with their subresources).
    fn wide_registry() -> Registry {
        let mut list = crate::resources::all();
        list.push(entry::<core::Pod>(&[
            "status",
            "ephemeralcontainers",
            "log",
            "exec",
            "attach",
            "portforward",
            "binding",
            "eviction",
        ]));
        list.push(entry::<Deployment>(&["status", "scale"]));
        // JSONSchemaProps: properties named `$ref`/`$schema`, `oneOf`, recursion.
        list.push(entry::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(&["status"]));
        Registry::from_resources(list)
    }

    fn gvk(group: &str, version: &str, kind: &str) -> Value {
        json!({ "group": group, "kind": kind, "version": version })
    }

    /// Every `$ref` string in `doc` (keys named `$ref` with object values are property names).
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) if k == "$ref" => out.push(s.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    fn assert_refs_resolve(doc: &Value) {
        let mut all = vec![];
        refs(doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("non-local ref {r}"));
            assert!(doc.pointer(pointer).is_some(), "unresolved ref {r}");
        }
    }

    fn v3_schemas(doc: &Value) -> &Map<String, Value> {
        doc["components"]["schemas"].as_object().unwrap()
    }

    /// kubectl's check (`supportsQueryParamV3`): the first PATCH operation of the kind must list
    /// the query parameter; here every PATCH operation of the kind must.
    fn patch_supports(doc: &Value, gvk: &Value, param: &str) -> bool {
        let mut found = false;
        for item in doc["paths"].as_object().unwrap().values() {
            let Some(op) = item.get("patch") else {
                continue;
            };
            if op.get("x-kubernetes-group-version-kind") != Some(gvk) {
                continue;
            }
            found = true;
            let params = op["parameters"].as_array().unwrap();
            if !params
                .iter()
                .any(|p| p["name"] == param && p["in"] == "query")
            {
                return false;
            }
        }
        found
    }

    #[test]
    fn index_lists_every_group_version_with_its_hash() {
        for registry in [Registry::new(), wide_registry()] {
            let all = v3_all(&registry);
            let paths = all.index["paths"].as_object().unwrap();
            assert!(paths.contains_key("api/v1"));
            for (group, version) in registry.group_versions() {
                let key = v3_path_key(group, version);
                let url = paths[&key]["serverRelativeURL"].as_str().unwrap();
                let doc = v3_document(&registry, group, version).unwrap();
                assert_eq!(
                    url,
                    format!("/openapi/v3/{key}?hash={}", document_hash(&doc))
                );
                assert_eq!(all.documents[&key], doc);
            }
            assert_eq!(paths.len(), registry.group_versions().len());
            assert_eq!(v3_index(&registry), all.index);
        }
        let wide = v3_index(&wide_registry());
        assert!(
            wide["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
        assert!(v3_document(&wide_registry(), "apps", "v2").is_none());
    }

    #[test]
    fn core_document_has_namespace_kind_and_field_validation() {
        let doc = v3_document(&Registry::new(), "", "v1").unwrap();
        assert_eq!(doc["openapi"], "3.0.0");
        let ns = &v3_schemas(&doc)["io.k8s.api.core.v1.Namespace"];
        assert_eq!(
            ns["x-kubernetes-group-version-kind"],
            json!([gvk("", "v1", "Namespace")])
        );
        assert_eq!(
            v3_schemas(&doc)["io.k8s.api.core.v1.NamespaceList"]["x-kubernetes-group-version-kind"],
            json!([gvk("", "v1", "NamespaceList")])
        );
        assert!(v3_schemas(&doc).contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert!(
            ns.get("required").is_none(),
            "upstream never requires metadata"
        );
        assert!(v3_schemas(&doc).contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.Status"));
        assert!(
            v3_schemas(&doc).contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions")
        );

        let patch = &doc["paths"]["/api/v1/namespaces/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-action"], "patch");
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            gvk("", "v1", "Namespace")
        );
        let content = patch["requestBody"]["content"].as_object().unwrap();
        for ct in PATCH_TYPES {
            assert!(content.contains_key(*ct), "{ct}");
        }
        assert!(patch_supports(
            &doc,
            &gvk("", "v1", "Namespace"),
            "fieldValidation"
        ));
        assert!(patch_supports(
            &doc,
            &gvk("", "v1", "ConfigMap"),
            "fieldValidation"
        ));

        let list = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps"]["get"];
        assert_eq!(list["x-kubernetes-action"], "list");
        let names: HashSet<&str> = list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for p in [
            "namespace",
            "pretty",
            "labelSelector",
            "fieldSelector",
            "limit",
            "continue",
            "resourceVersion",
            "watch",
            "allowWatchBookmarks",
            "timeoutSeconds",
        ] {
            assert!(names.contains(p), "{p}");
        }
        let create = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps"]["post"];
        let names: HashSet<&str> = create["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for p in ["dryRun", "fieldManager", "fieldValidation", "pretty"] {
            assert!(names.contains(p), "{p}");
        }
        assert!(doc["paths"]["/api/v1/configmaps"]["get"].is_object());
        assert!(doc["paths"]["/api/v1/namespaces/{name}/status"]["patch"].is_object());
        assert!(doc["paths"]["/api/v1/namespaces/{name}/finalize"]["put"].is_object());
        assert!(
            doc["paths"]
                .get("/api/v1/namespaces/{name}/finalize")
                .unwrap()
                .get("patch")
                .is_none()
        );
    }

    #[test]
    fn pod_spec_containers_have_patch_extensions() {
        for format in [Format::V3, Format::V2] {
            let mut generator = format.generator();
            let pod = generator.subschema_for::<core::Pod>();
            assert_eq!(
                pod.get("$ref").unwrap(),
                &Value::from(format!("{}io.k8s.api.core.v1.Pod", format.ref_prefix()))
            );
            let defs = take_definitions(format, &mut generator);
            let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
            assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
            assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
            assert_eq!(containers["type"], "array");
            let ports = &defs["io.k8s.api.core.v1.Container"]["properties"]["ports"];
            assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        }
        // Through the whole pipeline too.
        let doc = v3_document(&wide_registry(), "", "v1").unwrap();
        assert_eq!(
            v3_schemas(&doc)["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        assert_eq!(
            v3_schemas(&doc)["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"],
            json!([gvk("", "v1", "Pod")])
        );
        let v2 = v2_document(&wide_registry());
        assert_eq!(
            v2["definitions"]["io.k8s.api.core.v1.Container"]["properties"]["env"]["x-kubernetes-patch-merge-key"],
            "name"
        );
    }

    #[test]
    fn every_ref_resolves() {
        for registry in [Registry::new(), wide_registry()] {
            for doc in v3_all(&registry).documents.values() {
                assert_refs_resolve(doc);
                for r in {
                    let mut v = vec![];
                    refs(doc, &mut v);
                    v
                } {
                    assert!(r.starts_with("#/components/schemas/"), "{r}");
                }
            }
            let v2 = v2_document(&registry);
            assert_refs_resolve(&v2);
        }
    }

    /// Every schema object of a document (definitions and operations' schemas).
    fn all_schemas(doc: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
        let defs = if doc.get("definitions").is_some() {
            "/definitions"
        } else {
            "/components/schemas"
        };
        for def in doc
            .pointer_mut(defs)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .values_mut()
        {
            walk_schemas(def, f);
        }
    }

    #[test]
    fn nothing_the_formats_reject() {
        let registry = wide_registry();
        for mut doc in v3_all(&registry).documents.into_values() {
            all_schemas(&mut doc, &mut |s| {
                for k in s.keys() {
                    assert!(
                        k.starts_with("x-") || V3_KEYWORDS.contains(&k.as_str()),
                        "{k} in v3"
                    );
                }
                assert!(!s.get("type").is_some_and(Value::is_array));
                if let Some(Value::Object(props)) = s.get("properties") {
                    assert!(props.values().all(Value::is_object));
                }
            });
        }
        let mut v2 = v2_document(&registry);
        all_schemas(&mut v2, &mut |s| {
            for k in s.keys() {
                assert!(
                    k.starts_with("x-") || V2_KEYWORDS.contains(&k.as_str()),
                    "{k} in v2"
                );
            }
        });
        // operationIds are unique.
        let mut ids = HashSet::new();
        for item in v2["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                assert!(
                    ids.insert(op["operationId"].as_str().unwrap().to_string()),
                    "{}",
                    op["operationId"]
                );
            }
        }
    }

    #[test]
    fn int_or_string_and_quantity() {
        let doc = v3_document(&wide_registry(), "", "v1").unwrap();
        let ios = &v3_schemas(&doc)[INT_OR_STRING];
        assert_eq!(ios["x-kubernetes-int-or-string"], true);
        assert_eq!(ios["format"], "int-or-string");
        assert_eq!(
            ios["oneOf"],
            json!([{ "type": "integer" }, { "type": "string" }])
        );
        assert!(v3_schemas(&doc)[QUANTITY]["oneOf"].is_array());
        let v2 = v2_document(&wide_registry());
        assert_eq!(v2["definitions"][INT_OR_STRING]["type"], "string");
        assert_eq!(v2["definitions"][QUANTITY]["type"], "string");
    }

    #[test]
    fn subresource_paths() {
        let registry = wide_registry();
        let core = v3_document(&registry, "", "v1").unwrap();
        let pod = "/api/v1/namespaces/{namespace}/pods";
        for p in [
            pod.to_string(),
            format!("{pod}/{{name}}"),
            "/api/v1/pods".into(),
            format!("{pod}/{{name}}/status"),
            format!("{pod}/{{name}}/log"),
        ] {
            assert!(core["paths"].get(&p).is_some(), "{p}");
        }
        assert_eq!(
            core["paths"][format!("{pod}/{{name}}/exec")]["post"]["x-kubernetes-action"],
            "connect"
        );
        assert_eq!(
            core["paths"][format!("{pod}/{{name}}/eviction")]["post"]["x-kubernetes-group-version-kind"],
            gvk("policy", "v1", "Eviction")
        );
        assert!(v3_schemas(&core).contains_key("io.k8s.api.policy.v1.Eviction"));
        assert!(patch_supports(
            &core,
            &gvk("", "v1", "Pod"),
            "fieldValidation"
        ));

        let apps = v3_document(&registry, "apps", "v1").unwrap();
        let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
            ["patch"];
        assert_eq!(
            scale["x-kubernetes-group-version-kind"],
            gvk("autoscaling", "v1", "Scale")
        );
        assert_eq!(scale["operationId"], "patchAppsV1NamespacedDeploymentScale");
        assert_eq!(
            v3_schemas(&apps)["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
            json!([gvk("apps", "v1", "Deployment")])
        );
        assert!(patch_supports(
            &apps,
            &gvk("apps", "v1", "Deployment"),
            "fieldValidation"
        ));
        // Only what the group/version reaches.
        assert!(!v3_schemas(&apps).contains_key("io.k8s.api.core.v1.Namespace"));
        assert!(v3_schemas(&apps).contains_key("io.k8s.api.core.v1.PodTemplateSpec"));
        assert_eq!(
            tag("rbac.authorization.k8s.io", "v1"),
            "rbacAuthorization_v1"
        );
        assert_eq!(
            group_version_camel("rbac.authorization.k8s.io", "v1beta1"),
            "RbacAuthorizationV1beta1"
        );
    }

    #[test]
    fn documents_are_stable() {
        let registry = wide_registry();
        assert_eq!(v3_index(&registry), v3_index(&registry));
        assert_eq!(v2_document(&registry), v2_document(&registry));
        assert_eq!(content_hash(b""), "6C62272E07BB014262B821756295C58D");
    }
}
