//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's
//! `tools/leaderelection` does it, so that of several `corten server`s on one datastore exactly
//! one runs the controllers, the scheduler and the datastore compactor at a time.
//!
//! The algorithm is upstream's:
//! - a candidate reads the Lease every `retry_period`; it takes the Lease when there is none,
//!   when nobody holds it, or when the record has not changed for `lease_duration` as measured
//!   by the candidate's own monotonic clock since it first saw that record (never by comparing
//!   timestamps written by another machine, so clock skew does not matter);
//! - every write is an update at the Lease's resourceVersion, so of two candidates racing for
//!   the same record exactly one wins (the other gets a 409 and keeps waiting);
//! - the leader renews every `retry_period`; when it has not renewed for `renew_deadline`
//!   (the API unreachable, or another holder in the record) it stops leading at once: its
//!   `lead` future is told to stop, awaited for a short grace, then aborted, and it campaigns
//!   again. Since `renew_deadline < lease_duration`, the old leader has stopped before anyone
//!   else may take the Lease;
//! - on a clean shutdown the leader releases the Lease (empty holder, duration 1 s) so that
//!   another server takes over at its next retry instead of after `lease_duration`.
//!
//! One refinement: while campaigning, a candidate also watches the Lease, so that it sees each
//! renewal when it happens rather than at its next poll; the Lease then expires for it at most
//! `lease_duration` after the leader's last renewal, and a dead leader is replaced within
//! `lease_duration` of its death (upstream's polling alone allows up to one retry period more).
//!
//! Why not a crate: `kube-lease-manager` 0.13 (the one built on our kube 5) writes the Lease
//! with server-side apply, which corten's API server does not serve yet, and models a lease as
//! duration + grace rather than upstream's three timings (15 s / 10 s / 2 s) that the flags
//! promise; `kube-leader-election` 0.44 needs kube 4. This takes one small module.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

/// How to elect: which Lease, who we are, and upstream's three timings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Lease's namespace (`kube-system`).
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This candidate's identity, unique among the candidates (`HOSTNAME_SUFFIX`).
    pub identity: String,
    /// How long a Lease stays held after its last renewal (upstream's 15 s).
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal (upstream's 10 s).
    pub renew_deadline: Duration,
    /// How often candidates try to take the Lease and the leader renews it (upstream's 2 s).
    pub retry_period: Duration,
}

impl Config {
    /// Upstream's timings for the given Lease and identity.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks upstream's constraints: `lease_duration > renew_deadline > retry_period > 0`.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_period.is_zero() {
            return Err("the retry period must be positive".into());
        }
        if self.renew_deadline <= self.retry_period {
            return Err("the renew deadline must be longer than the retry period".into());
        }
        if self.lease_duration <= self.renew_deadline {
            return Err("the lease duration must be longer than the renew deadline".into());
        }
        if self.identity.is_empty() {
            return Err("the leader election identity must not be empty".into());
        }
        Ok(())
    }
}

/// What a candidate may do with the record it read.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Write the given spec (take or renew the Lease).
    Write(LeaseSpec),
    /// Someone else holds a live Lease, for at least the given time unless renewed.
    HeldBy(String, Duration),
}

/// The record a candidate last saw, and when (on its own clock) it first saw it.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The Lease's resourceVersion when seen.
    pub resource_version: String,
    /// When that version was first seen.
    pub at: Instant,
}

/// Decides, from the current Lease spec (`None`: no Lease yet) and when its version was first
/// seen, whether `config.identity` may write it, and what to write.
pub fn decide(
    config: &Config,
    current: Option<&LeaseSpec>,
    first_seen: Instant,
    now: Instant,
    wall: Timestamp,
) -> Decision {
    let holder = current
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    let ours = holder == config.identity;
    if !holder.is_empty() && !ours {
        let duration = current
            .and_then(|s| s.lease_duration_seconds)
            .filter(|d| *d > 0)
            .map_or(config.lease_duration, |d| Duration::from_secs(d as u64));
        let age = now.saturating_duration_since(first_seen);
        if age < duration {
            return Decision::HeldBy(holder, duration - age);
        }
    }
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    let (acquire_time, transitions) = match current {
        Some(s) if ours => (s.acquire_time.clone(), transitions),
        Some(_) => (Some(MicroTime(wall)), transitions + 1),
        None => (Some(MicroTime(wall)), 0),
    };
    Decision::Write(LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.lease_duration.as_secs().max(1) as i32),
        acquire_time,
        renew_time: Some(MicroTime(wall)),
        lease_transitions: Some(transitions),
        ..Default::default()
    })
}

