//! Resource arithmetic: what a pod requests and what a node offers, in integer units
//! (millicores for cpu, bytes for memory), as upstream's `framework.Resource`.
//!
//! A pod's requests follow upstream's `resourcehelper.PodRequests`: the sum of its containers
//! (restartable init containers — sidecars — included), at least the largest init container
//! (plus the sidecars started before it), plus the pod's overhead.

use std::collections::BTreeMap;

use api::resources::validation::parse_quantity;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The cpu request assumed for scoring a container that requests none (upstream's
/// `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory request assumed for scoring a container that requests none (200 MiB, upstream's
/// `DefaultMemoryRequest`).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of resources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// How many pods (only meaningful for a node's allocatable).
    pub pods: i64,
    /// Other resources (extended resources, hugepages), in their integer units.
    pub scalar: BTreeMap<String, i64>,
}

/// A quantity in integer units: millicores when `milli`, otherwise the unit itself, rounded up
/// as upstream's `Quantity.Value()` / `MilliValue()` do.
pub fn quantity_value(q: &Quantity, milli: bool) -> i64 {
    let v = parse_quantity(&q.0).unwrap_or(0.0);
    let v = if milli { v * 1000.0 } else { v };
    // Tolerate float noise (0.1 * 1000 = 100.00000000000001).
    let rounded = v.round();
    if (v - rounded).abs() < 1e-6 {
        rounded as i64
    } else {
        v.ceil() as i64
    }
}

impl Resource {
    /// Resources from a resource list (`requests`, `allocatable`, `overhead`).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut r = Resource::default();
        for (name, q) in list.into_iter().flatten() {
            match name.as_str() {
                "cpu" => r.milli_cpu = quantity_value(q, true),
                "memory" => r.memory = quantity_value(q, false),
                "ephemeral-storage" => r.ephemeral_storage = quantity_value(q, false),
                "pods" => r.pods = quantity_value(q, false),
                _ => {
                    r.scalar.insert(name.clone(), quantity_value(q, false));
                }
            }
        }
        r
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Raises every amount of `self` to at least `other`'s.
    pub fn set_max(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

fn container_requests(c: &Container) -> Resource {
    Resource::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// Like [`container_requests`] but with upstream's non-zero defaults for cpu and memory
/// (used by scoring, so that pods without requests still spread).
fn container_non_zero_requests(c: &Container) -> Resource {
    let mut r = container_requests(c);
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    if !requests.is_some_and(|m| m.contains_key("cpu")) {
        r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
    }
    if !requests.is_some_and(|m| m.contains_key("memory")) {
        r.memory = DEFAULT_MEMORY_REQUEST;
    }
    r
}

fn pod_requests_with(pod: &Pod, per_container: fn(&Container) -> Resource) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let mut reqs = Resource::default();
    for c in &spec.containers {
        reqs.add(&per_container(c));
    }
    let mut sidecars = Resource::default();
    let mut init_max = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let r = per_container(c);
        if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            sidecars.add(&r);
            init_max.set_max(&sidecars);
        } else {
            let mut with_sidecars = r;
            with_sidecars.add(&sidecars);
            init_max.set_max(&with_sidecars);
        }
    }
    reqs.set_max(&init_max);
    reqs.add(&Resource::from_list(spec.overhead.as_ref()));
    reqs.pods = 0;
    reqs
}

/// What `pod` requests (containers, init containers, overhead).
pub fn pod_requests(pod: &Pod) -> Resource {
    pod_requests_with(pod, container_requests)
}

/// What `pod` requests, with cpu and memory defaulted per container when unset.
pub fn pod_non_zero_requests(pod: &Pod) -> Resource {
    pod_requests_with(pod, container_non_zero_requests)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    /// A container named `name` requesting `cpu` and `memory` (empty: not requested).
    pub fn container(name: &str, cpu: &str, memory: &str) -> Container {
        let mut requests = BTreeMap::new();
        if !cpu.is_empty() {
            requests.insert("cpu".to_string(), Quantity(cpu.into()));
        }
        if !memory.is_empty() {
            requests.insert("memory".to_string(), Quantity(memory.into()));
        }
        Container {
            name: name.into(),
            resources: Some(ResourceRequirements {
                requests: Some(requests),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                init_containers: Some(init),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn quantities_round_up_like_upstream() {
        assert_eq!(quantity_value(&Quantity("100m".into()), true), 100);
        assert_eq!(quantity_value(&Quantity("0.1".into()), true), 100);
        assert_eq!(quantity_value(&Quantity("1".into()), true), 1000);
        assert_eq!(quantity_value(&Quantity("1.5m".into()), true), 2);
        assert_eq!(quantity_value(&Quantity("1Gi".into()), false), 1 << 30);
        assert_eq!(quantity_value(&Quantity("1k".into()), false), 1000);
        assert_eq!(quantity_value(&Quantity("1.5".into()), false), 2);
    }

    #[test]
    fn containers_add_init_containers_max() {
        let p = pod(
            vec![container("a", "100m", "1Gi"), container("b", "200m", "")],
            vec![container("i", "1", "512Mi")],
        );
        let r = pod_requests(&p);
        assert_eq!((r.milli_cpu, r.memory), (1000, 1 << 30));
        let nz = pod_non_zero_requests(&p);
        assert_eq!(nz.memory, (1 << 30) + DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn sidecars_add_to_containers_and_to_later_init_containers() {
        let mut sidecar = container("s", "500m", "");
        sidecar.restart_policy = Some("Always".into());
        let p = pod(
            vec![container("a", "100m", "")],
            vec![sidecar, container("i", "1", "")],
        );
        // containers 100m + sidecar 500m = 600m; init i runs beside the sidecar: 1500m.
        assert_eq!(pod_requests(&p).milli_cpu, 1500);
    }

    #[test]
    fn overhead_is_added() {
        let mut p = pod(vec![container("a", "100m", "")], vec![]);
        p.spec.as_mut().unwrap().overhead = Some(BTreeMap::from([(
            "cpu".to_string(),
            Quantity("250m".into()),
        )]));
        assert_eq!(pod_requests(&p).milli_cpu, 350);
    }
}
