//! The node agent, end to end: `corten server` with its agent on a real containerd, pods from
//! kubectl, and what a user sees (status, events, what the containers print and serve).
//! Container output is read from the CRI log files the runtime writes (what `kubectl logs`
//! serves).

mod common;

use std::time::Duration;

use common::Cluster;
use common::pods::{BUSYBOX, NGINX, apply, jsonpath, output, running, wait_for};

#[test]
fn a_pod_runs_serves_and_is_removed_without_leaks() {
    let c = Cluster::start_with_agent(&[]);
    let node = c.get_json(&["get", "nodes"]);
    let node = &node["items"][0];
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    assert!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("containerd://")
    );
    assert!(
        node["spec"]["podCIDR"]
            .as_str()
            .unwrap()
            .starts_with("10.42.")
    );
    let lease = c.kubectl(&["get", "lease", "-n", "kube-node-lease", "-o", "name"]);
    assert!(lease.contains("lease"), "{lease}");

    apply(
        &c,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: nginx
    image: {NGINX}
    ports: [{{containerPort: 80}}]
    readinessProbe: {{httpGet: {{path: /, port: 80}}, periodSeconds: 1}}
"#
        ),
    );
    wait_for("web Ready", 60, || {
        jsonpath(
            &c,
            "web",
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    });
    let pod = c.get_json(&["get", "pod", "web"]);
    let status = &pod["status"];
    let ip = status["podIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.42."), "{ip}");
    assert_eq!(status["podIPs"][0]["ip"], ip.as_str());
    assert!(status["hostIP"].as_str().is_some());
    assert!(status["startTime"].as_str().is_some());
    assert_eq!(status["qosClass"], "BestEffort");
    let cs = &status["containerStatuses"][0];
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["started"], true);
    assert_eq!(cs["restartCount"], 0);
    assert!(
        cs["containerID"]
            .as_str()
            .unwrap()
            .starts_with("containerd://")
    );
    assert!(cs["imageID"].as_str().unwrap().contains("sha256:"));
    assert!(cs["state"]["running"]["startedAt"].as_str().is_some());
    for t in [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
        "PodScheduled",
    ] {
        let s = jsonpath(
            &c,
            "web",
            &format!("{{.status.conditions[?(@.type==\"{t}\")].status}}"),
        );
        assert_eq!(s, "True", "condition {t}");
    }
    // Host to pod traffic.
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://{ip}/")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Welcome to nginx!"));
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(events.contains(reason), "{reason} missing in {events}");
    }
    let wide = c.kubectl(&["get", "pod", "web", "-o", "wide"]);
    assert!(
        wide.contains("1/1") && wide.contains("Running") && wide.contains(&ip),
        "{wide}"
    );

    c.kubectl(&["delete", "pod", "web", "--wait=true", "--timeout=60s"]);
    assert!(
        c.try_kubectl(&["get", "pod", "web"])
            .stderr
            .starts_with(b"Error from server (NotFound)")
    );
    assert_no_pod_leftovers(&c);
}

/// No sandbox, IP allocation, volume dir, log dir or mount is left by deleted pods.
fn assert_no_pod_leftovers(c: &Cluster) {
    let agent = c.data_dir().join("agent");
    wait_for("pod dirs to go", 30, || {
        std::fs::read_dir(agent.join("pods")).map_or(true, |d| d.count() == 0)
            && std::fs::read_dir(agent.join("logs")).map_or(true, |d| d.count() == 0)
    });
    let ipam = agent.join("cni/ipam/corten");
    let leases: Vec<String> = std::fs::read_dir(&ipam)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10."))
        .collect();
    assert!(leases.is_empty(), "IP allocations left: {leases:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = c.data_dir().to_string_lossy().into_owned();
    let left: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| {
            p.starts_with(&*prefix)
                && (p.contains("/pods/") || p.contains("sandboxes") || p.contains("rootfs"))
        })
        .collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
}

#[test]
fn env_sources_volumes_and_init_containers() {
    let c = Cluster::start_with_agent(&[]);
    let host_dir = c.data_dir().join("hostdata");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("file.txt"), "from the host").unwrap();
    apply(
        &c,
        &format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{greeting: hello, mode: fast}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec}}
