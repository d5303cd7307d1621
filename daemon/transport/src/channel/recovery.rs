//! Loss detection and recovery, after RFC 9002 §6 and RFC 8985 (RACK-TLP).
//!
//! A datagram is declared lost when a datagram sent after it has been
//! acknowledged and either
//! - it is at least [`PACKET_THRESHOLD`] counters below the highest
//!   acknowledged one (and was sent once: a retransmission keeps its old
//!   counter, so its counter says nothing about when it went), or
//! - it was sent more than an RTT before now, plus a reordering window once
//!   the path has been seen to reorder (RACK's time threshold,
//!   `loss_delay`); until then the loss-detection timer waits for it. On a
//!   path that keeps order, an acknowledgement of a later datagram is proof
//!   enough, and a loss is repaired one round trip sooner.
//!
//! Each detection is one congestion event for the controller, which reduces
//! once per recovery period.
//!
//! When nothing comes back at all — a lost tail, or every datagram of a
//! flight — the probe timeout (PTO) fires: first after about two smoothed
//! RTTs (RACK-TLP's tail-loss probe), then on the RTO's schedule, doubling.
//! It sends the oldest outstanding datagram again, so that its
//! acknowledgement lets the rules above find the losses; it does not touch
//! the window (RFC 9002 §6.2: a timeout is not proof of congestion). Only
//! persistent congestion — every datagram sent over three PTOs lost, nothing
//! in between acknowledged — collapses the window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Channel, FailReason};
use crate::rtt::GRANULARITY;
use crate::seq::Seq;

/// Counter distance at which an unacknowledged datagram below an
/// acknowledged one is lost (TCP's three duplicate acks; RFC 9002's
/// kPacketThreshold).
pub(super) const PACKET_THRESHOLD: u64 = 3;

/// RFC 9002's kPersistentCongestionThreshold: PTOs without any delivery.
const PERSISTENT_CONGESTION_PTOS: u32 = 3;

/// Loss-recovery state of the sending half.
#[derive(Debug, Clone, Default)]
pub(super) struct Recovery {
    /// The most recently sent datagram that was acknowledged, as its key in
    /// `by_time` (RACK.xmit_ts, with the counter breaking ties between
    /// datagrams sent at the same instant, which go in counter order):
    /// datagrams sent before it — retransmissions included — are judged for
    /// loss.
    pub(super) newest_acked: Option<(Instant, Seq)>,
    /// `newest_acked` before the latest acknowledgement that acked
    /// something, and the oldest send time that acknowledgement covered:
    /// together they say whether any datagram sent in a span was acknowledged
    /// (persistent congestion).
    acked_before_batch: Option<Instant>,
    batch_oldest_sent: Option<Instant>,
    /// The loss-detection timer: when the oldest datagram sent before
    /// `newest_acked` passes the time threshold.
    pub(super) loss_time: Option<Instant>,
    /// The last transmission of data: the probe timeout counts from it.
    pub(super) last_sent: Option<Instant>,
    /// A datagram sent once was acknowledged after a later one: the path
    /// reorders, and loss detection allows for it (RACK.reordering_seen).
    pub(super) reordering_seen: bool,
    /// Probe timeouts since the last acknowledgement of new data (backoff).
    pub(super) pto_count: u32,
    /// Probe datagrams owed: sent at the next `poll_transmit`, whatever the
    /// congestion window says.
    pub(super) probes: u32,
    /// Redundant copies sent at the next `poll_transmit`, each with whether
    /// it repeats a repair (`thin_flight`) rather than a datagram sent once
    /// (`queue_forward_copy`).
    pub(super) copies: VecDeque<(Vec<u8>, bool)>,
    /// Whole-message datagrams sent new on a thin flight and not yet
    /// copied: the next new datagram sent at a later instant carries a copy
    /// of each (`queue_forward_copy`).
    pub(super) uncopied: Vec<Seq>,
}