/// One candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    config: Config,
    observed: Option<Observed>,
    /// After a failed attempt on a live Lease: how long until it expires unless renewed.
    expires_in: Option<Duration>,
}

impl Elector {
    /// A candidate with `config` through `client`.
    pub fn new(client: Client, config: Config) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            expires_in: None,
        }
    }

    /// One attempt to take or renew the Lease: Ok(true) when we hold it now.
    pub async fn try_acquire_or_renew(&mut self) -> kube::Result<bool> {
        self.expires_in = None;
        let lease = match self.api.get_opt(&self.config.name).await? {
            Some(lease) => lease,
            None => {
                let spec = match decide(
                    &self.config,
                    None,
                    Instant::now(),
                    Instant::now(),
                    Timestamp::now(),
                ) {
                    Decision::Write(spec) => spec,
                    Decision::HeldBy(..) => return Ok(false),
                };
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(created) => {
                        self.observe(&created);
                        Ok(true)
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                };
            }
        };
        let first_seen = self.observe(&lease);
        match decide(
            &self.config,
            lease.spec.as_ref(),
            first_seen,
            Instant::now(),
            Timestamp::now(),
        ) {
            Decision::HeldBy(_, left) => {
                self.expires_in = Some(left);
                Ok(false)
            }
            Decision::Write(spec) => {
                let mut next = lease;
                next.spec = Some(spec);
                match self
                    .api
                    .replace(&self.config.name, &PostParams::default(), &next)
                    .await
                {
                    Ok(written) => {
                        self.observe(&written);
                        Ok(true)
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Records `lease` as seen; returns when its version was first seen.
    pub fn observe(&mut self, lease: &Lease) -> Instant {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        match &self.observed {
            Some(o) if o.resource_version == rv => o.at,
            _ => {
                let now = Instant::now();
                self.observed = Some(Observed {
                    resource_version: rv,
                    at: now,
                });
                now
            }
        }
    }

    /// Gives the Lease up if we hold it (empty holder, 1 s duration), so that another candidate
    /// takes it at its next retry.
    pub async fn release(&mut self) -> kube::Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }
}

/// Campaigns for the Lease until `shutdown`; whenever this candidate leads, runs
/// `lead(stop)`, whose `stop` turns true when leadership is lost (or on shutdown). `lead` gets
/// 5 s to return after that, then it is aborted. Releases the Lease on shutdown.
pub async fn run<F, Fut>(
    client: Client,
    config: Config,
    mut shutdown: watch::Receiver<bool>,
    mut lead: F,
) where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut elector = Elector::new(client.clone(), config.clone());
    let lease = format!("{}/{}", config.namespace, config.name);
    let fields = format!("metadata.name={}", config.name);
    let leases = Api::<Lease>::namespaced(client, &config.namespace);
    // A watch on the Lease while campaigning (dropped while leading).
    let mut renewals = None;
    while !*shutdown.borrow() {
        // Campaign.
        let acquired = match elector.try_acquire_or_renew().await {
            Ok(held) => held,
            Err(e) => {
                tracing::debug!(%lease, error = %e, "cannot read or take the leader lease");
                false
            }
        };
        if !acquired {
            // Wait for the next try (sooner when the Lease expires sooner), seeing every renewal
            // as it happens through a watch: a renewal first seen late would make the Lease
            // look valid for longer than the leader can still hold it.
            let wait = elector
                .expires_in
                .map_or(config.retry_period, |left| left.min(config.retry_period));
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            let renewals = renewals.get_or_insert_with(|| {
                watcher(leases.clone(), watcher::Config::default().fields(&fields))
                    .default_backoff()
                    .touched_objects()
                    .boxed()
            });
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = shutdown.wait_for(|s| *s) => break,
                    event = renewals.next() => match event {
                        Some(Ok(lease)) => { elector.observe(&lease); }
                        Some(Err(_)) => {}
                        None => break,
                    },
                }
            }
            continue;
        }
        renewals = None;
        tracing::info!(%lease, identity = %config.identity, "became the leader");
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut leading = tokio::spawn(lead(stop_rx));
        let mut last_renew = Instant::now();
        let mut finished = false;
        // Renew until the deadline passes without a renewal, or shutdown.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(config.retry_period) => {}
                _ = shutdown.wait_for(|s| *s) => break,
                _ = &mut leading, if !finished => { finished = true; }
            }
            let left = config.renew_deadline.saturating_sub(last_renew.elapsed());
            match tokio::time::timeout(left, elector.try_acquire_or_renew()).await {
                Ok(Ok(true)) => last_renew = Instant::now(),
                Ok(Ok(false)) if elector.expires_in.is_some() => {
                    tracing::warn!(%lease, "the leader lease was taken by another server");
                    break;
                }
                // A conflicting write (e.g. our own, whose answer was lost): retry until the
                // deadline, as upstream does.
                Ok(Ok(false)) => tracing::debug!(%lease, "leader lease renewal conflicted"),
                Ok(Err(e)) => tracing::warn!(%lease, error = %e, "cannot renew the leader lease"),
                Err(_) => {}
            }
            if last_renew.elapsed() >= config.renew_deadline {
                tracing::warn!(%lease, "leader lease not renewed within the renew deadline");
                break;
            }
        }
        let _ = stop_tx.send(true);
        if !finished
            && tokio::time::timeout(Duration::from_secs(5), &mut leading)
                .await
                .is_err()
        {
            leading.abort();
        }
        tracing::info!(%lease, identity = %config.identity, "stopped leading");
        if *shutdown.borrow() {
            if let Err(e) = elector.release().await {
                tracing::warn!(%lease, error = %e, "cannot release the leader lease");
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(identity: &str) -> Config {
        Config::new("kube-system", "corten", identity)
    }

    fn held_by(holder: &str, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration),
            acquire_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            renew_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn no_lease_is_taken_with_zero_transitions() {
        let c = config("a");
        let t = Instant::now();
        let now = Timestamp::now();
        let Decision::Write(spec) = decide(&c, None, t, t, now) else {
            panic!("expected a write");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
    }

    #[test]
    fn a_live_lease_of_another_holder_is_left_alone() {
        let c = config("a");
        let seen = Instant::now();
        let now = seen + Duration::from_secs(14);
        assert_eq!(
            decide(&c, Some(&held_by("b", 15)), seen, now, Timestamp::now()),
            Decision::HeldBy("b".into(), Duration::from_secs(1))
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over_with_one_more_transition() {
        let c = config("a");
        let seen = Instant::now();
        let now = seen + Duration::from_secs(15);
        let wall = Timestamp::now();
        let Decision::Write(spec) = decide(&c, Some(&held_by("b", 15)), seen, now, wall) else {
            panic!("expected a takeover");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(wall)));
    }

    #[test]
    fn the_record_s_own_duration_counts_not_ours() {
        let c = config("a");
        let seen = Instant::now();
        // A released lease (duration 1 s) is free after 1 s.
        let now = seen + Duration::from_secs(1);
        assert!(matches!(
            decide(&c, Some(&held_by("b", 1)), seen, now, Timestamp::now()),
            Decision::Write(_)
        ));
        // A holder with a longer lease keeps it for that long.
        let now = seen + Duration::from_secs(20);
        assert_eq!(
            decide(&c, Some(&held_by("b", 30)), seen, now, Timestamp::now()),
            Decision::HeldBy("b".into(), Duration::from_secs(10))
        );
    }

    #[test]
    fn renewal_keeps_acquire_time_and_transitions() {
        let c = config("a");
        let t = Instant::now();
        let wall = Timestamp::now();
        let Decision::Write(spec) = decide(&c, Some(&held_by("a", 15)), t, t, wall) else {
            panic!("expected a renewal");
        };
        assert_eq!(spec.acquire_time, Some(MicroTime(Timestamp::UNIX_EPOCH)));
        assert_eq!(spec.renew_time, Some(MicroTime(wall)));
        assert_eq!(spec.lease_transitions, Some(3));
    }

    #[test]
    fn an_empty_holder_is_free_at_once() {
        let c = config("a");
        let t = Instant::now();
        let mut spec = held_by("", 15);
        spec.holder_identity = None;
        let Decision::Write(spec) = decide(&c, Some(&spec), t, t, Timestamp::now()) else {
            panic!("expected a write");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(4));
    }

    #[test]
    fn timings_are_checked_as_upstream_does() {
        assert!(config("a").validate().is_ok());
        let mut c = config("a");
        c.renew_deadline = Duration::from_secs(15);
        assert!(c.validate().is_err());
        let mut c = config("a");
        c.retry_period = Duration::from_secs(10);
        assert!(c.validate().is_err());
        assert!(config("").validate().is_err());
    }
}
