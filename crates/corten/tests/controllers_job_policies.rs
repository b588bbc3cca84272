//! A Job's failure and success policies end to end, through kubectl, on three simulated
//! nodes: `podFailurePolicy` (FailJob on an exit code, Ignore on an eviction's
//! DisruptionTarget condition, FailIndex), its validation, `backoffLimitPerIndex` /
//! `maxFailedIndexes` with `status.failedIndexes`, and an Indexed Job's `successPolicy`. Simulated pods run until deleted unless annotated
//! `corten.dev/sim-exit-code` (template-wide, or on one running pod to end just that one).

mod common;

use common::pods::wait_for;
use common::watch::is_active;
use common::{Cluster, SIM_EXIT as EXIT, SimNodes, sim_job as job};
use serde_json::Value;

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

fn running(c: &Cluster, job: &str) -> Vec<Value> {
    pods(c, job)
        .into_iter()
        .filter(|p| is_active(p) && p["status"]["phase"] == "Running")
        .collect()
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn index(p: &Value) -> String {
    p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn condition(job: &Value, kind: &str) -> Option<Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
        .cloned()
}

/// The `kubectl get job` row's STATUS column.
fn status_column(c: &Cluster, job: &str) -> String {
    let out = c.kubectl(&["get", "job", job, "--no-headers"]);
    out.split_whitespace().nth(1).unwrap_or("").to_string()
}

/// Makes one running pod exit with `code`.
fn exit(c: &Cluster, pod: &str, code: i32) {
    c.kubectl(&["annotate", "pod", pod, &format!("{EXIT}={code}")]);
}

/// The running pod of `index` (waits for it).
fn running_index(c: &Cluster, job: &str, ix: &str) -> Value {
    let mut found = None;
    wait_for(&format!("a running pod of index {ix}"), 60, || {
        found = running(c, job).into_iter().find(|p| index(p) == ix);
        found.is_some()
    });
    found.unwrap_or_default()
}

#[test]
fn fail_job_rule_fails_the_job_at_once() {
    let (c, _sim) = start();
    let policy = "  backoffLimit: 6
  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes:
        containerName: work
        operator: In
        values: [42]";
    c.apply(&job("fatal", policy, Some(42), "Never"));
    c.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/fatal",
        "--timeout=60s",
    ]);
    let all = pods(&c, "fatal");
    assert_eq!(all.len(), 1, "no retry after a FailJob match");
    let pod = name(&all[0]);
    let j = c.get_json(&["get", "job", "fatal"]);
    let failed = condition(&j, "Failed").expect("Failed condition");
    assert_eq!(failed["reason"], "PodFailurePolicy");
    assert_eq!(
        failed["message"],
        format!(
            "Container work for pod default/{pod} failed with exit code 42 matching FailJob rule at index 0"
        )
    );
    let target = condition(&j, "FailureTarget").expect("FailureTarget condition");
    assert_eq!(target["reason"], "PodFailurePolicy");
    assert_eq!(j["status"]["failed"], 1);
    assert_eq!(j["spec"]["podReplacementPolicy"], "Failed");
    assert_eq!(status_column(&c, "fatal"), "Failed");

    // An exit code outside the rule counts against backoffLimit as usual.
    c.apply(&job(
        "other",
        &policy.replace("backoffLimit: 6", "backoffLimit: 0"),
        Some(3),
        "Never",
    ));
    c.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/other",
        "--timeout=60s",
    ]);
    let j = c.get_json(&["get", "job", "other"]);
    assert_eq!(
        condition(&j, "Failed").expect("Failed")["reason"],
        "BackoffLimitExceeded"
    );
}

