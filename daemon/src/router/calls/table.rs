//! The call table and its indexes: by transport message and by peer.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use rpcd_transport::MsgId;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::metrics::latency::CallFigures;
use crate::payload::Payload;
use crate::router::trace::Watch;
use crate::router::types::{CallId, ConnId};

/// One call an app made, until its one outcome.
#[derive(Debug)]
pub(in crate::router) struct Call {
    pub app: ConnId,
    /// The app's id for the call (its `call` frame's `id`).
    pub client_id: u64,
    pub target: Target,
    pub state: CallState,
    pub deadline: Instant,
    /// The function called, and when the call was admitted: its latency
    /// (`metrics::latency`) runs from here to its outcome.
    pub function: String,
    pub started: Instant,
    /// Kept while the target is being resolved, and for idempotent calls
    /// with addresses left to fail over to.
    pub retry: Option<Retry>,
    /// Kept only for a traced call or while a monitor is on.
    pub watch: Option<Box<Watch>>,
}

/// What is needed to send a call (again).
#[derive(Debug)]
pub(in crate::router) struct Retry {
    pub function: String,
    pub args: Payload,
    pub idempotent: bool,
    /// Addresses not tried yet, in order.
    pub candidates: VecDeque<SocketAddr>,
}

/// Where a call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::router) enum Target {
    /// Not sent anywhere yet, or served here.
    Local,
    Remote(SocketAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::router) enum CallState {
    /// Waiting for addresses (the resolver, or a failover).
    Resolving,
    /// The request message is queued or in flight.
    Sending(MsgId),
    /// The request was acknowledged; waiting for the reply.
    Awaiting,
    /// Served by a local app (short-circuit, no UDP).
    Local,
}

/// Emptied `by_peer` sets kept for reuse, at most.
const SPARE_SETS_MAX: usize = 4;

/// The largest capacity of an emptied `by_peer` set that is kept.
const SPARE_SET_CAPACITY_MAX: usize = 64;

/// The call table and its indexes.
#[derive(Debug)]
pub(in crate::router) struct Calls {
    // Keyed by ids this daemon chooses (call ids, its own message ids) and by the addresses
    // its own calls go to: a fast hash is safe here; maps keyed by what a peer chooses keep
    // the seeded default.
    pub map: FxHashMap<CallId, Call>,
    pub by_msg: FxHashMap<(SocketAddr, MsgId), CallId>,
    pub by_peer: FxHashMap<SocketAddr, FxHashSet<CallId>>,
    /// Sets of `by_peer` emptied and removed, kept (a few) with their room for the next
    /// peer that gets a call: one call at a time to a peer would otherwise allocate one per
    /// call.
    pub spare_sets: Vec<FxHashSet<CallId>>,
    pub next: u64,
    /// Outcomes by code, in all and per peer.
    pub outcomes: BTreeMap<String, u64>,
    pub peer_outcomes: FxHashMap<SocketAddr, BTreeMap<String, u64>>,
    /// Outcomes and latencies by function.
    pub figures: CallFigures,
}

impl Default for Calls {
    fn default() -> Self {
        Calls {
            map: FxHashMap::default(),
            by_msg: FxHashMap::default(),
            by_peer: FxHashMap::default(),
            spare_sets: Vec::new(),
            next: 1,
            outcomes: BTreeMap::new(),
            peer_outcomes: FxHashMap::default(),
            figures: CallFigures::default(),
        }
    }
}

impl Calls {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn ids(&self) -> Vec<CallId> {
        self.map.keys().copied().collect()
    }

    pub fn deadline(&self, id: CallId) -> Option<Instant> {
        self.map.get(&id).map(|c| c.deadline)
    }

