//! The HorizontalPodAutoscaler controller end to end through kubectl (control plane only):
//! `kubectl autoscale` brings a Deployment up to `--min`, a manual scale above `--max` is
//! brought back down, and within the bounds the HPA says, as upstream does, that it has no
//! metrics to compute a replica count from (corten serves no metrics API yet).

mod common;

use common::Cluster;
use common::pods::wait_for;
use serde_json::Value;

fn replicas(c: &Cluster) -> i64 {
    c.get_json(&["get", "deployment", "web"])["spec"]["replicas"]
        .as_i64()
        .unwrap_or(-1)
}

fn condition(hpa: &Value, type_: &str) -> (String, String) {
    hpa["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .unwrap_or_default()
}

#[test]
fn autoscale_keeps_a_deployment_within_its_bounds() {
    let c = Cluster::start_with(&[]);
    c.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=1",
    ]);
    c.kubectl(&[
        "autoscale",
        "deployment",
        "web",
        "--min=3",
        "--max=5",
        "--cpu-percent=50",
    ]);
    wait_for("scaled up to --min", 60, || replicas(&c) == 3);
    wait_for("the HPA's status", 30, || {
        let hpa = c.get_json(&["get", "hpa", "web"]);
        hpa["status"]["desiredReplicas"] == 3 && hpa["status"]["lastScaleTime"].is_string()
    });
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    assert!(
        events.contains("SuccessfulRescale")
            && events
                .contains("New size: 3; reason: Current number of replicas below Spec.MinReplicas"),
        "{events}"
    );

    // Above --max by hand: back to 5 at the next sync (every 15 s).
    c.kubectl(&["scale", "deployment", "web", "--replicas=8"]);
    wait_for("scaled down to --max", 60, || replicas(&c) == 5);

    // Within the bounds: no metrics source, so the count stays and the HPA says why.
    wait_for("ScalingActive False", 60, || {
        let hpa = c.get_json(&["get", "hpa", "web"]);
        condition(&hpa, "ScalingActive") == ("False".into(), "FailedGetResourceMetric".into())
            && hpa["status"]["currentReplicas"] == 5
    });
    let hpa = c.get_json(&["get", "hpa", "web"]);
    assert_eq!(condition(&hpa, "AbleToScale").0, "True");
    assert_eq!(replicas(&c), 5);
    let row = c.kubectl(&["get", "hpa", "web", "--no-headers"]);
    // NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[..2], ["web", "Deployment/web"], "{row}");
    assert_eq!(
        cols[cols.len() - 4..cols.len() - 1],
        ["3", "5", "5"],
        "{row}"
    );

    // A target that does not exist is reported, not retried blindly.
    common::pods::apply(
        &c,
        "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: ghost
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ghost}
  minReplicas: 1
  maxReplicas: 2
",
    );
    wait_for("AbleToScale False", 60, || {
        let hpa = c.get_json(&["get", "hpa", "ghost"]);
        condition(&hpa, "AbleToScale") == ("False".into(), "FailedGetScale".into())
    });
}