#[test]
fn ignored_eviction_does_not_count() {
    let (c, _sim) = start();
    let policy = "  backoffLimit: 0
  podFailurePolicy:
    rules:
    - action: Ignore
      onPodConditions:
      - type: DisruptionTarget
        status: \"True\"";
    c.apply(&job("steady", policy, None, "Never"));
    let mut first = String::new();
    wait_for("a running pod", 30, || {
        first = running(&c, "steady").first().map(name).unwrap_or_default();
        !first.is_empty()
    });
    let eviction = format!(
        r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{first}","namespace":"default"}}}}"#
    );
    let out = c.kubectl_stdin(
        &[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{first}/eviction"),
            "-f",
            "-",
        ],
        &eviction,
    );
    assert!(
        out.status.success(),
        "eviction: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut second = String::new();
    wait_for("a replacement pod running", 60, || {
        second = running(&c, "steady")
            .iter()
            .map(name)
            .find(|n| *n != first)
            .unwrap_or_default();
        !second.is_empty()
    });
    wait_for("the evicted pod gone", 30, || {
        pods(&c, "steady").iter().all(|p| name(p) != first)
    });
    let j = c.get_json(&["get", "job", "steady"]);
    assert_eq!(j["status"]["failed"], 0, "the eviction is not counted: {j}");
    assert!(condition(&j, "Failed").is_none());
    assert_eq!(status_column(&c, "steady"), "Running");

    // A real failure still counts: backoffLimit 0 fails the job at the first one.
    exit(&c, &second, 1);
    c.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/steady",
        "--timeout=60s",
    ]);
    let j = c.get_json(&["get", "job", "steady"]);
    assert_eq!(
        condition(&j, "Failed").expect("Failed")["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(j["status"]["failed"], 1);
}

#[test]
fn invalid_policies_are_refused() {
    let c = Cluster::start_with(&[]);
    let policy = "  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes:
        operator: In
        values: [42]";
    let out = c.kubectl_stdin(
        &["apply", "-f", "-"],
        &job("onfailure", policy, None, "OnFailure"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"The Job "onfailure" is invalid: spec.template.spec.restartPolicy: Invalid value: "OnFailure": only "Never" is supported when podFailurePolicy is specified"#),
        "{err}"
    );
    let bad = "  podFailurePolicy:
    rules:
    - action: FailIndex
      onExitCodes:
        containerName: nope
        operator: In
        values: [0]";
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &job("bad", bad, None, "Never"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        r#"spec.podFailurePolicy.rules[0].action: Invalid value: "FailIndex": requires the backoffLimitPerIndex to be set"#,
        r#"spec.podFailurePolicy.rules[0].onExitCodes.containerName: Invalid value: "nope": must be one of the container or initContainer names in the pod template"#,
        "spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the In operator",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in {err}");
    }
    let out = c.kubectl_stdin(
        &["apply", "-f", "-"],
        &job("perindex", "  backoffLimitPerIndex: 1", None, "Never"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode"
        ),
        "{err}"
    );
    assert!(
        c.try_kubectl(&["get", "jobs", "-o", "name"])
            .stdout
            .is_empty(),
        "nothing created"
    );
    // A policy cannot be added to (or changed on) an existing job.
    c.apply(&job("plain", "  completions: 1", None, "Never"));
    let out = c.try_kubectl(&[
        "patch",
        "job",
        "plain",
        "--type=merge",
        "-p",
        r#"{"spec":{"podFailurePolicy":{"rules":[{"action":"Ignore","onPodConditions":[{"type":"DisruptionTarget","status":"True"}]}]}}}"#,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.podFailurePolicy: Invalid value: ")
            && err.contains("field is immutable"),
        "{err}"
    );
}

#[test]
fn backoff_limit_per_index_fails_only_that_index() {
    let (c, _sim) = start();
    let spec = "  completions: 3
  parallelism: 3
  completionMode: Indexed
  backoffLimitPerIndex: 1";
    c.apply(&job("perix", spec, None, "Never"));
    let p0 = running_index(&c, "perix", "0");
    let p1 = running_index(&c, "perix", "1");
    let p2 = running_index(&c, "perix", "2");
    assert_eq!(
        p1["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"],
        "0"
    );
    exit(&c, &name(&p0), 0);
    exit(&c, &name(&p1), 3);
    // Index 1 is retried once (after its back-off), with its failure count on the pod.
    let mut retry = Value::Null;
    wait_for("index 1 retried", 60, || {
        retry = running_index(&c, "perix", "1");
        name(&retry) != name(&p1)
    });
    assert_eq!(
        retry["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"],
        "1"
    );
    let j = c.get_json(&["get", "job", "perix"]);
    assert_eq!(j["status"]["failedIndexes"], "");
    assert!(condition(&j, "Failed").is_none());
    exit(&c, &name(&retry), 3);
    exit(&c, &name(&p2), 0);
    c.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/perix",
        "--timeout=60s",
    ]);
    let j = c.get_json(&["get", "job", "perix"]);
    let failed = condition(&j, "Failed").expect("Failed");
    assert_eq!(failed["reason"], "FailedIndexes");
    assert_eq!(failed["message"], "Job has failed indexes");
    assert_eq!(j["status"]["failedIndexes"], "1");
    assert_eq!(j["status"]["completedIndexes"], "0,2");
    assert_eq!(j["status"]["succeeded"], 2);
    assert_eq!(j["status"]["failed"], 2);
    assert_eq!(pods(&c, "perix").len(), 4, "index 1 not run a third time");
}

#[test]
fn fail_index_beyond_max_failed_indexes_fails_the_job() {
    let (c, _sim) = start();
    let spec = "  completions: 3
  parallelism: 3
  completionMode: Indexed
  backoffLimitPerIndex: 5
  maxFailedIndexes: 0
  podFailurePolicy:
    rules:
    - action: FailIndex
      onExitCodes:
        operator: In
        values: [5]";
    c.apply(&job("maxed", spec, None, "Never"));
    let p0 = running_index(&c, "maxed", "0");
    running_index(&c, "maxed", "1");
    running_index(&c, "maxed", "2");
    exit(&c, &name(&p0), 5);
    c.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/maxed",
        "--timeout=60s",
    ]);
    let j = c.get_json(&["get", "job", "maxed"]);
    let failed = condition(&j, "Failed").expect("Failed");
    assert_eq!(failed["reason"], "MaxFailedIndexesExceeded");
    assert_eq!(
        failed["message"],
        "Job has exceeded the specified maximal number of failed indexes"
    );
    assert_eq!(j["status"]["failedIndexes"], "0");
    assert_eq!(j["status"]["active"], 0);
    wait_for("the other indexes' pods deleted", 30, || {
        pods(&c, "maxed").iter().all(|p| !is_active(p))
    });
    assert_eq!(status_column(&c, "maxed"), "Failed");
}

