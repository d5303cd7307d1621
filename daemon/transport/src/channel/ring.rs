//! [`Ring`]: an ordered map for keys that arrive in increasing order and
//! leave in any order — a channel's datagrams in flight by counter, its
//! messages by id, its transmissions by time.
//!
//! A `BTreeMap` pays a tree descent, and often a node allocation, on every
//! insert and removal. Here the entries sit in one `VecDeque`, sorted by key:
//! an insert at the top is a push at the back, a lookup goes straight to the
//! slot where a dense run of keys puts it (checked; a binary search when the
//! guess misses), and a removal leaves a hole that is dropped once it
//! reaches either end. Holes in the middle are bounded: when they outnumber
//! the entries (plus a constant) the deque is compacted, which costs O(n)
//! after at least n/2 removals, so memory stays within about twice the
//! entries and every operation is amortised O(1) for in-order use and
//! O(log n) otherwise. Nothing depends on the keys being dense or on how
//! the deque's storage wraps around its buffer.

use std::collections::VecDeque;
use std::time::Instant;

use super::MsgId;
use crate::seq::Seq;

/// Holes tolerated beyond the number of entries before a compaction, so
/// that a small map never compacts over and over.
const SLACK: usize = 16;
/// Slots an empty ring keeps allocated: storage beyond it is given back.
const KEEP: usize = 64;

/// A key of a [`Ring`]: ordered, and able to guess its slot.
pub(crate) trait RingKey: Copy + Ord {
    /// The slot `self` would have if every key from `first` on were
    /// present (only a hint: `usize::MAX` when there is no good guess).
    fn slot_hint(self, first: Self) -> usize;
}

impl RingKey for Seq {
    fn slot_hint(self, first: Self) -> usize {
        usize::try_from(self.0.wrapping_sub(first.0)).unwrap_or(usize::MAX)
    }
}

impl RingKey for MsgId {
    fn slot_hint(self, first: Self) -> usize {
        usize::try_from(u64::from(self).wrapping_sub(u64::from(first))).unwrap_or(usize::MAX)
    }
}

impl RingKey for (Instant, Seq) {
    /// Transmissions leave mostly from the front (acknowledged oldest
    /// first): try it before searching.
    fn slot_hint(self, _first: Self) -> usize {
        0
    }
}

/// An ordered map, cheapest when keys are inserted in increasing order.
#[derive(Debug, Clone)]
pub(crate) struct Ring<K, V> {
    /// Strictly increasing keys; `None` is a removed entry (a hole). The
    /// first and last slots are never holes.
    slots: VecDeque<(K, Option<V>)>,
    /// Slots that are not holes.
    live: usize,
}

impl<K: RingKey, V> Default for Ring<K, V> {
    fn default() -> Self {
        Ring {
            slots: VecDeque::new(),
            live: 0,
        }
    }
}

impl<K: RingKey, V> Ring<K, V> {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The smallest key.
    pub(crate) fn first_key(&self) -> Option<K> {
        self.slots.front().map(|&(k, _)| k)
    }

