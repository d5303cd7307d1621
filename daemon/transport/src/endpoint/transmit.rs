//! The send path: `poll_transmit` gathers what a peer's channel has queued
//! into one bundle (see the parent module's doc) and seals it with keys.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Endpoint, Transmit};
use crate::secure::sessions::{Sealed, Sessions};
use crate::wire::{BundleBuilder, BUNDLE_HEADER_LEN, HEADER_LEN};

impl Endpoint {
    /// The next UDP datagram to send: a bundle of every channel datagram
    /// queued for one peer that fits (see the module doc). Call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.settle();
        loop {
            // Handshake messages, and datagrams a new session released.
            if let Some((to, bytes)) = self.sessions.as_mut().and_then(Sessions::poll_out) {
                return Some(Transmit { to, bytes });
            }
            let &peer = self.ready.front()?;
            let Some(bundle) = self.gather(now, peer) else {
                continue;
            };
            let Some(sessions) = self.sessions.as_mut() else {
                return Some(Transmit {
                    to: peer,
                    bytes: bundle,
                });
            };
            let sealed = sessions.seal(now, peer, &bundle, self.epoch);
            // Sealed into a buffer of its own: the plain one serves the next bundle.
            self.recycle(bundle);
            match sealed {
                Some(Sealed::Ready(bytes)) => return Some(Transmit { to: peer, bytes }),
                // Held for the handshake, or (the peer was removed) dropped.
                Some(Sealed::Queued) | None => continue,
            }
        }
    }

    /// Take `peer`'s queued datagrams into one bundle, up to the size limit
    /// (a datagram that does not fit is carried to the next bundle). Takes
    /// `peer` off the ready queue once its channel has nothing more. `None`:
    /// nothing to send to `peer`.
    fn gather(&mut self, now: Instant, peer: SocketAddr) -> Option<Vec<u8>> {
        let carried = self.carry.take();
        let spare = self.spare_bundle();
        let Some(slot) = self.channels.get_mut(&peer) else {
            // Removed (keys reloaded): whatever was carried for it goes too.
            self.ready.pop_front();
            if let Some(bytes) = spare {
                self.recycle(bytes);
            }
            return None;
        };
        // The most bytes of one bundle: a header and one full fragment's
        // datagram, the largest this peer's channel emits.
        let limit = BUNDLE_HEADER_LEN + HEADER_LEN + slot.channel.payload_max();
        let mut b = match spare {
            Some(bytes) => BundleBuilder::with_buffer(bytes, limit),
            None => BundleBuilder::new(limit),
        };
        if let Some((p, bytes)) = carried {
            debug_assert_eq!(p, peer, "a carried datagram belongs to the front peer");
            b.push(&bytes);
        }
        let mut done = false;
        // Where the last datagram taken starts: a redundant copy of a repair
        // (the channel sends it right behind the first, byte for byte) must
        // not share the first's UDP datagram, or one loss would take both.
        let mut last: Option<usize> = None;
        // Each datagram is written straight into the bundle; one that turns
        // out not to belong there (too large, or that copy) is taken back
        // out and carried to the next bundle.
        while !(b.count() > 0 && b.full()) {
            let start = b.bytes().len();
            if !b.push_with(|out| slot.channel.poll_transmit_into(now, out)) {
                done = true;
                break;
            }
            let repeat = last.is_some_and(|l| b.bytes()[l..start] == b.bytes()[start..]);
            if b.overfull() || repeat {
                self.carry = Some((peer, b.pop_last(start)));
                break;
            }
            last = Some(start);
        }
        if b.count() > 0 {
            slot.bundles_sent += 1;
            self.stats.bundles_sent += 1;
            self.stats.bundled_sent += b.count() as u64;
        }
        if done {
            slot.in_ready = false;
            self.ready.pop_front();
            self.drain_events(peer);
        }
        self.reschedule(peer);
        if b.count() == 0 {
            self.recycle(b.into_buffer());
            return None;
        }
        Some(b.finish())
    }
}
