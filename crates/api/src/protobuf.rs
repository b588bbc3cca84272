//! Kubernetes protobuf (`application/vnd.kubernetes.protobuf`) request bodies, decoded into the
//! object's JSON form.
//!
//! The wire format is the magic `k8s\0` followed by a `runtime.Unknown` message: `typeMeta`
//! (`apiVersion`, `kind`), `raw` (the object's own message, from `k8s.io/api`'s
//! `generated.proto`), `contentEncoding` and `contentType`. The object message is decoded with a
//! schema table that `build.rs` derives from the `k8s-pb` crate (tags, types) and `k8s-openapi`
//! (JSON names, required fields), and rendered as Go's `encoding/json` would render the decoded
//! Go struct:
//!
//! - `Time` -> RFC 3339 (`2026-01-02T03:04:05Z`), `MicroTime` -> RFC 3339 with microseconds, an
//!   empty one -> `null`; `Duration` -> Go duration string (`1h2m3s`); `IntOrString` -> number or
//!   string; `Quantity` -> string; `RawExtension`, `FieldsV1`, apiextensions `JSON` -> the
//!   embedded JSON; `JSONSchemaPropsOr{Bool,Array,StringArray}` -> their JSON union shapes;
//!   `Verbs`/`ExtraValue` -> arrays.
//! - bytes -> base64, 64-bit integers -> JSON numbers, maps -> objects.
//! - Go writes every non-pointer field, so an empty string, `0` or `false` in a field that is not
//!   required (per the OpenAPI schema) is dropped, as Go's `omitempty` would.
//!
//! Responses are not encoded as protobuf: kubectl and client-go list `application/json` after
//! protobuf in `Accept` and take JSON answers.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::ApiError;

/// The 4-byte prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";
/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Nesting limit for messages (JSONSchemaProps nests arbitrarily) and embedded objects.
const MAX_DEPTH: usize = 64;

mod schema {
    pub(super) struct Msg {
        /// `package.normalizedname`, e.g. `api.core.v1.configmap`.
        pub name: &'static str,
        pub fields: &'static [Field],
    }
    pub(super) struct Field {
        pub tag: u32,
        pub json: &'static str,
        pub ty: Ty,
        pub label: Label,
        pub required: bool,
        /// A Go embedded struct: its fields are the parent's in JSON.
        pub inline: bool,
    }
    #[derive(Clone, Copy)]
    pub(super) enum Ty {
        Bool,
        Int32,
        Int64,
        Double,
        String,
        Bytes,
        Message(&'static str),
    }
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Label {
        Single,
        Repeated,
        Map,
    }
    include!(concat!(env!("OUT_DIR"), "/k8s_proto_schema.rs"));
}

use schema::{Field, Label, Msg, Ty};

/// An internal decoding error (its message); [`decode`] turns it into a 400 [`ApiError`].
type Bad = String;

fn bad(message: impl std::fmt::Display) -> Bad {
    message.to_string()
}

fn message(name: &str) -> Option<&'static Msg> {
    schema::MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .map(|i| &schema::MESSAGES[i])
}

/// Decodes a Kubernetes protobuf body (`k8s\0` + `runtime.Unknown`) into the object's JSON form,
/// with `apiVersion` and `kind` set from the envelope. Bad input is a 400 BadRequest.
#[allow(
    clippy::result_large_err,
    reason = "the crate's error type, as every handler returns"
)]
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    decode_at(body, 0).map_err(|m| ApiError::bad_request(format!("invalid protobuf body: {m}")))
}

