//! A pod's CRI sandbox config: metadata and labels that let the agent find it again, hostname,
//! DNS (dnsPolicy and dnsConfig), host ports, namespaces (hostNetwork, hostPID, hostIPC,
//! shareProcessNamespace) and the log directory.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::runtime::cri;

/// Label carrying the pod's UID on sandboxes and containers (as upstream's kubelet sets it).
pub const LABEL_POD_UID: &str = crate::runtime::POD_UID_LABEL;
/// Label carrying the pod's name.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
/// Label carrying the pod's namespace.
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Label carrying a container's name.
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// The cluster DNS settings pods with dnsPolicy ClusterFirst get.
#[derive(Debug, Clone)]
pub struct ClusterDns {
    /// The DNS service address.
    pub server: String,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
}

/// The labels that tie a sandbox or container to its pod.
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_POD_UID.to_string(), pod.uid().unwrap_or_default()),
        (LABEL_POD_NAME.to_string(), pod.name_any()),
        (
            LABEL_POD_NAMESPACE.to_string(),
            pod.namespace().unwrap_or_default(),
        ),
    ])
}

/// Where the pod's container logs go (upstream: /var/log/pods/NS_NAME_UID).
pub fn log_directory(logs_root: &std::path::Path, pod: &Pod) -> std::path::PathBuf {
    logs_root.join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ))
}

/// The sandbox config for `pod`, attempt `attempt`.
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    logs_root: &std::path::Path,
    dns: &ClusterDns,
) -> cri::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let mut labels = pod_labels(pod);
    for (k, v) in pod.labels() {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let annotations: HashMap<String, String> = pod
        .annotations()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| cri::PortMapping {
            protocol: protocol(p.protocol.as_deref()),
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let mode = |host: bool| {
        if host {
            cri::NamespaceMode::Node as i32
        } else {
            cri::NamespaceMode::Pod as i32
        }
    };
    let pid_mode = if spec.host_pid.unwrap_or(false) {
        cri::NamespaceMode::Node as i32
    } else if spec.share_process_namespace.unwrap_or(false) {
        cri::NamespaceMode::Pod as i32
    } else {
        cri::NamespaceMode::Container as i32
    };
    let security = spec.security_context.clone().unwrap_or_default();
    let privileged = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        });
    let sysctls = security
        .sysctls
        .iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            namespace: pod.namespace().unwrap_or_default(),
            attempt,
        }),
        hostname: if host_network {
            String::new()
        } else {
            spec.hostname.clone().unwrap_or_else(|| pod.name_any())
        },
        log_directory: log_directory(logs_root, pod).to_string_lossy().into_owned(),
        dns_config: dns_config(pod, dns),
        port_mappings,
        labels,
        annotations,
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: mode(host_network),
                    pid: pid_mode,
                    ipc: mode(spec.host_ipc.unwrap_or(false)),
                    ..Default::default()
                }),
                run_as_user: security.run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: security.run_as_group.map(|value| cri::Int64Value { value }),
                supplemental_groups: security.supplemental_groups.clone().unwrap_or_default(),
                privileged,
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn protocol(p: Option<&str>) -> i32 {
    match p {
        Some("UDP") => cri::Protocol::Udp as i32,
        Some("SCTP") => cri::Protocol::Sctp as i32,
        _ => cri::Protocol::Tcp as i32,
    }
}

/// The resolver config the pod's dnsPolicy and dnsConfig ask for (upstream's rules).
pub fn dns_config(pod: &Pod, dns: &ClusterDns) -> Option<cri::DnsConfig> {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let mut config = if cluster {
        cri::DnsConfig {
            servers: vec![dns.server.clone()],
            searches: vec![
                format!("{ns}.svc.{}", dns.domain),
                format!("svc.{}", dns.domain),
                dns.domain.clone(),
            ],
            options: vec!["ndots:5".into()],
        }
    } else if policy == "None" {
        cri::DnsConfig::default()
    } else {
        host_resolv_conf()
    };
    if let Some(extra) = &spec.dns_config {
        for s in extra.nameservers.iter().flatten() {
            if !config.servers.contains(s) {
                config.servers.push(s.clone());
            }
        }
        for s in extra.searches.iter().flatten() {
            if !config.searches.contains(s) {
                config.searches.push(s.clone());
            }
        }
        for o in extra.options.iter().flatten() {
            let name = &o.name;
            config
                .options
                .retain(|existing| existing.split(':').next() != name.as_deref());
            if let Some(name) = name {
                config.options.push(match &o.value {
                    Some(v) => format!("{name}:{v}"),
                    None => name.clone(),
                });
            }
        }
    }
    if host_network && !cluster && spec.dns_config.is_none() {
        // The host's own resolv.conf, unchanged.
        return None;
    }
    Some(config)
}

fn host_resolv_conf() -> cri::DnsConfig {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut config = cri::DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => config.servers.extend(words.map(String::from)),
            Some("search") => config.searches.extend(words.map(String::from)),
            Some("options") => config.options.extend(words.map(String::from)),
            _ => {}
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn dns() -> ClusterDns {
        ClusterDns {
            server: "10.43.0.10".into(),
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn cluster_first_gets_cluster_dns() {
        let c = dns_config(&pod(serde_json::json!({"containers": []})), &dns()).unwrap();
        assert_eq!(c.servers, vec!["10.43.0.10"]);
        assert_eq!(
            c.searches,
            vec![
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(c.options, vec!["ndots:5"]);
    }

    #[test]
    fn none_policy_takes_only_dns_config() {
        let c = dns_config(
            &pod(serde_json::json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["1.2.3.4"], "searches": ["x.y"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]
            }})),
            &dns(),
        )
        .unwrap();
        assert_eq!(c.servers, vec!["1.2.3.4"]);
        assert_eq!(c.searches, vec!["x.y"]);
        assert_eq!(c.options, vec!["ndots:2", "edns0"]);
    }

    #[test]
    fn dns_config_option_overrides_ndots() {
        let c = dns_config(
            &pod(serde_json::json!({"containers": [], "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}})),
            &dns(),
        )
        .unwrap();
        assert_eq!(c.options, vec!["ndots:1"]);
    }

    #[test]
    fn host_network_uses_host_resolver_and_node_namespace() {
        let p = pod(serde_json::json!({"containers": [], "hostNetwork": true}));
        assert!(dns_config(&p, &dns()).is_none());
        let config = sandbox_config(&p, 0, std::path::Path::new("/logs"), &dns());
        let ns = config
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
        assert_eq!(config.log_directory, "/logs/shop_web_u1");
    }
}
