//! Sequence counters.
//!
//! A counter is 64 bits and starts at 1 for every channel incarnation (a new
//! epoch on either side starts a new incarnation), so it cannot wrap in the
//! life of a daemon: at a million datagrams per second it would take half a
//! million years. Comparisons are therefore plain integer comparisons; zero
//! means "none".

use std::fmt;

/// A datagram sequence counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

impl Seq {
    /// The first counter of every channel incarnation.
    pub const FIRST: Seq = Seq(1);

    /// The counter `n` after this one.
    pub fn plus(self, n: u64) -> Seq {
        Seq(self.0.saturating_add(n))
    }

    /// How far `self` is beyond `earlier` (zero if it is not beyond).
    pub fn distance_from(self, earlier: Seq) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
