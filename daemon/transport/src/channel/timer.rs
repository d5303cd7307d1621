//! Timers: one enum variant per reason, and ONE function, [`Channel::timer_deadline`],
//! that says when each is due. `poll_timeout` is the earliest of them and
//! `handle_timeout` fires those at or before `now`: both read the same
//! deadlines, so they cannot drift apart (a timer reported but never fired
//! makes the owner spin; one fired but never reported stalls the channel).

use std::time::Instant;

use super::liveness::Phase;
use super::Channel;

/// Why the channel wants to be woken up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Timer {
    /// A datagram sent before the newest acknowledged one passes the time
    /// threshold of loss detection (RACK).
    LossDetection,
    /// Nothing was acknowledged for a probe timeout since the last
    /// transmission: probe with the oldest datagram in flight (a tail-loss
    /// probe first, then the backed-off RTO).
    Probe,
    /// The pacer's bucket ran dry: data may go again at its next-send time.
    Pacing,
    /// Received data waits at most `ack_delay` for an acknowledgement.
    DelayedAck,
    /// The probe that learns or confirms the peer's epoch is retried with
    /// the RTO's backoff, until `retransmits_max` retries go unanswered.
    Handshake,
    /// Something is outstanding and the peer has been silent for
    /// `peer_timeout`: declare it unreachable.
    PeerTimeout,
    /// Something is outstanding and the peer has been silent for a
    /// `keepalive_interval` (again): probe it.
    Keepalive,
}

impl Timer {
    /// Every timer, in the order `handle_timeout` fires them. The order is
    /// part of the behaviour: a handshake or a peer timeout that gives up
    /// fails the messages whose retransmissions fired before it.
    pub(super) const ALL: [Timer; 7] = [
        Timer::LossDetection,
        Timer::Probe,
        Timer::Pacing,
        Timer::DelayedAck,
        Timer::Handshake,
        Timer::PeerTimeout,
        Timer::Keepalive,
    ];
}

impl Channel {
    /// Run the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.live.established() {
            // The peer's epoch was learnt from a datagram of its own (it
            // opened at the same time): no handshake left to retry.
            self.live.handshake = None;
        }
        for timer in Timer::ALL {
            // A timer may fire several times at one instant (a probe
            // timeout that gives up on one datagram may be due for the
            // next); each firing moves its deadline past `now`, removes it,
            // or fails a message, so this ends.
            while let Some(deadline) = self.timer_deadline(timer) {
                if deadline > now {
                    break;
                }
                self.fire(now, timer);
                debug_assert!(
                    self.timer_deadline(timer) != Some(deadline) || timer == Timer::Probe,
                    "{timer:?} fired and left its deadline in place"
                );
            }
        }
        self.debug_check_liveness();
    }

    /// When `handle_timeout` must next be called: the earliest
    /// [`Channel::timer_deadline`].
    ///
    /// The owner asks this after every turn, so it is computed in one pass
    /// rather than through `timer_deadline` seven times: the silence that
    /// two timers count from is found once, and a timer that is not armed
    /// costs a test. Debug builds check it against `timer_deadline`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut earliest = self.send.recovery.loss_time;
        let mut consider = |t: Instant| {
            if earliest.is_none_or(|e| t < e) {
                earliest = Some(t);
            }
        };
        if let Some(t) = self.probe_deadline() {
            consider(t);
        }
        if let Some(t) = self.send.pacer.next_send {
            consider(t);
        }
        if let Some(t) = self.recv.ack_deadline {
            consider(t);
        }
        if let (false, Some((at, attempt))) = (self.probe_now, self.live.handshake) {
            consider(at + self.rtt.backed_off(attempt));
        }
        if let Some(since) = self.silent_since() {
            consider(since + self.cfg.peer_timeout);
            if let Phase::Established { keepalive_due } = self.live.phase {
                consider(keepalive_due.unwrap_or_else(|| since + self.cfg.keepalive_interval));
            }
        }
        debug_assert_eq!(
            earliest,
            Timer::ALL
                .into_iter()
                .filter_map(|t| self.timer_deadline(t))
                .min(),
            "poll_timeout agrees with timer_deadline"
        );
        earliest
    }

    /// When `timer` is due, or `None` while it is not armed. The only place
    /// a deadline is computed.
    pub(super) fn timer_deadline(&self, timer: Timer) -> Option<Instant> {
        match timer {
            Timer::LossDetection => self.send.recovery.loss_time,
            Timer::Probe => self.probe_deadline(),
            Timer::Pacing => self.send.pacer.next_send,
            Timer::DelayedAck => self.recv.ack_deadline,
            Timer::Handshake => {
                if self.probe_now {
                    // The retry is pending: its deadline has passed already,
                    // and poll_transmit re-arms it when the probe goes out.
                    return None;
                }
                self.live
                    .handshake
                    .map(|(at, attempt)| at + self.rtt.backed_off(attempt))
            }
            Timer::PeerTimeout => self.silent_since().map(|s| s + self.cfg.peer_timeout),
            Timer::Keepalive => match self.live.phase {
                // Before the peer's epoch is known (or while it is being
                // confirmed) the handshake's own retries probe it; a
                // keepalive there would reset their backoff and their count.
                Phase::Handshake | Phase::Revalidating => None,
                Phase::Established { keepalive_due } => {
                    let since = self.silent_since()?;
                    Some(keepalive_due.unwrap_or(since + self.cfg.keepalive_interval))
                }
            },
        }
    }

    /// Do what `timer` is for; called when its deadline is at or before `now`.
    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::LossDetection => self.detect_losses(now),
            Timer::Probe => self.on_probe_timeout(),
            Timer::Pacing => self.on_pacing_timer(),
            Timer::DelayedAck => {
                self.recv.ack_now = true;
                self.recv.ack_deadline = None;
            }
            Timer::Handshake => {
                let (_, attempt) = self.live.handshake.expect("the handshake is due");
                if attempt > self.cfg.retransmits_max {
                    self.live.handshake = None;
                    self.declare_unreachable(now);
                } else {
                    self.probe_now = true;
                }
            }
            Timer::PeerTimeout => self.declare_unreachable(now),
            Timer::Keepalive => {
                self.probe_now = true;
                self.live.phase = Phase::Established {
                    keepalive_due: Some(now + self.cfg.keepalive_interval),
                };
            }
        }
    }
}
