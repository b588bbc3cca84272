//! The node agent, end to end, feature by feature: security contexts, host ports and host
//! network, DNS settings, persistent volumes, probes of every kind, postStart hooks, image
//! pull policies, pod-to-pod traffic, a dying containerd, and `corten images`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Cluster;
use common::pods::{BUSYBOX, NGINX, apply, jsonpath, output, running, wait_for};

fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn security_context_dns_and_host_network() {
    let c = Cluster::start_with_agent(&[]);
    apply(
        &c,
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: secure}}
spec:
  hostname: myhost
  dnsConfig: {{options: [{{name: ndots, value: "2"}}], searches: [extra.example]}}
  securityContext: {{runAsUser: 1000, runAsGroup: 3000}}
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sh, -c, "echo id=$(id -u):$(id -g); echo host=$(hostname); cat /etc/resolv.conf; touch /rootfile 2>/dev/null && echo rootfs=rw || echo rootfs=ro; cat /proc/self/status | grep CapEff; sleep 3600"]
    securityContext: {{readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: nonroot}}
spec:
  containers:
  - {{name: c, image: {BUSYBOX}, command: [sleep, "3600"], securityContext: {{runAsNonRoot: true}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hostnet}}
spec:
  hostNetwork: true
  containers:
  - {{name: c, image: {BUSYBOX}, command: [sh, -c, "ip addr | grep -c inet; sleep 3600"]}}
"#
        ),
    );
    wait_for("secure Running", 60, || running(&c, "secure"));
    wait_for("the report", 20, || {
        output(&c, "secure", "c").contains("CapEff")
    });
    let out = output(&c, "secure", "c");
    for expected in [
        "id=1000:3000",
        "host=myhost",
        "nameserver 10.43.0.10",
        "search default.svc.cluster.local svc.cluster.local cluster.local extra.example",
        "options ndots:2",
        "rootfs=ro",
        "CapEff:\t0000000000000000",
    ] {
        assert!(out.contains(expected), "{expected:?} missing in:\n{out}");
    }
    wait_for("runAsNonRoot refused", 30, || {
        jsonpath(
            &c,
            "nonroot",
            "{.status.containerStatuses[0].state.waiting.message}",
        )
        .contains("runAsNonRoot and image will run as root")
    });
    wait_for("hostnet Running", 60, || running(&c, "hostnet"));
    let host_ip = jsonpath(&c, "hostnet", "{.status.hostIP}");
    assert_eq!(
        jsonpath(&c, "hostnet", "{.status.podIP}"),
        host_ip,
        "host network pods have the node's address"
    );
}

#[test]
fn probes_of_every_kind_host_ports_and_pod_to_pod_traffic() {
    let c = Cluster::start_with_agent(&[]);
    let port = common::free_port();
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
    ports: [{{name: http, containerPort: 80, hostPort: {port}}}]
    startupProbe: {{tcpSocket: {{port: http}}, periodSeconds: 1}}
    readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 1}}
    livenessProbe: {{tcpSocket: {{port: 80}}, periodSeconds: 2}}
    lifecycle:
      postStart: {{exec: {{command: [sh, -c, "echo poststart > /usr/share/nginx/html/hook.txt"]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: badhttp}}
spec:
  containers:
  - name: nginx
    image: {NGINX}
    readinessProbe: {{httpGet: {{path: /missing, port: 80}}, periodSeconds: 1}}
"#
        ),
    );
    wait_for("web Ready", 60, || {
        jsonpath(&c, "web", "{.status.containerStatuses[0].ready}") == "true"
    });
    let ip = jsonpath(&c, "web", "{.status.podIP}");
    assert_eq!(curl(&format!("http://{ip}/hook.txt")).trim(), "poststart");
    // hostPort: the node's port reaches the pod (portmap DNATs traffic arriving on the node's address).
    let host_ip = jsonpath(&c, "web", "{.status.hostIP}");
    assert!(curl(&format!("http://{host_ip}:{port}/")).contains("Welcome to nginx!"));
    // Pod to pod.
    apply(
        &c,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: client}}\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: c, image: {BUSYBOX}, command: [sh, -c, \"timeout 5 wget -qO- http://{ip}/hook.txt\"]}}\n"
        ),
    );
    wait_for("client done", 60, || {
        jsonpath(&c, "client", "{.status.phase}") == "Succeeded"
    });
    assert_eq!(output(&c, "client", "c").trim(), "poststart");
    // A failing httpGet readiness probe keeps the pod unready, with Unhealthy events.
    wait_for("badhttp Running", 60, || running(&c, "badhttp"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        jsonpath(&c, "badhttp", "{.status.containerStatuses[0].ready}"),
        "false"
    );
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=badhttp",
    ]);
    assert!(
        events.contains("Readiness probe failed: HTTP probe failed with statuscode: 404"),
        "{events}"
    );
}