    /// Insert `value` at `key`, returning the value it replaces. O(1) when
    /// `key` is above every key held; else a search, and a shift of the
    /// slots after it when `key` falls between two.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if self.slots.back().is_none_or(|&(last, _)| key > last) {
            self.slots.push_back((key, Some(value)));
            self.live += 1;
            return None;
        }
        match self.slots.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => {
                let old = self.slots[i].1.replace(value);
                if old.is_none() {
                    self.live += 1;
                }
                old
            }
            Err(i) => {
                self.slots.insert(i, (key, Some(value)));
                self.live += 1;
                None
            }
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        let i = self.find(*key)?;
        self.slots[i].1.as_ref()
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.find(*key)?;
        self.slots[i].1.as_mut()
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Remove the entry at `key`.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.find(*key)?;
        let value = self.slots[i].1.take()?;
        self.live -= 1;
        self.trim();
        Some(value)
    }

    /// The entries in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (K, &V)> + '_ {
        self.slots
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v)))
    }

    /// The entries with keys at or above `from`, in key order.
    pub(crate) fn iter_from(&self, from: K) -> impl Iterator<Item = (K, &V)> + '_ {
        let start = self.slots.partition_point(|&(k, _)| k < from);
        self.slots
            .range(start..)
            .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v)))
    }

    /// The keys in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// The slot of `key`, if it has one (a hole's included).
    fn find(&self, key: K) -> Option<usize> {
        let first = self.slots.front()?.0;
        let hint = key.slot_hint(first);
        if self.slots.get(hint).is_some_and(|&(k, _)| k == key) {
            return Some(hint);
        }
        self.slots.binary_search_by(|(k, _)| k.cmp(&key)).ok()
    }

    /// Drop holes at both ends, and compact when holes outnumber entries.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(|(_, v)| v.is_none()) {
            self.slots.pop_front();
        }
        while self.slots.back().is_some_and(|(_, v)| v.is_none()) {
            self.slots.pop_back();
        }
        if self.slots.len() > 2 * self.live + SLACK {
            self.slots.retain(|(_, v)| v.is_some());
        }
        if self.slots.is_empty() && self.slots.capacity() > KEEP {
            // An idle channel does not keep the storage of its busiest moment.
            self.slots.shrink_to(KEEP);
        }
        debug_assert!(self.slots.len() <= 2 * self.live + SLACK);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// What the channel does not need, to check the ends.
    impl<K: RingKey, V> Ring<K, V> {
        fn first(&self) -> Option<(K, &V)> {
            let (k, v) = self.slots.front()?;
            Some((*k, v.as_ref().expect("the first slot is never a hole")))
        }

        fn last_key(&self) -> Option<K> {
            self.slots.back().map(|&(k, _)| k)
        }

        fn pop_first(&mut self) -> Option<(K, V)> {
            let k = self.first_key()?;
            self.remove(&k).map(|v| (k, v))
        }
    }

    /// The ring's own invariants: keys strictly increasing, no hole at
    /// either end, `live` right, holes bounded.
    fn check<K: RingKey + std::fmt::Debug, V>(r: &Ring<K, V>) {
        let keys: Vec<K> = r.slots.iter().map(|&(k, _)| k).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys out of order");
        assert!(r.slots.front().is_none_or(|(_, v)| v.is_some()));
        assert!(r.slots.back().is_none_or(|(_, v)| v.is_some()));
        assert_eq!(r.live, r.slots.iter().filter(|(_, v)| v.is_some()).count());
        assert!(r.slots.len() <= 2 * r.live + SLACK, "holes unbounded");
    }

    #[test]
    fn an_empty_ring_has_nothing_and_removes_nothing() {
        let mut r: Ring<Seq, u32> = Ring::new();
        assert!(r.is_empty());
        assert_eq!(r.len(), 0);
        assert_eq!(r.first(), None);
        assert_eq!(r.first_key(), None);
        assert_eq!(r.last_key(), None);
        assert_eq!(r.get(&Seq(1)), None);
        assert_eq!(r.remove(&Seq(1)), None);
        assert_eq!(r.pop_first(), None);
        assert_eq!(r.iter().count(), 0);
        assert_eq!(r.iter_from(Seq(0)).count(), 0);
        check(&r);
    }

    #[test]
    fn holes_in_the_middle_are_skipped_and_dropped_when_they_reach_an_end() {
        let mut r = Ring::new();
        for q in 1..=5 {
            assert_eq!(r.insert(Seq(q), q * 10), None);
        }
        assert_eq!(r.remove(&Seq(3)), Some(30));
        assert_eq!(r.remove(&Seq(3)), None, "removed once");
        assert_eq!(r.slots.len(), 5, "a hole in the middle stays");
        assert_eq!(
            r.keys().collect::<Vec<_>>(),
            [Seq(1), Seq(2), Seq(4), Seq(5)]
        );
        assert_eq!(
            r.iter_from(Seq(3)).collect::<Vec<_>>(),
            [(Seq(4), &40), (Seq(5), &50)]
        );
        assert_eq!(r.remove(&Seq(2)), Some(20));
        assert_eq!(r.remove(&Seq(1)), Some(10));
        assert_eq!(r.slots.len(), 2, "holes at the front are dropped");
        assert_eq!(r.first(), Some((Seq(4), &40)));
        assert_eq!(r.remove(&Seq(5)), Some(50));
        assert_eq!(r.last_key(), Some(Seq(4)), "and at the back");
        assert_eq!(r.pop_first(), Some((Seq(4), 40)));
        assert!(r.is_empty() && r.slots.is_empty());
        check(&r);
    }

    #[test]
    fn a_long_lived_first_entry_does_not_let_holes_pile_up_behind_it() {
        let mut r = Ring::new();
        r.insert(Seq(1), 0u64);
        for q in 2..10_000 {
            r.insert(Seq(q), q);
            assert_eq!(r.remove(&Seq(q)), Some(q));
            r.insert(Seq(q), q);
            if q > 2 {
                assert_eq!(r.remove(&Seq(q - 1)), Some(q - 1));
            }
            check(&r);
        }
        assert_eq!(r.len(), 2);
        assert!(r.slots.len() <= 2 + SLACK, "compacted: {}", r.slots.len());
        // Lookups still find everything once the keys are no longer dense.
        assert_eq!(r.get(&Seq(1)), Some(&0));
        assert_eq!(r.get(&Seq(9_999)), Some(&9_999));
        assert_eq!(r.get(&Seq(5_000)), None);
    }

    #[test]
    fn storage_wraps_around_the_deque_and_lookups_still_hit() {
        let mut r = Ring::new();
        let mut next = 1u64;
        // Push and pop at the ends many times: the deque's head walks
        // around its buffer while the keys keep growing.
        for round in 0..1_000u64 {
            for _ in 0..(round % 7 + 1) {
                r.insert(Seq(next), next);
                next += 1;
            }
            for _ in 0..(round % 5 + 1) {
                let (k, v) = r.pop_first().expect("not empty");
                assert_eq!(k.0, v);
            }
            while r.len() > 40 {
                r.pop_first();
            }
            for (k, v) in r.iter() {
                assert_eq!(k.0, *v);
                assert_eq!(r.get(&k), Some(v));
            }
            check(&r);
        }
        assert!(r.slots.capacity() < 256, "bounded by what it held at once");
    }

    #[test]
    fn keys_near_the_top_of_the_counter_space_are_found() {
        let mut r = Ring::new();
        for q in [u64::MAX - 3, u64::MAX - 1, u64::MAX] {
            r.insert(Seq(q), q);
        }
        assert_eq!(r.get(&Seq(u64::MAX)), Some(&u64::MAX));
        assert_eq!(r.get(&Seq(u64::MAX - 2)), None);
        assert_eq!(r.get(&Seq(0)), None, "below the first: no wrap to the top");
        assert_eq!(r.remove(&Seq(u64::MAX - 3)), Some(u64::MAX - 3));
        assert_eq!(r.first_key(), Some(Seq(u64::MAX - 1)));
        check(&r);
    }

    #[test]
    fn a_key_below_the_top_is_inserted_in_order_or_refills_its_hole() {
        let t0 = Instant::now();
        let at = |ms: u64, q: u64| (t0 + Duration::from_millis(ms), Seq(q));
        let mut r = Ring::new();
        r.insert(at(1, 1), ());
        r.insert(at(3, 2), ());
        r.insert(at(3, 5), ());
        // A retransmission of an older counter at the instant a newer one went.
        r.insert(at(3, 4), ());
        assert_eq!(
            r.keys().collect::<Vec<_>>(),
            [at(1, 1), at(3, 2), at(3, 4), at(3, 5)]
        );
        assert_eq!(r.remove(&at(3, 4)), Some(()));
        assert_eq!(r.insert(at(3, 4), ()), None, "its hole is refilled");
        assert_eq!(r.insert(at(3, 4), ()), Some(()), "a second insert replaces");
        assert_eq!(r.len(), 4);
        check(&r);
    }

    #[test]
    fn an_emptied_ring_gives_back_its_storage() {
        let mut r = Ring::new();
        for q in 1..=1_000 {
            r.insert(Seq(q), [0u8; 64]);
        }
        for q in 1..=1_000 {
            r.remove(&Seq(q));
        }
        assert!(r.is_empty());
        assert!(r.slots.capacity() <= KEEP, "kept {}", r.slots.capacity());
    }

    /// Random inserts (mostly at the top) and removals agree with a
    /// `BTreeMap` step by step, over many seeds.
    #[test]
    fn behaves_as_an_ordered_map() {
        for seed in 0..64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut r = Ring::new();
            let mut m = BTreeMap::new();
            let mut top = rng.gen_range(0..u64::MAX / 2);
            for step in 0..2_000u32 {
                match rng.gen_range(0..10) {
                    0..=3 => {
                        top += rng.gen_range(1..4);
                        assert_eq!(r.insert(Seq(top), step), m.insert(Seq(top), step));
                    }
                    4 => {
                        let k = Seq(top.saturating_sub(rng.gen_range(0..50)));
                        assert_eq!(r.insert(k, step), m.insert(k, step), "seed {seed}");
                    }
                    5..=7 => {
                        let k = Seq(top.saturating_sub(rng.gen_range(0..80)));
                        assert_eq!(r.remove(&k), m.remove(&k), "seed {seed}");
                    }
                    8 => assert_eq!(r.pop_first(), m.pop_first(), "seed {seed}"),
                    _ => {
                        let k = Seq(top.saturating_sub(rng.gen_range(0..80)));
                        assert_eq!(r.get(&k), m.get(&k));
                        assert_eq!(
                            r.iter_from(k).collect::<Vec<_>>(),
                            m.range(k..).map(|(&k, v)| (k, v)).collect::<Vec<_>>()
                        );
                    }
                }
                assert_eq!(r.len(), m.len());
                assert_eq!(r.first(), m.first_key_value().map(|(&k, v)| (k, v)));
                assert_eq!(r.last_key(), m.last_key_value().map(|(&k, _)| k));
                check(&r);
            }
            assert!(r.iter().map(|(k, v)| (k, *v)).eq(m.into_iter()));
        }
    }
}
