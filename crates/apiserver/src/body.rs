//! Request bodies: size limit, content type, JSON or YAML decoding with clear 400s.

use api::ApiError;
use serde_json::Value;

/// The largest request body accepted (3 MiB, as upstream).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// How a PATCH body is to be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 6902.
    Json,
    /// RFC 7386.
    Merge,
    /// Kubernetes strategic merge patch.
    Strategic,
    /// Server-side apply.
    Apply,
}

impl PatchType {
    /// The patch type named by a Content-Type header.
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        match media_type(ct) {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

fn media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// Decodes a body as JSON, or YAML when the content type says so.
pub fn decode(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let mt = media_type(content_type);
    if mt == api::protobuf::CONTENT_TYPE {
        return api::protobuf::decode(body);
    }
    if mt.contains("protobuf") || mt.contains("cbor") {
        return Err(ApiError::unsupported_media_type(mt));
    }
    if mt.ends_with("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not UTF-8: {e}")))?;
        return serde_saphyr::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")));
    }
    serde_json::from_slice::<Value>(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body could not be decoded as JSON: {e}"
        ))
    })
}

/// Decodes a body that must be a JSON object.
pub fn decode_object(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let v = decode(content_type, body)?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_bodies() {
        assert_eq!(decode("application/json", b"{").unwrap_err().code, 400);
        assert_eq!(decode("application/json", b"").unwrap_err().code, 400);
        assert_eq!(
            decode_object("application/json", b"[1]").unwrap_err().code,
            400
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            decode("application/json", deep.as_bytes())
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            decode("application/json", &vec![b' '; MAX_BODY + 1])
                .unwrap_err()
                .code,
            413
        );
        assert_eq!(
            decode("application/vnd.kubernetes.protobuf", b"x")
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(decode("application/cbor", b"x").unwrap_err().code, 415);
    }

    #[test]
    fn reads_yaml() {
        let v = decode("application/yaml", b"kind: Pod\nmetadata:\n  name: a\n").unwrap();
        assert_eq!(v["metadata"]["name"], "a");
    }
}
