//! Dummy interfaces that hold node-local addresses: the cluster DNS's (`corten-dns0`, 10.43.0.10,
//! so that the host and the pods reach it without DNAT) and the LoadBalancer pool addresses
//! this node announces (`corten-lb0`, see [`crate::lb`]). Managed with the `ip` command
//! (iproute2). A local address on any interface is answered for in ARP on every interface,
//! which is what makes a bound pool address reachable from its L2 segment.
//!
//! Kernels built without the dummy driver (as some VM kernels are) get an empty bridge of the
//! same name instead: no ports, it only holds the address. Idempotent: an interface left
//! behind by a crash is reused; removed on clean shutdown and by `corten killall`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn ip(args: &[&str]) -> Result<std::process::Output> {
    Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))
}

/// Creates (or reuses) the dummy interface `name`, sets it up and gives it `addr`.
pub fn ensure(name: &str, addr: IpAddr) -> Result<()> {
    create(name)?;
    let prefix = if addr.is_ipv4() { 32 } else { 128 };
    run(&["addr", "replace", &format!("{addr}/{prefix}"), "dev", name])?;
    run(&["link", "set", "dev", name, "up"])
}

fn run(args: &[&str]) -> Result<()> {
    let out = ip(args)?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The IPv4 addresses on interface `name` (empty if it does not exist).
pub fn addresses(name: &str) -> Result<BTreeSet<Ipv4Addr>> {
    let out = ip(&["-4", "-o", "addr", "show", "dev", name])?;
    if !out.status.success() {
        return Ok(BTreeSet::new());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}

/// Makes `want` (as /32s) exactly the addresses of interface `name`, creating it when there
/// is something to hold and removing it when there is not.
pub fn set_addresses(name: &str, want: &BTreeSet<Ipv4Addr>) -> Result<()> {
    if want.is_empty() {
        return remove(name);
    }
    create(name)?;
    let have = addresses(name)?;
    for a in want.difference(&have) {
        run(&["addr", "replace", &format!("{a}/32"), "dev", name])?;
    }
    for a in have.difference(want) {
        run(&["addr", "del", &format!("{a}/32"), "dev", name])?;
    }
    run(&["link", "set", "dev", name, "up"])
}

/// Creates the interface `name` unless it exists.
fn create(name: &str) -> Result<()> {
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
