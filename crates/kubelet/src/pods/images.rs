//! Images for containers: imagePullPolicy (Always, IfNotPresent, Never), CRI PullImage with
//! the pod's imagePullSecrets as registry credentials, and the Pulling / Pulled / Failed /
//! ErrImageNeverPull events.

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::ResourceExt;
use kube::api::Api;

use super::Shared;
use crate::events::Kind;
use crate::runtime::cri;

/// Makes sure the container's image is present. Returns the image's numeric user when it has
/// one (for runAsNonRoot), or the waiting reason and message when it cannot.
pub async fn ensure(
    shared: &Shared,
    pod: &Pod,
    c: &Container,
    path: Option<String>,
) -> Result<Option<i64>, (String, String)> {
    let image = c.image.clone().unwrap_or_default();
    let policy = c
        .image_pull_policy
        .clone()
        .unwrap_or_else(|| "IfNotPresent".into());
    let mut images = shared.cri.images.clone();
    let present = images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .ok()
        .and_then(|r| r.into_inner().image);
    // An image without a user runs as root; a user name (not a number) cannot be checked.
    let uid_of = |i: &cri::Image| match (&i.uid, i.username.is_empty()) {
        (Some(u), _) => Some(u.value),
        (None, true) => Some(0),
        (None, false) => None,
    };
    match (&present, policy.as_str()) {
        (Some(i), "IfNotPresent" | "Never") => {
            shared.events.pod(
                pod,
                path,
                Kind::Normal,
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            );
            return Ok(uid_of(i));
        }
        (None, "Never") => {
            let message =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            shared.events.pod(
                pod,
                path,
                Kind::Warning,
                "ErrImageNeverPull",
                message.clone(),
            );
            return Err(("ErrImageNeverPull".into(), message));
        }
        _ => {}
    }
    shared.events.pod(
        pod,
        path.clone(),
        Kind::Normal,
        "Pulling",
        format!("Pulling image \"{image}\""),
    );
    let started = std::time::Instant::now();
    let auth = pull_auth(shared, pod, &image).await;
    match images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            auth,
            sandbox_config: None,
        })
        .await
    {
        Ok(_) => {
            shared.events.pod(
                pod,
                path,
                Kind::Normal,
                "Pulled",
                format!(
                    "Successfully pulled image \"{image}\" in {:.3}s",
                    started.elapsed().as_secs_f64()
                ),
            );
            let uid = images
                .image_status(cri::ImageStatusRequest {
                    image: Some(cri::ImageSpec {
                        image,
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await
                .ok()
                .and_then(|r| r.into_inner().image)
                .and_then(|i| uid_of(&i));
            Ok(uid)
        }
        Err(s) => {
            let message = format!("Failed to pull image \"{image}\": {}", s.message());
            shared
                .events
                .pod(pod, path.clone(), Kind::Warning, "Failed", message.clone());
            // With the image still there (policy Always), the container can run.
            if let Some(i) = present {
                return Ok(uid_of(&i));
            }
            Err(("ErrImagePull".into(), message))
        }
    }
}

/// Registry credentials for `image` from the pod's imagePullSecrets (dockerconfigjson).
async fn pull_auth(shared: &Shared, pod: &Pod, image: &str) -> Option<cri::AuthConfig> {
    let registry = registry_of(image);
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(shared.client.clone(), &ns);
    for r in pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
    {
        let Ok(Some(secret)) = api.get_opt(&r.name).await else {
            continue;
        };
        let data = secret.data.unwrap_or_default();
        let Some(raw) = data.get(".dockerconfigjson").or(data.get(".dockercfg")) else {
            continue;
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&raw.0) else {
            continue;
        };
        let auths = json.get("auths").unwrap_or(&json);
        let Some(map) = auths.as_object() else {
            continue;
        };
        for (server, entry) in map {
            let host = server
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or("");
            if host != registry && !(registry == "docker.io" && host == "index.docker.io") {
                continue;
            }
            let mut auth = cri::AuthConfig {
                server_address: server.clone(),
                username: entry["username"].as_str().unwrap_or("").into(),
                password: entry["password"].as_str().unwrap_or("").into(),
                auth: entry["auth"].as_str().unwrap_or("").into(),
                ..Default::default()
            };
            if auth.username.is_empty()
                && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(&auth.auth)
                && let Some((u, p)) = String::from_utf8_lossy(&decoded).split_once(':')
            {
                auth.username = u.into();
                auth.password = p.into();
            }
            return Some(auth);
        }
    }
    None
}

/// The registry host of an image reference (docker.io when it names none).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::registry_of;

    #[test]
    fn registries() {
        assert_eq!(registry_of("nginx:1.22"), "docker.io");
        assert_eq!(registry_of("library/nginx"), "docker.io");
        assert_eq!(registry_of("registry.k8s.io/pause:3.10"), "registry.k8s.io");
        assert_eq!(registry_of("localhost:5000/app"), "localhost:5000");
    }
}
