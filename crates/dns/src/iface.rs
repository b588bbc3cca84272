//! The node-local address of the cluster DNS: the dummy interface `corten-dns0` carrying
//! 10.43.0.10/32, so that the host and the pods (whose default route is the node, through the
//! pod bridge) reach the server without DNAT. The interface helpers are the proxy's
//! ([`proxy::iface`]), shared with the LoadBalancer addresses a node binds.

pub use proxy::iface::{ensure, remove};

/// The dummy interface's name.
pub const INTERFACE: &str = "corten-dns0";
