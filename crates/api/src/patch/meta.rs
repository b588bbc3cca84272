//! The one table of strategic-merge-patch metadata for the built-in types: which list fields
//! merge (and by which key), which maps retain keys, which fields are replaced whole.
//!
//! Taken from upstream's `+patchStrategy` / `+patchMergeKey` struct tags (k8s.io/api,
//! apimachinery, kube-aggregator), as published in upstream's OpenAPI documents as
//! `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key`. The server's patch code and
//! the OpenAPI documents both read this table, so kubectl and the server agree.

/// Patch metadata of one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PatchMeta {
    /// `merge`, `retainKeys`, `merge,retainKeys` or `replace` (upstream's
    /// `x-kubernetes-patch-strategy`).
    pub strategy: &'static str,
    /// The key that identifies items of a merged list of objects (upstream's
    /// `x-kubernetes-patch-merge-key`); None for merged lists of primitives and for maps.
    pub merge_key: Option<&'static str>,
}

impl PatchMeta {
    /// Whether the list merges (rather than being replaced).
    pub fn merges(&self) -> bool {
        self.strategy.split(',').any(|s| s == "merge")
    }

    /// Whether the field honours `$retainKeys`.
    pub fn retains_keys(&self) -> bool {
        self.strategy.split(',').any(|s| s == "retainKeys")
    }

    /// Whether a map field is replaced whole instead of merged.
    pub fn replaces(&self) -> bool {
        self.strategy == "replace"
    }
}

const fn merge(key: &'static str) -> PatchMeta {
    PatchMeta {
        strategy: "merge",
        merge_key: Some(key),
    }
}
const MERGE_PRIMITIVE: PatchMeta = PatchMeta {
    strategy: "merge",
    merge_key: None,
};
const fn merge_retain(key: &'static str) -> PatchMeta {
    PatchMeta {
        strategy: "merge,retainKeys",
        merge_key: Some(key),
    }
}
const RETAIN_KEYS: PatchMeta = PatchMeta {
    strategy: "retainKeys",
    merge_key: None,
};
const REPLACE: PatchMeta = PatchMeta {
    strategy: "replace",
    merge_key: None,
};

/// Every entry: (OpenAPI definition name, property, metadata), sorted by definition.
static TABLE: &[(&str, &str, PatchMeta)] = &[
    // admissionregistration.k8s.io
    (
        "io.k8s.api.admissionregistration.v1.MutatingWebhook",
        "matchConditions",
        merge("name"),
    ),
    (
        "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration",
        "webhooks",
        merge("name"),
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec",
        "matchConditions",
        merge("name"),
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec",
        "variables",
        merge("name"),
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingWebhook",
        "matchConditions",
        merge("name"),
    ),
    (
        "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration",
        "webhooks",
        merge("name"),
    ),
    (
        "io.k8s.api.admissionregistration.v1alpha1.MutatingAdmissionPolicySpec",
        "matchConditions",
        merge("name"),
    ),
    (
        "io.k8s.api.admissionregistration.v1beta1.ValidatingAdmissionPolicySpec",
        "matchConditions",
        merge("name"),
    ),
    (
        "io.k8s.api.admissionregistration.v1beta1.ValidatingAdmissionPolicySpec",
        "variables",
        merge("name"),
    ),
    // apps
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        merge("type"),
    ),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", RETAIN_KEYS),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        merge("type"),
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        merge("type"),
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        merge("type"),
    ),
    // autoscaling
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        merge("type"),
    ),
    // batch
    ("io.k8s.api.batch.v1.JobStatus", "conditions", merge("type")),
    // core
    (
        "io.k8s.api.core.v1.ComponentStatus",
        "conditions",
        merge("type"),
    ),
    ("io.k8s.api.core.v1.Container", "env", merge("name")),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        merge("containerPort"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        merge("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        merge("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "allocatedResourcesStatus",
        merge("name"),
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "volumeMounts",
        merge("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        merge("name"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        merge("containerPort"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        merge("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        merge("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        merge("type"),
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", MERGE_PRIMITIVE),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", merge("type")),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", merge("type")),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        merge("type"),
    ),
    ("io.k8s.api.core.v1.PodSpec", "containers", merge("name")),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        merge("name"),
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", merge("ip")),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        merge("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        merge("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        merge_retain("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        merge("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        merge("topologyKey"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        merge_retain("name"),
    ),
    ("io.k8s.api.core.v1.PodStatus", "conditions", merge("type")),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", merge("ip")),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", merge("ip")),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        merge_retain("name"),
    ),
    (
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        "conditions",
        merge("type"),
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        merge("name"),
    ),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", merge("port")),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        merge("type"),
    ),
    // flowcontrol.apiserver.k8s.io
    (
        "io.k8s.api.flowcontrol.v1.FlowSchemaStatus",
        "conditions",
        merge("type"),
    ),
    (
        "io.k8s.api.flowcontrol.v1.PriorityLevelConfigurationStatus",
        "conditions",
        merge("type"),
    ),
    // networking.k8s.io
    (
        "io.k8s.api.networking.v1.ServiceCIDRStatus",
        "conditions",
        merge("type"),
    ),
    (
        "io.k8s.api.networking.v1beta1.ServiceCIDRStatus",
        "conditions",
        merge("type"),
    ),
    // policy
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetSpec",
        "selector",
        REPLACE,
    ),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        merge("type"),
    ),
    // resource.k8s.io
    (
        "io.k8s.api.resource.v1alpha3.ResourceClaimStatus",
        "reservedFor",
        merge("uid"),
    ),
    (
        "io.k8s.api.resource.v1beta1.ResourceClaimStatus",
        "reservedFor",
        merge("uid"),
    ),
    (
        "io.k8s.api.resource.v1beta2.ResourceClaimStatus",
        "reservedFor",
        merge("uid"),
    ),
    // storage.k8s.io
    (
        "io.k8s.api.storage.v1.CSINodeSpec",
        "drivers",
        merge("name"),
    ),
    // storagemigration.k8s.io
    (
        "io.k8s.api.storagemigration.v1alpha1.StorageVersionMigrationStatus",
        "conditions",
        merge("type"),
    ),
    // meta
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        MERGE_PRIMITIVE,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        merge("uid"),
    ),
    // apiregistration.k8s.io
    (
        "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIServiceStatus",
        "conditions",
        merge("type"),
    ),
];

/// The patch metadata of `property` in the OpenAPI definition `definition`
/// (e.g. `io.k8s.api.core.v1.PodSpec`, `containers` => merge by `name`).
pub fn patch_meta(definition: &str, property: &str) -> Option<PatchMeta> {
    TABLE
        .iter()
        .find(|(d, p, _)| *d == definition && *p == property)
        .map(|(_, _, m)| *m)
}

/// The whole table, for the OpenAPI documents.
pub fn all_patch_meta() -> &'static [(&'static str, &'static str, PatchMeta)] {
    TABLE
}
