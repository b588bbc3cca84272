//! corten's node agent (the kubelet's counterpart).
//!
//! - [`runtime`]: the CRI client and the agent's own supervised containerd.
//! - [`sim`]: the simulated node agent: nodes whose pods are reported Running without any
//!   container being started, as kwok does.
//!
//! The agent is an API client like every other component: it never reads the store.

pub mod runtime;
pub mod sim;

pub use sim::run_simulated_nodes;
