//! The supervised containerd, for real: it starts from the generated config, answers CRI, and
//! is restarted when it dies.

use std::time::Duration;

use kubelet::runtime::Cri;
use kubelet::runtime::containerd::{Layout, RuntimeHealth, supervise};

#[tokio::test]
async fn containerd_starts_answers_cri_and_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(&dir.path().join("agent"));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut health = supervise(layout.clone(), stop_rx).await.unwrap();
    let cri = Cri::connect(layout.socket.clone()).unwrap();
    let version = cri.version().await.unwrap();
    assert!(version.starts_with("containerd://"), "{version}");
    let (runtime_ready, _network_ready, _) = cri.status().await.unwrap();
    assert!(runtime_ready);

    // Kill it: the supervisor notices and brings it back.
    let pid: i32 = std::fs::read_to_string(layout.dir.join("containerd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        health.wait_for(|h| matches!(h, RuntimeHealth::Down(_))),
    )
    .await
    .expect("the death is noticed")
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        health.wait_for(|h| *h == RuntimeHealth::Up),
    )
    .await
    .expect("containerd comes back")
    .unwrap();
    assert!(cri.version().await.is_ok());

    stop_tx.send(true).unwrap();
    // The supervisor stops containerd and removes its pid file.
    for _ in 0..200 {
        if !layout.dir.join("containerd.pid").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!layout.dir.join("containerd.pid").exists());
    let _ = std::process::Command::new("umount")
        .arg("-R")
        .arg(dir.path())
        .status();
}
