//! corten's node agent (the kubelet's counterpart).
//!
//! For now it holds only [`sim`], the simulated node agent: nodes whose pods are reported
//! Running without any container being started, as kwok does. It is an API client like every
//! other component: it never reads the store.

pub mod sim;

pub use sim::run_simulated_nodes;
