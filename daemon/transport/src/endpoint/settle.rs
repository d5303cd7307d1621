//! Settling: an input only marks its peer's channel changed (`mark`); the
//! channel's events, its place in the transmit queue and its timer are
//! settled once, at the owner's next poll (`settle`), however many inputs
//! reached it meanwhile.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::{Endpoint, Event, Slot};
use crate::channel;
use crate::secure::sessions::Sessions;

impl Endpoint {
    /// After an input to `slot`'s channel: settle it at the next poll.
    pub(super) fn mark(changed: &mut Vec<SocketAddr>, slot: &mut Slot, peer: SocketAddr) {
        if !std::mem::replace(&mut slot.changed, true) {
            changed.push(peer);
        }
    }

    /// For every channel changed since the last call: collect its events,
    /// queue it for transmission and re-arm its timer. Called first by
    /// everything the owner polls, so that what it sees is as if each input
    /// had been settled at once.
    pub(super) fn settle(&mut self) {
        if self.changed.is_empty() {
            return;
        }
        let mut changed = std::mem::take(&mut self.changed);
        for &peer in &changed {
            let Some(slot) = self.channels.get_mut(&peer) else {
                continue; // removed since (keys reloaded, evicted)
            };
            if !std::mem::replace(&mut slot.changed, false) {
                continue; // a channel of the same address made since
            }
            let failed = Self::take_events(&mut self.events, slot, peer);
            if !slot.in_ready && slot.channel.wants_transmit() {
                slot.in_ready = true;
                self.ready.push_back(peer);
            }
            Self::rearm(&mut self.timers, slot, peer);
            if failed {
                Self::drop_held(self.sessions.as_mut(), peer);
            }
        }
        changed.clear();
        self.changed = changed;
        self.compact_timers();
    }

    /// Move `slot`'s events to the endpoint's queue; true if one failed a
    /// message or the peer.
    pub(super) fn take_events(
        events: &mut VecDeque<Event>,
        slot: &mut Slot,
        peer: SocketAddr,
    ) -> bool {
        let mut failed = false;
        while let Some(kind) = slot.channel.poll_event() {
            failed |= matches!(
                kind,
                channel::Event::Failed { .. } | channel::Event::PeerUnreachable
            );
            events.push_back(Event { peer, kind });
        }
        failed
    }

    /// After a failure on `peer`'s channel: datagrams held for a handshake
    /// may belong to a message the channel just gave up on. Sent after the
    /// failure, they could deliver it after its owner was told it failed.
    /// The channel retransmits whatever still matters.
    pub(super) fn drop_held(sessions: Option<&mut Sessions>, peer: SocketAddr) {
        if let Some(s) = sessions {
            s.drop_queued(peer);
        }
    }

    /// Push `slot`'s deadline on the heap if it changed.
    pub(super) fn rearm(
        timers: &mut BinaryHeap<Reverse<(Instant, SocketAddr)>>,
        slot: &mut Slot,
        peer: SocketAddr,
    ) {
        let t = slot.channel.poll_timeout();
        if t != slot.scheduled {
            slot.scheduled = t;
            if let Some(t) = t {
                timers.push(Reverse((t, peer)));
            }
        }
    }

    pub(super) fn drain_events(&mut self, peer: SocketAddr) {
        if let Some(slot) = self.channels.get_mut(&peer) {
            if Self::take_events(&mut self.events, slot, peer) {
                Self::drop_held(self.sessions.as_mut(), peer);
            }
        }
    }

    pub(super) fn reschedule(&mut self, peer: SocketAddr) {
        if let Some(slot) = self.channels.get_mut(&peer) {
            Self::rearm(&mut self.timers, slot, peer);
        }
        self.compact_timers();
    }

    /// Superseded entries are normally popped as their time passes; a busy
    /// channel re-arms often, so rebuild the heap when they outnumber live
    /// ones. Amortised O(1) per push.
    pub(super) fn compact_timers(&mut self) {
        if self.timers.len() > 4 * self.channels.len() + 64 {
            self.timers = self
                .channels
                .iter()
                .filter_map(|(p, s)| s.scheduled.map(|t| Reverse((t, p))))
                .collect();
        }
    }
}
