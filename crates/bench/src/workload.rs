//! The objects the API benchmark creates: realistic pods (one container with image, ports,
//! env, resources, labels), or ConfigMaps of a similar size.

use serde_json::{Value, json};

/// Which resource the API benchmark writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// core/v1 Pod (about 1.5 KB of JSON).
    Pod,
    /// core/v1 ConfigMap of a similar size.
    Configmap,
}

impl Kind {
    /// The plural resource name in URLs.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Configmap => "configmaps",
        }
    }

    /// Human name, plural.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Configmap => "ConfigMaps",
        }
    }

    /// The collection URL in `namespace`.
    pub fn collection(self, namespace: &str) -> String {
        format!("/api/v1/namespaces/{namespace}/{}", self.plural())
    }

    /// The JSON body of object `name` number `i`.
    pub fn object(self, namespace: &str, name: &str, i: usize) -> Value {
        let labels = json!({
            "app": "bench-web",
            "tier": "frontend",
            "release": "stable",
            "shard": format!("s{}", i % 16),
        });
        match self {
            Kind::Pod => json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": {"bench.corten.dev/generation": "1", "prometheus.io/scrape": "true"},
                },
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": "registry.example.com/team/web-frontend:1.27.3",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/usr/local/bin/web"],
                        "args": ["--listen=:8080", "--metrics=:9090", "--log-level=info"],
                        "ports": [
                            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
                        ],
                        "env": [
                            {"name": "APP_ENV", "value": "production"},
                            {"name": "APP_REGION", "value": "eu-west-1"},
                            {"name": "APP_REPLICA", "value": format!("{i}")},
                            {"name": "DATABASE_URL", "value": "postgres://web@db.default.svc:5432/web"},
                            {"name": "CACHE_URL", "value": "redis://cache.default.svc:6379/0"},
                            {"name": "FEATURE_FLAGS", "value": "new-checkout,fast-search,dark-mode"}
                        ],
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "128Mi"},
                            "limits": {"cpu": "500m", "memory": "256Mi"}
                        },
                        "readinessProbe": {
                            "httpGet": {"path": "/healthz", "port": 8080},
                            "periodSeconds": 10
                        }
                    }],
                    "restartPolicy": "Always",
                    "terminationGracePeriodSeconds": 30
                }
            }),
            Kind::Configmap => json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "data": {
                    "index": format!("{i}"),
                    "app.properties": "listen=:8080\nmetrics=:9090\nlog.level=info\nregion=eu-west-1\n".repeat(10),
                    "features": "new-checkout,fast-search,dark-mode,".repeat(12),
                }
            }),
        }
    }

    /// The serialized body of object `name` number `i`.
    pub fn body(self, namespace: &str, name: &str, i: usize) -> Vec<u8> {
        // Serializing a `Value` cannot fail (string keys only).
        serde_json::to_vec(&self.object(namespace, name, i)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_one_to_two_kilobytes() {
        for kind in [Kind::Pod, Kind::Configmap] {
            let len = kind.body("bench", "bench-000001", 1).len();
            assert!((1000..=2048).contains(&len), "{kind:?}: {len} bytes");
        }
    }
}
