//! Liveness: holds, the peer's silence, keepalive, giving up, and the
//! peer's restarts.

use std::time::Instant;

use super::recv::RecvState;
use super::send::SendState;
use super::{Channel, Event, FailReason, MsgId, RETIRED_EPOCHS_MAX};

impl Channel {
    /// Keep the peer's liveness checked while the owner waits for something
    /// from it (a reply) although nothing is in flight. Balanced by `release`.
    pub fn hold(&mut self, now: Instant) {
        self.mark_busy(now);
        self.holds += 1;
    }

    /// End one `hold`.
    pub fn release(&mut self) {
        self.holds = self.holds.saturating_sub(1);
    }

    pub(super) fn mark_busy(&mut self, now: Instant) {
        if self.silent_since().is_none() {
            self.busy_since = Some(now);
            self.probe_due = None;
        }
    }

    /// Busy: something is owed to us or by us, so the peer's silence is
    /// measured (keepalive probes, then "unreachable"). Receive state counts:
    /// a gap or a partial message waits on the peer, and the peer's answer
    /// to a probe carries its floors, which free what it abandoned.
    pub(super) fn is_busy(&self) -> bool {
        !self.send.messages.is_empty() || self.holds > 0 || (self.recv_pending() && !self.gave_up)
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
        match (self.last_heard, self.busy_since) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn declare_unreachable(&mut self, now: Instant) {
        let ids: Vec<MsgId> = self.send.messages.keys().copied().collect();
        for id in ids {
            self.fail_message(id, FailReason::PeerUnreachable);
        }
        self.events.push_back(Event::PeerUnreachable);
        self.gave_up = true;
        self.revalidate = false;
        self.handshake_sent_at = None;
        // Measure silence afresh for whatever the owner does next.
        self.busy_since = Some(now);
        self.last_heard = None;
        self.probe_due = None;
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
            .map(|(&id, _)| id)
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
        self.handshake_sent_at = None;
        self.probe_due = None;
        if self.is_busy() {
            self.busy_since = Some(now);
        }
        self.events.push_back(Event::PeerRestarted);
    }
}
