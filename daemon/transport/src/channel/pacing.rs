//! Pacing (RFC 9002 §7.7): a window's worth of datagrams is spread over a
//! smoothed RTT instead of leaving in one burst that a bottleneck's queue
//! must absorb.
//!
//! A token bucket, refilled at `pacing_gain_percent` of the congestion
//! window per smoothed RTT. It holds at most `Config::pacing_burst`
//! datagrams (the initial window may go at once, a lone message after a
//! quiet spell never waits), or what the rate refills in [`HORIZON`] if that
//! is more. Only data that fills the window meets it: a sender whose flight
//! stays below the burst never waits. When the bucket is empty the pacer's
//! next-send time is a `Timer::Pacing` in the one `timer_deadline`.
//!
//! The event loop's timers are millisecond-grained (epoll): a wait shorter
//! than [`GRANULARITY`] lasts a whole one, and a wakeup may come up to
//! another one late. So the bucket holds two granularities' worth: a
//! wakeup 1-2 ms after the bucket ran dry sends what the rate allowed over
//! that time, as a burst, and the loop's coarse timers lose nothing of the
//! rate (a bucket of one granularity lost up to half of it).

use std::time::{Duration, Instant};

use super::Channel;
use crate::rtt::GRANULARITY;

/// What the bucket holds at the least, in time at the pacing rate: a wait
/// of one timer granularity plus a wakeup up to one granularity late.
pub(super) const HORIZON: Duration = GRANULARITY.saturating_mul(2);

/// The pacer's state.
#[derive(Debug, Clone, Default)]
pub(super) struct Pacer {
    /// Datagrams that may go now (at most the burst), as of `at`.
    tokens: f64,
    at: Option<Instant>,
    /// The bucket ran dry: no data datagram goes before this instant.
    pub(super) next_send: Option<Instant>,
}

impl Channel {
    /// Datagrams per second the pacer lets through: the window per
    /// smoothed RTT, times the gain. None before the RTT is measured (the
    /// first window goes unpaced, as the burst allows).
    fn pacing_rate(&self) -> Option<f64> {
        let srtt = self.rtt.srtt()?.max(Duration::from_micros(100));
        let gain = f64::from(self.cfg.pacing_gain_percent) / 100.0;
        Some(gain * f64::from(self.send.cc.window()) / srtt.as_secs_f64())
    }

    /// Whether the pacer holds data back now.
    pub(super) fn paced(&self) -> bool {
        self.send.pacer.next_send.is_some()
    }

    /// A data datagram goes at `now`: take a token; if none is left, say
    /// when the next one will be there.
    pub(super) fn on_paced_send(&mut self, now: Instant) {
        let Some(rate) = self.pacing_rate() else {
            self.send.pacer = Pacer {
                tokens: f64::from(self.cfg.pacing_burst),
                at: Some(now),
                next_send: None,
            };
            return;
        };
        let burst = f64::from(self.cfg.pacing_burst).max(rate * HORIZON.as_secs_f64());
        let p = &mut self.send.pacer;
        let elapsed =
            p.at.map_or(Duration::MAX, |at| now.saturating_duration_since(at));
        p.tokens = (p.tokens + elapsed.as_secs_f64() * rate).min(burst) - 1.0;
        p.at = Some(now);
        if p.tokens < 0.0 {
            // This one went on credit (the previous deadline allowed it):
            // the next waits until the bucket is back at one.
            p.tokens = p.tokens.max(-1.0);
        }
        if p.tokens < 1.0 - 1e-9 {
            // At least a microsecond: a fast path's wait can round to
            // nothing, and a deadline at `now` would be due again at once.
            let wait =
                Duration::from_secs_f64((1.0 - p.tokens) / rate).max(Duration::from_micros(1));
            p.next_send = Some(now + wait);
        }
    }

    /// `Timer::Pacing` fired: data may go again.
    pub(super) fn on_pacing_timer(&mut self) {
        self.send.pacer.next_send = None;
        let waiting = !self.send.lost.is_empty()
            || (self.send.has_new_data() && self.send.flight() < self.send.cc.window());
        if waiting {
            self.stats.paced_delays += 1;
        }
    }
}
