//! Round-trip time estimation and the retransmission timeout, per RFC 6298.

use std::time::Duration;

/// Clock granularity `G` of RFC 6298: the event loop's timers are
/// millisecond-grained (epoll), so variance below 1 ms buys nothing.
pub const GRANULARITY: Duration = Duration::from_millis(1);

/// SRTT/RTTVAR estimator.
#[derive(Debug, Clone, Copy)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    latest: Option<Duration>,
    min_rtt: Option<Duration>,
    initial: Duration,
    min: Duration,
    max: Duration,
}

impl RttEstimator {
    /// An estimator with no samples yet: RTO is `initial` (clamped).
    pub fn new(initial: Duration, min: Duration, max: Duration) -> Self {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            latest: None,
            min_rtt: None,
            initial,
            min,
            max,
        }
    }

    /// Take one measurement. Callers apply Karn's rule: only datagrams sent
    /// exactly once give samples.
    pub fn sample(&mut self, r: Duration) {
        self.latest = Some(r);
        self.min_rtt = Some(self.min_rtt.map_or(r, |m| m.min(r)));
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

    /// Smoothed RTT, if measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// RTT variation.
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// The smallest sample so far: the path's propagation delay, as far as
    /// it has shown it.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
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
        RttEstimator::new(ms(1000), ms(1), ms(60_000))
    }

    #[test]
    fn initial_rto_before_samples() {
        assert_eq!(est().rto(), ms(1000));
        assert_eq!(est().srtt(), None);
    }

    #[test]
    fn first_sample_sets_srtt_and_half_rttvar() {
        let mut e = est();
        e.sample(ms(100));
        assert_eq!(e.srtt(), Some(ms(100)));
        assert_eq!(e.rttvar(), ms(50));
        // RTO = 100 + 4*50
        assert_eq!(e.rto(), ms(300));
    }

    #[test]
    fn later_samples_use_alpha_and_beta() {
        let mut e = est();
        e.sample(ms(100));
        e.sample(ms(200));
        // RTTVAR = 3/4*50 + 1/4*|100-200| = 37.5 + 25 = 62.5
        assert_eq!(e.rttvar(), Duration::from_micros(62_500));
        // SRTT = 7/8*100 + 1/8*200 = 112.5
        assert_eq!(e.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(e.rto(), Duration::from_micros(112_500 + 250_000));
    }

    #[test]
    fn granularity_bounds_the_variance_term() {
        let mut e = RttEstimator::new(ms(100), Duration::from_micros(1), ms(1000));
        for _ in 0..50 {
            e.sample(Duration::from_micros(100));
        }
        // RTTVAR decays towards zero; G = 1 ms keeps RTO at SRTT + 1 ms.
        assert_eq!(e.rto(), Duration::from_micros(1100));
    }

    #[test]
    fn rto_is_clamped_to_floor_and_ceiling() {
        let mut e = RttEstimator::new(ms(100), ms(5), ms(200));
        e.sample(Duration::from_micros(10));
        assert_eq!(e.rto(), ms(5));
        e.sample(ms(10_000));
        assert_eq!(e.rto(), ms(200));
    }

    #[test]
    fn backoff_doubles_per_attempt_up_to_max() {
        let mut e = RttEstimator::new(ms(100), ms(5), ms(1000));
        e.sample(ms(10)); // rto = 10 + 20 = 30
        assert_eq!(e.backed_off(1), ms(30));
        assert_eq!(e.backed_off(2), ms(60));
        assert_eq!(e.backed_off(3), ms(120));
        assert_eq!(e.backed_off(6), ms(960));
        assert_eq!(e.backed_off(7), ms(1000));
        assert_eq!(e.backed_off(64), ms(1000));
    }
}
