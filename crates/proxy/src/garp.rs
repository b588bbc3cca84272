//! Gratuitous ARP for the LoadBalancer pool addresses this node starts announcing (what
//! MetalLB's layer-2 speaker does on taking an address over): the neighbours on the address's
//! segment replace the previous holder's MAC in their ARP caches at once instead of when the
//! entry expires.
//!
//! The interfaces announced on are those whose IPv4 subnet contains the address (up, ARP
//! capable, not loopback, not [`crate::lb::INTERFACE`] itself); when none does, those of the
//! main table's default route (lowest metric). Each [`announce`] round sends, on each of them,
//! an ARP request (RFC 5227's announcement: sender and target address both the announced one,
//! target MAC zero) and an ARP reply whose target MAC is the sender's (Linux counts a reply as
//! gratuitous only then), from the interface's MAC to the broadcast address, over an
//! `AF_PACKET` raw socket. [`crate::lb`] runs [`ROUNDS`] rounds [`INTERVAL`] apart (arping
//! -U's default spacing; MetalLB repeats every 1.1 s for 5 s).
//!
//! IPv4 only: the pool is IPv4 (unsolicited neighbour advertisements for IPv6 are not sent).
//!
//! Everything is looked up in the calling thread's network namespace (`getifaddrs` over
//! netlink, `/proc/thread-self/net/route`, the socket), so a thread that `setns()`es into a
//! namespace announces there.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::{AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType};

/// Announcement rounds after an address is bound.
pub const ROUNDS: usize = 3;
/// Time between rounds.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The ARP operation of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `who-has ADDR tell ADDR`, target MAC zero (RFC 5227 announcement).
    Request,
    /// `ADDR is-at MAC`, target MAC = sender MAC.
    Reply,
}

/// Ethernet's minimum frame length without the FCS: the 42 bytes of an ARP frame, padded.
pub const FRAME_LEN: usize = 60;

/// The Ethernet frame announcing that `addr` is at `mac` (broadcast, ARP for IPv4 over
/// Ethernet, padded with zeros to [`FRAME_LEN`]).
pub fn frame(op: Op, mac: [u8; 6], addr: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]); // destination: broadcast
    f[6..12].copy_from_slice(&mac); // source
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes()); // EtherType ARP
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware type Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type IPv4
    f[18] = 6; // hardware address length
    f[19] = 4; // protocol address length
    let code: u16 = match op {
        Op::Request => 1,
        Op::Reply => 2,
    };
    f[20..22].copy_from_slice(&code.to_be_bytes());
    f[22..28].copy_from_slice(&mac); // sender MAC
    f[28..32].copy_from_slice(&addr.octets()); // sender address
    if op == Op::Reply {
        f[32..38].copy_from_slice(&mac); // target MAC (zero in a request)
    }
    f[38..42].copy_from_slice(&addr.octets()); // target address
    f
}

/// What [`targets`] needs to know of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Up, broadcast capable, ARP on, not loopback.
    pub usable: bool,
    /// Its MAC (none: not an Ethernet-like link).
    pub mac: Option<[u8; 6]>,
    /// Its IPv4 addresses with their prefix lengths.
    pub nets: Vec<(Ipv4Addr, u8)>,
}

fn contains((net, prefix): (Ipv4Addr, u8), addr: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(net) & mask == u32::from(addr) & mask
}

/// The interfaces to announce `addr` on (pure): the usable ones (with a MAC, other than
/// `exclude`) whose subnet contains it; if none, the usable ones named in `default_devs`.
pub fn targets<'a>(
    interfaces: &'a [Interface],
    default_devs: &[String],
    exclude: &str,
    addr: Ipv4Addr,
) -> Vec<&'a Interface> {
    let usable = || {
        interfaces
            .iter()
            .filter(move |i| i.usable && i.mac.is_some() && i.name != exclude)
    };
    let on_subnet: Vec<&Interface> = usable()
        .filter(|i| i.nets.iter().any(|n| contains(*n, addr)))
        .collect();
    if !on_subnet.is_empty() {
        return on_subnet;
    }
    usable()
        .filter(|i| default_devs.contains(&i.name))
        .collect()
}

/// The devices of the lowest-metric default routes in `/proc/net/route`'s format (pure).
pub fn default_route_devices(route_table: &str) -> Vec<String> {
    const RTF_UP: u32 = 1;
    let defaults: Vec<(u32, &str)> = route_table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| u32::from_str_radix(f.get(i)?, 16).ok();
            let (dest, flags, metric, mask) = (hex(1)?, hex(3)?, f.get(6)?.parse().ok()?, hex(7)?);
            (dest == 0 && mask == 0 && flags & RTF_UP != 0).then_some((metric, f[0]))
        })
        .collect();
    let Some(best) = defaults.iter().map(|(m, _)| *m).min() else {
        return Vec::new();
    };
    let mut devs: Vec<String> = defaults
        .iter()
        .filter(|(m, _)| *m == best)
        .map(|(_, d)| d.to_string())
        .collect();
    devs.dedup();
    devs
}

