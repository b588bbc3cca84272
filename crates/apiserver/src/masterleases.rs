//! The `kubernetes` Service's Endpoints when several API servers share one datastore
//! (upstream's lease endpoint reconciler): every server keeps a record of its address under
//! [`PREFIX`] (outside the API's keys), renewed every [`RENEW`] and valid for [`TTL`], and
//! after each renewal sets the Endpoints `default/kubernetes` to the addresses of the servers
//! whose records are live (one subset per port). A record past its expiry is deleted by
//! whichever server sees it; a server that stops cleanly deletes its own. Expiry compares the
//! servers' wall clocks, so they must be roughly in sync (within a few seconds, as NTP keeps
//! them).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::request::Query;
use crate::state::ApiState;

/// Where the servers' address records live.
pub const PREFIX: &str = "/corten/masterleases/";
/// How long a record stays valid after its last renewal.
pub const TTL: Duration = Duration::from_secs(15);
/// How often a server renews its record and reconciles the Endpoints.
pub const RENEW: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Record {
    ip: String,
    port: u16,
    /// Unix seconds.
    expires: i64,
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The Endpoints subsets for the live records: one per port, addresses sorted.
fn subsets(records: &[Record], at: i64) -> Value {
    let mut by_port: BTreeMap<u16, BTreeSet<&str>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.expires > at) {
        by_port.entry(r.port).or_default().insert(&r.ip);
    }
    Value::Array(
        by_port
            .into_iter()
            .map(|(port, ips)| {
                let addresses: Vec<Value> = ips.into_iter().map(|ip| json!({"ip": ip})).collect();
                json!({
                    "addresses": addresses,
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                })
            })
            .collect(),
    )
}

/// Writes this server's record (valid for [`TTL`] from now), or deletes it with `remove`.
async fn renew(state: &ApiState, key: &str, record: &Record, remove: bool) -> store::Result<()> {
    let (current, _) = state.store.get(key).await?;
    if remove {
        if current.is_some() {
            state.store.delete(key, None).await?;
        }
        return Ok(());
    }
    let value = bytes::Bytes::from(serde_json::to_vec(record).unwrap_or_default());
    match current {
        Some(kv) => state
            .store
            .update(key, value, kv.mod_revision)
            .await
            .map(drop),
        None => state.store.create(key, value).await.map(drop),
    }
}

/// Sets the `kubernetes` Endpoints to the live servers; deletes expired records.
async fn reconcile(state: &ApiState) -> anyhow::Result<()> {
    let range = state
        .store
        .range(store::RangeRequest {
            prefix: PREFIX.into(),
            ..Default::default()
        })
        .await?;
    let at = now();
    let mut records = vec![];
    for kv in range.kvs {
        let Ok(record) = serde_json::from_slice::<Record>(&kv.value) else {
            continue;
        };
        if record.expires <= at {
            let _ = state.store.delete(&kv.key, Some(kv.mod_revision)).await;
            continue;
        }
        records.push(record);
    }
    let want = subsets(&records, at);
    if want.as_array().is_none_or(Vec::is_empty) {
        return Ok(());
    }
    let res = state
        .registry
        .get("", "v1", "endpoints")
        .ok_or_else(|| anyhow::anyhow!("endpoints are not registered"))?
        .clone();
    let mut obj = state
        .get(&res, Some("default"), "kubernetes")
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    if obj["subsets"] == want {
        return Ok(());
    }
    obj["subsets"] = want;
    state
        .update(
            &res,
            Some("default"),
            "kubernetes",
            None,
            obj,
            &Query::default(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(())
}

/// Keeps this server (`ip:port`) in the `kubernetes` Endpoints until `shutdown`, then takes
/// it out.
pub fn spawn(state: Arc<ApiState>, ip: String, port: u16, mut shutdown: watch::Receiver<bool>) {
    let key = format!("{PREFIX}{ip}:{port}");
    tokio::spawn(async move {
        loop {
            let record = Record {
                ip: ip.clone(),
                port,
                expires: now() + TTL.as_secs() as i64,
            };
            let stopping = *shutdown.borrow();
            if let Err(e) = renew(&state, &key, &record, stopping).await {
                tracing::warn!(error = %e, "cannot renew this API server's endpoint record");
            }
            if let Err(e) = reconcile(&state).await {
                tracing::warn!(error = %e, "cannot reconcile the kubernetes endpoints");
            }
            if stopping {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(RENEW) => {}
                _ = shutdown.changed() => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ip: &str, port: u16, expires: i64) -> Record {
        Record {
            ip: ip.into(),
            port,
            expires,
        }
    }

    #[test]
    fn live_servers_only_one_subset_per_port() {
        let records = [
            rec("10.0.0.2", 6443, 100),
            rec("10.0.0.1", 6443, 100),
            rec("10.0.0.3", 6443, 50),
            rec("10.0.0.1", 7443, 100),
        ];
        assert_eq!(
            subsets(&records, 60),
            json!([
                {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                 "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]},
                {"addresses": [{"ip": "10.0.0.1"}],
                 "ports": [{"name": "https", "port": 7443, "protocol": "TCP"}]},
            ])
        );
        assert_eq!(subsets(&records, 200), json!([]));
    }
}
