//! A deadline heap that knows neither calls nor invocations.
//!
//! Work that ends early leaves its entry behind (removing from a binary heap
//! is O(n)); the owner says which entries are still live when it peeks or
//! pops, and the heap is rebuilt from the live ones when the dead outnumber
//! them, so its size stays proportional to the work in progress whatever the
//! deadlines (amortised O(log n) per push).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Entries beyond twice the live count, before the heap is rebuilt.
const SLACK: usize = 1024;

/// Deadlines of keys `K`.
#[derive(Debug)]
pub struct DeadlineHeap<K: Ord + Copy> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord + Copy> Default for DeadlineHeap<K> {
    fn default() -> Self {
        DeadlineHeap {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord + Copy> DeadlineHeap<K> {
    /// Arm `key` at `at`. `live` is how many keys are armed now and
    /// `all_live` lists them with their deadlines, for a rebuild.
    pub fn push<I>(&mut self, at: Instant, key: K, live: usize, all_live: impl FnOnce() -> I)
    where
        I: Iterator<Item = (Instant, K)>,
    {
        self.heap.push(Reverse((at, key)));
        if self.heap.len() > 2 * live + SLACK {
            let mut heap = BinaryHeap::with_capacity(live);
            heap.extend(all_live().map(Reverse));
            self.heap = heap;
        }
    }

    /// The earliest live deadline; dead entries on top are dropped.
    pub fn next(&mut self, is_live: impl Fn(K, Instant) -> bool) -> Option<Instant> {
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if is_live(key, at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// A live key whose deadline is at or before `now`, removed.
    pub fn pop_expired(&mut self, now: Instant, is_live: impl Fn(K, Instant) -> bool) -> Option<K> {
        while let Some(Reverse((at, key))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if is_live(key, at) {
                return Some(key);
            }
        }
        None
    }

    /// Entries held, dead ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no entry is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_and_skips_dead_entries() {
        let t0 = Instant::now();
        let mut h = DeadlineHeap::default();
        let live = [1u64, 3];
        for (i, k) in [3u64, 1, 2].into_iter().enumerate() {
            h.push(t0 + Duration::from_millis(i as u64), k, 3, std::iter::empty);
        }
        let is_live = |k: u64, _| live.contains(&k);
        assert_eq!(h.next(is_live), Some(t0));
        assert_eq!(h.pop_expired(t0 + Duration::from_secs(1), is_live), Some(3));
        assert_eq!(h.pop_expired(t0 + Duration::from_secs(1), is_live), Some(1));
        assert_eq!(h.pop_expired(t0 + Duration::from_secs(1), is_live), None);
        assert!(h.is_empty());
    }

    #[test]
    fn nothing_expires_early() {
        let t0 = Instant::now();
        let mut h = DeadlineHeap::default();
        h.push(t0 + Duration::from_millis(5), 7u64, 1, std::iter::empty);
        assert_eq!(h.pop_expired(t0, |_, _| true), None);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn dead_entries_do_not_grow_the_heap_without_bound() {
        let t0 = Instant::now();
        let mut h = DeadlineHeap::default();
        // One live key; a million pushes of keys that end at once.
        for k in 0..1_000_000u64 {
            h.push(t0 + Duration::from_secs(3600), k, 1, || {
                std::iter::once((t0 + Duration::from_secs(3600), k))
            });
        }
        assert!(h.len() <= 2 + SLACK, "heap holds {}", h.len());
    }
}
