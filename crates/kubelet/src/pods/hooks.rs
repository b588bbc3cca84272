//! Container lifecycle hooks: postStart right after a container starts, preStop before it is
//! stopped (exec, httpGet or sleep handlers).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use kube::ResourceExt;

use super::Shared;
use crate::runtime::cri;

/// Runs the postStart hook, if any; `Err` carries the FailedPostStartHook message.
pub async fn post_start(shared: &Shared, pod: &Pod, c: &Container, id: &str) -> Result<(), String> {
    let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
        return Ok(());
    };
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    run(shared, h, id, &ip, Duration::from_secs(30))
        .await
        .map_err(|e| format!("PostStartHook failed: {e} (pod {})", pod.name_any()))
}

/// Runs the preStop hook, if any, within `grace`; failures are logged (the container is
/// stopped regardless, as upstream does).
pub async fn pre_stop(
    shared: &Shared,
    pod: &Pod,
    c: &Container,
    id: &str,
    ip: &str,
    grace: Duration,
) {
    let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
        return;
    };
    match tokio::time::timeout(grace, run(shared, h, id, ip, grace)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::info!(pod = %pod.name_any(), container = %c.name, "preStop hook failed: {e}")
        }
        Err(_) => {
            tracing::info!(pod = %pod.name_any(), container = %c.name, "preStop hook did not finish within the grace period")
        }
    }
}

async fn run(
    shared: &Shared,
    h: &LifecycleHandler,
    id: &str,
    ip: &str,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(e) = &h.exec {
        let r = shared
            .cri
            .runtime
            .clone()
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: e.command.clone().unwrap_or_default(),
                timeout: timeout.as_secs() as i64,
            })
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        if r.exit_code != 0 {
            return Err(format!(
                "command {:?} exited with {}: {}",
                e.command.clone().unwrap_or_default(),
                r.exit_code,
                String::from_utf8_lossy(&r.stdout)
            ));
        }
        return Ok(());
    }
    if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
        return Ok(());
    }
    if let Some(g) = &h.http_get {
        let probe = k8s_openapi::api::core::v1::Probe {
            http_get: Some(g.clone()),
            ..Default::default()
        };
        let target = super::probes::ProbeTarget {
            cri: shared.cri.clone(),
            container_id: id.to_string(),
            pod_ip: ip.to_string(),
            pod: Pod::default(),
            container: Container::default(),
            events: shared.events.clone(),
            wake: Default::default(),
        };
        return super::probes::probe_once(&target, &probe, timeout).await;
    }
    Ok(())
}
