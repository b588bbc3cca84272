//! A container's CRI config: command and args with `$(VAR)` expansion, env from every source
//! (value, configMapKeyRef, secretKeyRef, fieldRef, resourceFieldRef, envFrom with prefix,
//! optional refs), resources as cgroup settings, and the security context.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::sandbox::{LABEL_CONTAINER_NAME, pod_labels};
use crate::runtime::cri;

/// Why a container's config cannot be built (the pod shows CreateContainerConfigError).
#[derive(Debug)]
pub struct ConfigError(pub String);

/// What env resolution needs to know beyond the pod.
pub struct EnvContext<'a> {
    /// The API client (ConfigMaps, Secrets).
    pub client: &'a Client,
    /// The node's address (status.hostIP).
    pub host_ip: &'a str,
    /// The pod's address (status.podIP).
    pub pod_ip: &'a str,
    /// The node's allocatable cpu (cores) and memory (bytes): the default for unset limits.
    pub node_allocatable: (f64, f64),
}

/// Resolves the container's environment in upstream's order: envFrom sources, then env
/// entries (which may refer to earlier ones with `$(NAME)`).
pub async fn resolve_env(
    pod: &Pod,
    c: &Container,
    ctx: &EnvContext<'_>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod.namespace().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = env.iter_mut().find(|(name, _)| *name == k) {
            e.1 = v;
        } else {
            env.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match get_config_map(ctx.client, &ns, &r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut env, format!("{prefix}{k}"), v);
                    }
                }
                None if optional => {}
                None => return Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match get_secret(ctx.client, &ns, &r.name).await? {
                Some(s) => {
                    for (k, v) in secret_strings(&s) {
                        set(&mut env, format!("{prefix}{k}"), v);
                    }
                }
                None if optional => {}
                None => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            let map: HashMap<String, String> = env.iter().cloned().collect();
            expand(v, &map)
        } else if let Some(src) = &e.value_from {
            if let Some(r) = &src.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                let found = get_config_map(ctx.client, &ns, &r.name)
                    .await?
                    .and_then(|cm| cm.data.and_then(|d| d.get(&r.key).cloned()));
                match found {
                    Some(v) => v,
                    None if optional => continue,
                    None => {
                        return Err(ConfigError(format!(
                            "couldn't find key {} in ConfigMap {ns}/{}",
                            r.key, r.name
                        )));
                    }
                }
            } else if let Some(r) = &src.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                let found = get_secret(ctx.client, &ns, &r.name)
                    .await?
                    .and_then(|s| secret_strings(&s).remove(&r.key));
                match found {
                    Some(v) => v,
                    None if optional => continue,
                    None => {
                        return Err(ConfigError(format!(
                            "couldn't find key {} in Secret {ns}/{}",
                            r.key, r.name
                        )));
                    }
                }
            } else if let Some(f) = &src.field_ref {
                field_value(pod, &f.field_path, ctx)
                    .ok_or_else(|| ConfigError(format!("unsupported fieldRef {}", f.field_path)))?
            } else if let Some(r) = &src.resource_field_ref {
                resource_value(pod, c, r, ctx)?
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut env, e.name.clone(), value);
    }
    Ok(env)
}

/// The value a downward-API `fieldPath` names, if it is one the agent knows.
pub fn field_value(pod: &Pod, path: &str, ctx: &EnvContext<'_>) -> Option<String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let key_of = |prefix: &str| {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    Some(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "metadata.labels" => render_map(pod.labels()),
        "metadata.annotations" => render_map(pod.annotations()),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.to_string(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.to_string(),
        _ => {
            if let Some(k) = key_of("metadata.labels['") {
                pod.labels().get(&k).cloned().unwrap_or_default()
            } else if let Some(k) = key_of("metadata.annotations['") {
                pod.annotations().get(&k).cloned().unwrap_or_default()
            } else {
                return None;
            }
        }
    })
}

