//! The pod spec and pod template, shared by pods and every workload kind: defaulting (upstream's
//! `SetDefaults_PodSpec`, `SetDefaults_Container`, volumes and probes), validation of the
//! essentials (`ValidatePodSpec`), the QoS class, and the CONTAINERS/IMAGES table cells.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::error::FieldCause;
use crate::resources::validation::{
    self, DNS1123_LABEL_MSG, PORT_RANGE_MSG, invalid_raw, is_dns1123_label, is_env_var_name,
    is_port_name, not_found, parse_quantity,
};

/// Protocols a port may use.
pub const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// The image pull policy upstream picks for an image: `Always` for `:latest` or no tag (and no
/// digest), `IfNotPresent` otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    let name = image.split('@').next().unwrap_or(image);
    let has_digest = image.contains('@');
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
        None if has_digest => "IfNotPresent",
        None => "Always",
    }
}

fn default_probe(p: &mut Option<Probe>) {
    let Some(p) = p else { return };
    p.timeout_seconds.get_or_insert(1);
    p.period_seconds.get_or_insert(10);
    p.success_threshold.get_or_insert(1);
    p.failure_threshold.get_or_insert(3);
    if let Some(h) = &mut p.http_get {
        h.path.get_or_insert_with(|| "/".into());
        h.scheme.get_or_insert_with(|| "HTTP".into());
    }
}

fn default_resources(r: &mut Option<ResourceRequirements>) {
    // Requests default to limits for resources that have a limit but no request.
    let Some(r) = r else { return };
    let Some(limits) = r.limits.clone().filter(|l| !l.is_empty()) else {
        return;
    };
    let requests = r.requests.get_or_insert_with(BTreeMap::new);
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

fn default_container(c: &mut Container, host_network: bool) {
    if c.image_pull_policy.as_deref().unwrap_or("").is_empty() {
        c.image_pull_policy = Some(default_pull_policy(c.image.as_deref().unwrap_or("")).into());
    }
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        if host_network && p.host_port.unwrap_or(0) == 0 {
            p.host_port = Some(p.container_port);
        }
    }
    for e in c.env.iter_mut().flatten() {
        if let Some(f) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            f.api_version.get_or_insert_with(|| "v1".into());
        }
    }
    default_probe(&mut c.liveness_probe);
    default_probe(&mut c.readiness_probe);
    default_probe(&mut c.startup_probe);
    default_resources(&mut c.resources);
}

/// Upstream's `SetDefaults_PodSpec` and the defaults of everything inside a pod spec.
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    let host_network = spec.host_network == Some(true);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        let has_source = serde_json::to_value(&*v)
            .ok()
            .and_then(|j| j.as_object().map(|o| o.len() > 1))
            .unwrap_or(true);
        if !has_source {
            v.empty_dir = Some(Default::default());
        }
        if let Some(s) = &mut v.secret {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = &mut v.config_map {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = &mut v.downward_api {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = &mut v.projected {
            s.default_mode.get_or_insert(0o644);
            for src in s.sources.iter_mut().flatten() {
                if let Some(t) = &mut src.service_account_token {
                    t.expiration_seconds.get_or_insert(3600);
                }
            }
        }
        if let Some(h) = &mut v.host_path {
            h.type_.get_or_insert_with(String::new);
        }
    }
}

/// Defaults a workload's pod template (a template has no pod-only defaults such as
/// `enableServiceLinks` or the default service account).
pub fn default_template(t: &mut PodTemplateSpec) {
    default_pod_spec(t.spec.get_or_insert_with(PodSpec::default));
}

fn validate_ports(ports: &[ContainerPort], path: &str, causes: &mut Vec<FieldCause>) {
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("{path}[{i}]");
        if let Some(name) = p.name.as_deref() {
            if !is_port_name(name) {
                causes.push(FieldCause::invalid(format!("{pp}.name"), name, "must be no more than 15 characters, contain only lowercase alphanumeric characters or '-', contain at least one letter, and not begin or end with '-'"));
            } else if !names.insert(name) {
                causes.push(FieldCause::duplicate(format!("{pp}.name"), name));
            }
        }
        if !(1..=65535).contains(&p.container_port) {
            causes.push(invalid_raw(
                format!("{pp}.containerPort"),
                p.container_port,
                PORT_RANGE_MSG,
            ));
        }
        if let Some(hp) = p
            .host_port
            .filter(|hp| *hp != 0 && !(1..=65535).contains(hp))
        {
            causes.push(invalid_raw(format!("{pp}.hostPort"), hp, PORT_RANGE_MSG));
        }
        validation::supported(
            &format!("{pp}.protocol"),
            p.protocol.as_deref(),
            PROTOCOLS,
            causes,
        );
    }
}