#[test]
fn success_policy_completes_early() {
    let (c, _sim) = start();
    let spec = "  completions: 4
  parallelism: 4
  completionMode: Indexed
  successPolicy:
    rules:
    - succeededIndexes: \"0-1\"";
    c.apply(&job("leader", spec, None, "Never"));
    let p0 = running_index(&c, "leader", "0");
    let p1 = running_index(&c, "leader", "1");
    running_index(&c, "leader", "2");
    running_index(&c, "leader", "3");
    exit(&c, &name(&p0), 0);
    exit(&c, &name(&p1), 0);
    c.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/leader",
        "--timeout=60s",
    ]);
    let j = c.get_json(&["get", "job", "leader"]);
    for kind in ["SuccessCriteriaMet", "Complete"] {
        let cond = condition(&j, kind).expect(kind);
        assert_eq!(cond["reason"], "SuccessPolicy");
        assert_eq!(cond["message"], "Matched rules at index 0");
    }
    assert_eq!(j["status"]["completedIndexes"], "0-1");
    assert_eq!(j["status"]["succeeded"], 2);
    assert_eq!(j["status"]["active"], 0);
    assert!(j["status"]["completionTime"].is_string());
    wait_for("indexes 2 and 3 stopped", 30, || {
        pods(&c, "leader").iter().all(|p| !is_active(p))
    });
    let row = c.kubectl(&["get", "job", "leader", "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.get(1..3), Some(&["Complete", "2/4"][..]), "{row}");

    // Validation: only Indexed jobs have a success policy.
    let out = c.kubectl_stdin(
        &["apply", "-f", "-"],
        &job(
            "plain",
            "  successPolicy:\n    rules:\n    - succeededCount: 1",
            None,
            "Never",
        ),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            r#"spec.successPolicy: Invalid value: "object": requires indexed completion mode"#
        ),
        "{err}"
    );
}
