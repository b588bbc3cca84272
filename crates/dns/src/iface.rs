//! The node-local address of the cluster DNS: a dummy interface (`corten-dns0`) carrying
//! 10.43.0.10/32, so that the host and the pods (whose default route is the node, through the
//! pod bridge) reach the server without DNAT. Managed with the `ip` command (iproute2).
//!
//! Kernels built without the dummy driver (as some VM kernels are) get an empty bridge of the
//! same name instead: no ports, it only holds the address. Idempotent: an interface left
//! behind by a crash is reused; removed on clean shutdown and by `corten killall`.

use std::net::IpAddr;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The dummy interface's name.
pub const INTERFACE: &str = "corten-dns0";

fn ip(args: &[&str]) -> Result<std::process::Output> {
    Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))
}

/// Creates (or reuses) the dummy interface `name`, sets it up and gives it `addr`.
pub fn ensure(name: &str, addr: IpAddr) -> Result<()> {
    let exists = ip(&["link", "show", "dev", name])?.status.success();
    if !exists {
        let mut errors = Vec::new();
        for kind in ["dummy", "bridge"] {
            let out = ip(&["link", "add", name, "type", kind])?;
            // Another instance may have won the race: only a missing interface is an error.
            if out.status.success() || ip(&["link", "show", "dev", name])?.status.success() {
                errors.clear();
                break;
            }
            errors.push(format!(
                "{kind}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if !errors.is_empty() {
            bail!("cannot create the interface {name}: {}", errors.join("; "));
        }
    }
    let prefix = if addr.is_ipv4() { 32 } else { 128 };
    let cidr = format!("{addr}/{prefix}");
    for args in [
        vec!["addr", "replace", cidr.as_str(), "dev", name],
        vec!["link", "set", "dev", name, "up"],
    ] {
        let out = ip(&args)?;
        if !out.status.success() {
            bail!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// Removes the interface `name` (and with it its address); a missing one is fine.
pub fn remove(name: &str) -> Result<()> {
    if !ip(&["link", "show", "dev", name])?.status.success() {
        return Ok(());
    }
    let out = ip(&["link", "del", "dev", name])?;
    if !out.status.success() {
        bail!(
            "cannot remove {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
