//! Liveness: holds, the peer's silence, keepalive, giving up, and the
//! peer's restarts.

use std::time::Instant;

use super::recv::RecvState;
use super::send::SendState;
use super::{Channel, Event, FailReason, MsgId, RETIRED_EPOCHS_MAX};

/// What the channel knows of the peer's incarnation, and of its silence.
#[derive(Debug)]
pub(super) struct Liveness {
    pub(super) phase: Phase,
    /// The last handshake probe: when it went out and which attempt it was
    /// (1 for the first). Normally `Some` only outside `Established`; it
    /// outlives the handshake when the peer's epoch was learnt from the
    /// peer's own datagram (simultaneous open), until the next timeout or
    /// an answer addressed to us, which still gives an RTT sample.
    pub(super) handshake: Option<(Instant, u32)>,
    /// When the peer was last heard from (this incarnation, since the last
    /// time it was declared unreachable).
    pub(super) last_heard: Option<Instant>,
    /// When the channel last became busy (see `is_busy`).
    pub(super) busy_since: Option<Instant>,
    /// Outstanding `hold`s.
    pub(super) holds: u32,
    /// The peer was declared unreachable and has not been heard from since:
    /// receive state alone no longer keeps the channel probing it.
    pub(super) gave_up: bool,
}

/// Where the channel stands with the peer's incarnation. Data goes out only
/// in `Established`: it must name the receiver's incarnation, or a restarted
/// receiver could execute a request its previous incarnation already ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The peer's epoch is not known: a probe (the handshake) learns it.
    Handshake,
    /// The peer has been silent for `revalidate_after` while we had nothing
    /// outstanding: confirm its epoch with a probe before sending data, so
    /// that a restart we slept through costs a round trip, not a failed call.
    Revalidating,
    /// The peer's epoch is known and confirmed.
    Established {
        /// When the next keepalive probe is due, once one was sent in the
        /// current silence (the first is due `keepalive_interval` after it
        /// began).
        keepalive_due: Option<Instant>,
    },
}

impl Liveness {
    pub(super) fn new() -> Self {
        Liveness {
            phase: Phase::Handshake,
            handshake: None,
            last_heard: None,
            busy_since: None,
            holds: 0,
            gave_up: false,
        }
    }

    /// Data may go out: the peer's epoch is known and confirmed.
    pub(super) fn established(&self) -> bool {
        matches!(self.phase, Phase::Established { .. })
    }

    /// A new silence begins (or the peer spoke): the keepalive schedule
    /// restarts from it.
    pub(super) fn reset_keepalive(&mut self) {
        if let Phase::Established { keepalive_due } = &mut self.phase {
            *keepalive_due = None;
        }
    }

    /// The peer answered as the incarnation we know, or gave up waiting:
    /// no confirmation is pending any more.
    pub(super) fn end_revalidation(&mut self) {
        if self.phase == Phase::Revalidating {
            self.phase = Phase::Established {
                keepalive_due: None,
            };
        }
    }
}

impl Channel {
    /// Keep the peer's liveness checked while the owner waits for something
    /// from it (a reply) although nothing is in flight. Balanced by `release`.
    pub fn hold(&mut self, now: Instant) {
        self.mark_busy(now);
        self.live.holds += 1;
    }

    /// End one `hold`.
    pub fn release(&mut self) {
        self.live.holds = self.live.holds.saturating_sub(1);
    }

    pub(super) fn mark_busy(&mut self, now: Instant) {
        if self.silent_since().is_none() {
            self.live.busy_since = Some(now);
            self.live.reset_keepalive();
        }
    }

    /// Busy: something is owed to us or by us, so the peer's silence is
    /// measured (keepalive probes, then "unreachable"). Receive state counts:
    /// a gap or a partial message waits on the peer, and the peer's answer
    /// to a probe carries its floors, which free what it abandoned.
    pub(super) fn is_busy(&self) -> bool {
        !self.send.messages.is_empty()
            || self.live.holds > 0
            || (self.recv_pending() && !self.live.gave_up)
    }

    /// Counters seen beyond a gap, or fragments of incomplete messages.
    pub(super) fn recv_pending(&self) -> bool {
        !self.recv.seen.is_empty() || !self.recv.partials.is_empty()
    }

    /// While busy: the instant from which the peer's silence is measured.
    pub(super) fn silent_since(&self) -> Option<Instant> {
        if !self.is_busy() {
            return None;
        }
        match (self.live.last_heard, self.live.busy_since) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The owner is dropping this channel (its peer was removed from the
    /// configuration): fail everything outstanding, as if unreachable.
    pub(crate) fn end(&mut self, now: Instant) {
        self.declare_unreachable(now);
    }

    pub(super) fn declare_unreachable(&mut self, now: Instant) {
        let ids: Vec<MsgId> = self.send.messages.keys().collect();
        for id in ids {
            self.fail_message(id, FailReason::PeerUnreachable);
        }
        self.events.push_back(Event::PeerUnreachable);
        self.live.gave_up = true;
        self.live.end_revalidation();
        self.live.handshake = None;
        // Measure silence afresh for whatever the owner does next.
        self.live.busy_since = Some(now);
        self.live.last_heard = None;
        self.live.reset_keepalive();
    }

    pub(super) fn peer_restarted(&mut self, now: Instant, old: u64, new: u64) {
        self.stats.peer_restarts += 1;
        if self.retired.len() == RETIRED_EPOCHS_MAX {
            self.retired.pop_front();
        }
        self.retired.push_back(old);
        self.peer_epoch = Some(new);
        // Every message with a fragment on the wire went to the old
        // incarnation: its outcome is unknown, so it fails. Messages never
        // transmitted are kept and go to the new incarnation.
        let started: Vec<MsgId> = self
            .send
            .messages
            .iter()
            .filter(|(_, m)| m.started > 0)
            .map(|(id, _)| id)
            .collect();
        for id in started {
            self.fail_message(id, FailReason::PeerRestarted);
        }
        debug_assert!(self.send.in_flight.is_empty());
        let mut fresh = SendState::new(&self.cfg, self.send.next_msg_id);
        fresh.messages = std::mem::take(&mut self.send.messages);
        fresh.queued_bytes = self.send.queued_bytes;
        fresh.small = std::mem::take(&mut self.send.small);
        fresh.large = std::mem::take(&mut self.send.large);
        fresh.prune_queues();
        self.send = fresh;
        self.recv = RecvState::new();
        self.live.handshake = None;
        self.live.reset_keepalive();
        if self.is_busy() {
            self.live.busy_since = Some(now);
        }
        self.events.push_back(Event::PeerRestarted);
    }

    /// The first datagram from the peer names its epoch: the handshake is
    /// over, whether or not it was our probe that the peer answered.
    pub(super) fn learn_peer_epoch(&mut self, epoch: u64) {
        debug_assert!(self.peer_epoch.is_none());
        self.peer_epoch = Some(epoch);
        self.live.phase = Phase::Established {
            keepalive_due: None,
        };
    }

    /// The liveness state agrees with the peer's epoch.
    pub(super) fn debug_check_liveness(&self) {
        debug_assert_eq!(
            self.peer_epoch.is_none(),
            self.live.phase == Phase::Handshake,
            "the handshake phase is exactly the time the peer's epoch is unknown"
        );
    }
}
