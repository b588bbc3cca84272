//! The node agent's container lifecycle, end to end: probes that flip readiness and restart
//! containers, crash-loop back-off and OOM kills, graceful termination with preStop hooks —
//! `corten server` with its agent on a real containerd, driven with kubectl.

mod common;

use std::time::Instant;

use common::Cluster;
use common::pods::{BUSYBOX, apply, jsonpath, running, wait_for};

#[test]
fn probes_flip_readiness_and_restart_on_liveness_failure() {
    let c = Cluster::start_with_agent(&[]);
    // Every readiness the pod's status shows, in order: a watch sees a transient "true" that
    // polling could miss (endpoints would have sent traffic to it).
    let mut watch = c
        .kubectl_cmd(&[
            "get",
            "pods",
            "--watch",
            "-o",
            "jsonpath={.metadata.name} {.status.containerStatuses[0].ready}{\"\\n\"}",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl get --watch");
    apply(
        &c,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: ready}}
spec:
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sh, -c, "sleep 2; touch /tmp/ready; sleep 6; rm /tmp/ready; sleep 3600"]
    readinessProbe: {{exec: {{command: [cat, /tmp/ready]}}, periodSeconds: 1, failureThreshold: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sh, -c, "touch /tmp/alive; sleep 3; rm /tmp/alive; sleep 3600"]
    livenessProbe: {{exec: {{command: [cat, /tmp/alive]}}, periodSeconds: 1, failureThreshold: 2}}
"#
        ),
    );
    let ready = |c: &Cluster| jsonpath(c, "ready", "{.status.containerStatuses[0].ready}");
    wait_for("ready pod Running", 60, || running(&c, "ready"));
    assert_eq!(ready(&c), "false", "not ready before the probe passes");
    wait_for("ready=true", 30, || ready(&c) == "true");
    wait_for("ready=false again", 30, || ready(&c) == "false");
    assert_eq!(jsonpath(&c, "ready", "{.status.phase}"), "Running");
    let _ = watch.kill();
    let mut seen = String::new();
    std::io::Read::read_to_string(&mut watch.stdout.take().expect("stdout"), &mut seen)
        .expect("watch output");
    let _ = watch.wait();
    let mut flips: Vec<&str> = Vec::new();
    for line in seen.lines() {
        if let Some(("ready", v)) = line.split_once(' ')
            && !v.is_empty()
            && flips.last() != Some(&v)
        {
            flips.push(v);
        }
    }
    assert_eq!(
        flips,
        ["false", "true", "false"],
        "readiness must wait for the first successful probe:\n{seen}"
    );
    wait_for("a liveness restart", 60, || {
        jsonpath(&c, "live", "{.status.containerStatuses[0].restartCount}")
            .parse::<i32>()
            .unwrap_or(0)
            >= 1
    });
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=live",
    ]);
    assert!(
        events.contains("Unhealthy") && events.contains("Liveness probe failed"),
        "{events}"
    );
    assert!(events.contains("Killing"), "{events}");
}

#[test]
fn crash_loop_back_off_and_oom_kill() {
    let c = Cluster::start_with_agent(&[]);
    apply(
        &c,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: crash}}
spec:
  containers:
  - {{name: c, image: {BUSYBOX}, command: [sh, -c, "echo dying; exit 3"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: oom}}
spec:
  restartPolicy: Never
  containers:
  - {{name: c, image: {BUSYBOX}, command: [sh, -c, "x=a; while true; do x=$x$x; done"], resources: {{limits: {{memory: 16Mi}}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: done}}
spec:
  restartPolicy: OnFailure
  containers:
  - {{name: c, image: {BUSYBOX}, command: [sh, -c, "exit 0"]}}
"#
        ),
    );
    wait_for("OOMKilled", 60, || {
        jsonpath(
            &c,
            "oom",
            "{.status.containerStatuses[0].state.terminated.reason}",
        ) == "OOMKilled"
    });
    assert_eq!(jsonpath(&c, "oom", "{.status.phase}"), "Failed");
    wait_for("done Succeeded", 60, || {
        jsonpath(&c, "done", "{.status.phase}") == "Succeeded"
    });
    // Restarts: the first at once, then 10 s, then 20 s apart (upstream's back-off).
    wait_for("three restarts", 90, || {
        jsonpath(&c, "crash", "{.status.containerStatuses[0].restartCount}")
            .parse::<i32>()
            .unwrap_or(0)
            >= 3
    });
    wait_for("CrashLoopBackOff", 30, || {
        jsonpath(
            &c,
            "crash",
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "CrashLoopBackOff"
    });
    let get = c.kubectl(&["get", "pod", "crash"]);
    assert!(get.contains("CrashLoopBackOff"), "{get}");
    assert_eq!(
        jsonpath(
            &c,
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "3"
    );
    // The start times of the attempts, from the runtime's log files (one per attempt).
    let logs = c.data_dir().join("agent/logs");
    let dir = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("default_crash_")
        })
        .unwrap()
        .path()
        .join("c");
    let started = |n: u32| -> f64 {
        let text = std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap();
        let ts = text.split(' ').next().unwrap();
        ts.parse::<jiff::Timestamp>().unwrap().as_millisecond() as f64 / 1000.0
    };
    let (t0, t1, t2, t3) = (started(0), started(1), started(2), started(3));
    assert!(t1 - t0 < 5.0, "first restart at once: {}", t1 - t0);
    assert!(
        (9.0..16.0).contains(&(t2 - t1)),
        "second after 10 s: {}",
        t2 - t1
    );
    assert!(
        (19.0..27.0).contains(&(t3 - t2)),
        "third after 20 s: {}",
        t3 - t2
    );
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=crash",
    ]);
    assert!(events.contains("BackOff"), "{events}");
}

