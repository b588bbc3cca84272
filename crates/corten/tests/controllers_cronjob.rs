//! The CronJob controller end to end, through kubectl, on simulated nodes: a `* * * * *`
//! CronJob starts a real Job within a minute and records it; an `@every 20s` one starts its
//! first 20 s after its creation; a suspended one starts nothing,
//! and `kubectl create job --from=cronjob/...` instantiates its template by hand. (Schedule
//! arithmetic, concurrency policies and history limits are unit-tested in
//! `controllers::cronjob::schedule`.)

mod common;

use common::pods::wait_for;
use common::{Cluster, SimNodes};
use serde_json::Value;

fn cronjob(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: CronJob
metadata:
  name: {name}
spec:
  schedule: \"* * * * *\"
  concurrencyPolicy: Forbid
{extra}
  jobTemplate:
    metadata:
      labels:
        from: {name}
    spec:
      template:
        metadata:
          annotations:
            corten.dev/sim-exit-code: \"0\"
        spec:
          restartPolicy: Never
          containers:
          - name: tick
            image: busybox
"
    )
}

/// The jobs whose controller is CronJob `name`.
fn jobs_of(c: &Cluster, name: &str) -> Vec<Value> {
    c.get_json(&["get", "jobs"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| {
            j["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| {
                    o.iter()
                        .any(|r| r["kind"] == "CronJob" && r["name"] == name)
                })
        })
        .cloned()
        .collect()
}

#[test]
fn cronjob_starts_jobs_on_schedule() {
    let c = Cluster::start_with(&[]);
    let _sim = SimNodes::start(&c, 3);
    c.apply(&cronjob("tick", ""));
    c.apply(&cronjob("paused", "  suspend: true"));
    c.apply(&cronjob("every", "").replace("\"* * * * *\"", "\"@every 20s\""));

    // By hand, from the suspended one's template.
    c.kubectl(&["create", "job", "by-hand", "--from=cronjob/paused"]);
    c.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/by-hand",
        "--timeout=60s",
    ]);
    let j = c.get_json(&["get", "job", "by-hand"]);
    assert_eq!(
        j["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(j["metadata"]["labels"]["from"], "paused");

    // On schedule: within a minute (plus a little) of its creation.
    wait_for("a scheduled job", 75, || !jobs_of(&c, "tick").is_empty());
    let job = jobs_of(&c, "tick").remove(0);
    let name = job["metadata"]["name"].as_str().unwrap_or("").to_string();
    let minutes: i64 = name
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("job name {name} is not tick-<minutes>"));
    let scheduled: jiff::Timestamp =
        job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .as_str()
            .unwrap_or("")
            .parse()
            .expect("scheduled timestamp");
    assert_eq!(scheduled.as_second(), minutes * 60);
    assert_eq!(job["metadata"]["labels"]["from"], "tick");
    let cj = c.get_json(&["get", "cronjob", "tick"]);
    let last: jiff::Timestamp = cj["status"]["lastScheduleTime"]
        .as_str()
        .unwrap_or("")
        .parse()
        .expect("lastScheduleTime");
    assert_eq!(last, scheduled);

    c.kubectl(&[
        "wait",
        "--for=condition=complete",
        &format!("job/{name}"),
        "--timeout=60s",
    ]);
    wait_for("lastSuccessfulTime and no active job", 30, || {
        let cj = c.get_json(&["get", "cronjob", "tick"]);
        cj["status"]["lastSuccessfulTime"].is_string() && cj["status"]["active"].is_null()
    });
    let row = c.kubectl(&["get", "cronjob", "tick", "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    // NAME SCHEDULE(5 fields) TIMEZONE SUSPEND ACTIVE LAST-SCHEDULE AGE
    assert_eq!(&cols[6..9], ["<none>", "False", "0"], "{row}");
    assert_ne!(cols[9], "<none>", "{row}");

    // `@every 20s` counts from the CronJob's creation, not from the clock's minutes.
    wait_for("the @every job", 60, || !jobs_of(&c, "every").is_empty());
    let cj = c.get_json(&["get", "cronjob", "every"]);
    assert_eq!(cj["spec"]["schedule"], "@every 20s");
    let created: jiff::Timestamp = cj["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or("")
        .parse()
        .expect("creationTimestamp");
    let first = jobs_of(&c, "every")
        .iter()
        .filter_map(|j| {
            j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
                .as_str()?
                .parse::<jiff::Timestamp>()
                .ok()
        })
        .min()
        .expect("a scheduled timestamp");
    assert_eq!(first.as_second() - created.as_second(), 20);
    let bad = c.try_kubectl(&[
        "create",
        "cronjob",
        "bad",
        "--image=busybox",
        "--schedule=@every soon",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("failed to parse duration @every soon"),
        "{err}"
    );

    // The suspended one started nothing on its own.
    let paused = c.get_json(&["get", "cronjob", "paused"]);
    assert!(paused["status"]["lastScheduleTime"].is_null());
    let names: Vec<String> = jobs_of(&c, "paused")
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["by-hand"]);
}