fn validate_resources(r: &ResourceRequirements, path: &str, causes: &mut Vec<FieldCause>) {
    let q = |m: &Option<BTreeMap<String, Quantity>>, k: &str| {
        m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    };
    for (kind, list) in [("limits", &r.limits), ("requests", &r.requests)] {
        for (name, qty) in list.iter().flatten() {
            match parse_quantity(&qty.0) {
                None => causes.push(FieldCause::invalid(
                    format!("{path}.{kind}[{name}]"),
                    &qty.0,
                    "must match the regex '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )),
                Some(v) if v < 0.0 => causes.push(FieldCause::invalid(
                    format!("{path}.{kind}[{name}]"),
                    &qty.0,
                    "must be greater than or equal to 0",
                )),
                _ => {}
            }
        }
    }
    for (name, req) in r.requests.iter().flatten() {
        if let Some(limit) = q(&r.limits, name)
            && let (Some(rv), Some(lv)) = (parse_quantity(&req.0), parse_quantity(&limit))
            && rv > lv
        {
            {
                {
                    causes.push(FieldCause::invalid(
                        format!("{path}.requests"),
                        &req.0,
                        &format!("must be less than or equal to {name} limit of {limit}"),
                    ));
                }
            }
        }
    }
}

fn validate_containers(
    list: &[Container],
    path: &str,
    names: &mut HashSet<String>,
    volumes: &HashSet<&str>,
    causes: &mut Vec<FieldCause>,
) {
    for (i, c) in list.iter().enumerate() {
        let cp = format!("{path}[{i}]");
        if c.name.is_empty() {
            causes.push(FieldCause::required(format!("{cp}.name")));
        } else if !is_dns1123_label(&c.name) {
            causes.push(FieldCause::invalid(
                format!("{cp}.name"),
                &c.name,
                DNS1123_LABEL_MSG,
            ));
        } else if !names.insert(c.name.clone()) {
            causes.push(FieldCause::duplicate(format!("{cp}.name"), &c.name));
        }
        if c.image.as_deref().unwrap_or("").trim().is_empty() {
            causes.push(FieldCause::required(format!("{cp}.image")));
        }
        validation::supported(
            &format!("{cp}.imagePullPolicy"),
            c.image_pull_policy.as_deref(),
            &["Always", "IfNotPresent", "Never"],
            causes,
        );
        validate_ports(
            c.ports.as_deref().unwrap_or_default(),
            &format!("{cp}.ports"),
            causes,
        );
        for (j, e) in c.env.iter().flatten().enumerate() {
            if e.name.is_empty() {
                causes.push(FieldCause::required(format!("{cp}.env[{j}].name")));
            } else if !is_env_var_name(&e.name) {
                causes.push(FieldCause::invalid(format!("{cp}.env[{j}].name"), &e.name, "a valid environment variable name must consist only of printable ASCII characters other than '='"));
            }
        }
        for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
            if m.name.is_empty() {
                causes.push(FieldCause::required(format!("{cp}.volumeMounts[{j}].name")));
            } else if !volumes.contains(m.name.as_str()) {
                causes.push(not_found(format!("{cp}.volumeMounts[{j}].name"), &m.name));
            }
            if m.mount_path.is_empty() {
                causes.push(FieldCause::required(format!(
                    "{cp}.volumeMounts[{j}].mountPath"
                )));
            }
        }
        if let Some(r) = &c.resources {
            validate_resources(r, &format!("{cp}.resources"), causes);
        }
    }
}

/// The essentials of upstream's `ValidatePodSpec`, with field paths under `path` (e.g. `spec` or
/// `spec.template.spec`).
pub fn validate_pod_spec(spec: &PodSpec, path: &str) -> Vec<FieldCause> {
    let mut causes = vec![];
    let mut volumes = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let vp = format!("{path}.volumes[{i}].name");
        if v.name.is_empty() {
            causes.push(FieldCause::required(vp));
        } else if !is_dns1123_label(&v.name) {
            causes.push(FieldCause::invalid(vp, &v.name, DNS1123_LABEL_MSG));
        } else if !volumes.insert(v.name.as_str()) {
            causes.push(FieldCause::duplicate(vp, &v.name));
        }
    }
    if spec.containers.is_empty() {
        causes.push(FieldCause::required(format!("{path}.containers")));
    }
    let mut names = HashSet::new();
    validate_containers(
        spec.init_containers.as_deref().unwrap_or_default(),
        &format!("{path}.initContainers"),
        &mut names,
        &volumes,
        &mut causes,
    );
    validate_containers(
        &spec.containers,
        &format!("{path}.containers"),
        &mut names,
        &volumes,
        &mut causes,
    );
    match spec.restart_policy.as_deref() {
        None | Some("") => causes.push(FieldCause::required(format!("{path}.restartPolicy"))),
        p => validation::supported(
            &format!("{path}.restartPolicy"),
            p,
            &["Always", "OnFailure", "Never"],
            &mut causes,
        ),
    }
    validation::supported(
        &format!("{path}.dnsPolicy"),
        spec.dns_policy.as_deref(),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        &mut causes,
    );
    validation::non_negative(
        &format!("{path}.terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
        &mut causes,
    );
    if let Some(a) = spec.active_deadline_seconds.filter(|a| *a <= 0) {
        causes.push(invalid_raw(
            format!("{path}.activeDeadlineSeconds"),
            a,
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty() && !validation::is_dns1123_subdomain(s))
    {
        {
            causes.push(FieldCause::invalid(
                format!("{path}.serviceAccountName"),
                sa,
                validation::DNS1123_SUBDOMAIN_MSG,
            ));
        }
    }
    if let Some(n) = spec
        .node_name
        .as_deref()
        .filter(|s| !s.is_empty() && !validation::is_dns1123_subdomain(s))
    {
        {
            causes.push(FieldCause::invalid(
                format!("{path}.nodeName"),
                n,
                validation::DNS1123_SUBDOMAIN_MSG,
            ));
        }
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        let tp = format!("{path}.tolerations[{i}]");
        validation::supported(
            &format!("{tp}.operator"),
            t.operator.as_deref(),
            &["Equal", "Exists"],
            &mut causes,
        );
        validation::supported(
            &format!("{tp}.effect"),
            t.effect.as_deref().filter(|e| !e.is_empty()),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            &mut causes,
        );
        if t.operator.as_deref() == Some("Exists")
            && t.value.as_deref().is_some_and(|v| !v.is_empty())
        {
            causes.push(FieldCause::invalid(
                format!("{tp}.operator"),
                t.value.as_deref().unwrap_or(""),
                "value must be empty when `operator` is 'Exists'",
            ));
        }
    }
    causes
}

/// Validates a pod template: its labels and its pod spec, under `path` (e.g. `spec.template`).
pub fn validate_template(t: &PodTemplateSpec, path: &str) -> Vec<FieldCause> {
    let mut causes = vec![];
    let labels = t.metadata.as_ref().and_then(|m| m.labels.as_ref());
    for (k, v) in labels.into_iter().flatten() {
        if !validation::is_qualified_name(k) || !validation::is_label_value(v) {
            causes.push(FieldCause::invalid(format!("{path}.metadata.labels"), if validation::is_qualified_name(k) { v } else { k }, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        }
    }
    match &t.spec {
        Some(spec) => causes.extend(validate_pod_spec(spec, &format!("{path}.spec"))),
        None => causes.push(FieldCause::required(format!("{path}.spec.containers"))),
    }
    causes
}

/// Upstream's QoS class of a pod spec: `BestEffort`, `Burstable` or `Guaranteed` (cpu and
/// memory of all containers).
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let mut requests: BTreeMap<&str, f64> = BTreeMap::new();
    let mut limits: BTreeMap<&str, f64> = BTreeMap::new();
    let mut guaranteed = true;
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let r = c.resources.as_ref();
        for (name, q) in r.and_then(|r| r.requests.as_ref()).into_iter().flatten() {
            if let Some(v) =
                parse_quantity(&q.0).filter(|v| *v > 0.0 && (name == "cpu" || name == "memory"))
            {
                *requests.entry(name.as_str()).or_default() += v;
            }
        }
        let mut found = HashSet::new();
        for (name, q) in r.and_then(|r| r.limits.as_ref()).into_iter().flatten() {
            if let Some(v) =
                parse_quantity(&q.0).filter(|v| *v > 0.0 && (name == "cpu" || name == "memory"))
            {
                found.insert(name.as_str());
                *limits.entry(name.as_str()).or_default() += v;
            }
        }
        if !(found.contains("cpu") && found.contains("memory")) {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    let equal = requests
        .iter()
        .all(|(k, v)| limits.get(k).is_some_and(|l| (l - v).abs() < 1e-9));
    if guaranteed && equal && requests.len() == limits.len() {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The CONTAINERS and IMAGES cells of a workload row (names and images joined by commas).
pub fn container_cells(spec: Option<&PodSpec>) -> (String, String) {
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or(""))
        .collect();
    (names.join(","), images.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(
            default_pull_policy("localhost:5000/nginx:1"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("nginx@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&spec(json!({"containers": [{"name": "a"}]}))),
            "BestEffort"
        );
        let g = json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&spec(g)), "Guaranteed");
        let b = json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]});
        assert_eq!(qos_class(&spec(b)), "Burstable");
    }

    #[test]
    fn spec_validation_finds_the_essentials() {
        let s = spec(
            json!({"containers": [{"name": "A", "ports": [{"containerPort": 70000}]}, {"name": "b", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}], "restartPolicy": "Sometimes"}),
        );
        let fields: Vec<String> = validate_pod_spec(&s, "spec")
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert!(fields.contains(&"spec.containers[0].name".to_string()));
        assert!(fields.contains(&"spec.containers[0].image".to_string()));
        assert!(fields.contains(&"spec.containers[0].ports[0].containerPort".to_string()));
        assert!(fields.contains(&"spec.containers[1].volumeMounts[0].name".to_string()));
        assert!(fields.contains(&"spec.restartPolicy".to_string()));
        assert!(
            validate_pod_spec(&spec(json!({"containers": []})), "spec")
                .iter()
                .any(|c| c.field == "spec.containers")
        );
    }
}
