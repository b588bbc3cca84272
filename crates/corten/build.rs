//! Link arguments of the `corten` binary (issue 3, the node agent's memory).
//!
//! Most of the node agent's RSS is code pages of this one large binary, and the kernel maps
//! them 64 KB at a time (fault-around). In release builds on x86_64 Linux (where Rust links
//! with its bundled lld) the functions the agent runs are placed together at the start of
//! `.text`, in the order of `layout/agent.order`, a list of symbol names recorded from a
//! running agent by `scripts/agent-layout.sh` (from a release build: the symbol names' hashes
//! differ between profiles). Names that no longer exist are skipped, so a stale list costs
//! memory, never correctness. The release binary is also linked as a fixed-address
//! executable (`-no-pie`): a position-independent one carries relocation tables and has its
//! pointer-holding data rewritten at every start, pages the agent would keep resident. Other
//! builds (dev, tests, other targets) are linked as usual.

use std::path::Path;

fn main() {
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("layout/agent.order");
    println!("cargo:rerun-if-changed={}", order.display());
    let target = std::env::var("TARGET").unwrap_or_default();
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    if release && target == "x86_64-unknown-linux-gnu" && order.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