stringData: {{password: s3cret}}
---
apiVersion: v1
kind: Pod
metadata: {{name: full, labels: {{app: demo}}}}
spec:
  initContainers:
  - {{name: first, image: {BUSYBOX}, command: [sh, -c, "echo one > /work/order"], volumeMounts: [{{name: work, mountPath: /work}}]}}
  - {{name: second, image: {BUSYBOX}, command: [sh, -c, "echo two >> /work/order"], volumeMounts: [{{name: work, mountPath: /work}}]}}
  containers:
  - name: main
    image: {BUSYBOX}
    command: [sh, -c]
    args:
    - |
      echo "order=$(cat /work/order | tr '\n' ,)"
      env | sort | sed 's/^/env:/'
      echo "cfgfile=$(cat /cfg/greeting)"
      echo "secmode=$(stat -L -c %a /sec/password) sec=$(cat /sec/password)"
      echo "labels=$(cat /info/labels)"
      echo "projected=$(cat /proj/mode)/$(cat /proj/podname)"
      echo "host=$(cat /host/file.txt)"
      echo "sub=$(ls /subdir)"
      echo "tmpfs=$(grep ' /work ' /proc/mounts | cut -d' ' -f3)"
      touch /readonly/x 2>/dev/null && echo ro=writable || echo ro=readonly
      while true; do echo "live=$(cat /cfg/greeting)"; sleep 1; done
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: cfg, key: greeting}}}}}}
    - {{name: PW, valueFrom: {{secretKeyRef: {{name: sec, key: password}}}}}}
    - {{name: MISSING, valueFrom: {{configMapKeyRef: {{name: nope, key: x, optional: true}}}}}}
    - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: MYNAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: MYIP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: APP, valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['app']"}}}}}}
    - {{name: MEM, valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}}}
    - {{name: COMBO, value: "$(GREETING)-combo"}}
    envFrom:
    - {{prefix: CFG_, configMapRef: {{name: cfg}}}}
    - {{secretRef: {{name: sec}}}}
    resources: {{limits: {{memory: 64Mi, cpu: 500m}}}}
    volumeMounts:
    - {{name: work, mountPath: /work}}
    - {{name: cfg, mountPath: /cfg}}
    - {{name: sec, mountPath: /sec}}
    - {{name: info, mountPath: /info}}
    - {{name: proj, mountPath: /proj}}
    - {{name: host, mountPath: /host}}
    - {{name: work, mountPath: /subdir, subPath: nested}}
    - {{name: cfg, mountPath: /readonly, readOnly: true}}
  volumes:
  - {{name: work, emptyDir: {{medium: Memory, sizeLimit: 10Mi}}}}
  - {{name: cfg, configMap: {{name: cfg}}}}
  - {{name: sec, secret: {{secretName: sec, defaultMode: 0400}}}}
  - {{name: info, downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}}}
  - name: proj
    projected:
      sources:
      - configMap: {{name: cfg, items: [{{key: mode, path: mode}}]}}
      - downwardAPI: {{items: [{{path: podname, fieldRef: {{fieldPath: metadata.name}}}}]}}
  - {{name: host, hostPath: {{path: {host}, type: Directory}}}}
