//! One operation, format-independent, and its rendering; upstream's operation-id and tag names.

use serde_json::{Map, Value, json};

use super::params::Param;
use super::schema::Format;

/// What an operation returns: a definition, or a plain string (logs, connect).
#[derive(Clone)]
pub(super) enum Body {
    Def(String),
    Text,
}

/// A request body: its schema, content types and whether it is required.
pub(super) type Request = (Body, &'static [&'static str], bool);
/// Responses: status code, description and body.
pub(super) type Responses = Vec<(&'static str, &'static str, Option<Body>)>;

/// One operation, format-independent.
pub(super) struct Operation<'a> {
    pub(super) method: &'static str,
    pub(super) action: &'static str,
    pub(super) id: String,
    pub(super) description: String,
    pub(super) gvk: Option<Value>,
    pub(super) params: Vec<&'a Param>,
    pub(super) request: Option<Request>,
    pub(super) responses: Responses,
    pub(super) produces: &'static [&'static str],
    pub(super) tag: String,
}

impl Operation<'_> {
    pub(super) fn render(&self, format: Format) -> Value {
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

pub(super) fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Upstream's operation-id infix for a group/version: `CoreV1`, `AppsV1`,
/// `RbacAuthorizationV1`, `NetworkingV1`.
pub(super) fn group_version_camel(group: &str, version: &str) -> String {
    let group = group.strip_suffix(".k8s.io").unwrap_or(group);
    let g: String = if group.is_empty() {
        "Core".into()
    } else {
        group.split(['.', '-']).map(capitalize).collect()
    };
    format!("{g}{}", capitalize(version))
}

/// Upstream's tag for a group/version: `core_v1`, `apps_v1`, `rbacAuthorization_v1`.
pub(super) fn tag(group: &str, version: &str) -> String {
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
