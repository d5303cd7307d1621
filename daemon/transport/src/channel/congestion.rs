//! Congestion control: how many datagrams may be in flight.
//!
//! NewReno with QUIC's recovery rules (RFC 9002 §7): slow start from an
//! initial window of 10 (RFC 6928), congestion avoidance, one reduction per
//! recovery period, no reduction on a probe timeout, and a collapse to the
//! minimum window only on persistent congestion. Each window is counted in
//! datagrams.
//!
//! Random loss is not congestion. A reduction never goes below twice the
//! path's measured bandwidth-delay product (the delivery-rate model of BBR:
//! the largest delivery rate seen over the last rounds, times the smallest
//! RTT), because a random drop does not change what the path has just shown
//! it delivers; a queue overflowing at a bottleneck still halves the excess
//! above that, so the sender backs off to the bottleneck's rate plus a
//! bounded standing queue instead of keeping it full.

use std::time::{Duration, Instant};

/// A reduction keeps at least this many bandwidth-delay products in flight
/// (BBR's congestion window gain).
const BDP_FLOOR_GAIN: f64 = 2.0;

/// A congestion event this many rounds after one the floor held is taken
/// as a queue the floor keeps overflowing.
const HELD_LOSS_ROUNDS: u64 = 2;

/// The delivery-rate maximum is forgotten after this many round trips
/// without a sample as high (BBR's bandwidth filter window).
const BW_WINDOW_ROUNDS: u64 = 10;

/// The congestion window and the state of recovery.
#[derive(Debug, Clone)]
pub(super) struct Controller {
    window: u32,
    ssthresh: u32,
    /// Acknowledged datagrams counted towards the next +1 in congestion
    /// avoidance.
    credit: u32,
    /// The current recovery period started at this instant: losses of
    /// datagrams sent before it belong to a reduction already made.
    recovery_start: Option<Instant>,
    min: u32,
    max: u32,
    model: DeliveryModel,
    /// The last congestion event was held up by the floor (no reduction),
    /// in this round.
    held_at_round: Option<u64>,
    /// Since the last congestion event, data waited for the window.
    window_full: bool,
}

/// What the controller records with each datagram when it is sent, to turn
/// its acknowledgement into a delivery-rate sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DeliveryMark {
    delivered: u64,
    delivered_time: Instant,
}

/// Delivery-rate estimation (the model half of BBR, draft-cardwell-iccrg-bbr).
#[derive(Debug, Clone, Default)]
struct DeliveryModel {
    /// Datagrams acknowledged so far.
    delivered: u64,
    /// When the last one was.
    delivered_time: Option<Instant>,
    /// The largest delivery rate seen recently, in datagrams per second.
    bw: f64,
    /// The round in which `bw` was measured.
    bw_round: u64,
    /// Round trips counted by delivery: a round ends when a datagram sent
    /// after the previous round ended is acknowledged.
    round: u64,
    next_round_delivered: u64,
}

impl Controller {
    pub(super) fn new(initial: u32, min: u32, max: u32) -> Self {
        debug_assert!(min >= 1 && min <= initial && initial <= max);
        Controller {
            window: initial,
            ssthresh: max,
            credit: 0,
            recovery_start: None,
            min,
            max,
            model: DeliveryModel::default(),
            held_at_round: None,
            window_full: false,
        }
    }

    /// Datagrams that may be in flight.
    pub(super) fn window(&self) -> u32 {
        self.window
    }

    /// Stamp a datagram being sent now.
    pub(super) fn on_sent(&self, now: Instant) -> DeliveryMark {
        DeliveryMark {
            delivered: self.model.delivered,
            delivered_time: self.model.delivered_time.unwrap_or(now),
        }
    }

    /// New data waits because the flight fills the window.
    pub(super) fn on_window_full(&mut self) {
        self.window_full = true;
    }