"#,
            host = host_dir.display()
        ),
    );
    wait_for("full Running", 60, || running(&c, "full"));
    wait_for("the container's report", 30, || {
        output(&c, "full", "main").contains("live=")
    });
    let out = output(&c, "full", "main");
    let ip = jsonpath(&c, "full", "{.status.podIP}");
    for expected in [
        "order=one,two,",
        "env:GREETING=hello",
        "env:PW=s3cret",
        "env:password=s3cret",
        "env:CFG_greeting=hello",
        "env:CFG_mode=fast",
        "env:MYNAME=full",
        "env:APP=demo",
        "env:MEM=64",
        "env:COMBO=hello-combo",
        &format!("env:MYIP={ip}"),
        "cfgfile=hello",
        "secmode=400 sec=s3cret",
        "labels=app=\"demo\"",
        "projected=fast/full",
        "host=from the host",
        "tmpfs=tmpfs",
        "ro=readonly",
    ] {
        assert!(out.contains(expected), "{expected:?} missing in:\n{out}");
    }
    assert!(!out.contains("env:MISSING"), "{out}");
    let node = c.kubectl(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    assert!(out.contains(&format!("env:NODE={node}")), "{out}");
    // Init container statuses.
    let init = c.get_json(&["get", "pod", "full"])["status"]["initContainerStatuses"].clone();
    assert_eq!(init[0]["state"]["terminated"]["reason"], "Completed");
    assert_eq!(init[1]["state"]["terminated"]["exitCode"], 0);
    // A ConfigMap update reaches the running pod.
    c.kubectl(&[
        "patch",
        "configmap",
        "cfg",
        "-p",
        r#"{"data":{"greeting":"bonjour"}}"#,
    ]);
    wait_for("the update in the pod", 60, || {
        output(&c, "full", "main").contains("live=bonjour")
    });
    // A missing ConfigMap: the container waits with CreateContainerConfigError.
    apply(
        &c,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: broken}}\nspec:\n  containers:\n  - name: c\n    image: {BUSYBOX}\n    env: [{{name: X, valueFrom: {{configMapKeyRef: {{name: absent, key: k}}}}}}]\n"
        ),
    );
    wait_for("CreateContainerConfigError", 30, || {
        jsonpath(
            &c,
            "broken",
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "CreateContainerConfigError"
    });
    c.kubectl(&[
        "delete",
        "pod",
        "full",
        "broken",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert_no_pod_leftovers(&c);
}

#[test]
fn restarting_the_server_keeps_containers_running() {
    let mut c = Cluster::start_with_agent(&[]);
    apply(
        &c,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: steady}}\nspec:\n  containers:\n  - {{name: c, image: {BUSYBOX}, command: [sleep, '3600'], readinessProbe: {{exec: {{command: ['true']}}, periodSeconds: 1}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: doomed}}\nspec:\n  containers:\n  - {{name: c, image: {BUSYBOX}, command: [sleep, '3600']}}\n"
        ),
    );
    wait_for("Running", 60, || {
        running(&c, "steady") && running(&c, "doomed")
    });
    let ready_since = |c: &Cluster| {
        jsonpath(
            c,
            "steady",
            "{.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}",
        )
    };
    wait_for("steady Ready", 30, || ready_since(&c).starts_with("True "));
    let since = ready_since(&c);
    let id = jsonpath(&c, "steady", "{.status.containerStatuses[0].containerID}");
    c.restart();
    // The node stays Ready through the agent's restart: a NotReady blip would take its
    // LoadBalancer addresses away until the next heartbeat.
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    while std::time::Instant::now() < deadline {
        let ready = c.kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        assert_eq!(ready, "True", "the node left Ready during the restart");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        jsonpath(&c, "steady", "{.status.containerStatuses[0].containerID}"),
        id
    );
    // The restarted agent kept the running container's readiness (no flip to False and back,
    // which would have taken it out of its Services).
    assert_eq!(ready_since(&c), since);
    assert_eq!(
        jsonpath(&c, "steady", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    assert!(running(&c, "steady"));

    // A pod removed while no agent ran is cleaned up when the agent returns.
    c.stop();
    c.set_extra(&["--disable-agent"]);
    c.start_again();
    c.kubectl(&["delete", "pod", "doomed", "--grace-period=0", "--force"]);
    c.stop();
    c.set_extra(&[]);
    c.start_again();
    c.wait_node_ready();
    let doomed_dir = |c: &Cluster| {
        std::fs::read_dir(c.data_dir().join("agent/logs"))
            .unwrap()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("default_doomed_")
            })
    };
    wait_for("the orphan to be removed", 60, || !doomed_dir(&c));
    assert_eq!(
        jsonpath(&c, "steady", "{.status.containerStatuses[0].containerID}"),
        id
    );
}

#[test]
fn fifty_pods_come_and_go_without_leaks() {
    let c = Cluster::start_with_agent(&[]);
    let mut yaml = String::new();
    for i in 0..50 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, labels: {{batch: fifty}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: {BUSYBOX}, command: [sleep, '3600']}}\n"
        ));
    }
    apply(&c, &yaml);
    wait_for("50 pods Running", 240, || {
        let out = c.kubectl(&[
            "get",
            "pods",
            "-l",
            "batch=fifty",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ]);
        out.split_whitespace().filter(|p| *p == "Running").count() == 50
    });
    let ips = c.kubectl(&[
        "get",
        "pods",
        "-l",
        "batch=fifty",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ]);
    let unique: std::collections::BTreeSet<&str> = ips.split_whitespace().collect();
    assert_eq!(unique.len(), 50, "every pod has its own address");
    c.kubectl(&[
        "delete",
        "pods",
        "-l",
        "batch=fifty",
        "--wait=true",
        "--timeout=180s",
    ]);
    assert_no_pod_leftovers(&c);
}
