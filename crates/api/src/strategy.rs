//! Per-resource behaviour, written once per resource (like upstream's registry "strategy").
//!
//! A resource implements [`Behavior`] on its k8s-openapi type: defaults, validation, what to
//! reset on create, table columns and cells, and the fields it can be selected by. The generic
//! layer ([`Typed`]) turns that into the object-safe [`Strategy`] the API server calls with JSON,
//! and owns everything that is the same for every resource: decoding through the typed struct
//! (which canonicalises the object), the spec/status split and generation bumps.
//!
//! The order of hooks on a write is fixed here and in the API server, once:
//! decode -> prepare (create: [`Behavior::prepare_for_create`]; update: status/spec split) ->
//! defaults -> validation.

use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::error::{ApiError, FieldCause};
use crate::table::Column;

/// What a resource says about itself, beyond what k8s-openapi's `Resource` trait gives.
/// Every method has a default that fits a plain resource (no status, NAME and AGE columns).
pub trait Behavior:
    k8s_openapi::Resource
    + k8s_openapi::Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + Clone
    + Send
    + Sync
    + 'static
{
    /// Short names for kubectl (`po`, `deploy`, ...).
    const SHORT_NAMES: &'static [&'static str] = &[];
    /// Categories (`all` for the kinds `kubectl get all` lists).
    const CATEGORIES: &'static [&'static str] = &[];
    /// Subresources besides the object itself: `status`, `scale`, `binding`, `eviction`, ...
    const SUBRESOURCES: &'static [&'static str] = &[];
    /// Verbs the resource supports.
    const VERBS: &'static [&'static str] = &[
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];

    /// Whether tables start with the NAME column (added by the generic layer). Kinds that
    /// print NAME elsewhere (events: a wide column at the end) set this to false and place it
    /// in their own columns and cells.
    const NAME_COLUMN: bool = true;

    /// Fills in defaults, as upstream's defaulting does (called on every create and update).
    fn apply_defaults(&mut self) {}

    /// Resets what a client may not set on create (usually status).
    fn prepare_for_create(&mut self) {}

    /// Validates the object; `old` is the stored object on update (for immutable fields).
    /// Name and namespace rules on metadata are checked by the generic layer.
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldCause> {
        vec![]
    }

    /// The table columns after NAME (which the generic layer adds), as upstream prints them.
    /// The default is AGE only.
    fn columns() -> Vec<Column> {
        vec![Column::age()]
    }

    /// One table row's cells after NAME, matching [`Behavior::columns`].
    fn cells(&self) -> Vec<Value> {
        vec![crate::table::age_cell(self.metadata())]
    }

    /// The value of a field selector label beyond `metadata.name` and `metadata.namespace`
    /// (e.g. `spec.nodeName` for pods); None if the resource does not support the label.
    fn field(&self, _label: &str) -> Option<String> {
        None
    }
}

/// The object-safe face of a resource's behaviour, on JSON objects.
pub trait Strategy: Send + Sync {
    /// Decodes a JSON object into its canonical form through the typed struct. Unknown fields are
    /// dropped; `unknown` receives their paths (for fieldValidation Strict/Warn).
    fn decode(&self, raw: &Value, unknown: &mut Vec<String>) -> Result<Value, ApiError>;
    /// Prepares a new object: resets status and other server-owned fields, applies defaults.
    fn prepare_for_create(&self, obj: &mut Value) -> Result<(), ApiError>;
    /// Applies defaults (after a patch or update).
    fn apply_defaults(&self, obj: &mut Value) -> Result<(), ApiError>;
    /// Validation causes for the object (`old` on update).
    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldCause>;
    /// Whether the table starts with NAME.
    fn name_column(&self) -> bool;
    /// Table columns after NAME.
    fn columns(&self) -> Vec<Column>;
    /// Table cells after NAME.
    fn cells(&self, obj: &Value) -> Vec<Value>;
    /// Field selector value; None if unsupported.
    fn field(&self, obj: &Value, label: &str) -> Option<String>;
}

/// The generic [`Strategy`] for a k8s-openapi type implementing [`Behavior`].
pub struct Typed<T>(PhantomData<fn() -> T>);