impl Channel {
    /// An acknowledgement acknowledged datagrams sent between `oldest` and
    /// (among those whose transmission is unambiguous) `newest`, given as
    /// its `by_time` key.
    pub(super) fn on_new_ack(&mut self, newest: Option<(Instant, Seq)>, oldest: Option<Instant>) {
        let r = &mut self.send.recovery;
        r.acked_before_batch = r.newest_acked.map(|(t, _)| t);
        r.batch_oldest_sent = oldest;
        if newest > r.newest_acked {
            r.newest_acked = newest;
        }
        // The path delivers: the probe backoff starts over.
        r.pto_count = 0;
    }

    /// Declare lost what the packet and time thresholds say, re-arm the
    /// loss-detection timer, and tell the controller. Run after every
    /// acknowledgement and when the loss-detection timer fires.
    pub(super) fn detect_losses(&mut self, now: Instant) {
        let mut found = Vec::new();
        // Packet threshold. The scan cursor only moves forward, so each
        // counter is examined once.
        let limit = self.send.highest_acked;
        for (q, s) in self.send.in_flight.iter_from(self.send.fast_scan) {
            if q.plus(PACKET_THRESHOLD) > limit {
                break;
            }
            if !s.lost && s.transmissions == 1 {
                found.push(q);
            }
        }
        if limit.0 >= PACKET_THRESHOLD {
            let next = Seq(limit.0 - PACKET_THRESHOLD + 1);
            if next > self.send.fast_scan {
                self.send.fast_scan = next;
            }
        }
        // Time threshold, oldest transmission first: the first one not yet
        // due arms the timer, and every later one is due later still.
        self.send.recovery.loss_time = None;
        if let Some(newest) = self.send.recovery.newest_acked {
            let delay = self.loss_delay();
            for (sent, q) in self.send.by_time.keys() {
                if (sent, q) >= newest {
                    break;
                }
                if sent + delay <= now {
                    found.push(q);
                } else {
                    self.send.recovery.loss_time = Some(sent + delay);
                    break;
                }
            }
        }
        self.declare_lost(now, found);
    }

    /// The probe timeout's deadline, while datagrams are in flight.
    pub(super) fn probe_deadline(&self) -> Option<Instant> {
        let r = &self.send.recovery;
        if r.probes > 0 || self.send.by_time.is_empty() {
            // A probe is pending (poll_transmit re-arms the timer when it
            // goes), or nothing is in flight that could be probed.
            return None;
        }
        Some(r.last_sent? + self.probe_timeout(r.pto_count))
    }

    /// The probe timeout fired: probe with the oldest datagram in flight,
    /// or give up on it when it used its retransmissions.
    pub(super) fn on_probe_timeout(&mut self) {
        self.send.recovery.pto_count += 1;
        let Some((_, oldest)) = self.send.by_time.first_key() else {
            return;
        };
        let s = self
            .send
            .in_flight
            .get(&oldest)
            .expect("by_time holds in-flight counters only");
        if s.transmissions > self.cfg.retransmits_max {
            let id = s.msg_id;
            self.fail_message(id, FailReason::PeerUnreachable);
        } else {
            self.send.recovery.probes = 1;
        }
    }

    /// The datagram a probe sends: one declared lost if any (it has waited
    /// for the window), else the oldest in flight.
    pub(super) fn probe_target(&self) -> Option<Seq> {
        self.send
            .lost
            .first()
            .copied()
            .or_else(|| self.send.by_time.first_key().map(|(_, q)| q))
    }

    /// How long after the last transmission the `count`-th consecutive
    /// probe timeout fires: the first is the tail-loss probe, two smoothed
    /// RTTs plus the peer's ack delay (never later than the RTO); then the
    /// RTO, doubled per further timeout (RFC 6298 5.5), capped at `rto_max`.
    pub(super) fn probe_timeout(&self, count: u32) -> Duration {
        match (count, self.rtt.srtt()) {
            (0, Some(srtt)) => (srtt * 2 + self.cfg.ack_delay)
                .min(self.rtt.rto())
                .max(self.cfg.rto_min),
            (0, None) => self.rtt.rto(),
            (n, _) => self.rtt.backed_off(n + 1),
        }
    }

