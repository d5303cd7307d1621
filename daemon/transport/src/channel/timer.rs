//! Timers: when `handle_timeout` must run, and what it does then.

use std::time::Instant;

use super::Channel;

impl Channel {
    /// Run the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Retransmission deadlines, oldest first.
        while let Some(&(deadline, seq)) = self.send.deadlines.first() {
            if deadline > now {
                break;
            }
            self.send.deadlines.pop_first();
            self.on_rto(seq);
        }
        if let Some(t) = self.recv.ack_deadline {
            if t <= now {
                self.recv.ack_now = true;
                self.recv.ack_deadline = None;
            }
        }
        if self.peer_epoch.is_some() && !self.revalidate {
            // The peer's epoch was learnt from a datagram of its own (it
            // opened at the same time): no handshake left to retry.
            self.handshake_sent_at = None;
        }
        if let Some((sent_at, attempt)) = self.handshake_sent_at {
            if sent_at + self.rtt.backed_off(attempt) <= now {
                if attempt > self.cfg.retransmits_max {
                    self.handshake_sent_at = None;
                    self.declare_unreachable(now);
                } else {
                    self.probe_now = true;
                }
            }
        }
        if let Some(since) = self.silent_since() {
            if now.saturating_duration_since(since) >= self.cfg.peer_timeout {
                self.declare_unreachable(now);
            } else if self.peer_epoch.is_some()
                && !self.revalidate
                && (self.probe_due.is_some_and(|t| t <= now)
                    || (self.probe_due.is_none()
                        && now.saturating_duration_since(since) >= self.cfg.keepalive_interval))
            {
                // (Before the peer's epoch is known the handshake's own
                // retries probe it; a keepalive there would reset their
                // backoff and their count.)
                self.probe_now = true;
                self.probe_due = Some(now + self.cfg.keepalive_interval);
            }
        }
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.send.deadlines.first().map(|&(d, _)| d);
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        consider(self.recv.ack_deadline);
        if !self.probe_now {
            // While the retry is pending the deadline has passed already;
            // poll_transmit re-arms it.
            consider(
                self.handshake_sent_at
                    .map(|(at, attempt)| at + self.rtt.backed_off(attempt)),
            );
        }
        if let Some(since) = self.silent_since() {
            consider(Some(since + self.cfg.peer_timeout));
            if self.peer_epoch.is_some() && !self.revalidate {
                consider(Some(
                    self.probe_due
                        .unwrap_or(since + self.cfg.keepalive_interval),
                ));
            }
        }
        t
    }
}