impl<T> Default for Typed<T> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn typed<T: Behavior>(obj: &Value) -> Result<T, ApiError> {
    T::deserialize(obj)
        .map_err(|e| ApiError::bad_request(format!("unable to decode {}: {e}", T::KIND)))
}

fn untyped<T: Behavior>(obj: &T) -> Result<Value, ApiError> {
    let mut v = serde_json::to_value(obj).map_err(ApiError::internal)?;
    // k8s-openapi serialises apiVersion and kind itself; keep them explicit for clarity.
    if let Some(map) = v.as_object_mut() {
        map.insert("apiVersion".into(), T::API_VERSION.into());
        map.insert("kind".into(), T::KIND.into());
    }
    Ok(v)
}

impl<T: Behavior> Strategy for Typed<T> {
    fn decode(&self, raw: &Value, unknown: &mut Vec<String>) -> Result<Value, ApiError> {
        let obj: T = typed(raw)?;
        let canonical = untyped(&obj)?;
        collect_unknown(raw, &canonical, "", unknown);
        Ok(canonical)
    }

    fn prepare_for_create(&self, obj: &mut Value) -> Result<(), ApiError> {
        let mut t: T = typed(obj)?;
        t.prepare_for_create();
        t.apply_defaults();
        *obj = untyped(&t)?;
        Ok(())
    }

    fn apply_defaults(&self, obj: &mut Value) -> Result<(), ApiError> {
        let mut t: T = typed(obj)?;
        t.apply_defaults();
        *obj = untyped(&t)?;
        Ok(())
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldCause> {
        let Ok(t) = typed::<T>(obj) else {
            return vec![FieldCause::invalid("", "object", "cannot be decoded")];
        };
        let old = old.and_then(|o| typed::<T>(o).ok());
        t.validate(old.as_ref())
    }

    fn name_column(&self) -> bool {
        T::NAME_COLUMN
    }

    fn columns(&self) -> Vec<Column> {
        T::columns()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        match typed::<T>(obj) {
            Ok(t) => t.cells(),
            Err(_) => vec![],
        }
    }

    fn field(&self, obj: &Value, label: &str) -> Option<String> {
        typed::<T>(obj).ok()?.field(label)
    }
}

/// Records the paths present in `raw` but absent from `canonical` (fields the type does not
/// know). Nulls are not unknown fields: they mean "unset".
fn collect_unknown(raw: &Value, canonical: &Value, path: &str, out: &mut Vec<String>) {
    match (raw, canonical) {
        (Value::Object(r), Value::Object(c)) => {
            for (k, v) in r {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match c.get(k) {
                    Some(cv) => collect_unknown(v, cv, &p, out),
                    None if v.is_null() => {}
                    // Empty objects/arrays may be dropped by serialisation of empty optionals.
                    None if v.as_object().is_some_and(|m| m.is_empty()) => {}
                    None if v.as_array().is_some_and(|a| a.is_empty()) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(r), Value::Array(c)) => {
            for (i, (rv, cv)) in r.iter().zip(c).enumerate() {
                collect_unknown(rv, cv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Whether an update changed anything outside `metadata` and `status` (which bumps
/// `metadata.generation`, as upstream does for resources with a status subresource).
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_found() {
        let raw = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": null, "f": [{"g": 1, "h": 2}]});
        let canonical = json!({"a": 1, "b": {"c": 2}, "f": [{"g": 1}]});
        let mut out = vec![];
        collect_unknown(&raw, &canonical, "", &mut out);
        assert_eq!(out, vec!["b.d".to_string(), "f[0].h".to_string()]);
    }

    #[test]
    fn generation_tracks_spec_only() {
        let a = json!({"metadata": {"labels": {"x": "1"}}, "spec": {"replicas": 1}, "status": {}});
        let b = json!({"metadata": {"labels": {"x": "2"}}, "spec": {"replicas": 1}, "status": {"r": 1}});
        let c = json!({"metadata": {}, "spec": {"replicas": 2}});
        assert!(!spec_changed(&a, &b));
        assert!(spec_changed(&a, &c));
    }
}
