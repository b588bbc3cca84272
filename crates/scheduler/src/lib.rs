//! placeholder
/// x
pub async fn run(_c: kube::Client, _s: tokio::sync::watch::Receiver<bool>) {}