fn decode_at(body: &[u8], depth: usize) -> Result<Value, Bad> {
    let Some(envelope) = body.strip_prefix(MAGIC.as_slice()) else {
        return Err(bad("missing the k8s\\0 prefix"));
    };
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    let mut encoding = String::new();
    for item in Reader::new(envelope) {
        match item? {
            (1, Wire::Len(type_meta)) => {
                for item in Reader::new(type_meta) {
                    match item? {
                        (1, Wire::Len(b)) => api_version = utf8(b)?,
                        (2, Wire::Len(b)) => kind = utf8(b)?,
                        (1 | 2, _) => return Err(bad("typeMeta: wrong wire type")),
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(b)) => raw = b,
            (3, Wire::Len(b)) => encoding = utf8(b)?,
            (4, Wire::Len(_)) => {}
            (1..=4, _) => return Err(bad("runtime.Unknown: wrong wire type")),
            _ => {}
        }
    }
    if !encoding.is_empty() {
        return Err(bad(format!("unsupported contentEncoding {encoding:?}")));
    }
    if kind.is_empty() || api_version.is_empty() {
        return Err(bad("apiVersion and kind are required"));
    }
    let msg = object_message(&api_version, &kind).ok_or_else(|| {
        bad(format!(
            "no protobuf message for {api_version}, Kind={kind}"
        ))
    })?;
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    match decode_message(msg, raw, depth + 1)? {
        Value::Object(fields) => object.extend(fields),
        _ => return Err(bad("object is not a message")),
    }
    Ok(Value::Object(object))
}

/// The message of `kind` in `apiVersion`'s proto package (meta/v1's kinds, such as DeleteOptions,
/// are registered in every group version).
fn object_message(api_version: &str, kind: &str) -> Option<&'static Msg> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => format!("api.core.{version}"),
        "apiextensions.k8s.io" => {
            format!("apiextensions_apiserver.pkg.apis.apiextensions.{version}")
        }
        "apiregistration.k8s.io" => format!("kube_aggregator.pkg.apis.apiregistration.{version}"),
        "internal.apiserver.k8s.io" => format!("api.apiserverinternal.{version}"),
        "meta.k8s.io" => format!("apimachinery.pkg.apis.meta.{version}"),
        g => format!("api.{}.{version}", g.split('.').next().unwrap_or(g)),
    };
    let kind = kind.to_ascii_lowercase();
    if !kind.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    message(&format!("{package}.{kind}"))
        .or_else(|| message(&format!("apimachinery.pkg.apis.meta.v1.{kind}")))
}

fn utf8(b: &[u8]) -> Result<String, Bad> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("string is not UTF-8"))
}

// ---------------------------------------------------------------------------------------------
// Wire format

enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32,
}

struct Reader<'a> {
    buf: &'a [u8],
    failed: bool,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, failed: false }
    }

    fn varint(&mut self) -> Result<u64, Bad> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| bad("truncated varint"))?;
            self.buf = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if n > self.buf.len() {
            return Err(bad("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn next_field(&mut self) -> Result<(u32, Wire<'a>), Bad> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| bad("field number out of range"))?;
        if tag == 0 {
            return Err(bad("field number 0"));
        }
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().map_err(|_| bad("fixed64"))?,
            )),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| bad("length out of range"))?;
                Wire::Len(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            w => return Err(bad(format!("unsupported wire type {w}"))),
        };
        Ok((tag, wire))
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u32, Wire<'a>), Bad>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.buf.is_empty() {
            return None;
        }
        let r = self.next_field();
        self.failed = r.is_err();
        Some(r)
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

const APIEXT: &str = "apiextensions_apiserver.pkg.apis.apiextensions.";

