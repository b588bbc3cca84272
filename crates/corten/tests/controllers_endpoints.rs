//! The endpoints and EndpointSlice controllers end to end: a Service's Endpoints and
//! EndpointSlices follow the pods it selects (on simulated nodes, placed by the scheduler) and
//! go away with the Service.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, SimNodes};

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const APP: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
        ports:
        - name: http
          containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: http
";

fn addresses(c: &Cluster) -> Vec<String> {
    let out = c.try_kubectl(&[
        "get",
        "endpoints",
        "web",
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

const SLICE_LABEL: &str = "kubernetes.io/service-name=web";

fn slice_addresses(c: &Cluster) -> Vec<String> {
    let out = c.try_kubectl(&[
        "get",
        "endpointslices",
        "-l",
        SLICE_LABEL,
        "-o",
        "jsonpath={.items[*].endpoints[?(@.conditions.ready==true)].addresses[0]}",
    ]);
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn endpoints_follow_the_selected_pods() {
    let c = Cluster::start();
    let _nodes = SimNodes::start(&c, 2);
    c.apply(APP);
    eventually("two ready addresses", || addresses(&c).len() == 2);
    let ep = c.get_json(&["get", "endpoints", "web"]);
    let port = &ep["subsets"][0]["ports"][0];
    assert_eq!(
        (port["name"].as_str(), port["port"].as_i64()),
        (Some("http"), Some(8080)),
        "{ep}"
    );
    let pod_ips = c.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ]);
    let mut want: Vec<String> = pod_ips.split_whitespace().map(str::to_string).collect();
    want.sort();
    assert_eq!(addresses(&c), want);
    let table = c.kubectl(&["get", "endpoints", "web"]);
    assert!(table.contains(":8080"), "{table}");

    eventually("a slice with the same two addresses", || {
        slice_addresses(&c) == want
    });
    let slice = c.get_json(&["get", "endpointslices", "-l", SLICE_LABEL]);
    let slice = &slice["items"][0];
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"][0]["name"], "http");
    assert_eq!(slice["ports"][0]["port"], 8080);
    assert_eq!(slice["endpoints"][0]["conditions"]["serving"], true);
    assert_eq!(slice["metadata"]["ownerReferences"][0]["name"], "web");

    c.kubectl(&["scale", "deployment", "web", "--replicas=3"]);
    eventually("three addresses", || addresses(&c).len() == 3);
    eventually("three in the slice", || slice_addresses(&c).len() == 3);
    c.kubectl(&["scale", "deployment", "web", "--replicas=1"]);
    eventually("one address", || addresses(&c).len() == 1);
    eventually("one in the slice", || slice_addresses(&c).len() == 1);

    c.kubectl(&["delete", "service", "web"]);
    eventually("endpoints removed with the service", || {
        !c.try_kubectl(&["get", "endpoints", "web"]).status.success()
    });
    eventually("slices removed with the service", || {
        c.kubectl(&["get", "endpointslices", "-l", SLICE_LABEL, "-o", "name"])
            .trim()
            .is_empty()
    });
}
