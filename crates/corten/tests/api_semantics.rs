//! API semantics as upstream's conventions describe them: graceful pod deletion, the
//! spec/status split, streaming-list watches, watch timeouts, service address allocation.

mod common;

use common::Cluster;

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"nodeName":"node-a","containers":[{"name":"c","image":"busybox"}]}}"#;

#[test]
fn bound_pods_wait_for_their_node_unless_forced() {
    let c = Cluster::start();
    let created = c.curl(
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        Some(POD.as_bytes()),
        true,
    );
    assert_eq!(created.code, 201, "{}", created.body);
    assert_eq!(created.json()["spec"]["terminationGracePeriodSeconds"], 30);
    // A graceful delete only marks the pod: its node agent must stop it first.
    c.kubectl(&["delete", "pod", "p", "--wait=false"]);
    let pod = c.get_json(&["get", "pod", "p"]);
    assert!(pod["metadata"]["deletionTimestamp"].is_string(), "{pod}");
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 30);
    // Forced (grace period 0): gone at once.
    c.kubectl(&["delete", "pod", "p", "--grace-period=0", "--force"]);
    assert!(!c.try_kubectl(&["get", "pod", "p"]).status.success());
    // An unbound pod is deleted at once.
    let unbound = POD.replace(r#""nodeName":"node-a","#, "");
    assert_eq!(
        c.curl(
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            Some(unbound.as_bytes()),
            true
        )
        .code,
        201
    );
    c.kubectl(&["delete", "pod", "p", "--wait=false"]);
    assert!(!c.try_kubectl(&["get", "pod", "p"]).status.success());
}

#[test]
fn status_and_spec_are_written_separately() {
    let c = Cluster::start();
    c.apply("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: d}\n  template:\n    metadata:\n      labels: {app: d}\n    spec:\n      containers:\n      - name: c\n        image: nginx\n");
    let path = "/apis/apps/v1/namespaces/default/deployments/d";
    // Writing status through the main resource is ignored (the deployment controller owns it)...
    let r = c.curl(
        "PATCH",
        path,
        "application/merge-patch+json",
        Some(br#"{"status":{"replicas":7},"spec":{"replicas":2}}"#),
        true,
    );
    assert_eq!(r.code, 200, "{}", r.body);
    assert_ne!(r.json()["status"]["replicas"], 7, "{}", r.body);
    assert_eq!(r.json()["metadata"]["generation"], 2);
    // ...and spec through the status subresource.
    let r = c.curl(
        "PATCH",
        &format!("{path}/status"),
        "application/merge-patch+json",
        Some(br#"{"status":{"replicas":7},"spec":{"replicas":5}}"#),
        true,
    );
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.json()["status"]["replicas"], 7);
    assert_eq!(r.json()["spec"]["replicas"], 2);
    assert_eq!(
        r.json()["metadata"]["generation"],
        2,
        "status writes do not bump generation"
    );
    let scale = c
        .curl(
            "GET",
            &format!("{path}/scale"),
            "application/json",
            None,
            true,
        )
        .json();
    assert_eq!(
        (scale["kind"].as_str(), scale["spec"]["replicas"].as_i64()),
        (Some("Scale"), Some(2))
    );
    assert_eq!(scale["status"]["selector"], "app=d");
}

#[test]
fn streaming_list_watch_ends_initial_events_with_a_bookmark() {
    let c = Cluster::start();
    c.kubectl(&["create", "configmap", "one"]);
    c.kubectl(&["create", "configmap", "two"]);
    let r = c.curl(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion=&timeoutSeconds=1",
        "application/json",
        None,
        true,
    );
    assert_eq!(r.code, 200);
    let events: Vec<serde_json::Value> = r
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(&types[..3], ["ADDED", "ADDED", "BOOKMARK"], "{types:?}");
    assert_eq!(
        events[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    // timeoutSeconds=1 ended the watch: curl returned.
}

#[test]
fn service_addresses_are_allocated_and_released() {
    let c = Cluster::start();
    let k = c.get_json(&["get", "service", "kubernetes", "-n", "default"]);
    assert_eq!(k["spec"]["clusterIP"], "10.43.0.1");
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: np\nspec:\n  type: NodePort\n  selector: {app: x}\n  ports:\n  - name: http\n    port: 80\n    nodePort: 30080\n  - name: https\n    port: 443\n";
    c.apply(svc);
    let s = c.get_json(&["get", "service", "np"]);
    assert_eq!(s["spec"]["ports"][0]["nodePort"], 30080);
    let auto = s["spec"]["ports"][1]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&auto), "{auto}");
    // The same node port cannot be taken twice...
    let clash = c.kubectl_stdin(&["apply", "-f", "-"], &svc.replace("name: np", "name: np2"));
    assert!(!clash.status.success());
    assert!(
        String::from_utf8_lossy(&clash.stderr).contains("already allocated"),
        "{}",
        String::from_utf8_lossy(&clash.stderr)
    );
    // ...until the service holding it is deleted.
    c.kubectl(&["delete", "service", "np"]);
    c.apply(&svc.replace("name: np", "name: np2"));
    // An explicit clusterIP outside the range is refused.
    let out = c.kubectl_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  clusterIP: 10.99.0.5\n  ports:\n  - port: 80\n");
    assert!(!out.status.success());
}

#[test]
fn binding_assigns_the_node_once_and_marks_the_pod_scheduled() {
    let c = Cluster::start();
    let unbound = POD.replace(r#""nodeName":"node-a","#, "");
    assert_eq!(
        c.curl(
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            Some(unbound.as_bytes()),
            true
        )
        .code,
        201
    );
    let binding = br#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"node-b"}}"#;
    let r = c.curl(
        "POST",
        "/api/v1/namespaces/default/pods/p/binding",
        "application/json",
        Some(binding),
        true,
    );
    assert_eq!(r.code, 201, "{}", r.body);
    let pod = c.get_json(&["get", "pod", "p"]);
    assert_eq!(pod["spec"]["nodeName"], "node-b");
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
        .unwrap();
    assert_eq!(scheduled["status"], "True");
    // A second binding is a conflict.
    let r = c.curl(
        "POST",
        "/api/v1/namespaces/default/pods/p/binding",
        "application/json",
        Some(binding),
        true,
    );
    assert_eq!(r.code, 409, "{}", r.body);
}

#[test]
fn tables_match_upstream_columns() {
    let c = Cluster::start();
    c.apply("apiVersion: v1\nkind: Event\nmetadata:\n  name: ev1\ninvolvedObject:\n  kind: Pod\n  name: web\n  namespace: default\nreason: Testing\nmessage: hello there\ntype: Normal\n");
    // Events: no NAME column unless -o wide, where it comes last.
    let table = c.kubectl(&["get", "events"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{table}"
    );
    assert!(
        table.contains("pod/web") && table.contains("hello there"),
        "{table}"
    );
    let wide = c.kubectl(&["get", "events", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().trim_end().ends_with("NAME"),
        "{wide}"
    );
    // Pods: NAME READY STATUS RESTARTS AGE, and IP NODE NOMINATED NODE READINESS GATES wide.
    let pod = POD.replace(r#""nodeName":"node-a","#, "");
    assert_eq!(
        c.curl(
            "POST",
            "/api/v1/namespaces/default/pods",
            "application/json",
            Some(pod.as_bytes()),
            true
        )
        .code,
        201
    );
    let pods = c.kubectl(&["get", "pods", "-o", "wide"]);
    let header: Vec<&str> = pods.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ],
        "{pods}"
    );
    assert!(pods.lines().nth(1).unwrap().starts_with("p "), "{pods}");
}
