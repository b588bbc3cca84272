//! The pod network: a CNI config for containerd, built from the node's pod CIDR, and the
//! masquerading of pod traffic that leaves the cluster.
//!
//! A `bridge` (corten0, the pods' gateway, hairpin mode so a pod reaches itself through a
//! service address) with `host-local` IPAM on the node's /24, then `portmap` for hostPort. The
//! plugins are Debian's containernetworking-plugins (/usr/lib/cni). containerd notices the file
//! and reports NetworkReady from then on.
//!
//! The bridge plugin's own `ipMasq` is off: it masquerades everything leaving the node's /24,
//! so a pod on another node would see this node's address instead of the pod's. Instead the
//! table `ip corten-podnet` ([`MASQ_TABLE`]) masquerades only traffic from this node's pod CIDR
//! to destinations outside the cluster CIDR (flannel's and k3s's rule): pod-to-pod traffic
//! across nodes keeps its source address, which NetworkPolicy needs. The table is replaced
//! whole whenever the network is installed and left in place when the agent stops (running
//! pods keep their way out, as the CNI plugin's rules did); [`remove_masquerade`] removes it
//! (killall).

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use proxy::batch::{self, Batch};
use proxy::nft::{eq, field, masquerade as masq, ne, prefix};
use proxy::nftables::schema::{Chain, NfCmd, NfListObject, Rule};
use proxy::nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// The nftables table that masquerades pod traffic leaving the cluster (family `ip`).
pub const MASQ_TABLE: &str = "corten-podnet";

/// The CNI network's name.
pub const NETWORK_NAME: &str = "corten";
/// The Linux bridge pods are attached to.
pub const BRIDGE: &str = "corten0";

/// The conflist for a node whose pods get addresses from `pod_cidr`; host-local keeps its
/// allocations under `ipam_dir`.
pub fn conflist(pod_cidr: &str, cluster_cidr: &str, ipam_dir: &Path) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                // Masquerading is ours (see the module docs): the plugin's would hide pod
                // addresses from other nodes.
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
        ],
        // Not a CNI key: recorded so that an operator reading the file sees the cluster range.
        "corten": {"clusterCIDR": cluster_cidr},
    })
}

/// Writes the conflist into containerd's CNI config directory (atomically).
pub fn install(conf_dir: &Path, pod_cidr: &str, cluster_cidr: &str, ipam_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(conf_dir)?;
    std::fs::create_dir_all(ipam_dir)?;
    let body = serde_json::to_vec_pretty(&conflist(pod_cidr, cluster_cidr, ipam_dir))?;
    let tmp = conf_dir.join(".10-corten.conflist.tmp");
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, conf_dir.join("10-corten.conflist"))
        .with_context(|| format!("writing the CNI config in {}", conf_dir.display()))?;
    Ok(())
}

/// The transaction that (re)creates [`MASQ_TABLE`] for a node whose pods use `pod_cidr`, in a
/// cluster whose pods use `cluster_cidr`: `ip saddr POD_CIDR ip daddr != CLUSTER_CIDR
/// ip daddr != 224.0.0.0/4 masquerade` in a postrouting NAT chain.
pub fn masquerade_batch(pod_cidr: &str, cluster_cidr: &str) -> Result<Batch> {
    let (pod_net, pod_len) = proxy::parse_cidr(pod_cidr)?;
    let (cluster_net, cluster_len) = proxy::parse_cidr(cluster_cidr)?;
    let multicast = (Ipv4Addr::new(224, 0, 0, 0), 4);
    let mut b = Batch::default();
    batch::replace_table(&mut b, NfFamily::IP, MASQ_TABLE);
    b.cmd(NfCmd::Add(NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: MASQ_TABLE.into(),
        name: "postrouting".into(),
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Postrouting),
        prio: Some(100),
        policy: Some(NfChainPolicy::Accept),
        ..Default::default()
    })));
    let net = |(addr, len): (Ipv4Addr, u32)| prefix(addr.to_string(), len);
    b.cmd(NfCmd::Add(NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: MASQ_TABLE.into(),
        chain: "postrouting".into(),
        expr: vec![
            eq(field("ip", "saddr"), net((pod_net, pod_len))),
            ne(field("ip", "daddr"), net((cluster_net, cluster_len))),
            ne(field("ip", "daddr"), net(multicast)),
            masq(),
        ]
        .into(),
        ..Default::default()
    })));
    Ok(b)
}

/// Installs (replaces) the masquerading table for `pod_cidr` in one transaction.
pub async fn install_masquerade(pod_cidr: &str, cluster_cidr: &str) -> Result<()> {
    let b = masquerade_batch(pod_cidr, cluster_cidr)?;
    proxy::sync::apply(&b)
        .await
        .with_context(|| format!("installing the pod masquerading table {MASQ_TABLE}"))
}

/// Removes the masquerading table (if there is one).
pub async fn remove_masquerade() -> Result<()> {
    proxy::sync::apply(&batch::remove_table(NfFamily::IP, MASQ_TABLE)).await
}

/// Forgets what this node knows of `ip`'s link-layer address (its neighbour entries). Pod
/// addresses come back (host-local hands them out in turn and wraps around; a node set up
/// again starts from the first), and an entry left by the pod that had the address before
/// still points at that pod's gone MAC address: packets to the new pod would be lost until the entry fails its probes, several seconds later (the
/// kernel does not take the plugin's gratuitous ARP over a recent entry). Called when a new
/// sandbox gets its address.
pub async fn forget_neighbour(ip: Ipv4Addr) -> Result<()> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};

    let (connection, handle, _) = rtnetlink::new_connection().context("netlink socket")?;
    let connection = tokio::spawn(connection);
    let result = async {
        let mut entries = handle
            .neighbours()
            .get()
            .set_family(rtnetlink::IpVersion::V4)
            .execute();
        let mut stale = vec![];
        while let Some(entry) = entries.try_next().await? {
            let same = entry.attributes.iter().any(|a| {
                matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) if *d == ip)
            });
            if same {
                stale.push(entry);
            }
        }
        for entry in stale {
            handle.neighbours().del(entry).execute().await?;
        }
        Ok::<_, rtnetlink::Error>(())
    }
    .await;
    connection.abort();
    result.with_context(|| format!("forgetting the neighbour entry of {ip}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_uses_the_node_cidr() {
        let c = conflist("10.42.3.0/24", "10.42.0.0/16", Path::new("/d/ipam"));
        assert_eq!(
            c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.3.0/24"
        );
        assert_eq!(c["plugins"][0]["hairpinMode"], true);
        assert_eq!(c["plugins"][1]["type"], "portmap");
        assert_eq!(c["plugins"][0]["ipMasq"], false);
    }

    #[test]
    fn masquerade_only_leaving_the_cluster() {
        let b = masquerade_batch("10.42.3.0/24", "10.42.0.0/16").unwrap();
        let json = b.to_json();
        // Replaces the table, then one rule: from this node's pods, not to the cluster.
        assert_eq!(b.len(), 5);
        assert!(
            json.contains(r#""prefix":{"addr":"10.42.3.0","len":24}"#),
            "{json}"
        );
        assert!(
            json.contains(r#""op":"!=","right":{"prefix":{"addr":"10.42.0.0","len":16}}"#),
            "{json}"
        );
        assert!(json.contains("masquerade"), "{json}");
        assert!(masquerade_batch("10.42.3.0", "10.42.0.0/16").is_err());
    }
}
