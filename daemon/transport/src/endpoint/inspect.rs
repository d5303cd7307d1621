//! What the endpoint reports about its peers and itself: each channel's snapshot and
//! epochs, the peers, and the endpoint-wide counters.

use std::net::SocketAddr;

use super::{Endpoint, EndpointStats, Slot};
use crate::channel::Snapshot;
use crate::secure::sessions::Sessions;

impl Endpoint {
    /// Counters and estimators of one peer's channel. Its
    /// `datagrams_sent`/`datagrams_received` count UDP datagrams (bundles)
    /// to and from the peer, not the channel datagrams inside them (those
    /// are in [`EndpointStats`], for all peers together).
    pub fn peer(&self, peer: SocketAddr) -> Option<Snapshot> {
        self.channels.get(&peer).map(Slot::snapshot)
    }

    /// This endpoint's epoch on its channel to `peer` (after evictions it is
    /// not [`Endpoint::epoch`]) and the peer's epoch there, once known: the
    /// same pair in reverse at the peer. None without a channel.
    pub fn channel_epochs(&self, peer: SocketAddr) -> Option<(u64, Option<u64>)> {
        self.channels.get(&peer).map(|s| s.channel.epochs())
    }

    /// How many peers have a channel.
    pub fn peer_count(&self) -> usize {
        self.channels.len()
    }

    /// Every peer with its snapshot.
    pub fn peers(&self) -> impl Iterator<Item = (SocketAddr, Snapshot)> + '_ {
        self.channels.iter().map(|(a, s)| (a, s.snapshot()))
    }

    /// Endpoint-wide counters.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            security: self
                .sessions
                .as_ref()
                .map(Sessions::stats)
                .unwrap_or_default(),
            ..self.stats
        }
    }
}