    pub fn deadlines(&self) -> impl Iterator<Item = (CallId, Instant)> + '_ {
        self.map.iter().map(|(&id, c)| (id, c.deadline))
    }

    /// Records call `id` as sent to `peer`; how many calls are in flight to it now.
    pub fn add_to_peer(&mut self, peer: SocketAddr, id: CallId) -> usize {
        let spare = &mut self.spare_sets;
        let set = self
            .by_peer
            .entry(peer)
            .or_insert_with(|| spare.pop().unwrap_or_default());
        set.insert(id);
        set.len()
    }

    /// Forgets call `id` as sent to `peer`; true if it was the last one in flight to it.
    pub fn remove_from_peer(&mut self, peer: SocketAddr, id: CallId) -> bool {
        let Some(set) = self.by_peer.get_mut(&peer) else {
            return false;
        };
        set.remove(&id);
        if !set.is_empty() {
            return false;
        }
        if let Some(set) = self.by_peer.remove(&peer) {
            // A set that grew large (a burst of calls) is not kept.
            if self.spare_sets.len() < SPARE_SETS_MAX && set.capacity() <= SPARE_SET_CAPACITY_MAX {
                self.spare_sets.push(set);
            }
        }
        true
    }

    /// Calls in flight to `peer`.
    pub fn to_peer(&self, peer: SocketAddr) -> usize {
        self.by_peer.get(&peer).map_or(0, FxHashSet::len)
    }

    /// The calls currently sent to `peer` (a snapshot: the caller may end them).
    /// Every peer some call is addressed to now.
    pub fn peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.by_peer
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(p, _)| *p)
    }

    pub fn snapshot_to(&self, peer: SocketAddr) -> Vec<CallId> {
        self.by_peer
            .get(&peer)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, id: CallId) -> Option<&Call> {
        self.map.get(&id)
    }

    pub fn get_mut(&mut self, id: CallId) -> Option<&mut Call> {
        self.map.get_mut(&id)
    }

    /// A call's outcome, counted.
    pub fn count(&mut self, target: Target, code: &str) {
        bump(&mut self.outcomes, code);
        if let Target::Remote(peer) = target {
            bump(self.peer_outcomes.entry(peer).or_default(), code);
        }
    }
}

/// One more of `code`; its key is allocated only the first time (every call ends here).
fn bump(counts: &mut BTreeMap<String, u64>, code: &str) {
    match counts.get_mut(code) {
        Some(n) => *n += 1,
        None => {
            counts.insert(code.to_owned(), 1);
        }
    }
}

#[cfg(test)]
impl Calls {
    /// The indexes agree with the table.
    pub fn check_indexes(&self) {
        let mut remote = 0;
        for (&id, c) in &self.map {
            if let Target::Remote(p) = c.target {
                remote += 1;
                assert!(
                    self.by_peer.get(&p).is_some_and(|s| s.contains(&id)),
                    "call {id} to {p} missing from by_peer"
                );
                if let CallState::Sending(m) = c.state {
                    assert_eq!(self.by_msg.get(&(p, m)), Some(&id), "call {id}: by_msg");
                }
            }
        }
        assert_eq!(
            self.by_peer.values().map(FxHashSet::len).sum::<usize>(),
            remote,
            "by_peer holds calls that are not remote calls in the table"
        );
        for (&(p, m), id) in &self.by_msg {
            let c = self.map.get(id).expect("by_msg names a live call");
            assert_eq!(
                (c.target, c.state),
                (Target::Remote(p), CallState::Sending(m))
            );
        }
    }

    /// Every call with its app.
    pub fn apps(&self) -> impl Iterator<Item = (CallId, ConnId)> + '_ {
        self.map.iter().map(|(&id, c)| (id, c.app))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_to_a_peer_are_counted_and_an_emptied_set_is_kept_for_the_next_peer() {
        let mut calls = Calls::default();
        let (p, q): (SocketAddr, SocketAddr) = (
            "10.0.0.1:7000".parse().expect("addr"),
            "10.0.0.2:7000".parse().expect("addr"),
        );
        assert_eq!(calls.add_to_peer(p, CallId(1)), 1);
        assert_eq!(calls.add_to_peer(p, CallId(2)), 2);
        assert_eq!(calls.to_peer(p), 2);
        assert!(!calls.remove_from_peer(p, CallId(1)), "one call is left");
        assert!(!calls.remove_from_peer(q, CallId(2)), "nothing to q");
        assert!(calls.remove_from_peer(p, CallId(2)), "the last one");
        assert_eq!(calls.to_peer(p), 0);
        assert!(!calls.by_peer.contains_key(&p));
        assert_eq!(calls.spare_sets.len(), 1);
        assert!(!calls.remove_from_peer(p, CallId(2)), "already gone");
        // The kept set serves the next peer, empty.
        assert_eq!(calls.add_to_peer(q, CallId(3)), 1);
        assert!(calls.spare_sets.is_empty());
        assert_eq!(calls.peers().collect::<Vec<_>>(), [q]);
        // A large set is not kept.
        for i in 10..200 {
            calls.add_to_peer(p, CallId(i));
        }
        for i in 10..200 {
            calls.remove_from_peer(p, CallId(i));
        }
        assert!(calls.spare_sets.is_empty());
    }
}
