//! Round-trip time estimation and the retransmission timeout, per RFC 6298,
//! and the windowed minimum RTT (BBR's min_rtt filter).

use std::time::{Duration, Instant};

/// Clock granularity `G` of RFC 6298: the event loop's timers are
/// millisecond-grained (epoll), so variance below 1 ms buys nothing.
pub const GRANULARITY: Duration = Duration::from_millis(1);

/// SRTT/RTTVAR estimator.
#[derive(Debug, Clone, Copy)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    latest: Option<Duration>,
    /// The smallest sample of the last `min_window`, and when it was taken.
    min_rtt: Option<(Duration, Instant)>,
    /// The smallest sample taken after `min_rtt`, restarted when half a
    /// window old: what `min_rtt` falls back to when it expires, so the
    /// minimum follows a path whose RTT rose within about a window.
    min_next: Option<(Duration, Instant)>,
    min_window: Duration,
    initial: Duration,
    min: Duration,
    max: Duration,
}

impl RttEstimator {
    /// An estimator with no samples yet: RTO is `initial` (clamped). The
    /// minimum RTT is the smallest sample of the last `min_window`.
    pub fn new(initial: Duration, min: Duration, max: Duration, min_window: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            latest: None,
            min_rtt: None,
            min_next: None,
            min_window,
            initial,
            min,
            max,
        }
    }

    /// Take one measurement, at `now`. Callers apply Karn's rule: only
    /// datagrams sent exactly once give samples.
    pub fn sample(&mut self, now: Instant, r: Duration) {
        self.latest = Some(r);
        self.sample_min(now, r);
        match self.srtt {
            // (2.2) first measurement
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            // (2.3) subsequent: beta = 1/4, alpha = 1/8; RTTVAR first, with the old SRTT
            Some(srtt) => {
                let delta = srtt.abs_diff(r);
                self.rttvar = self.rttvar * 3 / 4 + delta / 4;
                self.srtt = Some(srtt * 7 / 8 + r / 8);
            }
        }
    }

    /// The windowed minimum: a sample at or below it replaces it; otherwise
    /// it stands for `min_window`, then gives way to the smallest sample
    /// since (at most half a window old), so a path whose RTT rose is
    /// followed within one to one and a half windows.
    fn sample_min(&mut self, now: Instant, r: Duration) {
        let age = |(_, at): (Duration, Instant)| now.saturating_duration_since(at);
        if self.min_rtt.is_none_or(|m| r <= m.0) {
            self.min_rtt = Some((r, now));
            self.min_next = None;
            return;
        }
        if self
            .min_next
            .is_none_or(|n| r <= n.0 || age(n) >= self.min_window / 2)
        {
            self.min_next = Some((r, now));
        }
        if self.min_rtt.is_some_and(|m| age(m) >= self.min_window) {
            self.min_rtt = self.min_next.take();
        }
    }

    /// Smoothed RTT, if measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// RTT variation.
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// The smallest sample of about the last `min_window`: the path's
    /// propagation delay, as far as it has shown it lately.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(|(r, _)| r)
    }

    /// The most recent sample.
    pub fn latest(&self) -> Option<Duration> {
        self.latest
    }

    /// RTO = SRTT + max(G, 4·RTTVAR), clamped to [min, max] (2.4, 2.5), or
    /// the initial RTO before any sample (2.1).
    pub fn rto(&self) -> Duration {
        let raw = match self.srtt {
            None => self.initial,
            Some(srtt) => srtt + GRANULARITY.max(self.rttvar * 4),
        };
        raw.clamp(self.min, self.max)
    }

    /// The timeout for a datagram's `attempt`-th transmission (1 = first):
    /// RTO doubled per earlier attempt (5.5), capped at the maximum.
    pub fn backed_off(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(20);
        self.rto().saturating_mul(1 << shift).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn est() -> RttEstimator {
        RttEstimator::new(ms(1000), ms(1), ms(60_000), ms(10_000))
    }

    /// `RttEstimator::sample` at a time no test reads.
    trait At {
        fn sample_(&mut self, r: Duration);
    }
    impl At for RttEstimator {
        fn sample_(&mut self, r: Duration) {
            self.sample(Instant::now(), r);
        }
    }

    /// The minimum RTT is a windowed minimum: a path whose RTT rises (a
    /// longer route) is followed once the old minimum is a window old,
    /// instead of keeping the old figure for ever; a lower sample replaces
    /// it at once.
    #[test]
    fn min_rtt_expires_after_its_window() {
        let t0 = Instant::now();
        let mut e = RttEstimator::new(ms(100), ms(1), ms(1000), ms(10_000));
        e.sample(t0, ms(20));
        // The route changes: every sample is now 60 ms or more.
        for s in 1..=9u64 {
            e.sample(t0 + ms(1000 * s), ms(60 + s));
            assert_eq!(e.min_rtt(), Some(ms(20)), "within the window, at {s} s");
        }
        e.sample(t0 + ms(10_000), ms(70));
        assert_eq!(
            e.min_rtt(),
            Some(ms(66)),
            "a window on: the smallest sample since the candidate last restarted (at 6 s)"
        );
        e.sample(t0 + ms(10_500), ms(30));
        assert_eq!(e.min_rtt(), Some(ms(30)), "a lower sample at once");
        // Steady samples keep a minimum that is refreshed, never stale.
        for s in 11..=40u64 {
            e.sample(t0 + ms(1000 * s), ms(50));
        }
        assert_eq!(e.min_rtt(), Some(ms(50)));
    }

    #[test]
    fn initial_rto_before_samples() {
        assert_eq!(est().rto(), ms(1000));
        assert_eq!(est().srtt(), None);
    }

    #[test]
    fn first_sample_sets_srtt_and_half_rttvar() {
        let mut e = est();
        e.sample_(ms(100));
        assert_eq!(e.srtt(), Some(ms(100)));
        assert_eq!(e.rttvar(), ms(50));
        // RTO = 100 + 4*50
        assert_eq!(e.rto(), ms(300));
    }

    #[test]
    fn later_samples_use_alpha_and_beta() {
        let mut e = est();
        e.sample_(ms(100));
        e.sample_(ms(200));
        // RTTVAR = 3/4*50 + 1/4*|100-200| = 37.5 + 25 = 62.5
        assert_eq!(e.rttvar(), Duration::from_micros(62_500));
        // SRTT = 7/8*100 + 1/8*200 = 112.5
        assert_eq!(e.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(e.rto(), Duration::from_micros(112_500 + 250_000));
    }

    #[test]
    fn granularity_bounds_the_variance_term() {
        let mut e = RttEstimator::new(ms(100), Duration::from_micros(1), ms(1000), ms(10_000));
        for _ in 0..50 {
            e.sample_(Duration::from_micros(100));
        }
        // RTTVAR decays towards zero; G = 1 ms keeps RTO at SRTT + 1 ms.
        assert_eq!(e.rto(), Duration::from_micros(1100));
    }

    #[test]
    fn rto_is_clamped_to_floor_and_ceiling() {
        let mut e = RttEstimator::new(ms(100), ms(5), ms(200), ms(10_000));
        e.sample_(Duration::from_micros(10));
        assert_eq!(e.rto(), ms(5));
        e.sample_(ms(10_000));
        assert_eq!(e.rto(), ms(200));
    }

    #[test]
    fn backoff_doubles_per_attempt_up_to_max() {
        let mut e = RttEstimator::new(ms(100), ms(5), ms(1000), ms(10_000));
        e.sample_(ms(10)); // rto = 10 + 20 = 30
        assert_eq!(e.backed_off(1), ms(30));
        assert_eq!(e.backed_off(2), ms(60));
        assert_eq!(e.backed_off(3), ms(120));
        assert_eq!(e.backed_off(6), ms(960));
        assert_eq!(e.backed_off(7), ms(1000));
        assert_eq!(e.backed_off(64), ms(1000));
    }
}
