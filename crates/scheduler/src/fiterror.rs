//! The failure of a scheduling cycle: [`FitError`] (every node's status) and upstream's
//! FailedScheduling message, with the preemption part as the default preemption plugin
//! writes it.

use std::collections::BTreeMap;

use crate::framework::{Code, Status};

/// No node fits the pod: how many nodes there were and why each failed.
#[derive(Clone, Debug)]
pub struct FitError {
    /// How many nodes were considered.
    pub num_all_nodes: usize,
    /// The failing status of each node, by node name.
    pub node_statuses: BTreeMap<String, Status>,
    /// The pod's preemption policy is `Never`.
    pub preemption_never: bool,
    /// What preemption said, when it ran.
    pub post_filter: PostFilter,
}

/// The outcome of preemption, for the failure message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PostFilter {
    /// Preemption did not run: the message guesses from the filter codes.
    #[default]
    NotRun,
    /// Preemption chose victims: the message has no preemption part.
    Nominated,
    /// Preemption found nothing: the part after "preemption: ".
    Message(String),
}

/// Upstream's "0/N nodes are available: <reasons>." for per-node statuses.
pub fn nodes_message(n: usize, statuses: &BTreeMap<String, Status>) -> String {
    let reasons = statuses
        .values()
        .flat_map(|s| s.reasons.iter().map(String::as_str));
    let hist = histogram(reasons);
    if hist.is_empty() {
        format!("0/{n} nodes are available.")
    } else {
        format!("0/{n} nodes are available: {hist}.")
    }
}

/// "N reason" strings sorted as upstream sorts its reasons histogram (as strings).
fn histogram<'a>(reasons: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    let mut lines: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    lines.sort();
    lines.join(", ")
}

impl FitError {
    /// Upstream's message, with the preemption part as the default preemption plugin writes
    /// it.
    pub fn message(&self) -> String {
        let n = self.num_all_nodes;
        let mut msg = nodes_message(n, &self.node_statuses);
        match &self.post_filter {
            PostFilter::Nominated => return msg,
            PostFilter::Message(m) => {
                msg.push_str(&format!(" preemption: {m}"));
                return msg;
            }
            PostFilter::NotRun => {}
        }
        if self.preemption_never {
            msg.push_str(" preemption: not eligible due to preemptionPolicy=Never.");
            return msg;
        }
        let preemption = histogram(self.node_statuses.values().map(|s| match s.code {
            Code::UnschedulableAndUnresolvable => "Preemption is not helpful for scheduling",
            Code::Unschedulable => "No preemption victims found for incoming pod",
        }));
        if !preemption.is_empty() {
            msg.push_str(&format!(
                " preemption: 0/{n} nodes are available: {preemption}."
            ));
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_counts_and_sorts_reasons_like_upstream() {
        let e = FitError {
            num_all_nodes: 3,
            node_statuses: BTreeMap::from([
                (
                    "a".into(),
                    Status::unresolvable("node(s) had untolerated taint {key: value}"),
                ),
                (
                    "b".into(),
                    Status::unschedulable(vec!["Insufficient cpu".into()]),
                ),
                (
                    "c".into(),
                    Status::unschedulable(vec!["Insufficient cpu".into()]),
                ),
            ]),
            preemption_never: false,
            post_filter: PostFilter::NotRun,
        };
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {key: value}, 2 Insufficient cpu. \
             preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
             2 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn message_without_nodes() {
        let e = FitError {
            num_all_nodes: 0,
            node_statuses: BTreeMap::new(),
            preemption_never: false,
            post_filter: PostFilter::NotRun,
        };
        assert_eq!(e.message(), "0/0 nodes are available.");
    }
}