    /// A datagram sent at `sent_at` and stamped `mark` was acknowledged.
    /// `window_limited`: the flight filled at least half the window, so the
    /// window (not the application) limited the sending rate and may grow
    /// (RFC 9002 §7.8).
    pub(super) fn on_ack(
        &mut self,
        now: Instant,
        sent_at: Instant,
        mark: DeliveryMark,
        min_rtt: Option<Duration>,
        window_limited: bool,
    ) {
        self.model.on_ack(now, mark, min_rtt);
        if self.in_recovery(sent_at) || !window_limited {
            return;
        }
        if self.window < self.ssthresh {
            self.window += 1;
        } else {
            self.credit += 1;
            if self.credit >= self.window {
                self.credit = 0;
                self.window += 1;
            }
        }
        self.window = self.window.min(self.max);
    }

    /// Datagrams were declared lost, the newest of them sent at
    /// `newest_lost_sent`. Starts a recovery period and reduces the window unless
    /// one is in progress (one reduction per round trip). Returns whether
    /// it started one.
    /// `srtt`: the smoothed RTT, which an application-limited sender's
    /// floor spans (see below).
    pub(super) fn on_congestion_event(
        &mut self,
        now: Instant,
        newest_lost_sent: Instant,
        min_rtt: Option<Duration>,
        srtt: Option<Duration>,
    ) -> bool {
        if self.in_recovery(newest_lost_sent) {
            return false;
        }
        self.recovery_start = Some(now);
        let window_full = std::mem::take(&mut self.window_full);
        // The floor held the window at the last event, losses came back
        // within the next rounds, and the window was full: not random drops
        // but a queue that the floor keeps overflowing (shallower than a
        // BDP). Trust the model for one BDP only, the bottleneck's own rate
        // without a queue. (A sender the application limits cannot be
        // overflowing a queue with its window.)
        let round = self.model.round;
        let repeated = window_full
            && self
                .held_at_round
                .is_some_and(|r| round <= r + HELD_LOSS_ROUNDS);
        let gain = if repeated { 1.0 } else { BDP_FLOOR_GAIN };
        // The BDP spans the minimum RTT while data waits for the window, so
        // a standing queue the sender built is not taken for path. A sender
        // the application limits (nothing waited since the last event)
        // built no queue: its flight must span the RTT the path actually
        // takes, jitter included, or a loss that holds the flight open
        // stalls the next calls behind the window.
        let rtt = if window_full {
            min_rtt
        } else {
            srtt.max(min_rtt)
        };
        let floor = self.model.floor(rtt, gain).min(self.window);
        let reduced = (self.window / 2).max(floor).max(self.min);
        self.held_at_round = (reduced >= self.window).then_some(round);
        self.window = reduced;
        self.ssthresh = self.window;
        self.credit = 0;
        true
    }

    /// Every datagram sent over longer than the persistent congestion
    /// duration was lost: the path stopped delivering, and what the model
    /// knew of it is stale. Collapse to the minimum window (RFC 9002 §7.6).
    pub(super) fn on_persistent_congestion(&mut self) {
        self.window = self.min;
        self.credit = 0;
        self.recovery_start = None;
        self.model.bw = 0.0;
    }

    fn in_recovery(&self, sent_at: Instant) -> bool {
        self.recovery_start.is_some_and(|start| sent_at <= start)
    }
}

impl DeliveryModel {
    fn on_ack(&mut self, now: Instant, mark: DeliveryMark, min_rtt: Option<Duration>) {
        self.delivered += 1;
        self.delivered_time = Some(now);
        if mark.delivered >= self.next_round_delivered {
            self.round += 1;
            self.next_round_delivered = self.delivered;
        }
        // Acknowledgements arriving together would make the interval
        // vanish: no path delivers a window faster than its smallest RTT.
        let Some(min_rtt) = min_rtt else { return };
        let interval = now
            .saturating_duration_since(mark.delivered_time)
            .max(min_rtt);
        if interval.is_zero() {
            return;
        }
        let rate = (self.delivered - mark.delivered) as f64 / interval.as_secs_f64();
        if rate >= self.bw || self.round > self.bw_round + BW_WINDOW_ROUNDS {
            self.bw = rate;
            self.bw_round = self.round;
        }
    }

