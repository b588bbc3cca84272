//! `kubectl get -w` recorded for later inspection: a test starts a watch of pods with
//! `--output-watch-events -o json`, does its work, then replays the events to check a bound
//! held at every step (e.g. never more than N pods active).

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Cluster;

/// A running `kubectl get pods -w`, writing its events to a file.
pub struct PodWatch {
    child: Child,
    path: std::path::PathBuf,
}

impl PodWatch {
    /// Starts watching the pods of namespace default that match `selector`, and waits until
    /// kubectl is connected (its first output, or half a second when there is none yet).
    pub fn start(c: &Cluster, selector: &str) -> Self {
        let path = c
            .data_dir()
            .join(format!("watch-{}.json", super::free_port()));
        let out = std::fs::File::create(&path).expect("watch file");
        let child = c
            .kubectl_cmd(&[
                "get",
                "pods",
                "-l",
                selector,
                "-w",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get -w");
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline
            && std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) == 0
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        PodWatch { child, path }
    }

    /// Stops the watch and returns the pods as they were after each event (name → pod,
    /// deleted pods removed).
    pub fn finish(mut self) -> Vec<BTreeMap<String, Value>> {
        // Let the last events arrive.
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut pods = BTreeMap::new();
        let mut states = Vec::new();
        for ev in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
            let Ok(ev) = ev else { break };
            let obj = &ev["object"];
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            if ev["type"] == "DELETED" {
                pods.remove(&name);
            } else {
                pods.insert(name, obj.clone());
            }
            states.push(pods.clone());
        }
        states
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a pod (as JSON) is active: not finished and not being deleted.
pub fn is_active(pod: &Value) -> bool {
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    phase != "Succeeded" && phase != "Failed" && pod["metadata"]["deletionTimestamp"].is_null()
}

/// Whether a pod (as JSON) has its Ready condition True.
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}