    /// How long after its transmission a datagram sent before the newest
    /// acknowledged one is declared lost (RFC 8985 §6.2): the latest RTT
    /// (the round trip of the newest acknowledged datagram, which the lost
    /// one would have matched), plus a quarter of the minimum RTT once the
    /// path has reordered. Before any reordering the window is zero, as
    /// RACK sets it during recovery: an acknowledgement of a later datagram
    /// on an ordered path means the earlier one is gone.
    fn loss_delay(&self) -> Duration {
        let rtt = self
            .rtt
            .latest()
            .or(self.rtt.srtt())
            .unwrap_or_else(|| self.rtt.rto());
        let reo_wnd = if self.send.recovery.reordering_seen {
            self.rtt.min_rtt().unwrap_or(rtt) / 4
        } else {
            Duration::ZERO
        };
        (rtt + reo_wnd).max(GRANULARITY)
    }

    fn declare_lost(&mut self, now: Instant, found: Vec<Seq>) {
        let mut span: Option<(Instant, Instant)> = None;
        let mut exhausted = Vec::new();
        for q in found {
            let Some(s) = self.send.in_flight.get_mut(&q) else {
                continue;
            };
            if s.lost {
                // Found by both thresholds.
                continue;
            }
            s.lost = true;
            s.fast = true;
            self.send.by_time.remove(&(s.sent_at, q));
            self.send.lost.insert(q);
            span = Some(match span {
                None => (s.first_sent, s.sent_at),
                Some((e, l)) => (e.min(s.first_sent), l.max(s.sent_at)),
            });
            if s.transmissions > self.cfg.retransmits_max {
                exhausted.push(s.msg_id);
            }
        }
        for id in exhausted {
            self.fail_message(id, FailReason::PeerUnreachable);
        }
        let Some((earliest, latest)) = span else {
            return;
        };
        let min_rtt = self.rtt.min_rtt();
        if self
            .send
            .cc
            .on_congestion_event(now, latest, min_rtt, self.rtt.srtt())
        {
            self.stats.congestion_events += 1;
        }
        if self.is_persistent_congestion(earliest, latest) {
            self.stats.persistent_congestion += 1;
            self.send.cc.on_persistent_congestion();
        }
    }

    /// Datagrams sent from `earliest` to `latest` were lost: is it
    /// persistent congestion (RFC 9002 §7.6.2)? Only once the RTT is known,
    /// only over at least three PTOs, and only if nothing sent in that span
    /// was acknowledged.
    fn is_persistent_congestion(&self, earliest: Instant, latest: Instant) -> bool {
        if self.rtt.srtt().is_none() {
            return false;
        }
        let duration = (self.rtt.rto() + self.cfg.ack_delay) * PERSISTENT_CONGESTION_PTOS;
        let r = &self.send.recovery;
        latest.saturating_duration_since(earliest) >= duration
            && r.acked_before_batch.is_none_or(|a| a < earliest)
            && r.batch_oldest_sent.is_none_or(|b| b >= latest)
    }

    /// Whether the retransmission of `seq` about to go should go twice: it
    /// carries a whole message (an RPC-sized one), the application limits
    /// the sender (no new data waits for the window) and the flight is
    /// thin. Such a sender recovers a loss only when a later datagram is
    /// acknowledged, about a round trip plus the gap to its next message; a
    /// lost repair doubles that. A second copy makes a lost repair as rare
    /// as two losses in a row, for one datagram per loss; a window-limited
    /// or bulk sender (a queue overflowing) never sends one.
    pub(super) fn thin_flight(&self, seq: Seq) -> bool {
        let whole = self
            .send
            .in_flight
            .get(&seq)
            .and_then(|s| self.send.messages.get(&s.msg_id))
            .is_some_and(|m| m.count == 1);
        whole && !self.send.has_new_data() && self.send.flight() < self.cfg.redundant_flight_max
    }

