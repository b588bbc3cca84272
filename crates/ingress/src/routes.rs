//! The routing table: the Ingresses of corten's class, with their Services and EndpointSlices,
//! turned into host → path → backend (with its ready endpoint addresses). Pure: built from
//! API objects, consulted per request.
//!
//! Matching follows the Ingress specification: a request's host picks the rules of that exact
//! host, else of a matching wildcard host (`*.example.com` matches exactly one more label), else
//! the rules without a host; among the rules of that set the longest matching path wins, an
//! `Exact` path over a `Prefix` one of the same length. `Prefix` matches whole path elements
//! (`/api` matches `/api` and `/api/v1`, not `/apis`); `ImplementationSpecific` is treated as
//! `Prefix`. When no rule matches, the oldest `spec.defaultBackend` answers, else 404. Where
//! Ingresses disagree about the same host and path, the oldest Ingress wins.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use kube::ResourceExt;

/// The annotation that marks an IngressClass as the cluster's default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The deprecated annotation naming an Ingress's class.
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Where a matched request goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    /// `NAMESPACE/SERVICE:PORT`, for logs and error pages.
    pub name: String,
    /// The ready endpoints, or why there are none to use.
    pub endpoints: Result<Vec<SocketAddr>, String>,
}

/// How a rule's path is compared with a request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum PathKind {
    Exact,
    Prefix,
}

#[derive(Debug, Clone)]
struct PathRule {
    /// For `Prefix`, without a trailing slash (`/` stays `/`).
    path: String,
    kind: PathKind,
    backend: Arc<Backend>,
}

impl PathRule {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            PathKind::Exact => path == self.path,
            PathKind::Prefix => {
                self.path == "/"
                    || path
                        .strip_prefix(self.path.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        }
    }
}

/// Host → path → backend for every Ingress of the class.
#[derive(Debug, Default)]
pub struct Table {
    hosts: HashMap<String, Vec<PathRule>>,
    /// `*.example.com` as `.example.com`.
    wildcards: Vec<(String, Vec<PathRule>)>,
    any_host: Vec<PathRule>,
    default_backend: Option<Arc<Backend>>,
}

impl Table {
    /// The backend for a request to `host` (lowercase, without port) and `path` (without
    /// query); `None`: no rule and no default backend (404).
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        let rules = self.hosts.get(host).or_else(|| {
            let dot = host.find('.')?;
            let suffix = &host[dot..];
            self.wildcards
                .iter()
                .find(|(s, _)| s == suffix)
                .map(|(_, r)| r)
        });
        rules
            .and_then(|r| first_match(r, path))
            .or_else(|| first_match(&self.any_host, path))
            .or(self.default_backend.as_ref())
    }

    /// Number of (host, path) rules, for logs.
    pub fn len(&self) -> usize {
        self.hosts.values().map(Vec::len).sum::<usize>()
            + self.wildcards.iter().map(|(_, r)| r.len()).sum::<usize>()
            + self.any_host.len()
    }

    /// Whether the table has no rules and no default backend.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.default_backend.is_none()
    }
}

fn first_match<'a>(rules: &'a [PathRule], path: &str) -> Option<&'a Arc<Backend>> {
    rules.iter().find(|r| r.matches(path)).map(|r| &r.backend)
}

/// Whether `ingress` belongs to class `class`: named by `spec.ingressClassName` or the old
/// annotation, or naming no class while `class` is the cluster's default.
pub fn is_ours(ingress: &Ingress, class: &str, class_is_default: bool) -> bool {
    let named = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ingress
                .annotations()
                .get(CLASS_ANNOTATION)
                .map(String::as_str)
        });
    match named {
        Some(name) => name == class,
        None => class_is_default,
    }
}

/// Whether the IngressClass `class` exists and is marked the default.
pub fn class_is_default<'a>(
    classes: impl IntoIterator<Item = &'a IngressClass>,
    class: &str,
) -> bool {
    classes.into_iter().any(|c| {
        c.name_any() == class
            && c.annotations()
                .get(DEFAULT_CLASS_ANNOTATION)
                .is_some_and(|v| v == "true")
    })
}