    /// The smallest window a reduction leaves: a multiple of the measured
    /// delivery rate times `rtt`, in datagrams.
    fn floor(&self, rtt: Option<Duration>, gain: f64) -> u32 {
        let Some(rtt) = rtt else { return 0 };
        let bdp = self.bw * rtt.as_secs_f64() * gain;
        bdp.ceil().min(f64::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `rounds` round trips of 4 datagrams at a 10 ms RTT from `t0 + at`:
    /// 400 datagrams/s, a BDP of 4.
    fn deliver(c: &mut Controller, t0: Instant, at: u64, rounds: u64) {
        for r in 0..rounds {
            let sent = t0 + ms(at + 10 * r);
            let marks: Vec<_> = (0..4).map(|_| c.on_sent(sent)).collect();
            for m in marks {
                c.on_ack(sent + ms(10), sent, m, Some(ms(10)), true);
            }
        }
    }

    #[test]
    fn reduction_halves_but_keeps_twice_the_delivered_bdp() {
        let t0 = Instant::now();
        let mut c = Controller::new(10, 2, 1000);
        deliver(&mut c, t0, 0, 10);
        assert_eq!(c.window(), 50, "slow start: +1 per acknowledged datagram");
        assert!(c.on_congestion_event(t0 + ms(100), t0 + ms(95), Some(ms(10)), Some(ms(10))));
        assert_eq!(c.window(), 25);
        // Another loss from the same flight: no second reduction.
        assert!(!c.on_congestion_event(t0 + ms(101), t0 + ms(99), Some(ms(10)), Some(ms(10))));
        assert_eq!(c.window(), 25);
        // Losses now and then, rounds apart (random drops): reductions
        // stop at twice the BDP, not at the minimum.
        for k in 1..10u64 {
            let at = 100 + 100 * k;
            deliver(&mut c, t0, at, 5);
            c.on_congestion_event(
                t0 + ms(at + 50),
                t0 + ms(at + 45),
                Some(ms(10)),
                Some(ms(10)),
            );
        }
        assert!((8..=9).contains(&c.window()), "window {}", c.window());
        c.on_persistent_congestion();
        assert_eq!(c.window(), 2);
    }

    #[test]
    fn losses_round_after_round_with_a_full_window_fall_back_to_one_bdp() {
        let t0 = Instant::now();
        let mut c = Controller::new(9, 2, 1000);
        deliver(&mut c, t0, 0, 10);
        for k in 0..6u64 {
            let at = 100 + 20 * k;
            c.on_window_full();
            c.on_congestion_event(
                t0 + ms(at + 10),
                t0 + ms(at + 5),
                Some(ms(10)),
                Some(ms(10)),
            );
            deliver(&mut c, t0, at, 1);
        }
        assert!((4..=5).contains(&c.window()), "window {}", c.window());
        // The same losses with the application, not the window, limiting
        // the flight: random drops, and the floor of twice the BDP holds.
        let mut c = Controller::new(9, 2, 1000);
        deliver(&mut c, t0, 0, 10);
        for k in 0..6u64 {
            let at = 100 + 20 * k;
            c.on_congestion_event(
                t0 + ms(at + 10),
                t0 + ms(at + 5),
                Some(ms(10)),
                Some(ms(10)),
            );
            deliver(&mut c, t0, at, 1);
        }
        assert!((8..=9).contains(&c.window()), "window {}", c.window());
    }

    /// A loss while data waited for the window keeps twice the BDP over the
    /// minimum RTT (a standing queue is not path); a loss while the
    /// application limited the sender keeps twice the delivery rate over the
    /// smoothed RTT, which a jittery path's flight really spans.
    #[test]
    fn an_application_limited_floor_spans_the_smoothed_rtt() {
        let t0 = Instant::now();
        let reduce = |window_full: bool| {
            let mut c = Controller::new(2, 2, 1000);
            deliver(&mut c, t0, 0, 10);
            assert_eq!(c.window(), 42, "slow start");
            if window_full {
                c.on_window_full();
            }
            // 400 datagrams/s; minimum RTT 10 ms, smoothed 30 ms.
            c.on_congestion_event(t0 + ms(200), t0 + ms(195), Some(ms(10)), Some(ms(30)));
            c.window()
        };
        assert_eq!(reduce(true), 21, "half of 42, above 2 x 400/s x 10 ms");
        assert_eq!(reduce(false), 24, "2 x 400/s x 30 ms, above half of 42");
    }
}
