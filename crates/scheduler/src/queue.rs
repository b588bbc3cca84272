//! The scheduling queue: pods waiting for a node, as upstream's `PriorityQueue`: the active
//! pods in order of priority (`spec.priority`, higher first), then of arrival.
//!
//! A pod that does not fit goes to the unschedulable set with a backoff (1 s, doubling per
//! failed attempt, at most 10 s). It goes back to the active queue once its backoff is over
//! AND something happened that may let it fit: a node was added or updated, a pod was deleted
//! ([`Queue::move_all`]), the pod itself changed ([`Queue::add`] with a new fingerprint), or it
//! has waited [`UNSCHEDULABLE_FLUSH`] (upstream's periodic flush, shorter here). An event that
//! arrives while the pod is being scheduled counts too (upstream's `moveRequestCycle`): a
//! preemption's victims may be gone before the preemptor is back in the queue.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A pod's `namespace/name`.
pub type Key = String;

/// The first backoff.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long an unschedulable pod waits for an event before it is retried anyway.
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Waiting {
    /// When its backoff ends.
    ready_at: Instant,
    /// When it became unschedulable.
    since: Instant,
    /// A cluster event happened since it failed.
    moved: bool,
    /// What the pod looked like when it failed (spec and labels).
    fingerprint: String,
    /// Its priority.
    priority: i32,
}

/// The order of the active pods: priority (higher first), then arrival.
type Order = (Reverse<i32>, u64);

/// The queue.
#[derive(Debug, Default)]
pub struct Queue {
    active: BTreeMap<Order, Key>,
    in_active: HashMap<Key, Order>,
    /// Arrivals so far (the tie-break of equal priorities).
    arrivals: u64,
    unschedulable: HashMap<Key, Waiting>,
    attempts: HashMap<Key, u32>,
    /// How many times [`Queue::move_all`] ran.
    moves: u64,
    /// Pods popped and not yet back, with `moves` when they were popped.
    in_flight: HashMap<Key, u64>,
}

/// The backoff after `attempts` failed attempts.
pub fn backoff(attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(16);
    (INITIAL_BACKOFF * (1u32 << shift)).min(MAX_BACKOFF)
}

impl Queue {
    /// A pending pod of `priority` was seen (added or updated). A pod waiting as
    /// unschedulable moves only if it changed (`fingerprint`), so that the scheduler's own
    /// status writes do not requeue it.
    pub fn add(&mut self, key: &str, fingerprint: &str, priority: i32) {
        if let Some(w) = self.unschedulable.get_mut(key) {
            if w.fingerprint != fingerprint {
                w.moved = true;
            }
            return;
        }
        self.activate(key.to_string(), priority);
    }

    fn activate(&mut self, key: Key, priority: i32) {
        if self.in_active.contains_key(&key) {
            return;
        }
        self.arrivals += 1;
        let order = (Reverse(priority), self.arrivals);
        self.in_active.insert(key.clone(), order);
        self.active.insert(order, key);
    }

    /// The next pod to schedule.
    pub fn pop(&mut self) -> Option<Key> {
        let (_, key) = self.active.pop_first()?;
        self.in_active.remove(&key);
        self.in_flight.insert(key.clone(), self.moves);
        Some(key)
    }

    /// The pod did not fit: it waits with a backoff.
    pub fn failed(&mut self, key: &str, fingerprint: &str, priority: i32, now: Instant) {
        let attempts = self.attempts.entry(key.to_string()).or_insert(0);
        *attempts += 1;
        let moved = self
            .in_flight
            .remove(key)
            .is_some_and(|seen| seen != self.moves);
        self.unschedulable.insert(
            key.to_string(),
            Waiting {
                ready_at: now + backoff(*attempts),
                since: now,
                moved,
                fingerprint: fingerprint.to_string(),
                priority,
            },
        );
    }

    /// Something changed in the cluster: every unschedulable pod may fit now.
    pub fn move_all(&mut self) {
        self.moves += 1;
        for w in self.unschedulable.values_mut() {
            w.moved = true;
        }
    }

