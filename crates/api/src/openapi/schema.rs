//! Formats and schema generation: schemars output converted to what OpenAPI 3.0 and Swagger
//! 2.0 parsers accept, with upstream's `x-kubernetes-*` extensions.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::transform::RemoveRefSiblings;
use serde_json::{Map, Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    /// Swagger 2.0: `#/definitions/`, parameters carry `type`, bodies are `in: body` parameters.
    V2,
    /// OpenAPI 3.0: `#/components/schemas/`, parameters carry `schema`, `requestBody`.
    V3,
}

impl Format {
    pub(super) fn ref_prefix(self) -> &'static str {
        match self {
            Format::V2 => "#/definitions/",
            Format::V3 => "#/components/schemas/",
        }
    }

    pub(super) fn generator(self) -> SchemaGenerator {
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

    pub(super) fn schema_ref(self, name: &str) -> Value {
        json!({ "$ref": format!("{}{name}", self.ref_prefix()) })
    }
}

/// The definition name a generated subschema refers to (`{"$ref": "#/components/schemas/X"}` ->
/// `X`). A type whose schema is inlined is stored under `fallback`.
pub(super) fn definition_name(
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

/// The definition name of `T`'s schema (see [`definition_name`]).
pub(super) fn definition_of<T: schemars::JsonSchema>(
    generator: &mut SchemaGenerator,
    fallback: &str,
) -> String {
    let schema = generator.subschema_for::<T>();
    definition_name(generator, schema, fallback)
}

/// Upstream's definition-name prefix for a group/version: `io.k8s.api.core.v1`,
/// `io.k8s.api.apps.v1`, `io.k8s.api.rbac.v1` (rbac.authorization.k8s.io).
pub(super) fn upstream_package(group: &str, version: &str) -> String {
    let short = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    format!("io.k8s.api.{short}.{version}")
}

/// Walks every schema object under `schema` (properties, items, additionalProperties,
/// compositions), calling `f` on each before its children.
pub(super) fn walk_schemas(schema: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
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

/// The keywords of the Swagger 2.0 Schema Object (besides `x-` extensions), followed by `extra`
/// ones: a format's keyword list.
macro_rules! schema_keywords {
    ($($extra:literal),* $(,)?) => {
        &[
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
            $($extra),*
        ]
    };
}

/// Keywords of the OpenAPI 3.0 Schema Object (besides `x-` extensions).
pub(super) const V3_KEYWORDS: &[&str] = schema_keywords![
    "oneOf",
    "anyOf",
    "not",
    "nullable",
    "writeOnly",
    "deprecated",
];

/// Keywords of the Swagger 2.0 Schema Object (besides `x-` extensions).
pub(super) const V2_KEYWORDS: &[&str] = schema_keywords![];

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

pub(super) const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
pub(super) const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

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
        int_or_string_shape(
            format,
            ios,
            json!([{ "type": "integer" }, { "type": "string" }]),
        );
    }
    if let Some(Value::Object(q)) = defs.get_mut(QUANTITY) {
        int_or_string_shape(
            format,
            q,
            json!([{ "type": "string" }, { "type": "number" }]),
        );
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

/// Marks a definition that is a number or a string (`x-kubernetes-int-or-string`): a string in
/// Swagger 2.0, `one_of` (its alternatives) in OpenAPI 3.0.
fn int_or_string_shape(format: Format, def: &mut Map<String, Value>, one_of: Value) {
    def.insert("x-kubernetes-int-or-string".into(), Value::Bool(true));
    match format {
        Format::V2 => {
            def.insert("type".into(), "string".into());
        }
        Format::V3 => {
            def.insert("oneOf".into(), one_of);
        }
    }
}

/// Runs the schema transformation on schemars output: every definition the generator holds,
/// converted to `format` with upstream's extensions (see [`transform_definitions`]).
pub(super) fn take_definitions(
    format: Format,
    generator: &mut SchemaGenerator,
) -> Map<String, Value> {
    let mut defs = generator.take_definitions(true);
    transform_definitions(format, &mut defs);
    defs
}

pub(super) fn gvk_value(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}
