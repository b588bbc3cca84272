//! Validation helpers shared by resources: DNS-1123 names and labels, label keys and values,
//! config keys, and the metadata checks every object gets.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::FieldCause;

/// Max length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Max length of a DNS-1123 label.
pub const DNS1123_LABEL_MAX: usize = 63;

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Whether `s` is a DNS-1123 label: lowercase alphanumerics and '-', alphanumeric at both ends,
/// at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS1123_LABEL_MAX
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower)
}

/// Whether `s` is a DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= DNS1123_SUBDOMAIN_MAX && s.split('.').all(|l| {
        !l.is_empty() && l.chars().all(|c| is_alnum_lower(c) || c == '-') && l.starts_with(is_alnum_lower) && l.ends_with(is_alnum_lower)
    })
}

/// Whether `s` is a valid ConfigMap/Secret key.
pub fn is_config_map_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS1123_SUBDOMAIN_MAX
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s != "."
        && s != ".."
        && !s.starts_with("..")
}

fn is_qualified_name_part(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(ok)
        && s.ends_with(ok)
}

/// Whether `s` is a qualified name (label or annotation key): `[prefix/]name`.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(s),
    }
}

/// Whether `s` is a valid label value (empty, or a qualified name part).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_name_part(s)
}

/// Upstream's message for an invalid DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
/// Upstream's message for an invalid DNS-1123 label.
pub const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// How a resource's names are validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (most resources).
    Subdomain,
    /// DNS-1123 label (namespaces, services).
    Label,
}

/// Checks the metadata every object has: name, namespace, labels, annotations.
pub fn validate_meta(meta: &ObjectMeta, namespaced: bool, rule: NameRule) -> Vec<FieldCause> {
    let mut causes = vec![];
    match meta.name.as_deref() {
        None | Some("") => {
            if meta.generate_name.as_deref().unwrap_or("").is_empty() {
                causes.push(FieldCause::required("metadata.name"));
            }
        }
        Some(name) => {
            let (ok, msg, max) = match rule {
                NameRule::Subdomain => (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN_MSG, DNS1123_SUBDOMAIN_MAX),
                NameRule::Label => (is_dns1123_label(name), DNS1123_LABEL_MSG, DNS1123_LABEL_MAX),
            };
            if name.len() > max {
                causes.push(FieldCause::invalid("metadata.name", name, &format!("must be no more than {max} characters")));
            } else if !ok {
                causes.push(FieldCause::invalid("metadata.name", name, msg));
            }
        }
    }
    if namespaced {
        match meta.namespace.as_deref() {
            None | Some("") => causes.push(FieldCause::required("metadata.namespace")),
            Some(ns) if !is_dns1123_label(ns) => causes.push(FieldCause::invalid("metadata.namespace", ns, DNS1123_LABEL_MSG)),
            _ => {}
        }
    }
    for (k, v) in meta.labels.iter().flatten() {
        if !is_qualified_name(k) {
            causes.push(FieldCause::invalid("metadata.labels", k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
        }
        if !is_label_value(v) {
            causes.push(FieldCause::invalid(format!("metadata.labels"), v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
        }
    }
    let mut total = 0;
    for (k, v) in meta.annotations.iter().flatten() {
        if !is_qualified_name(k) {
            causes.push(FieldCause::invalid("metadata.annotations", k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        }
        total += k.len() + v.len();
    }
    if total > 256 * 1024 {
        causes.push(FieldCause::too_long("metadata.annotations", 256 * 1024));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns1123_subdomain("web-1.example"));
        assert!(!is_dns1123_subdomain("Web"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(is_dns1123_label("a-b"));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }

    #[test]
    fn label_keys_and_values() {
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(is_qualified_name("App_1"));
        assert!(!is_qualified_name("/x"));
        assert!(!is_qualified_name("a/b/c"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
    }
}
