//! Congestion control and loss detection: the window (slow start,
//! congestion avoidance, RFC 5681), timeouts, and fast retransmit.

use super::{Channel, FailReason};
use crate::seq::Seq;

/// Sequence distance at which an unacknowledged datagram below an
/// acknowledged one is declared lost (TCP's three duplicate acks).
const REORDER_THRESHOLD: u64 = 3;

impl Channel {
    pub(super) fn on_rto(&mut self, seq: Seq) {
        let Some(s) = self.send.in_flight.get_mut(&seq) else {
            return;
        };
        if s.transmissions > self.cfg.retransmits_max {
            let id = s.msg_id;
            self.fail_message(id, FailReason::PeerUnreachable);
            return;
        }
        s.lost = true;
        self.send.lost.insert(seq);
        // A timeout always collapses the window to one datagram (RFC 5681
        // 3.1), even inside a window already reduced by a fast retransmit:
        // the path is not delivering. ssthresh is halved once per window.
        if seq >= self.send.recovery_until {
            self.send.ssthresh = (self.send.cwnd / 2).max(2);
            self.send.recovery_until = self.send.next_seq;
        }
        self.send.cwnd = 1;
        self.send.cwnd_credit = 0;
    }

    pub(super) fn grow_cwnd(&mut self) {
        let s = &mut self.send;
        if s.cwnd < s.ssthresh {
            s.cwnd += 1;
        } else {
            s.cwnd_credit += 1;
            if s.cwnd_credit >= s.cwnd {
                s.cwnd_credit = 0;
                s.cwnd += 1;
            }
        }
        s.cwnd = s.cwnd.min(self.cfg.cwnd_max);
    }

    /// Fast retransmit: an unacknowledged datagram at least
    /// `REORDER_THRESHOLD` counters below an acknowledged one is lost. The
    /// scan cursor only moves forward, so each datagram is examined once.
    pub(super) fn detect_losses(&mut self) {
        let limit = self.send.highest_acked;
        let mut found = Vec::new();
        for (&q, s) in self.send.in_flight.range(self.send.fast_scan..) {
            if q.plus(REORDER_THRESHOLD) > limit {
                break;
            }
            if !s.lost {
                found.push(q);
            }
        }
        if limit.0 >= REORDER_THRESHOLD {
            let next = Seq(limit.0 - REORDER_THRESHOLD + 1);
            if next > self.send.fast_scan {
                self.send.fast_scan = next;
            }
        }
        for q in found {
            if let Some(s) = self.send.in_flight.get_mut(&q) {
                s.lost = true;
                self.send.deadlines.remove(&(s.deadline, q));
                self.send.lost.insert(q);
                s.fast = true;
                if q >= self.send.recovery_until {
                    self.send.ssthresh = (self.send.cwnd / 2).max(2);
                    self.send.cwnd = self.send.ssthresh;
                    self.send.cwnd_credit = 0;
                    self.send.recovery_until = self.send.next_seq;
                }
            }
        }
    }

    /// A lost datagram may go again: while the window has room, and always
    /// when nothing else is in flight (so one datagram probes the path).
    pub(super) fn can_retransmit(&self) -> bool {
        !self.send.lost.is_empty()
            && (self.send.flight() < self.send.cwnd || self.send.flight() == 0)
    }

    /// A fragment not yet transmitted may take the next counter: the
    /// congestion window and the peer's receive window both have room.
    pub(super) fn can_send_new(&self) -> bool {
        let window_end = self.send.peer_ack.plus(u64::from(self.send.peer_window));
        self.send.flight() < self.send.cwnd && self.send.next_seq < window_end
    }
}