/// The oldest first (then by namespace and name), so that the oldest wins conflicts.
pub fn oldest_first(ingresses: &mut [&Ingress]) {
    ingresses.sort_by(|a, b| {
        let age = |i: &Ingress| i.metadata.creation_timestamp.clone().map(|t| t.0);
        age(a)
            .cmp(&age(b))
            .then_with(|| a.namespace().cmp(&b.namespace()))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
}

/// Builds the table from `ingresses` (already filtered to the class, oldest first) and the
/// cluster's Services and EndpointSlices.
pub fn build<'a>(
    ingresses: &[&Ingress],
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Table {
    let services: HashMap<(String, String), &Service> = services
        .into_iter()
        .map(|s| ((s.namespace().unwrap_or_default(), s.name_any()), s))
        .collect();
    let mut slices_by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        if let Some(svc) = slice.labels().get("kubernetes.io/service-name") {
            slices_by_service
                .entry((slice.namespace().unwrap_or_default(), svc.clone()))
                .or_default()
                .push(slice);
        }
    }
    let resolve = |ns: &str, backend: &IngressBackend| -> Arc<Backend> {
        Arc::new(resolve_backend(ns, backend, &services, &slices_by_service))
    };

    let mut table = Table::default();
    let mut seen: std::collections::HashSet<(String, String, PathKind)> = Default::default();
    for ingress in ingresses {
        let ns = ingress.namespace().unwrap_or_default();
        let Some(spec) = &ingress.spec else { continue };
        if table.default_backend.is_none() {
            table.default_backend = spec.default_backend.as_ref().map(|b| resolve(&ns, b));
        }
        for rule in spec.rules.iter().flatten() {
            let host = rule.host.clone().unwrap_or_default().to_ascii_lowercase();
            for p in rule.http.iter().flat_map(|h| &h.paths) {
                let kind = match p.path_type.as_str() {
                    "Exact" => PathKind::Exact,
                    _ => PathKind::Prefix,
                };
                let raw = p.path.clone().unwrap_or_else(|| "/".into());
                let path = match kind {
                    PathKind::Prefix if raw.len() > 1 => raw.trim_end_matches('/').to_string(),
                    PathKind::Prefix if raw.is_empty() => "/".to_string(),
                    _ => raw,
                };
                if !seen.insert((host.clone(), path.clone(), kind)) {
                    continue; // an older Ingress has this host and path
                }
                let rule = PathRule {
                    path,
                    kind,
                    backend: resolve(&ns, &p.backend),
                };
                let rules = if host.is_empty() {
                    &mut table.any_host
                } else if let Some(suffix) = host.strip_prefix('*') {
                    let i = match table.wildcards.iter().position(|(s, _)| s == suffix) {
                        Some(i) => i,
                        None => {
                            table.wildcards.push((suffix.to_string(), vec![]));
                            table.wildcards.len() - 1
                        }
                    };
                    &mut table.wildcards[i].1
                } else {
                    table.hosts.entry(host.clone()).or_default()
                };
                rules.push(rule);
            }
        }
    }
    let order = |a: &PathRule, b: &PathRule| {
        b.path
            .len()
            .cmp(&a.path.len())
            .then_with(|| a.kind.cmp(&b.kind))
    };
    for rules in table.hosts.values_mut() {
        rules.sort_by(order);
    }
    for (_, rules) in &mut table.wildcards {
        rules.sort_by(order);
    }
    table.any_host.sort_by(order);
    table
}

/// A service backend's ready endpoints: the Service port named or numbered by the backend,
/// then, in the Service's EndpointSlices, the port of the same name and the ready addresses.
fn resolve_backend(
    ns: &str,
    backend: &IngressBackend,
    services: &HashMap<(String, String), &Service>,
    slices: &HashMap<(String, String), Vec<&EndpointSlice>>,
) -> Backend {
    let Some(svc_ref) = &backend.service else {
        let name = backend
            .resource
            .as_ref()
            .map_or_else(|| "?".into(), |r| format!("{}/{}", r.kind, r.name));
        return Backend {
            endpoints: Err(format!("resource backend {name} is not supported")),
            name,
        };
    };
    let port_ref = svc_ref.port.as_ref();
    let port_text = port_ref
        .and_then(|p| p.name.clone().or(p.number.map(|n| n.to_string())))
        .unwrap_or_default();
    let name = format!("{ns}/{}:{port_text}", svc_ref.name);
    let key = (ns.to_string(), svc_ref.name.clone());
    let endpoints = (|| {
        let svc = services
            .get(&key)
            .ok_or_else(|| format!("service {ns}/{} not found", svc_ref.name))?;
        let ports = svc.spec.as_ref().and_then(|s| s.ports.as_ref());
        let svc_port = ports
            .into_iter()
            .flatten()
            .find(|p| match port_ref {
                Some(r) if r.name.is_some() => p.name == r.name,
                Some(r) => Some(p.port) == r.number,
                None => true,
            })
            .ok_or_else(|| format!("service {ns}/{} has no port {port_text}", svc_ref.name))?;
        let want = svc_port.name.clone().unwrap_or_default();
        let mut addrs = vec![];
        for slice in slices.get(&key).into_iter().flatten() {
            let Some(port) = slice.ports.iter().flatten().find(|p| {
                p.name.clone().unwrap_or_default() == want
                    && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
            }) else {
                continue;
            };
            let Some(port) = port.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for ep in &slice.endpoints {
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        addrs.push(SocketAddr::new(ip, port));
                    }
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            Err(format!(
                "no ready endpoints for service {ns}/{} port {port_text}",
                svc_ref.name
            ))
        } else {
            Ok(addrs)
        }
    })();
    Backend { name, endpoints }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingress(name: &str, created: &str, spec: serde_json::Value) -> Ingress {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": spec,
        }))
        .unwrap()
    }

    fn service(name: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": ports},
        }))
        .unwrap()
    }

    fn slice(svc: &str, port_name: &str, port: i32, eps: &[(&str, bool)]) -> EndpointSlice {
        let endpoints: Vec<_> = eps
            .iter()
            .map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-x"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn backend(svc: &str, port: serde_json::Value) -> serde_json::Value {
        json!({"service": {"name": svc, "port": port}})
    }

    fn table(ingresses: &[Ingress]) -> Table {
        let services = [
            service(
                "api",
                json!([{"name": "http", "port": 80, "targetPort": 8080}]),
            ),
            service("web", json!([{"port": 80, "targetPort": 80}])),
            service("empty", json!([{"port": 80}])),
        ];
        let slices = [
            slice(
                "api",
                "http",
                8080,
                &[("10.42.0.5", true), ("10.42.0.6", false)],
            ),
            slice("web", "", 80, &[("10.42.0.7", true)]),
        ];
        let mut refs: Vec<&Ingress> = ingresses.iter().collect();
        oldest_first(&mut refs);
        build(&refs, &services, &slices)
    }

    fn to(t: &Table, host: &str, path: &str) -> Option<String> {
        t.route(host, path).map(|b| b.name.clone())
    }

    #[test]
    fn prefix_paths_match_whole_elements_and_the_longest_wins() {
        let t = table(&[ingress(
            "app",
            "2026-01-01T00:00:00Z",
            json!({"rules": [{"http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": backend("web", json!({"number": 80}))},
                {"path": "/api/", "pathType": "Prefix", "backend": backend("api", json!({"name": "http"}))},
            ]}}]}),
        )]);
        let api = Some("default/api:http".to_string());
        let web = Some("default/web:80".to_string());
        assert_eq!(to(&t, "any.host", "/api"), api);
        assert_eq!(to(&t, "any.host", "/api/"), api);
        assert_eq!(to(&t, "x", "/api/v1/entries"), api);
        assert_eq!(to(&t, "x", "/apis"), web);
        assert_eq!(to(&t, "x", "/"), web);
        assert_eq!(to(&t, "x", "/index.html"), web);
        // Only the ready endpoint, at the slice's port for the service port's name.
        let b = t.route("x", "/api").unwrap();
        assert_eq!(b.endpoints, Ok(vec!["10.42.0.5:8080".parse().unwrap()]));
        let b = t.route("x", "/").unwrap();
        assert_eq!(b.endpoints, Ok(vec!["10.42.0.7:80".parse().unwrap()]));
    }

    #[test]
    fn exact_beats_prefix_of_the_same_length_and_does_not_match_more() {
        let t = table(&[ingress(
            "app",
            "2026-01-01T00:00:00Z",
            json!({"rules": [{"http": {"paths": [
                {"path": "/foo", "pathType": "Prefix", "backend": backend("web", json!({"number": 80}))},
                {"path": "/foo", "pathType": "Exact", "backend": backend("api", json!({"number": 80}))},
            ]}}]}),
        )]);
        assert_eq!(to(&t, "h", "/foo").as_deref(), Some("default/api:80"));
        assert_eq!(to(&t, "h", "/foo/").as_deref(), Some("default/web:80"));
        assert_eq!(to(&t, "h", "/bar"), None);
    }

    #[test]
    fn hosts_exact_then_wildcard_then_any_then_default_backend() {
        let t = table(&[ingress(
            "app",
            "2026-01-01T00:00:00Z",
            json!({
            "defaultBackend": backend("empty", json!({"number": 80})),
            "rules": [
                {"host": "api.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": backend("api", json!({"number": 80}))}]}},
                {"host": "*.example.com", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": backend("web", json!({"number": 80}))}]}},
                {"http": {"paths": [
                    {"path": "/any", "pathType": "Exact", "backend": backend("api", json!({"name": "http"}))}]}},
            ]}),
        )]);
        assert_eq!(
            to(&t, "api.example.com", "/x").as_deref(),
            Some("default/api:80")
        );
        assert_eq!(
            to(&t, "www.example.com", "/x").as_deref(),
            Some("default/web:80")
        );
        // A wildcard covers exactly one label.
        assert_eq!(
            to(&t, "a.b.example.com", "/any").as_deref(),
            Some("default/api:http")
        );
        assert_eq!(
            to(&t, "example.com", "/x").as_deref(),
            Some("default/empty:80")
        );
        let d = t.route("other", "/").unwrap();
        assert!(
            d.endpoints
                .as_ref()
                .unwrap_err()
                .contains("no ready endpoints")
        );
    }

    #[test]
    fn the_oldest_ingress_wins_a_conflict_and_missing_services_are_explained() {
        let newer = ingress(
            "newer",
            "2026-02-01T00:00:00Z",
            json!({"rules": [{"host": "h", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": backend("web", json!({"number": 80}))},
                {"path": "/gone", "pathType": "Prefix", "backend": backend("nope", json!({"number": 80}))},
                {"path": "/badport", "pathType": "Prefix", "backend": backend("web", json!({"number": 81}))}]}}]}),
        );
        let older = ingress(
            "older",
            "2026-01-01T00:00:00Z",
            json!({"rules": [{"host": "h", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": backend("api", json!({"number": 80}))}]}}]}),
        );
        let t = table(&[newer, older]);
        assert_eq!(to(&t, "h", "/").as_deref(), Some("default/api:80"));
        let gone = t.route("h", "/gone/x").unwrap();
        assert_eq!(gone.endpoints, Err("service default/nope not found".into()));
        let bad = t.route("h", "/badport").unwrap();
        assert_eq!(
            bad.endpoints,
            Err("service default/web has no port 81".into())
        );
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn class_membership() {
        let mut i = ingress("a", "2026-01-01T00:00:00Z", json!({}));
        assert!(is_ours(&i, "corten", true));
        assert!(!is_ours(&i, "corten", false));
        i.spec.as_mut().unwrap().ingress_class_name = Some("nginx".into());
        assert!(!is_ours(&i, "corten", true));
        i.spec.as_mut().unwrap().ingress_class_name = None;
        i.metadata.annotations =
            Some([(CLASS_ANNOTATION.to_string(), "corten".to_string())].into());
        assert!(is_ours(&i, "corten", false));
        let class: IngressClass = serde_json::from_value(json!({
            "metadata": {"name": "corten", "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}}
        }))
        .unwrap();
        assert!(class_is_default([&class], "corten"));
        assert!(!class_is_default([&class], "other"));
    }
}
