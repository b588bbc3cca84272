//! Gratuitous ARP on the wire: two network namespaces joined by a veth pair, the
//! "neighbour" holding a stale ARP entry with a wrong MAC for an address; `garp::announce`,
//! run in a thread that `setns()`es into the other namespace, makes the neighbour's entry
//! carry that side's real MAC, for an address on the link's subnet and for one reached only
//! through the default route. Needs root and iproute2; names are unique per test and
//! everything is removed on drop, also when the test fails.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces, `a` (the announcer, veth `va`) and `b` (the neighbour, veth `vb`), on
/// 10.251.0.0/24 (private to the namespaces, so parallel tests do not meet).
struct Pair {
    a: String,
    b: String,
    va: String,
    vb: String,
}

impl Pair {
    fn create() -> Self {
        let tag = format!(
            "{:x}{:x}",
            std::process::id() & 0xffff,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                & 0xfff
        );
        let p = Pair {
            a: format!("corten-garp-a-{tag}"),
            b: format!("corten-garp-b-{tag}"),
            va: format!("ga{tag}"),
            vb: format!("gb{tag}"),
        };
        ip(&["netns", "add", &p.a]);
        ip(&["netns", "add", &p.b]);
        // Created inside `a` so that nothing is ever left in the test's own namespace.
        ip(&[
            "-n", &p.a, "link", "add", &p.va, "type", "veth", "peer", "name", &p.vb, "netns", &p.b,
        ]);
        ip(&["-n", &p.a, "addr", "add", "10.251.0.1/24", "dev", &p.va]);
        ip(&["-n", &p.b, "addr", "add", "10.251.0.2/24", "dev", &p.vb]);
        for (ns, dev) in [(&p.a, &p.va), (&p.b, &p.vb)] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        p
    }

    fn mac_a(&self) -> String {
        let out = ip(&["-n", &self.a, "-o", "link", "show", "dev", &self.va]);
        let mut words = out.split_whitespace();
        words.find(|w| *w == "link/ether").expect("link/ether");
        words.next().expect("mac").to_string()
    }

    /// The neighbour's ARP entry for `addr` on its veth.
    fn neighbour(&self, addr: &str) -> String {
        ip(&["-n", &self.b, "neigh", "show", addr, "dev", &self.vb])
            .trim()
            .to_string()
    }

    /// `garp::announce(addr)` from inside namespace `a`.
    fn announce_in_a(&self, addr: Ipv4Addr) -> Vec<String> {
        let path = format!("/run/netns/{}", self.a);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open netns");
            setns(ns, CloneFlags::CLONE_NEWNET).expect("setns");
            proxy::garp::announce(addr).expect("announce")
        })
        .join()
        .expect("announcer thread")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const WRONG_MAC: &str = "02:00:00:00:00:01";

#[test]
fn gratuitous_arp_updates_the_neighbour_s_cache() {
    let p = Pair::create();
    let mac = p.mac_a();
    assert_ne!(mac, WRONG_MAC);

    // An address on the link's subnet: announced on that link.
    let on_link = "10.251.0.100";
    ip(&[
        "-n", &p.b, "neigh", "replace", on_link, "lladdr", WRONG_MAC, "dev", &p.vb, "nud", "stale",
    ]);
    assert!(p.neighbour(on_link).contains(WRONG_MAC));
    let sent = p.announce_in_a(on_link.parse().unwrap());
    assert_eq!(sent, [p.va.as_str()]);
    wait_for("the neighbour learns the on-link address's MAC", || {
        p.neighbour(on_link).contains(&mac)
    });

    // An address on no subnet of `a`: nowhere to announce until `a` has a default route,
    // then on the default route's link.
    let off_link = "10.252.0.7";
    ip(&[
        "-n", &p.b, "neigh", "replace", off_link, "lladdr", WRONG_MAC, "dev", &p.vb, "nud", "stale",
    ]);
    assert!(
        p.announce_in_a(off_link.parse().unwrap()).is_empty(),
        "no subnet, no default route: not sent"
    );
    assert!(p.neighbour(off_link).contains(WRONG_MAC));
    ip(&[
        "-n",
        &p.a,
        "route",
        "add",
        "default",
        "via",
        "10.251.0.2",
        "dev",
        &p.va,
    ]);
    let sent = p.announce_in_a(off_link.parse().unwrap());
    assert_eq!(sent, [p.va.as_str()]);
    wait_for("the neighbour learns the off-link address's MAC", || {
        p.neighbour(off_link).contains(&mac)
    });
}
