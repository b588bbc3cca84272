//! A work queue in the manner of client-go's: an item queued twice is processed once, and an
//! item queued while a worker processes it is processed again afterwards, never concurrently.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

struct Inner<T> {
    queue: VecDeque<T>,
    dirty: HashSet<T>,
    processing: HashSet<T>,
}

/// The queue; share it behind an `Arc`.
pub struct WorkQueue<T> {
    inner: Mutex<Inner<T>>,
    notify: Notify,
}

impl<T: Clone + Eq + Hash + Send + 'static> Default for WorkQueue<T> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
            }),
            notify: Notify::new(),
        }
    }
}

impl<T: Clone + Eq + Hash + Send + 'static> WorkQueue<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` unless it is queued already.
    pub fn add(&self, item: T) {
        let mut inner = self.lock();
        if !inner.dirty.insert(item.clone()) {
            return;
        }
        if inner.processing.contains(&item) {
            return;
        }
        inner.queue.push_back(item);
        drop(inner);
        self.notify.notify_one();
    }

    /// Queues `item` after `delay`.
    pub fn add_after(self: &Arc<Self>, item: T, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(item);
        });
    }

    /// Waits for the next item; call [`WorkQueue::done`] when finished with it.
    pub async fn next(&self) -> T {
        loop {
            {
                let mut inner = self.lock();
                if let Some(item) = inner.queue.pop_front() {
                    inner.dirty.remove(&item);
                    inner.processing.insert(item.clone());
                    if !inner.queue.is_empty() {
                        self.notify.notify_one();
                    }
                    return item;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Marks `item` processed, queueing it again if it was added meanwhile.
    pub fn done(&self, item: &T) {
        let mut inner = self.lock();
        inner.processing.remove(item);
        if inner.dirty.contains(item) {
            inner.queue.push_back(item.clone());
            drop(inner);
            self.notify.notify_one();
        }
    }

    /// How many items wait.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no item waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedupes_and_requeues_items_added_while_processing() {
        let q: WorkQueue<u32> = WorkQueue::default();
        q.add(1);
        q.add(1);
        q.add(2);
        assert_eq!(q.len(), 2);
        let one = q.next().await;
        assert_eq!(one, 1);
        q.add(1); // while processing: not handed out twice at once
        assert_eq!(q.next().await, 2);
        assert!(q.is_empty());
        q.done(&1);
        assert_eq!(q.next().await, 1);
        q.done(&1);
        q.done(&2);
        assert!(q.is_empty());
    }
}
