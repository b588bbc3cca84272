//! The CronJob controller, after upstream's `pkg/controller/cronjob` (ControllerV2): creates a
//! Job for each schedule time.
//!
//! A reconcile reads the CronJob and its namespace's jobs from the API server, then
//! - drops finished and vanished jobs from `status.active` and records the latest completion
//!   of a successful one as `status.lastSuccessfulTime`;
//! - unless suspended, finds the most recent schedule time not yet started
//!   ([`schedule::plan`]: since `lastScheduleTime` or the creation, within
//!   `startingDeadlineSeconds`), applies the concurrencyPolicy (Forbid skips while a job is
//!   active, Replace deletes the active jobs first) and creates the job `NAME-<minutes since
//!   the epoch>` from the jobTemplate (owned by the CronJob, annotated
//!   `batch.kubernetes.io/cronjob-scheduled-timestamp`), adding it to `status.active` and
//!   setting `status.lastScheduleTime`;
//! - deletes the oldest finished jobs beyond successfulJobsHistoryLimit / failedJobsHistoryLimit
//!   (background propagation);
//! - comes back at the next schedule time.

pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::controller_utils::{controller_of, controller_ref};
use schedule::{Plan, PlanInput, Schedule, beyond_history, job_name, plan};

/// The annotation carrying the schedule time a job was created for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

struct Ctx {
    client: Client,
}

/// Runs the controller forever.
pub async fn run(client: Client) {
    let cronjobs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    Controller::new(cronjobs, watcher::Config::default())
        .watches(jobs, watcher::Config::default(), |job: Job| {
            let ns = job.namespace().unwrap_or_default();
            controller_of(&job.metadata)
                .filter(|o| o.kind == "CronJob")
                .map(|o| ObjectRef::new(&o.name).within(&ns))
        })
        .run(
            reconcile,
            |_, _, _| Action::requeue(Duration::from_secs(5)),
            Arc::new(Ctx { client }),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "cronjob reconcile failed");
            }
        })
        .await;
}

fn finished(job: &Job) -> Option<&'static str> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some("Complete"),
            "Failed" => Some("Failed"),
            _ => None,
        })
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

async fn reconcile(cached: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let cronjobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let cj = match cronjobs.get_opt(&name).await? {
        Some(c) if c.metadata.uid == cached.metadata.uid => c,
        _ => return Ok(Action::await_change()),
    };
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(spec) = cj.spec.clone() else {
        return Ok(Action::await_change());
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = cj.uid().unwrap_or_default();
    let children: Vec<Job> = jobs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| controller_of(&j.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    let old = cj.status.clone().unwrap_or_default();
    let mut st: CronJobStatus = old.clone();
    let mut active = st.active.take().unwrap_or_default();

    // Finished or vanished jobs leave the active list.
    for j in &children {
        let found = active.iter().any(|a| a.uid == j.metadata.uid);
        match finished(j) {
            Some(_) if found => active.retain(|a| a.uid != j.metadata.uid),
            _ => {}
        }
        if finished(j) == Some("Complete")
            && let Some(t) = j.status.as_ref().and_then(|s| s.completion_time.clone())
            && st.last_successful_time.as_ref().is_none_or(|l| l.0 < t.0)
        {
            st.last_successful_time = Some(t);
        }
    }
    let mut gone = Vec::new();
    for a in &active {
        if children.iter().any(|j| j.metadata.uid == a.uid) {
            continue;
        }
        let job_name = a.name.clone().unwrap_or_default();
        match jobs.get_opt(&job_name).await? {
            Some(j) if j.metadata.uid == a.uid => {}
            _ => gone.push(a.uid.clone()),
        }
    }
    active.retain(|a| !gone.contains(&a.uid));

    let now = Timestamp::now();
    let mut next = None;
    if spec.suspend != Some(true) {
        match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
            Err(e) => {
                tracing::warn!(cronjob = %name, namespace = %ns, error = %e, "cannot schedule")
            }
            Ok(sched) => {
                let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
                let last_schedule = st.last_schedule_time.as_ref().map(|t| t.0);
                next = sched.next_run(last_schedule.unwrap_or(created), now);
                let names: Vec<String> = active.iter().filter_map(|a| a.name.clone()).collect();
                let input = PlanInput {
                    name: &name,
                    created,
                    last_schedule,
                    starting_deadline: spec.starting_deadline_seconds,
                    policy: spec.concurrency_policy.as_deref().unwrap_or("Allow"),
                    active: &names,
                };
                match plan(&sched, &input, now) {
                    Plan::Wait(_) => {}
                    Plan::TooLate(t) => {
                        tracing::info!(cronjob = %name, missed = %t, "missed the starting deadline")
                    }
                    Plan::Forbidden(t) => {
                        tracing::debug!(cronjob = %name, skipped = %t, "a job is still active (Forbid)")
                    }
                    Plan::Start { scheduled, replace } => {
                        if replace {
                            for a in active.drain(..) {
                                delete_job(&jobs, a.name.as_deref().unwrap_or("")).await?;
                            }
                        }
                        let job = job_for(&cj, &sched, scheduled);
                        let created = match jobs.create(&PostParams::default(), &job).await {
                            Ok(j) => Some(j),
                            Err(kube::Error::Api(s)) if s.code == 409 => {
                                jobs.get_opt(&job.name_any()).await?.filter(|j| {
                                    controller_of(&j.metadata).is_some_and(|o| o.uid == uid)
                                })
                            }
                            Err(e) => return Err(e),
                        };
                        if let Some(j) = created {
                            tracing::info!(cronjob = %name, job = %j.name_any(), "created job");
                            if !active.iter().any(|a| a.uid == j.metadata.uid) {
                                active.push(reference(&j));
                            }
                            st.last_schedule_time = Some(Time(scheduled));
                        }
                    }
                }
            }
        }
    }

    // History limits: the oldest finished jobs beyond them go.
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit),
        ("Failed", spec.failed_jobs_history_limit),
    ] {
        let Some(limit) = limit else { continue };
        let done: Vec<(Option<Timestamp>, String)> = children
            .iter()
            .filter(|j| finished(j) == Some(kind))
            .map(|j| {
                let start = j.status.as_ref().and_then(|s| s.start_time.as_ref());
                (start.map(|t| t.0), j.name_any())
            })
            .collect();
        for j in beyond_history(done, limit) {
            delete_job(&jobs, &j).await?;
            active.retain(|a| a.name.as_deref() != Some(j.as_str()));
        }
    }

    st.active = (!active.is_empty()).then_some(active);
    if st != old {
        let mut new = cj.clone();
        new.status = Some(st);
        cronjobs
            .replace_status(&name, &PostParams::default(), &new)
            .await?;
    }
    Ok(match next {
        Some(t) => {
            let wait = Duration::try_from(t.duration_since(now)).unwrap_or_default();
            Action::requeue(wait + Duration::from_millis(100))
        }
        None => Action::await_change(),
    })
}

/// Deletes a job (background propagation), ignoring one already gone.
async fn delete_job(jobs: &Api<Job>, name: &str) -> Result<(), kube::Error> {
    match jobs.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Upstream's `getJobFromTemplate2`: the job for `scheduled`.
fn job_for(cj: &CronJob, sched: &Schedule, scheduled: Timestamp) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), sched.rfc3339(scheduled));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&cj.name_any(), scheduled)),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}