#[test]
fn graceful_termination_runs_pre_stop_then_sigterm() {
    let c = Cluster::start_with_agent(&[]);
    let host_dir = c.data_dir().join("term");
    std::fs::create_dir_all(&host_dir).unwrap();
    apply(
        &c,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: polite, finalizers: [{HOLD}]}}
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sh, -c, "trap 'echo TERM >> /out/log; exit 0' TERM; echo started >> /out/log; while true; do sleep 0.2; done"]
    lifecycle:
      preStop: {{exec: {{command: [sh, -c, "echo prestop >> /out/log; sleep 1"]}}}}
    volumeMounts: [{{name: out, mountPath: /out}}]
  volumes: [{{name: out, hostPath: {{path: {dir}}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: stubborn, finalizers: [{HOLD}]}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {{name: c, image: {BUSYBOX}, command: [sh, -c, "trap '' TERM; while true; do sleep 0.2; done"]}}
"#,
            dir = host_dir.display()
        ),
    );
    wait_for("both Running", 60, || {
        running(&c, "polite") && running(&c, "stubborn")
    });
    wait_for("started", 10, || {
        std::fs::read_to_string(host_dir.join("log"))
            .unwrap_or_default()
            .contains("started")
    });
    // A finalizer keeps each pod after the agent is done, to show its last status: as
    // upstream's kubelet, a deleted pod ends Succeeded if its containers exited 0, else Failed.
    c.kubectl(&["delete", "pod", "polite", "--wait=false"]);
    wait_for("polite's terminal status", 60, || {
        jsonpath(&c, "polite", "{.status.phase}") == "Succeeded"
    });
    let log = std::fs::read_to_string(host_dir.join("log")).unwrap();
    assert_eq!(
        log, "started\nprestop\nTERM\n",
        "preStop runs before SIGTERM"
    );
    let code = "{.status.containerStatuses[0].state.terminated.exitCode}";
    assert_eq!(jsonpath(&c, "polite", code), "0");
    release(&c, "polite");
    // A container ignoring SIGTERM is killed when the grace period ends.
    let t = Instant::now();
    c.kubectl(&["delete", "pod", "stubborn", "--wait=false"]);
    wait_for("stubborn's terminal status", 60, || {
        jsonpath(&c, "stubborn", "{.status.phase}") == "Failed"
    });
    let took = t.elapsed().as_secs_f64();
    assert!(
        (1.5..15.0).contains(&took),
        "killed after the 2 s grace period: {took}"
    );
    assert_eq!(jsonpath(&c, "stubborn", code), "137", "SIGKILL");
    let ready = "{.status.conditions[?(@.type==\"Ready\")].status}";
    assert_eq!(jsonpath(&c, "stubborn", ready), "False");
    release(&c, "stubborn");
}

/// The finalizer that keeps a deleted pod in the API until [`release`].
const HOLD: &str = "corten.dev/test-hold";

/// Removes [`HOLD`] from a deleted pod, and waits until it is gone.
fn release(c: &Cluster, pod: &str) {
    c.kubectl(&[
        "patch",
        "pod",
        pod,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    wait_for(&format!("{pod} gone"), 30, || {
        !c.try_kubectl(&["get", "pod", pod]).status.success()
    });
}