    /// A new datagram `seq` just went at `now`. On a thin flight, a copy of
    /// each whole-message datagram sent new at an earlier instant and not
    /// copied yet goes with it (the endpoint bundles them into one UDP
    /// datagram), if it is still unacknowledged, sent once and not declared
    /// lost. A light RPC load (a message every few milliseconds, a round
    /// trip of tens) then recovers a single loss at its next message,
    /// without waiting a round trip for the acknowledgement that reveals it;
    /// losing a message then takes two losses in a row. A copy changes no
    /// sending state: if both are lost, loss detection repairs the original
    /// as before. The copies go with the last datagram of a burst (those
    /// sent at one instant share a UDP datagram anyway); a window-limited
    /// (bulk) sender sends none.
    pub(super) fn queue_forward_copy(&mut self, now: Instant, seq: Seq) {
        if !self.cfg.forward_copies {
            return;
        }
        let whole = self
            .send
            .in_flight
            .get(&seq)
            .and_then(|s| self.send.messages.get(&s.msg_id))
            .is_some_and(|m| m.count == 1);
        let window_limited = self.send.has_new_data() && !self.can_send_new();
        if window_limited || self.send.flight() >= self.cfg.redundant_flight_max {
            self.send.recovery.uncopied.clear();
            return;
        }
        if !whole || self.send.has_new_data() {
            // Copies go with the last datagram of a burst.
            if whole {
                self.send.recovery.uncopied.push(seq);
            }
            return;
        }
        let mut uncopied = std::mem::take(&mut self.send.recovery.uncopied);
        uncopied.retain(|&q| {
            let Some(s) = self.send.in_flight.get(&q) else {
                return false;
            };
            if s.first_sent >= now {
                // Sent in this same instant: the same UDP datagram.
                return true;
            }
            if !s.lost && s.transmissions == 1 {
                let bytes = self.data_datagram(q, false);
                self.send.recovery.copies.push_back((bytes, false));
            }
            false
        });
        uncopied.push(seq);
        self.send.recovery.uncopied = uncopied;
    }

    /// A lost datagram may go again: when the pacer lets it, while the
    /// window has room, and always when nothing else is in flight (so one
    /// datagram probes the path).
    pub(super) fn can_retransmit(&self) -> bool {
        !self.send.lost.is_empty()
            && !self.paced()
            && (self.send.flight() < self.send.cc.window() || self.send.flight() == 0)
    }

    /// A fragment not yet transmitted may take the next counter: the
    /// congestion window and the peer's receive window both have room, and
    /// the pacer lets it go.
    /// Wedged: new data waits, nothing is in flight, and the peer's window
    /// is closed by counters we acknowledged or abandoned but the peer never
    /// passed. A receiver believes a send floor only up to one past the
    /// highest counter it received (§7.5 of the wire protocol), so when every
    /// counter at the top of its window was abandoned unseen (a partition
    /// longer than the retransmission budget) it would wait for a Data
    /// datagram we may not send: the window filler carries our highest used
    /// counter and the floor, and opens the window.
    pub(super) fn wedged(&self) -> bool {
        let s = &self.send;
        s.in_flight.is_empty()
            && s.has_new_data()
            && s.peer_ack < s.next_seq
            && s.next_seq >= s.peer_ack.plus(u64::from(s.peer_window))
    }

    /// A window filler is due: wedged, and none went for this state yet, or
    /// a keepalive is due (the last one may have been lost).
    pub(super) fn filler_due(&self) -> bool {
        self.wedged()
            && (self.probe_now
                || self
                    .send
                    .filler_sent
                    .is_none_or(|(a, n, _)| (a, n) != (self.send.peer_ack, self.send.next_seq)))
    }

    /// A datagram from the peer left us wedged: if the last filler went an
    /// RTO ago it was lost (a peer that keeps talking sends no silence for
    /// a keepalive to fill), so another is due.
    pub(super) fn refill_if_lost(&mut self, now: Instant) {
        if let Some((_, _, at)) = self.send.filler_sent {
            if self.wedged() && now.saturating_duration_since(at) >= self.rtt.rto() {
                self.send.filler_sent = None;
            }
        }
    }

    pub(super) fn can_send_new(&self) -> bool {
        let window_end = self.send.peer_ack.plus(u64::from(self.send.peer_window));
        self.send.flight() < self.send.cc.window()
            && self.send.next_seq < window_end
            && !self.paced()
    }
}
