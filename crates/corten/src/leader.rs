//! The parts of `corten server` that must run on one server at a time — the controllers
//! (node IPAM and the service load balancer among them), the scheduler and the datastore
//! compactor — and the leader election that picks that server when several share one etcd
//! (`controllers::leaderelection`, Lease `kube-system/corten-control-plane`). On the embedded
//! store there is no one to share with: they simply run.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;

use crate::parse_duration;

/// The Lease the servers elect their leader through.
pub const LEASE_NAME: &str = "corten-control-plane";

/// Leader election flags (upstream's names and defaults).
#[derive(clap::Args, Clone, Debug)]
pub struct LeaderArgs {
    /// How long the leader's Lease stays valid after its last renewal; another server takes
    /// over this long after the leader stops renewing (`15s`, `500ms`, or seconds).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps leading without renewing its Lease before it stops.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How often servers try to take the Lease, and the leader renews it.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
}

/// What the leader runs.
pub struct Leading {
    /// Run the controller manager.
    pub controller_manager: bool,
    /// The controllers' settings.
    pub controllers: controllers::Config,
    /// Run the scheduler.
    pub scheduler: bool,
    /// The datastore compactor.
    pub compactor: apiserver::Compactor,
}

/// This server's identity among the candidates: the host name and a random suffix, as
/// upstream's `HOSTNAME_UUID`.
pub fn identity() -> String {
    let suffix = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|u| u.trim().to_string())
        .unwrap_or_else(|_| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            format!("{}-{nanos:x}", std::process::id())
        });
    format!("{}_{suffix}", crate::host_name())
}

/// The election settings from the flags, checked.
pub fn config(args: &LeaderArgs) -> anyhow::Result<controllers::leaderelection::Config> {
    let mut config =
        controllers::leaderelection::Config::new("kube-system", LEASE_NAME, &identity());
    config.lease_duration = args.leader_elect_lease_duration;
    config.renew_deadline = args.leader_elect_renew_deadline;
    config.retry_period = args.leader_elect_retry_period;
    if let Err(e) = config.validate() {
        bail!("leader election: {e}");
    }
    Ok(config)
}

/// Runs what the leader runs until `stop` turns true.
async fn lead(client: kube::Client, leading: std::sync::Arc<Leading>, stop: watch::Receiver<bool>) {
    let mut tasks = tokio::task::JoinSet::new();
    if leading.controller_manager {
        tasks.spawn(controllers::run(
            client.clone(),
            leading.controllers.clone(),
            stop.clone(),
        ));
    }
    if leading.scheduler {
        tasks.spawn(scheduler::run(client.clone(), stop.clone()));
    }
    let compactor = leading.compactor.spawn();
    let mut stop = stop;
    let _ = stop.wait_for(|s| *s).await;
    compactor.abort();
    let _ = tokio::time::timeout(Duration::from_secs(4), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

/// Runs the leader's parts: under leader election when `election` is given (a shared
/// datastore), else at once, until `shutdown`.
pub async fn run(
    client: kube::Client,
    leading: Leading,
    election: Option<controllers::leaderelection::Config>,
    shutdown: watch::Receiver<bool>,
) {
    let leading = std::sync::Arc::new(leading);
    match election {
        None => lead(client, leading, shutdown).await,
        Some(config) => {
            let c = client.clone();
            controllers::leaderelection::run(client, config, shutdown, move |stop| {
                lead(c.clone(), leading.clone(), stop)
            })
            .await
        }
    }
}

/// Reads a token file, trimmed.
pub fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?
        .trim()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_upstream_writes_them() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }
}