/// This namespace's interfaces, with the link address to send to each.
fn interfaces() -> Result<Vec<(Interface, Option<LinkAddr>)>> {
    let mut by_name: BTreeMap<String, (Interface, Option<LinkAddr>)> = BTreeMap::new();
    for ifa in nix::ifaddrs::getifaddrs().context("getifaddrs")? {
        let entry = by_name
            .entry(ifa.interface_name.clone())
            .or_insert_with(|| {
                let f = ifa.flags;
                let usable = f.contains(InterfaceFlags::IFF_UP)
                    && f.contains(InterfaceFlags::IFF_BROADCAST)
                    && !f.intersects(InterfaceFlags::IFF_LOOPBACK | InterfaceFlags::IFF_NOARP);
                let i = Interface {
                    name: ifa.interface_name.clone(),
                    usable,
                    mac: None,
                    nets: Vec::new(),
                };
                (i, None)
            });
        let Some(address) = ifa.address.as_ref() else {
            continue;
        };
        if let Some(link) = address.as_link_addr() {
            if link.halen() == 6 {
                entry.0.mac = link.addr();
                entry.1 = Some(*link);
            }
        } else if let Some(v4) = address.as_sockaddr_in() {
            let prefix = ifa
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map_or(32, |m| m.ip().to_bits().count_ones() as u8);
            entry.0.nets.push((v4.ip(), prefix));
        }
    }
    Ok(by_name.into_values().collect())
}

/// One announcement round for `addr` (blocking): a request and a reply on each of
/// [`targets`]. Returns the interfaces it was sent on (empty: no interface fits).
pub fn announce(addr: Ipv4Addr) -> Result<Vec<String>> {
    let found = interfaces()?;
    let plain: Vec<Interface> = found.iter().map(|(i, _)| i.clone()).collect();
    let routes = std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
    let chosen = targets(
        &plain,
        &default_route_devices(&routes),
        crate::lb::INTERFACE,
        addr,
    );
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    // Protocol 0: this socket only sends, it receives nothing.
    let sock = nix::sys::socket::socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("opening a packet socket")?;
    let mut sent = Vec::new();
    for iface in chosen {
        let (Some(mac), Some(Some(link))) = (
            iface.mac,
            found
                .iter()
                .find(|(i, _)| i.name == iface.name)
                .map(|(_, l)| l),
        ) else {
            continue;
        };
        for op in [Op::Request, Op::Reply] {
            // A raw packet socket takes the frame as it is; of the address only the interface
            // index counts.
            nix::sys::socket::sendto(
                sock.as_raw_fd(),
                &frame(op, mac, addr),
                link,
                MsgFlags::empty(),
            )
            .with_context(|| format!("sending gratuitous ARP for {addr} on {}", iface.name))?;
        }
        sent.push(iface.name.clone());
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];

    #[test]
    fn frames_are_broadcast_arp_announcements() {
        let addr = Ipv4Addr::new(10, 249, 7, 1);
        let req = frame(Op::Request, MAC, addr);
        #[rustfmt::skip]
        let want_request: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination: broadcast
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // source: the interface
            0x08, 0x06,                         // ARP
            0x00, 0x01, 0x08, 0x00, 6, 4,       // Ethernet, IPv4, lengths
            0x00, 0x01,                         // request
            0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // sender MAC
            10, 249, 7, 1,                      // sender address
            0, 0, 0, 0, 0, 0,                   // target MAC: zero
            10, 249, 7, 1,                      // target address = sender address
        ];
        assert_eq!(req[..42], want_request);
        assert!(req[42..].iter().all(|b| *b == 0), "zero padding to 60");
        assert_eq!(req.len(), 60);

        let reply = frame(Op::Reply, MAC, addr);
        assert_eq!(reply[..20], want_request[..20]);
        assert_eq!(reply[20..22], [0x00, 0x02], "reply");
        assert_eq!(reply[22..32], want_request[22..32]);
        assert_eq!(reply[32..38], MAC, "target MAC = sender MAC");
        assert_eq!(reply[38..42], [10, 249, 7, 1]);
    }

    fn iface(name: &str, usable: bool, nets: &[(&str, u8)]) -> Interface {
        Interface {
            name: name.into(),
            usable,
            mac: Some(MAC),
            nets: nets.iter().map(|(a, p)| (a.parse().unwrap(), *p)).collect(),
        }
    }

    #[test]
    fn the_subnet_s_interface_else_the_default_route_s() {
        let ifs = [
            iface("eth0", true, &[("192.168.1.10", 24)]),
            iface("eth1", true, &[("10.249.7.100", 29), ("172.16.0.1", 16)]),
            iface("down0", false, &[("10.249.7.99", 24)]),
            iface("corten-lb0", true, &[("10.249.7.1", 32)]),
        ];
        let names = |v: Vec<&Interface>| v.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        let default = vec!["eth0".to_string()];
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        // On eth1's /29 (10.249.7.96-103): eth1; not the down one, not the pool interface.
        assert_eq!(
            names(targets(&ifs, &default, "corten-lb0", ip("10.249.7.101"))),
            ["eth1"]
        );
        // On no subnet: the default route's interface.
        assert_eq!(
            names(targets(&ifs, &default, "corten-lb0", ip("10.249.7.1"))),
            ["eth0"]
        );
        // No subnet and no default route: nowhere.
        assert!(targets(&ifs, &[], "corten-lb0", ip("10.249.7.1")).is_empty());
        // A link without a MAC (e.g. a tunnel) is never used.
        let mut tun = iface("tun0", true, &[("10.8.0.1", 24)]);
        tun.mac = None;
        assert!(targets(&[tun], &[], "x", ip("10.8.0.5")).is_empty());
        // /0 and /32 edges.
        assert!(contains((ip("1.2.3.4"), 0), ip("9.9.9.9")));
        assert!(contains((ip("1.2.3.4"), 32), ip("1.2.3.4")));
        assert!(!contains((ip("1.2.3.4"), 32), ip("1.2.3.5")));
    }

    #[test]
    fn default_route_devices_lowest_metric() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t00000000\t0100A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0
eth0\t00000000\t010011AC\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
        assert_eq!(default_route_devices(table), ["eth0"]);
        assert!(default_route_devices("Iface\tDestination\n").is_empty());
    }
}
