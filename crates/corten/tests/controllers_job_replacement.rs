//! A Job's `podReplacementPolicy` end to end, through kubectl, on a simulated node whose
//! deleted pods take a few seconds to stop (`corten.dev/sim-termination-seconds`) and then
//! end Failed, as a kubelet reports them: with `Failed` a deleted pod is not replaced while it
//! terminates (`status.terminating` says so), only once it has failed; with
//! `TerminatingOrFailed` (the default) its replacement comes at once.

mod common;

use std::collections::BTreeMap;

use common::pods::wait_for;
use common::watch::PodWatch;
use common::{Cluster, SimNodes};
use serde_json::Value;

/// How long a deleted pod of these jobs takes to stop.
const STOP_SECS: u64 = 8;

fn job(name: &str, policy: Option<&str>) -> String {
    let policy = policy.map_or(String::new(), |p| format!("  podReplacementPolicy: {p}\n"));
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{policy}  backoffLimit: 6
  template:
    metadata:
      annotations:
        corten.dev/sim-termination-seconds: \"{STOP_SECS}\"
      labels:
        app: {name}
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 30
      containers:
      - name: work
        image: busybox
"
    )
}

fn pods(c: &Cluster, job: &str) -> Vec<Value> {
    c.get_json(&["get", "pods", "-l", &format!("job-name={job}")])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn terminating(p: &Value) -> bool {
    !p["metadata"]["deletionTimestamp"].is_null()
}

/// Starts the job and returns its one pod, once Running.
fn running_pod(c: &Cluster, job_name: &str, policy: Option<&str>) -> String {
    c.apply(&job(job_name, policy));
    let mut pod = String::new();
    wait_for("the job's pod to run", 60, || {
        let all = pods(c, job_name);
        match all.as_slice() {
            [p] if p["status"]["phase"] == "Running" => {
                pod = name(p);
                true
            }
            _ => false,
        }
    });
    pod
}

fn status(c: &Cluster, job: &str, field: &str) -> i64 {
    c.get_json(&["get", "job", job])["status"][field]
        .as_i64()
        .unwrap_or(0)
}

#[test]
fn failed_policy_waits_for_the_terminating_pod_to_fail() {
    let c = Cluster::start_with(&[]);
    let _sim = SimNodes::start(&c, 1);
    let old = running_pod(&c, "patient", Some("Failed"));
    let watch = PodWatch::start(&c, "job-name=patient");
    c.kubectl(&["delete", "pod", &old, "--wait=false"]);

    // While it stops: still the only pod, counted as terminating, not active, not failed.
    wait_for("status.terminating", 10, || {
        status(&c, "patient", "terminating") == 1
    });
    let j = c.get_json(&["get", "job", "patient"]);
    assert_eq!(j["status"]["active"], 0, "{j}");
    assert_eq!(
        j["status"]["failed"], 0,
        "not failed before phase Failed: {j}"
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    let now = pods(&c, "patient");
    assert_eq!(now.len(), 1, "no replacement while it terminates: {now:?}");
    assert!(terminating(&now[0]));
    assert_eq!(now[0]["status"]["phase"], "Running");

    // Once it failed, it counts, and a new pod replaces it.
    let mut new = String::new();
    wait_for("the replacement pod", 60, || {
        let all = pods(&c, "patient");
        match all.iter().find(|p| name(p) != old) {
            Some(p) => {
                new = name(p);
                true
            }
            None => false,
        }
    });
    wait_for("the failure counted", 30, || {
        status(&c, "patient", "failed") == 1
    });
    wait_for("the old pod gone", 30, || {
        pods(&c, "patient").iter().all(|p| name(p) != old)
    });
    wait_for("terminating back to 0", 30, || {
        status(&c, "patient", "terminating") == 0 && status(&c, "patient", "active") == 1
    });

    // At every step the watch saw, the replacement existed only next to a failed (or no) old
    // pod, and the old pod reached Failed before it went.
    let states = watch.finish();
    let mut saw_failed = false;
    for pods in &states {
        let old_pod = pods.get(&old);
        if old_pod.is_some_and(|p| p["status"]["phase"] == "Failed") {
            saw_failed = true;
        }
        if pods.contains_key(&new) {
            assert!(
                old_pod.is_none_or(|p| p["status"]["phase"] == "Failed"),
                "replaced before it failed: {:?}",
                old_pod
            );
        }
    }
    assert!(saw_failed, "the old pod never showed phase Failed");
    let failed = last_seen(&states, &old);
    let state = &failed["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(state["exitCode"], 143, "{failed}");
}

/// The last state the watch saw of pod `name`.
fn last_seen(states: &[BTreeMap<String, Value>], name: &str) -> Value {
    states
        .iter()
        .rev()
        .find_map(|s| s.get(name).cloned())
        .unwrap_or_default()
}

#[test]
fn default_policy_replaces_a_terminating_pod_at_once() {
    let c = Cluster::start_with(&[]);
    let _sim = SimNodes::start(&c, 1);
    let old = running_pod(&c, "eager", None);
    let j = c.get_json(&["get", "job", "eager"]);
    assert_eq!(j["spec"]["podReplacementPolicy"], "TerminatingOrFailed");
    c.kubectl(&["delete", "pod", &old, "--wait=false"]);

    // The replacement runs while the old pod is still stopping.
    wait_for("a replacement next to the terminating pod", 6, || {
        let all = pods(&c, "eager");
        let old_pod = all.iter().find(|p| name(p) == old);
        let new_pod = all.iter().find(|p| name(p) != old);
        old_pod.is_some_and(|p| terminating(p) && p["status"]["phase"] == "Running")
            && new_pod.is_some()
    });
    wait_for("status with both", 10, || {
        let j = c.get_json(&["get", "job", "eager"]);
        j["status"]["terminating"] == 1 && j["status"]["active"] == 1 && j["status"]["failed"] == 1
    });
    wait_for("the old pod gone", 30, || {
        pods(&c, "eager").iter().all(|p| name(p) != old)
    });
    wait_for("terminating back to 0", 30, || {
        status(&c, "eager", "terminating") == 0
    });
    assert_eq!(status(&c, "eager", "active"), 1);
    assert_eq!(pods(&c, "eager").len(), 1);
}