/// `key="value"` lines, sorted, as the downward API writes label and annotation files.
pub fn render_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A resourceFieldRef's value (limits default to the node's allocatable), in divisor units,
/// rounded up as upstream does.
pub fn resource_value(
    pod: &Pod,
    default_container: &Container,
    r: &k8s_openapi::api::core::v1::ResourceFieldSelector,
    ctx: &EnvContext<'_>,
) -> Result<String, ConfigError> {
    let container = match &r.container_name {
        Some(name) if !name.is_empty() => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| &c.name == name))
            .unwrap_or(default_container),
        _ => default_container,
    };
    let res = container.resources.clone().unwrap_or_default();
    let get =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| {
            m.as_ref()
                .and_then(|m| m.get(k))
                .and_then(|q| api::resources::validation::parse_quantity(&q.0))
        };
    let (cpu, mem) = ctx.node_allocatable;
    let value = match r.resource.as_str() {
        "limits.cpu" => get(&res.limits, "cpu").unwrap_or(cpu),
        "requests.cpu" => get(&res.requests, "cpu").unwrap_or(0.0),
        "limits.memory" => get(&res.limits, "memory").unwrap_or(mem),
        "requests.memory" => get(&res.requests, "memory").unwrap_or(0.0),
        "limits.ephemeral-storage" => get(&res.limits, "ephemeral-storage").unwrap_or(0.0),
        "requests.ephemeral-storage" => get(&res.requests, "ephemeral-storage").unwrap_or(0.0),
        other => return Err(ConfigError(format!("unsupported resourceFieldRef {other}"))),
    };
    let divisor = r
        .divisor
        .as_ref()
        .and_then(|d| api::resources::validation::parse_quantity(&d.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Ok(format!("{}", (value / divisor).ceil() as i64))
}

/// Upstream's `$(VAR)` expansion: `$$` escapes, unknown references stay as written.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if bytes[i + 1] == b'('
                && let Some(end) = s[i + 2..].find(')')
            {
                let name = &s[i + 2..i + 2 + end];
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&s[i..i + 3 + end]),
                }
                i += 3 + end;
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

async fn get_config_map(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<ConfigMap>, ConfigError> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| ConfigError(format!("reading configmap {name}: {e}")))
}

async fn get_secret(client: &Client, ns: &str, name: &str) -> Result<Option<Secret>, ConfigError> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| ConfigError(format!("reading secret {name}: {e}")))
}