    /// The pod is gone or bound: forget it.
    pub fn forget(&mut self, key: &str) {
        self.unschedulable.remove(key);
        self.attempts.remove(key);
        self.in_flight.remove(key);
        if let Some(order) = self.in_active.remove(key) {
            self.active.remove(&order);
        }
    }

    /// Moves the unschedulable pods that may be retried now to the active queue.
    pub fn flush(&mut self, now: Instant) {
        let ready: Vec<(Key, i32)> = self
            .unschedulable
            .iter()
            .filter(|(_, w)| {
                w.ready_at <= now && (w.moved || now.duration_since(w.since) >= UNSCHEDULABLE_FLUSH)
            })
            .map(|(k, w)| (k.clone(), w.priority))
            .collect();
        for (k, priority) in ready {
            self.unschedulable.remove(&k);
            self.activate(k, priority);
        }
    }

    /// When [`Queue::flush`] may next have something to move (None: only after an event).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.unschedulable
            .values()
            .map(|w| {
                if w.moved {
                    w.ready_at
                } else {
                    w.ready_at.max(w.since + UNSCHEDULABLE_FLUSH)
                }
            })
            .min()
    }

    /// How many pods are active, then unschedulable.
    pub fn len(&self) -> (usize, usize) {
        (self.active.len(), self.unschedulable.len())
    }

    /// Whether no pod waits at all.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty() && self.unschedulable.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(5), Duration::from_secs(10));
        assert_eq!(backoff(100), Duration::from_secs(10));
    }

    #[test]
    fn fifo_without_duplicates() {
        let mut q = Queue::default();
        q.add("a", "", 0);
        q.add("b", "", 0);
        q.add("a", "", 0);
        assert_eq!(q.pop().as_deref(), Some("a"));
        assert_eq!(q.pop().as_deref(), Some("b"));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn unschedulable_pods_wait_for_backoff_and_an_event() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.add("a", "f1", 0);
        q.pop();
        q.failed("a", "f1", 0, t0);
        // Its own status update (same fingerprint) does not requeue it.
        q.add("a", "f1", 0);
        q.flush(t0 + Duration::from_secs(2));
        assert_eq!(q.pop(), None);
        // A node event does, once the backoff is over.
        q.move_all();
        q.flush(t0 + Duration::from_millis(500));
        assert_eq!(q.pop(), None);
        assert_eq!(q.next_wakeup(), Some(t0 + Duration::from_secs(1)));
        q.flush(t0 + Duration::from_secs(1));
        assert_eq!(q.pop().as_deref(), Some("a"));
        // Second failure: 2 s.
        q.failed("a", "f1", 0, t0);
        q.add("a", "f2", 0);
        q.flush(t0 + Duration::from_secs(1));
        assert_eq!(q.pop(), None);
        q.flush(t0 + Duration::from_secs(2));
        assert_eq!(q.pop().as_deref(), Some("a"));
    }

    #[test]
    fn unschedulable_pods_are_retried_after_the_flush_interval() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.failed("a", "", 0, t0);
        q.flush(t0 + UNSCHEDULABLE_FLUSH - Duration::from_millis(1));
        assert_eq!(q.pop(), None);
        q.flush(t0 + UNSCHEDULABLE_FLUSH);
        assert_eq!(q.pop().as_deref(), Some("a"));
    }

    #[test]
    fn higher_priority_first_then_arrival() {
        let mut q = Queue::default();
        q.add("low", "", 1);
        q.add("high", "", 100);
        q.add("low-2", "", 1);
        q.add("high-2", "", 100);
        let order: Vec<Key> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["high", "high-2", "low", "low-2"]);
    }

    #[test]
    fn an_event_during_the_attempt_counts() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.add("a", "", 0);
        q.add("b", "", 0);
        q.pop();
        q.move_all();
        q.pop();
        q.failed("a", "", 0, t0);
        q.failed("b", "", 0, t0);
        q.flush(t0 + INITIAL_BACKOFF);
        assert_eq!(q.pop().as_deref(), Some("a"));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn forget_removes_everywhere() {
        let mut q = Queue::default();
        q.add("a", "", 0);
        q.failed("b", "", 0, Instant::now());
        q.forget("a");
        q.forget("b");
        assert!(q.is_empty());
    }
}
