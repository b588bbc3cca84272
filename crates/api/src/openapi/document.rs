//! Whole documents: every resource's paths and definitions, List kinds, security.

use serde_json::{Map, Value, json};

use super::paths::{Common, resource_paths};
use super::schema::{Format, definition_name, gvk_value, take_definitions, upstream_package};
use crate::registry::{Registry, ResourceInfo};

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
pub(super) fn build_document(
    registry: &Registry,
    format: Format,
    only: Option<(&str, &str)>,
) -> Value {
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
