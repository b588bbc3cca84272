//! Validation helpers shared by resources: DNS-1123 names and labels, label keys and values,
//! config keys, and the metadata checks every object gets.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

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
    !s.is_empty()
        && s.len() <= DNS1123_SUBDOMAIN_MAX
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.chars().all(|c| is_alnum_lower(c) || c == '-')
                && l.starts_with(is_alnum_lower)
                && l.ends_with(is_alnum_lower)
        })
}

/// Whether `s` is a valid ConfigMap/Secret key.
pub fn is_config_map_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS1123_SUBDOMAIN_MAX
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s != "."
        && s != ".."
        && !s.starts_with("..")
}

fn is_qualified_name_part(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
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
    /// DNS-1123 label (namespaces, statefulsets).
    Label,
    /// DNS-1035 label: a DNS-1123 label starting with a letter (services).
    Dns1035Label,
    /// Any path segment: not `.` or `..`, no `/` or `%` (RBAC kinds, e.g. `system:node`).
    PathSegment,
}

/// Upstream's message for an invalid DNS-1035 label.
pub const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// Whether `s` is a DNS-1035 label.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Upstream's reasons a name is not a valid path segment (empty when it is).
pub fn path_segment_errors(s: &str) -> Vec<&'static str> {
    let mut out = vec![];
    if s == "." || s == ".." {
        out.push(if s == "." {
            "may not be '.'"
        } else {
            "may not be '..'"
        });
    }
    if s.contains('/') {
        out.push("may not contain '/'");
    }
    if s.contains('%') {
        out.push("may not contain '%'");
    }
    out
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
                NameRule::Subdomain => (
                    is_dns1123_subdomain(name),
                    DNS1123_SUBDOMAIN_MSG,
                    DNS1123_SUBDOMAIN_MAX,
                ),
                NameRule::Label => (is_dns1123_label(name), DNS1123_LABEL_MSG, DNS1123_LABEL_MAX),
                NameRule::Dns1035Label => {
                    (is_dns1035_label(name), DNS1035_LABEL_MSG, DNS1123_LABEL_MAX)
                }
                NameRule::PathSegment => (true, "", usize::MAX),
            };
            if rule == NameRule::PathSegment {
                for msg in path_segment_errors(name) {
                    causes.push(FieldCause::invalid("metadata.name", name, msg));
                }
            } else if name.len() > max {
                causes.push(FieldCause::invalid(
                    "metadata.name",
                    name,
                    &format!("must be no more than {max} characters"),
                ));
            } else if !ok {
                causes.push(FieldCause::invalid("metadata.name", name, msg));
            }
        }
    }
    if namespaced {
        match meta.namespace.as_deref() {
            None | Some("") => causes.push(FieldCause::required("metadata.namespace")),
            Some(ns) if !is_dns1123_label(ns) => causes.push(FieldCause::invalid(
                "metadata.namespace",
                ns,
                DNS1123_LABEL_MSG,
            )),
            _ => {}
        }
    }
    for (k, v) in meta.labels.iter().flatten() {
        if !is_qualified_name(k) {
            causes.push(FieldCause::invalid("metadata.labels", k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
        }
        if !is_label_value(v) {
            causes.push(FieldCause::invalid("metadata.labels", v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
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

/// An `Invalid` cause whose value is already rendered (numbers, Go-style maps and structs are
/// printed unquoted by upstream).
pub fn invalid_raw(
    field: impl Into<String>,
    value: impl std::fmt::Display,
    detail: &str,
) -> FieldCause {
    FieldCause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: {value}: {detail}"),
    }
}

/// A `NotFound` cause (e.g. a volume mount naming no volume).
pub fn not_found(field: impl Into<String>, value: &str) -> FieldCause {
    FieldCause {
        reason: "FieldValueNotFound",
        field: field.into(),
        message: format!(
            "Not found: {}",
            serde_json::to_string(value).unwrap_or_default()
        ),
    }
}

/// A `Required` cause with a detail (`Required value: <detail>`).
pub fn required_because(field: impl Into<String>, detail: &str) -> FieldCause {
    FieldCause {
        reason: "FieldValueRequired",
        field: field.into(),
        message: format!("Required value: {detail}"),
    }
}

/// Upstream's message for a value outside 1-65535.
pub const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";
/// Upstream's message for a negative value.
pub const NON_NEGATIVE_MSG: &str = "must be greater than or equal to 0";

/// Checks `value >= 0` at `field`.
pub fn non_negative(field: &str, value: Option<i64>, causes: &mut Vec<FieldCause>) {
    if let Some(v) = value.filter(|v| *v < 0) {
        causes.push(invalid_raw(field, v, NON_NEGATIVE_MSG));
    }
}

/// Checks that `value` is one of `supported` (when set).
pub fn supported(field: &str, value: Option<&str>, allowed: &[&str], causes: &mut Vec<FieldCause>) {
    if let Some(v) = value.filter(|v| !allowed.contains(v)) {
        causes.push(FieldCause::not_supported(field, v, allowed));
    }
}

/// Whether `s` is an IANA service name (a named port): at most 15 characters, lowercase
/// alphanumerics and '-', at least one letter, no leading/trailing or double '-'.
pub fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// Whether `s` is an environment variable name (upstream's relaxed rule: printable ASCII, no '=').
pub fn is_env_var_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| (' '..='~').contains(&c) && c != '=')
}

/// A quantity (`100m`, `1Gi`, `2e3`) as a number; None if it does not parse.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// Go's `%#v` of a `map[string]string`, as upstream prints label maps in messages.
pub fn go_map(map: Option<&BTreeMap<String, String>>) -> String {
    match map {
        None => "map[string]string(nil)".into(),
        Some(m) => {
            let items: Vec<String> = m.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
            format!("map[string]string{{{}}}", items.join(", "))
        }
    }
}

/// Go's `%#v` of a `v1.LabelSelector`, as upstream prints selectors in messages.
pub fn go_selector(sel: &LabelSelector) -> String {
    let labels = match &sel.match_labels {
        None => "map[string]string(nil)".to_string(),
        Some(m) => go_map(Some(m)),
    };
    let exprs = match &sel.match_expressions {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let items: Vec<String> = list
                .iter()
                .map(|r| {
                    let values = match &r.values {
                        None => "[]string(nil)".to_string(),
                        Some(v) => format!(
                            "[]string{{{}}}",
                            v.iter()
                                .map(|x| format!("{x:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{:?}, Operator:{:?}, Values:{values}}}",
                        r.key, r.operator
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

/// Whether a label selector has no requirements (it then matches everything).
pub fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

/// Whether `labels` satisfy the selector (matchLabels and matchExpressions).
pub fn selector_matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|r| {
        let values = r.values.as_deref().unwrap_or_default();
        match r.operator.as_str() {
            "In" => get(&r.key).is_some_and(|v| values.contains(v)),
            "NotIn" => get(&r.key).is_none_or(|v| !values.contains(v)),
            "Exists" => get(&r.key).is_some(),
            "DoesNotExist" => get(&r.key).is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// A label selector as upstream's `labels.Selector.String()` renders it (`app=web,tier in (a,b)`),
/// requirements sorted by key; empty for an empty selector.
pub fn selector_string(sel: Option<&LabelSelector>) -> String {
    let Some(sel) = sel else { return String::new() };
    let mut reqs: Vec<(String, String)> = vec![];
    for (k, v) in sel.match_labels.iter().flatten() {
        reqs.push((k.clone(), format!("{k}={v}")));
    }
    for r in sel.match_expressions.iter().flatten() {
        let mut values = r.values.clone().unwrap_or_default();
        values.sort();
        let s = match r.operator.as_str() {
            "In" => format!("{} in ({})", r.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", r.key, values.join(",")),
            "Exists" => r.key.clone(),
            "DoesNotExist" => format!("!{}", r.key),
            _ => continue,
        };
        reqs.push((r.key.clone(), s));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(",")
}

/// `<none>` for an empty selector, else [`selector_string`] (upstream's `FormatLabelSelector`).
pub fn format_label_selector(sel: Option<&LabelSelector>) -> String {
    let s = selector_string(sel);
    if s.is_empty() { "<none>".into() } else { s }
}

/// A label map as `k=v,k2=v2`, or `<none>` (upstream's `labels.FormatLabels`).
pub fn format_labels(map: Option<&BTreeMap<String, String>>) -> String {
    match map {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

/// Validates a label selector's keys, values and operators.
pub fn validate_label_selector(sel: &LabelSelector, path: &str) -> Vec<FieldCause> {
    let mut causes = vec![];
    for (k, v) in sel.match_labels.iter().flatten() {
        if !is_qualified_name(k) {
            causes.push(FieldCause::invalid(format!("{path}.matchLabels"), k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
        }
        if !is_label_value(v) {
            causes.push(FieldCause::invalid(format!("{path}.matchLabels"), v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
        }
    }
    for (i, r) in sel.match_expressions.iter().flatten().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let n = r.values.as_ref().map_or(0, |v| v.len());
        match r.operator.as_str() {
            "In" | "NotIn" if n == 0 => causes.push(required_because(
                format!("{p}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if n > 0 => causes.push(FieldCause::forbidden(
                format!("{p}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => causes.push(FieldCause::invalid(
                format!("{p}.operator"),
                op,
                "not a valid selector operator",
            )),
        }
        if !is_qualified_name(&r.key) {
            causes.push(FieldCause::invalid(format!("{p}.key"), &r.key, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
        }
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

    #[test]
    fn quantities_and_selectors() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("2e3"), Some(2000.0));
        assert_eq!(parse_quantity("x"), None);
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]
        }))
        .unwrap_or_default();
        assert_eq!(selector_string(Some(&sel)), "app=web,tier in (a,b)");
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "a".to_string()),
        ]
        .into();
        assert!(selector_matches(&sel, Some(&labels)));
        assert!(!selector_matches(&sel, None));
        assert_eq!(
            go_map(Some(&labels)),
            r#"map[string]string{"app":"web", "tier":"a"}"#
        );
        assert!(is_dns1035_label("web") && !is_dns1035_label("1web"));
        assert!(
            path_segment_errors("system:node").is_empty() && !path_segment_errors("a/b").is_empty()
        );
    }
}