fn decode_message(msg: &Msg, buf: &[u8], depth: usize) -> Result<Value, Bad> {
    if depth > MAX_DEPTH {
        return Err(bad("nesting too deep"));
    }
    if let Some(v) = special(msg, buf, depth)? {
        return Ok(v);
    }
    let mut out = Map::new();
    for item in Reader::new(buf) {
        let (tag, wire) = item?;
        let Some(field) = msg.fields.iter().find(|f| f.tag == tag) else {
            continue; // unknown fields are skipped, as proto2 does
        };
        match field.label {
            Label::Single => match scalar_or_message(field, wire, depth)? {
                Value::Object(fields) if field.inline => out.extend(fields),
                v => {
                    out.insert(field.json.to_string(), v);
                }
            },
            Label::Repeated => {
                let list = out
                    .entry(field.json.to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(list) = list else {
                    unreachable!("only arrays are inserted here")
                };
                match (field.ty, wire) {
                    // Packed repeated scalars (not written by Kubernetes, but valid proto).
                    (Ty::Int32 | Ty::Int64 | Ty::Bool, Wire::Len(b)) => {
                        let mut r = Reader::new(b);
                        while !r.buf.is_empty() {
                            let n = r.varint()?;
                            list.push(scalar_or_message(field, Wire::Varint(n), depth)?);
                        }
                    }
                    (_, wire) => list.push(scalar_or_message(field, wire, depth)?),
                }
            }
            Label::Map => {
                let Wire::Len(entry) = wire else {
                    return Err(bad(format!("{}: map entry is not a message", field.json)));
                };
                let mut key = String::new();
                let mut value = None;
                for item in Reader::new(entry) {
                    match item? {
                        (1, Wire::Len(b)) => key = utf8(b)?,
                        (2, wire) => value = Some(scalar_or_message(field, wire, depth)?),
                        _ => {}
                    }
                }
                let value = match value {
                    Some(v) => v,
                    None => empty_value(field, depth)?,
                };
                let map = out
                    .entry(field.json.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
            }
        }
    }
    // Go writes every non-pointer field; drop the zero values Go's omitempty would drop.
    for f in msg.fields {
        if f.label == Label::Single && !f.required && out.get(f.json).is_some_and(is_zero_scalar) {
            out.remove(f.json);
        }
    }
    Ok(Value::Object(out))
}

fn is_zero_scalar(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// The value of a map entry whose value field is absent (the type's zero value).
fn empty_value(field: &Field, depth: usize) -> Result<Value, Bad> {
    Ok(match field.ty {
        Ty::Bool => Value::Bool(false),
        Ty::Int32 | Ty::Int64 | Ty::Double => Value::from(0),
        Ty::String | Ty::Bytes => Value::String(String::new()),
        Ty::Message(name) => {
            let msg = message(name).ok_or_else(|| bad(format!("unknown message {name}")))?;
            decode_message(msg, &[], depth + 1)?
        }
    })
}

fn scalar_or_message(field: &Field, wire: Wire<'_>, depth: usize) -> Result<Value, Bad> {
    let wrong = || bad(format!("{}: wrong wire type", field.json));
    Ok(match (field.ty, wire) {
        (Ty::Bool, Wire::Varint(n)) => Value::Bool(n != 0),
        // int32 is sign-extended to 64 bits on the wire.
        (Ty::Int32, Wire::Varint(n)) => Value::from(n as i64 as i32),
        (Ty::Int64, Wire::Varint(n)) => Value::from(n as i64),
        (Ty::Double, Wire::Fixed64(n)) => Number::from_f64(f64::from_bits(n))
            .map(Value::Number)
            .ok_or_else(|| bad(format!("{}: not a finite number", field.json)))?,
        (Ty::String, Wire::Len(b)) => Value::String(utf8(b)?),
        (Ty::Bytes, Wire::Len(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Ty::Message(name), Wire::Len(b)) => {
            let msg = message(name).ok_or_else(|| bad(format!("unknown message {name}")))?;
            decode_message(msg, b, depth + 1)?
        }
        _ => return Err(wrong()),
    })
}

/// Messages whose JSON form is not an object of their fields.
fn special(msg: &Msg, buf: &[u8], depth: usize) -> Result<Option<Value>, Bad> {
    let name = msg.name;
    let Some(short) = name.rsplit('.').next() else {
        return Ok(None);
    };
    let value = match name {
        "apimachinery.pkg.apis.meta.v1.time" | "apimachinery.pkg.apis.meta.v1.microtime" => {
            let (mut seconds, mut nanos) = (None, 0i64);
            for item in Reader::new(buf) {
                match item? {
                    (1, Wire::Varint(n)) => seconds = Some(n as i64),
                    (2, Wire::Varint(n)) => nanos = i64::from(n as i64 as i32),
                    _ => {}
                }
            }
            match seconds {
                // Go marshals the zero time as an empty message; its JSON is null.
                None if buf.is_empty() => Value::Null,
                seconds => timestamp(seconds.unwrap_or(0), nanos, short == "microtime")?,
            }
        }
        "apimachinery.pkg.apis.meta.v1.duration" => {
            let mut nanos = 0i64;
            for item in Reader::new(buf) {
                if let (1, Wire::Varint(n)) = item? {
                    nanos = n as i64;
                }
            }
            Value::String(go_duration(nanos))
        }
        "apimachinery.pkg.util.intstr.intorstring" => {
            let (mut ty, mut int, mut string) = (0u64, 0i64, String::new());
            for item in Reader::new(buf) {
                match item? {
                    (1, Wire::Varint(n)) => ty = n,
                    (2, Wire::Varint(n)) => int = i64::from(n as i64 as i32),
                    (3, Wire::Len(b)) => string = utf8(b)?,
                    _ => {}
                }
            }
            if ty == 1 {
                Value::String(string)
            } else {
                Value::from(int)
            }
        }
        "apimachinery.pkg.api.resource.quantity" => Value::String(first_string(buf)?),
        "apimachinery.pkg.runtime.rawextension" | "apimachinery.pkg.apis.meta.v1.fieldsv1" => {
            embedded(first_bytes(buf)?, depth)?
        }
        "apimachinery.pkg.apis.meta.v1.verbs" => Value::Array(repeated_strings(buf, 1)?),
        _ if short == "extravalue" => Value::Array(repeated_strings(buf, 1)?),
        _ if name.starts_with(APIEXT) => match short {
            "json" => embedded(first_bytes(buf)?, depth)?,
            // {schema = 1, jSONSchemas = 2}: the schema, or the list of schemas.
            "jsonschemapropsorarray" => match union(msg, buf, depth)? {
                (Some(schema), _) => schema,
                (None, rest) => rest
                    .get("jSONSchemas")
                    .cloned()
                    .unwrap_or(Value::Array(Vec::new())),
            },
            // {allows = 1, schema = 2}: the schema, or the bool.
            "jsonschemapropsorbool" => match union(msg, buf, depth)? {
                (Some(schema), _) => schema,
                (None, rest) => rest.get("allows").cloned().unwrap_or(Value::Bool(false)),
            },
            // {schema = 1, property = 2}: the schema, or the list of strings.
            "jsonschemapropsorstringarray" => match union(msg, buf, depth)? {
                (Some(schema), _) => schema,
                (None, _) => Value::Array(repeated_strings(buf, 2)?),
            },
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    Ok(Some(value))
}

/// Decodes a JSONSchemaPropsOr* union's fields: its `schema` (if set) and all fields as JSON.
fn union(msg: &Msg, buf: &[u8], depth: usize) -> Result<(Option<Value>, Map<String, Value>), Bad> {
    let plain = Msg {
        name: "",
        fields: msg.fields,
    };
    let Value::Object(mut fields) = decode_message(&plain, buf, depth)? else {
        return Err(bad("union"));
    };
    // `allows` is a plain bool: keep false, which the zero-dropping above removed.
    if msg.fields.iter().any(|f| f.json == "allows") && !fields.contains_key("allows") {
        fields.insert("allows".into(), Value::Bool(false));
    }
    Ok((fields.remove("schema"), fields))
}

fn first_string(buf: &[u8]) -> Result<String, Bad> {
    for item in Reader::new(buf) {
        if let (1, Wire::Len(b)) = item? {
            return utf8(b);
        }
    }
    Ok(String::new())
}

fn first_bytes(buf: &[u8]) -> Result<&[u8], Bad> {
    for item in Reader::new(buf) {
        if let (1, Wire::Len(b)) = item? {
            return Ok(b);
        }
    }
    Ok(&[])
}

fn repeated_strings(buf: &[u8], tag: u32) -> Result<Vec<Value>, Bad> {
    let mut out = Vec::new();
    for item in Reader::new(buf) {
        if let (t, Wire::Len(b)) = item?
            && t == tag
        {
            out.push(Value::String(utf8(b)?));
        }
    }
    Ok(out)
}

/// Embedded raw bytes: JSON (what Kubernetes stores there), or a nested protobuf object.
fn embedded(raw: &[u8], depth: usize) -> Result<Value, Bad> {
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    if raw.starts_with(MAGIC) {
        if depth > MAX_DEPTH {
            return Err(bad("nesting too deep"));
        }
        return decode_at(raw, depth + 1);
    }
    serde_json::from_slice(raw).map_err(|e| bad(format!("embedded object is not JSON: {e}")))
}

/// RFC 3339 in UTC: seconds precision (`Time`) or microseconds (`MicroTime`), as Go renders them.
fn timestamp(seconds: i64, nanos: i64, micro: bool) -> Result<Value, Bad> {
    let ts =
        jiff::Timestamp::new(seconds, 0).map_err(|e| bad(format!("time out of range: {e}")))?;
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    Ok(Value::String(if micro {
        format!("{base}.{:06}Z", nanos.clamp(0, 999_999_999) / 1000)
    } else {
        format!("{base}Z")
    }))
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let neg = nanos < 0;
    let u = nanos.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    let frac = |value: u64, unit: u64| -> String {
        let whole = value / unit;
        let rem = value % unit;
        if rem == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        let s = format!("{rem:0digits$}");
        format!("{whole}.{}", s.trim_end_matches('0'))
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 1_000));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 1_000_000));
    }
    let hours = u / 3_600_000_000_000;
    let minutes = (u / 60_000_000_000) % 60;
    let secs = frac(u % 60_000_000_000, 1_000_000_000);
    let mut out = String::from(sign);
    if hours > 0 {
        out.push_str(&format!("{hours}h{minutes}m"));
    } else if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&secs);
    out.push('s');
    out
}

#[cfg(test)]
mod tests;