/// A Secret's data (and stringData) as strings.
pub fn secret_strings(s: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// cgroup settings from the container's requests and limits (upstream's formulas: shares =
/// milliCPU * 1024 / 1000, minimum 2; quota = milliCPU * period / 1000 with a 100 ms period).
pub fn linux_resources(c: &Container) -> cri::LinuxContainerResources {
    let res = c.resources.clone().unwrap_or_default();
    let q =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| {
            m.as_ref()
                .and_then(|m| m.get(k))
                .and_then(|q| api::resources::validation::parse_quantity(&q.0))
        };
    let cpu_request = q(&res.requests, "cpu").or(q(&res.limits, "cpu"));
    let cpu_limit = q(&res.limits, "cpu");
    let memory_limit = q(&res.limits, "memory");
    let shares = cpu_request.map_or(2, |cpu| ((cpu * 1024.0).round() as i64).max(2));
    let period = 100_000;
    cri::LinuxContainerResources {
        cpu_shares: shares,
        cpu_period: if cpu_limit.is_some() { period } else { 0 },
        cpu_quota: cpu_limit.map_or(0, |cpu| ((cpu * period as f64).round() as i64).max(1000)),
        memory_limit_in_bytes: memory_limit.map_or(0, |m| m as i64),
        ..Default::default()
    }
}

/// The container's CRI config; `env` and `mounts` come resolved.
pub fn container_config(
    pod: &Pod,
    c: &Container,
    attempt: u32,
    env: Vec<(String, String)>,
    mounts: Vec<cri::Mount>,
) -> cri::ContainerConfig {
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let sc = c.security_context.clone().unwrap_or_default();
    let pod_sc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let mut labels = pod_labels(pod);
    labels.insert(LABEL_CONTAINER_NAME.into(), c.name.clone());
    let caps = sc.capabilities.clone().unwrap_or_default();
    let privileged = sc.privileged.unwrap_or(false);
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: c
            .command
            .iter()
            .flatten()
            .map(|s| expand(s, &vars))
            .collect(),
        args: c.args.iter().flatten().map(|s| expand(s, &vars)).collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts,
        labels,
        annotations: HashMap::from([(
            "io.kubernetes.container.restartCount".to_string(),
            attempt.to_string(),
        )]),
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(linux_resources(c)),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: caps.add.unwrap_or_default(),
                    drop_capabilities: caps.drop.unwrap_or_default(),
                    ..Default::default()
                }),
                privileged,
                namespace_options: Some(cri::NamespaceOption {
                    network: if pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.host_network)
                        .unwrap_or(false)
                    {
                        cri::NamespaceMode::Node as i32
                    } else {
                        cri::NamespaceMode::Pod as i32
                    },
                    pid: if pod.spec.as_ref().and_then(|s| s.host_pid).unwrap_or(false) {
                        cri::NamespaceMode::Node as i32
                    } else if pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.share_process_namespace)
                        .unwrap_or(false)
                    {
                        cri::NamespaceMode::Pod as i32
                    } else {
                        cri::NamespaceMode::Container as i32
                    },
                    ipc: if pod.spec.as_ref().and_then(|s| s.host_ipc).unwrap_or(false) {
                        cri::NamespaceMode::Node as i32
                    } else {
                        cri::NamespaceMode::Pod as i32
                    },
                    ..Default::default()
                }),
                run_as_user: sc
                    .run_as_user
                    .or(pod_sc.run_as_user)
                    .map(|value| cri::Int64Value { value }),
                run_as_group: sc
                    .run_as_group
                    .or(pod_sc.run_as_group)
                    .map(|value| cri::Int64Value { value }),
                readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
                supplemental_groups: pod_sc.supplemental_groups.clone().unwrap_or_default(),
                no_new_privs: !privileged && sc.allow_privilege_escalation == Some(false),
                masked_paths: if privileged {
                    vec![]
                } else {
                    default_masked_paths()
                },
                readonly_paths: if privileged {
                    vec![]
                } else {
                    default_readonly_paths()
                },
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// Paths hidden from unprivileged containers (upstream's defaults).
fn default_masked_paths() -> Vec<String> {
    [
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Paths read-only in unprivileged containers (upstream's defaults).
fn default_readonly_paths() -> Vec<String> {
    [
        "/proc/asound",
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// runAsNonRoot: the user the container would run as must not be root.
pub fn check_non_root(pod: &Pod, c: &Container, image_uid: Option<i64>) -> Result<(), ConfigError> {
    let sc = c.security_context.clone().unwrap_or_default();
    let pod_sc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    if !sc
        .run_as_non_root
        .or(pod_sc.run_as_non_root)
        .unwrap_or(false)
    {
        return Ok(());
    }
    match sc.run_as_user.or(pod_sc.run_as_user).or(image_uid) {
        Some(0) => Err(ConfigError(
            "container has runAsNonRoot and image will run as root".into(),
        )),
        Some(_) => Ok(()),
        None => Err(ConfigError(
            "container has runAsNonRoot and image has non-numeric user, cannot verify user is non-root".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_upstream() {
        let vars = HashMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("x$(A)y", &vars), "x1y");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("cost $5", &vars), "cost $5");
        assert_eq!(expand("é$(A)", &vars), "é1");
    }

    #[test]
    fn cpu_and_memory_become_cgroup_settings() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}
        }))
        .unwrap();
        let r = linux_resources(&c);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        let none: Container = serde_json::from_value(serde_json::json!({"name": "c"})).unwrap();
        assert_eq!(linux_resources(&none).cpu_shares, 2);
    }
}
