//! The Job controller end to end, through kubectl, on three simulated nodes: pods annotated
//! `corten.dev/sim-exit-code` end about a second after they start (Succeeded for 0, Failed
//! otherwise); pods without it run until deleted.

mod common;

use std::collections::BTreeSet;

use common::pods::wait_for;
use common::watch::{PodWatch, is_active};
use common::{Cluster, SimNodes};
use serde_json::Value;

/// A Job manifest whose pods exit with `exit` (None: they run until deleted), never restarted.
fn job(name: &str, spec: &str, exit: Option<i32>) -> String {
    common::sim_job(name, spec, exit, "Never")
}

fn start() -> (Cluster, SimNodes) {
    let c = Cluster::start_with(&[]);
    let sim = SimNodes::start(&c, 3);
    (c, sim)
}

fn pods(c: &Cluster, job: &str) -> Vec<Value> {
    c.get_json(&["get", "pods", "-l", &format!("job-name={job}")])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The `kubectl get job` row's STATUS and COMPLETIONS columns.
fn row(c: &Cluster, job: &str) -> (String, String) {
    let out = c.kubectl(&["get", "job", job, "--no-headers"]);
    let cols: Vec<&str> = out.split_whitespace().collect();
    (
        cols.get(1).unwrap_or(&"").to_string(),
        cols.get(2).unwrap_or(&"").to_string(),
    )
}

fn condition<'a>(job: &'a Value, kind: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

#[test]
fn completions_with_bounded_parallelism() {
    let (c, _sim) = start();
    let watch = PodWatch::start(&c, "job-name=work");
    c.apply(&job("work", "  completions: 5\n  parallelism: 2", Some(0)));
    c.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/work",
        "--timeout=90s",
    ]);
    let states = watch.finish();
    let max_active = states
        .iter()
        .map(|s| s.values().filter(|p| is_active(p)).count())
        .max()
        .unwrap_or(0);
    assert_eq!(
        max_active, 2,
        "at most parallelism pods active, and that many used"
    );

    let (status, completions) = row(&c, "work");
    assert_eq!((status.as_str(), completions.as_str()), ("Complete", "5/5"));
    let j = c.get_json(&["get", "job", "work"]);
    assert_eq!(j["status"]["succeeded"], 5);
    assert_eq!(j["status"]["active"], 0);
    assert!(j["status"]["completionTime"].is_string());
    assert!(j["status"]["startTime"].is_string());
    let complete = condition(&j, "Complete").expect("Complete condition");
    assert_eq!(complete["reason"], "CompletionsReached");
    assert!(condition(&j, "SuccessCriteriaMet").is_some());

    let uid = j["metadata"]["uid"].as_str().unwrap_or("");
    let all = pods(&c, "work");
    assert_eq!(all.len(), 5);
    for p in &all {
        assert_eq!(p["status"]["phase"], "Succeeded");
        let labels = &p["metadata"]["labels"];
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid);
        assert_eq!(labels["controller-uid"], uid);
        assert_eq!(labels["batch.kubernetes.io/job-name"], "work");
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["name"], &owner["controller"]),
            (&"Job".into(), &"work".into(), &true.into())
        );
        assert!(
            p["metadata"]["finalizers"].is_null(),
            "tracking finalizer removed once counted: {p}"
        );
    }
    // Deleting the job (kubectl's default background cascade) removes its pods.
    c.kubectl(&["delete", "job", "work"]);
    wait_for("pods of the deleted job gone", 30, || {
        pods(&c, "work").is_empty()
    });
}

