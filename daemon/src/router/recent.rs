//! A few recently computed values kept by key, so that work repeated on every
//! call (a target parsed from text, a caller's address written as text) is
//! done once per key while that key keeps coming back.
//!
//! Bounded by its capacity: a full cache replaces its entries in turn (the
//! oldest insertion first), so a stream of distinct keys costs one linear scan
//! of at most `capacity` entries per lookup and never grows the cache. Meant
//! for a handful of entries: a lookup compares keys one by one.

use std::borrow::Borrow;

/// Up to `capacity` (key, value) pairs, most recent insertions kept.
#[derive(Debug)]
pub(super) struct Recent<K, V> {
    entries: Vec<(K, V)>,
    capacity: usize,
    /// The entry the next insertion into a full cache replaces.
    next: usize,
}

impl<K: Eq, V> Recent<K, V> {
    /// An empty cache of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Recent {
            entries: Vec::with_capacity(capacity),
            capacity,
            next: 0,
        }
    }

    /// The value kept for `key`, if any.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.entries
            .iter()
            .find(|(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    /// Keep `value` for `key` (a key already kept gets the new value), and
    /// return it.
    pub fn insert(&mut self, key: K, value: V) -> &V {
        let at = if let Some(i) = self.entries.iter().position(|(k, _)| *k == key) {
            self.entries[i].1 = value;
            i
        } else if self.entries.len() < self.capacity {
            self.entries.push((key, value));
            self.entries.len() - 1
        } else {
            let i = self.next;
            self.entries[i] = (key, value);
            self.next = (i + 1) % self.capacity;
            i
        };
        debug_assert!(self.entries.len() <= self.capacity);
        &self.entries[at].1
    }

    /// Entries kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_cache_finds_nothing() {
        let c: Recent<String, u32> = Recent::new(4);
        assert_eq!(c.len(), 0);
        assert_eq!(c.get("a"), None);
    }

    #[test]
    fn a_kept_value_is_found_by_a_borrowed_key() {
        let mut c = Recent::new(4);
        assert_eq!(*c.insert("a".to_owned(), 1), 1);
        c.insert("b".to_owned(), 2);
        assert_eq!(c.get("a"), Some(&1));
        assert_eq!(c.get("b"), Some(&2));
        assert_eq!(c.get("c"), None);
    }

    #[test]
    fn inserting_a_kept_key_replaces_its_value_in_place() {
        let mut c = Recent::new(2);
        c.insert(1, "one");
        c.insert(1, "uno");
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&1), Some(&"uno"));
    }

    /// Full, it replaces the oldest insertion, then the next, wrapping
    /// around: never more than `capacity` entries.
    #[test]
    fn a_full_cache_evicts_in_turn_and_wraps() {
        let mut c = Recent::new(3);
        for k in 0..3 {
            c.insert(k, k * 10);
        }
        assert_eq!(c.len(), 3);
        c.insert(3, 30); // evicts 0
        assert_eq!(c.get(&0), None);
        assert_eq!(c.get(&1), Some(&10));
        c.insert(4, 40); // evicts 1
        c.insert(5, 50); // evicts 2
        assert_eq!(c.len(), 3);
        for gone in 0..3 {
            assert_eq!(c.get(&gone), None, "{gone}");
        }
        c.insert(6, 60); // wrapped: evicts 3
        assert_eq!(c.get(&3), None);
        assert_eq!(c.get(&4), Some(&40));
        assert_eq!(c.get(&5), Some(&50));
        assert_eq!(c.get(&6), Some(&60));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn a_zero_capacity_keeps_one() {
        let mut c = Recent::new(0);
        c.insert(1, 1);
        c.insert(2, 2);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&1), None);
        assert_eq!(c.get(&2), Some(&2));
    }
}
