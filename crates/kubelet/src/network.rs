//! The pod network: a CNI config for containerd, built from the node's pod CIDR.
//!
//! A `bridge` (corten0, the pods' gateway, masquerade for traffic leaving the cluster, hairpin
//! mode so a pod reaches itself through a service address) with `host-local` IPAM on the
//! node's /24, then `portmap` for hostPort. The plugins are Debian's containernetworking-plugins
//! (/usr/lib/cni). containerd notices the file and reports NetworkReady from then on.

use std::path::Path;

use anyhow::{Context, Result};

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
                "ipMasq": true,
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
    }
}