#[test]
fn backoff_limit_fails_the_job() {
    let (c, _sim) = start();
    c.apply(&job("flaky", "  backoffLimit: 1", Some(3)));
    c.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/flaky",
        "--timeout=90s",
    ]);
    let j = c.get_json(&["get", "job", "flaky"]);
    let failed = condition(&j, "Failed").expect("Failed condition");
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(
        failed["message"],
        "Job has reached the specified backoff limit"
    );
    assert!(condition(&j, "FailureTarget").is_some());
    assert_eq!(
        j["status"]["failed"], 2,
        "backoffLimit 1 allows two failures"
    );
    assert!(j["status"]["completionTime"].is_null());
    assert_eq!(row(&c, "flaky"), ("Failed".into(), "0/1".into()));
    // The replacement waited for the back-off (10 s after the first failure).
    let mut times: Vec<String> = pods(&c, "flaky")
        .iter()
        .map(|p| {
            p["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    times.sort();
    assert_eq!(times.len(), 2);
    let ts: Vec<jiff::Timestamp> = times.iter().map(|t| t.parse().expect("time")).collect();
    assert!(
        ts[1].duration_since(ts[0]).as_secs() >= 10,
        "replacement created after the back-off: {times:?}"
    );
}

#[test]
fn indexed_job_runs_each_index_once() {
    let (c, _sim) = start();
    c.apply(&job(
        "idx",
        "  completions: 3\n  parallelism: 3\n  completionMode: Indexed",
        Some(0),
    ));
    c.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/idx",
        "--timeout=90s",
    ]);
    let j = c.get_json(&["get", "job", "idx"]);
    assert_eq!(j["status"]["completedIndexes"], "0-2");
    assert_eq!(j["status"]["succeeded"], 3);
    let all = pods(&c, "idx");
    let mut indexes = BTreeSet::new();
    for p in &all {
        let ix = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            ix.as_str()
        );
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        assert!(name.starts_with(&format!("idx-{ix}-")), "{name}");
        assert_eq!(p["spec"]["hostname"], format!("idx-{ix}"));
        let env = &p["spec"]["containers"][0]["env"][0];
        assert_eq!(env["name"], "JOB_COMPLETION_INDEX");
        assert_eq!(
            env["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        indexes.insert(ix);
    }
    assert_eq!(all.len(), 3);
    assert_eq!(
        indexes,
        BTreeSet::from(["0".into(), "1".into(), "2".into()])
    );
}

#[test]
fn suspend_deletes_pods_and_resume_restarts_them() {
    let (c, _sim) = start();
    c.apply(&job("sleepy", "  completions: 4\n  parallelism: 2", None));
    let active = |c: &Cluster| {
        pods(c, "sleepy")
            .iter()
            .filter(|p| is_active(p) && p["status"]["phase"] == "Running")
            .count()
    };
    wait_for("two running pods", 30, || active(&c) == 2);
    assert_eq!(row(&c, "sleepy"), ("Running".into(), "0/4".into()));
    let started = c.get_json(&["get", "job", "sleepy"])["status"]["startTime"].clone();

    c.kubectl(&[
        "patch",
        "job",
        "sleepy",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    wait_for("pods deleted", 30, || pods(&c, "sleepy").is_empty());
    wait_for("Suspended", 30, || row(&c, "sleepy").0 == "Suspended");
    let j = c.get_json(&["get", "job", "sleepy"]);
    assert_eq!(
        condition(&j, "Suspended").expect("condition")["reason"],
        "JobSuspended"
    );
    assert_eq!(j["status"]["active"], 0);

    std::thread::sleep(std::time::Duration::from_millis(1100));
    c.kubectl(&[
        "patch",
        "job",
        "sleepy",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    wait_for("two running pods again", 30, || active(&c) == 2);
    wait_for("resumed", 30, || row(&c, "sleepy").0 == "Running");
    let j = c.get_json(&["get", "job", "sleepy"]);
    let cond = j["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Suspended").cloned())
        .expect("Suspended condition kept");
    assert_eq!(
        (&cond["status"], &cond["reason"]),
        (&"False".into(), &"JobResumed".into())
    );
    assert_ne!(
        j["status"]["startTime"], started,
        "startTime reset on resume"
    );

    // Deleting a running job removes its pods, tracking finalizers and all.
    c.kubectl(&["delete", "job", "sleepy"]);
    wait_for("pods gone", 30, || pods(&c, "sleepy").is_empty());
}

#[test]
fn deadline_and_ttl() {
    let (c, _sim) = start();
    c.apply(&job("slow", "  activeDeadlineSeconds: 3", None));
    c.apply(&job("brief", "  ttlSecondsAfterFinished: 2", Some(0)));
    c.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/slow",
        "--timeout=60s",
    ]);
    let j = c.get_json(&["get", "job", "slow"]);
    assert_eq!(
        condition(&j, "Failed").expect("Failed")["reason"],
        "DeadlineExceeded"
    );
    wait_for("the slow job's pod deleted", 30, || {
        pods(&c, "slow").iter().all(|p| !is_active(p))
    });
    assert_eq!(j["status"]["failed"], 1, "the killed pod counts as failed");

    // The finished job and its pod are deleted 2 s after it completed.
    c.kubectl(&["wait", "--for=delete", "job/brief", "--timeout=60s"]);
    wait_for("the brief job's pod deleted", 30, || {
        pods(&c, "brief").is_empty()
    });
}