#[test]
fn persistent_volume_claims_and_pull_policies() {
    let c = Cluster::start_with_agent(&[]);
    let pv_dir = c.data_dir().join("pv1");
    apply(
        &c,
        &format!(
            r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: pv1}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  hostPath: {{path: {dir}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
  volumeName: pv1
  storageClassName: ""
---
apiVersion: v1
kind: Pod
metadata: {{name: writer}}
spec:
  restartPolicy: Never
  containers:
  - {{name: c, image: {BUSYBOX}, command: [sh, -c, "echo persisted > /data/file"], volumeMounts: [{{name: d, mountPath: /data}}]}}
  volumes: [{{name: d, persistentVolumeClaim: {{claimName: data}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: nomount}}
spec:
  containers:
  - {{name: c, image: {BUSYBOX}, command: [sleep, "3600"], volumeMounts: [{{name: v, mountPath: /v}}]}}
  volumes: [{{name: v, configMap: {{name: absent}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: never}}
spec:
  containers:
  - {{name: c, image: "docker.io/library/absent:1.0", imagePullPolicy: Never}}
---
apiVersion: v1
kind: Pod
metadata: {{name: unpullable}}
spec:
  containers:
  - {{name: c, image: "registry.invalid/nothing:1.0"}}
"#,
            dir = pv_dir.display()
        ),
    );
    wait_for("writer done", 60, || {
        jsonpath(&c, "writer", "{.status.phase}") == "Succeeded"
    });
    assert_eq!(
        std::fs::read_to_string(pv_dir.join("file")).unwrap(),
        "persisted\n"
    );
    wait_for("FailedMount", 30, || {
        c.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=nomount,reason=FailedMount",
        ])
        .contains("configmap \"absent\" not found")
    });
    assert_eq!(
        jsonpath(
            &c,
            "nomount",
            "{.status.containerStatuses[0].state.waiting.reason}"
        ),
        "ContainerCreating"
    );
    wait_for("ErrImageNeverPull", 30, || {
        jsonpath(
            &c,
            "never",
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "ErrImageNeverPull"
    });
    wait_for("ErrImagePull", 60, || {
        jsonpath(
            &c,
            "unpullable",
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "ErrImagePull"
    });
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=unpullable",
    ]);
    assert!(
        events.contains("Pulling") && events.contains("Failed to pull image"),
        "{events}"
    );
}

#[test]
fn a_dying_containerd_is_restarted_and_reported() {
    let c = Cluster::start_with_agent(&[]);
    apply(
        &c,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: survivor}}\nspec:\n  containers:\n  - {{name: c, image: {BUSYBOX}, command: [sleep, '3600']}}\n"
        ),
    );
    wait_for("survivor Running", 60, || running(&c, "survivor"));
    let id = jsonpath(&c, "survivor", "{.status.containerStatuses[0].containerID}");
    let pid =
        std::fs::read_to_string(c.data_dir().join("agent/containerd/containerd.pid")).unwrap();
    Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    let ready = |c: &Cluster| {
        c.kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.conditions[?(@.type==\"Ready\")].status}",
        ])
    };
    wait_for("the node NotReady", 20, || ready(&c) == "False");
    let message = c.kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.conditions[?(@.type==\"Ready\")].message}",
    ]);
    assert!(message.contains("container runtime is down"), "{message}");
    wait_for("the node Ready again", 60, || ready(&c) == "True");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        jsonpath(&c, "survivor", "{.status.containerStatuses[0].containerID}"),
        id
    );
    assert_eq!(
        jsonpath(
            &c,
            "survivor",
            "{.status.containerStatuses[0].restartCount}"
        ),
        "0"
    );
}

#[test]
fn images_import_and_list_offline() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_corten");
    let busybox = common::test_images_dir().join("busybox.tar");
    // No server running: the command starts the node's containerd for the import.
    let out = Command::new(bin)
        .args(["images", "import", "--data-dir"])
        .arg(dir.path())
        .arg(&busybox)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin)
        .args(["images", "ls", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("docker.io/library/busybox:1.35"), "{list}");
    let out = Command::new(bin)
        .args(["images", "import", "--data-dir"])
        .arg(dir.path())
        .arg(dir.path().join("missing.tar"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    let _ = Command::new(bin)
        .args(["killall", "--data-dir"])
        .arg(dir.path())
        .status();
}

/// A pod that gets an address which an earlier pod had is reached at once: the node forgets
/// the old pod's link-layer address. host-local hands out addresses in turn, so an address
/// comes back once the pod CIDR wraps around; the neighbour entry the earlier pod left (here
/// put in place as it would be, rather than by cycling through 250 pods) still names that
/// pod's MAC address, and without the fix the new pod was unreachable for 5-20 s while the
/// entry failed its probes.
#[test]
fn a_reused_pod_address_is_reachable_at_once() {
    let c = Cluster::start_with_agent(&[]);
    let pod = |name: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: nginx
    image: {NGINX}
"#
        )
    };
    apply(&c, &pod("first"));
    wait_for("first running", 60, || running(&c, "first"));
    let first: std::net::Ipv4Addr = jsonpath(&c, "first", "{.status.podIP}").parse().unwrap();
    // host-local gives the next pod the next address; an earlier holder of it left this entry.
    let ip = std::net::Ipv4Addr::from(u32::from(first) + 1).to_string();
    let neigh = |args: &[&str]| {
        let out = Command::new("ip").arg("neigh").args(args).output().unwrap();
        assert!(out.status.success(), "ip neigh {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let gone_mac = "02:00:5e:00:00:01";
    neigh(&[
        "replace", &ip, "lladdr", gone_mac, "dev", "corten0", "nud", "stale",
    ]);
    apply(&c, &pod("second"));
    wait_for("second running", 60, || running(&c, "second"));
    assert_eq!(
        jsonpath(&c, "second", "{.status.podIP}"),
        ip,
        "not the next address"
    );
    assert!(
        !neigh(&["show", &ip]).contains(gone_mac),
        "the gone pod's MAC address is still the neighbour entry of {ip}"
    );
    // nginx listens as soon as the container runs; give it a moment, then every request must
    // be answered within a second (a stale entry loses them for 5 s or more).
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..5 {
        let out = Command::new("curl")
            .args(["-s", "-m", "1", &format!("http://{ip}/")])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("nginx"),
            "request {i} to the reused address {ip} not answered within 1 s"
        );
    }
}
