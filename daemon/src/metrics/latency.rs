//! Calls by function: outcomes and latency, as the calling daemon sees them.
//!
//! Sans-IO like the router that owns it: `now` comes in with every record and
//! every read. A call's latency runs from the moment this daemon admitted the
//! app's `call` frame to the moment it queued the outcome frame for the app
//! (name resolution, queueing, the network, the serving daemon and its app
//! all included). Refused calls (admission) and calls whose app went away
//! (no outcome) are not counted, as in [`Stats::calls`].
//!
//! Bounded: at most `functions_max` function names are tracked, later names
//! count under [`OTHER`]; each keeps its last `calls` latencies for the
//! sliding window (samples older than `age` are ignored) and a fixed
//! histogram since start.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rpcd_client::ipc::{FunctionStats, LatencyBucket};

#[cfg(doc)]
use rpcd_client::ipc::Stats;

/// Upper bounds of the latency histogram's buckets, in microseconds (a last,
/// implicit bucket holds everything above).
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The name calls are counted under once `functions_max` names are tracked.
pub const OTHER: &str = "(other)";

/// How much [`CallFigures`] keeps (`[metrics]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimits {
    /// Latencies kept per function for p50/p99.
    pub calls: usize,
    /// Latencies older than this are left out of p50/p99.
    pub age: Duration,
    /// Function names tracked by name.
    pub functions_max: usize,
}

/// Outcomes and latencies of the calls this daemon's apps made, by function.
#[derive(Debug, Default)]
pub struct CallFigures {
    by_function: BTreeMap<String, Figures>,
}

#[derive(Debug, Default)]
struct Figures {
    outcomes: BTreeMap<String, u64>,
    /// Calls per bucket of [`BUCKETS_US`] (not cumulative); the last is above them all.
    buckets: [u64; BUCKETS_US.len() + 1],
    sum_us: u64,
    /// (when it ended, latency in µs), oldest first.
    window: VecDeque<(Instant, u64)>,
}

impl CallFigures {
    /// A call to `function` ended at `now` with outcome `code` (`"ok"` or an
    /// error code) after `latency`.
    pub fn record(
        &mut self,
        now: Instant,
        function: &str,
        code: &str,
        latency: Duration,
        limits: WindowLimits,
    ) {
        // This runs for every call: a function already tracked costs one lookup.
        if let Some(f) = self.by_function.get_mut(function) {
            f.record(now, code, latency, limits);
            return;
        }
        let tracked = self.by_function.len() - usize::from(self.by_function.contains_key(OTHER));
        let name = if tracked < limits.functions_max {
            function
        } else {
            OTHER
        };
        // Keys are allocated only the first time a name or an outcome is seen.
        if !self.by_function.contains_key(name) {
            self.by_function.insert(name.to_owned(), Default::default());
        }
        if let Some(f) = self.by_function.get_mut(name) {
            f.record(now, code, latency, limits);
        }
    }

    /// Every function's figures at `now`, by name.
    pub fn stats(&self, now: Instant, limits: WindowLimits) -> BTreeMap<String, FunctionStats> {
        self.by_function
            .iter()
            .map(|(name, f)| (name.clone(), f.stats(now, limits)))
            .collect()
    }
}

impl Figures {
    /// One more call of this function (see [`CallFigures::record`]).
    fn record(&mut self, now: Instant, code: &str, latency: Duration, limits: WindowLimits) {
        let f = self;
        match f.outcomes.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                f.outcomes.insert(code.to_owned(), 1);
            }
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US
            .iter()
            .position(|&le| us <= le)
            .unwrap_or(BUCKETS_US.len());
        f.buckets[bucket] += 1;
        f.sum_us = f.sum_us.saturating_add(us);
        f.window.push_back((now, us));
        while f.window.len() > limits.calls {
            f.window.pop_front();
        }
        while f
            .window
            .front()
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) > limits.age)
        {
            f.window.pop_front();
        }
        debug_assert!(f.window.len() <= limits.calls);
    }

    fn stats(&self, now: Instant, limits: WindowLimits) -> FunctionStats {
        // The newest `calls` samples no older than `age` (limits may have
        // shrunk on a reload since the last record).
        let mut recent: Vec<u64> = self
            .window
            .iter()
            .rev()
            .take(limits.calls)
            .take_while(|&&(t, _)| now.saturating_duration_since(t) <= limits.age)
            .map(|&(_, us)| us)
            .collect();
        let mut s = FunctionStats::default();
        s.calls = self.outcomes.clone();
        s.window_calls = recent.len() as u64;
        s.p50_us = quantile(&mut recent, 50);
        s.p99_us = quantile(&mut recent, 99);
        s.latency_sum_us = self.sum_us;
        let mut cumulative = 0;
        s.latency_buckets = BUCKETS_US
            .iter()
            .zip(self.buckets)
            .map(|(&le_us, n)| {
                cumulative += n;
                let mut b = LatencyBucket::default();
                b.le_us = le_us;
                b.count = cumulative;
                b
            })
            .collect();
        s
    }
}

/// The nearest-rank `percent`th percentile of `samples` (reordered), if any.
fn quantile(samples: &mut [u64], percent: usize) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let rank = (samples.len() * percent).div_ceil(100).max(1);
    let (_, &mut v, _) = samples.select_nth_unstable(rank - 1);
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: WindowLimits = WindowLimits {
        calls: 100,
        age: Duration::from_secs(60),
        functions_max: 2,
    };

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(quantile(&mut v, 50), Some(50));
        assert_eq!(quantile(&mut v, 99), Some(99));
        assert_eq!(quantile(&mut [7], 99), Some(7));
        assert_eq!(quantile(&mut [1, 2], 50), Some(1));
        assert_eq!(quantile(&mut [], 50), None);
    }

    #[test]
    fn window_keeps_the_last_calls_and_the_histogram_all() {
        let now = Instant::now();
        let mut f = CallFigures::default();
        for i in 1..=150 {
            f.record(now, "kv.get", "ok", us(i * 1000), LIMITS);
        }
        f.record(now, "kv.get", "not_found", us(10), LIMITS);
        let s = &f.stats(now, LIMITS)["kv.get"];
        assert_eq!(
            s.calls,
            BTreeMap::from([("ok".into(), 150), ("not_found".into(), 1)])
        );
        assert_eq!(s.window_calls, 100);
        // The window: 10 µs and 52..=150 ms.
        assert_eq!(s.p50_us, Some(100_000));
        assert_eq!(s.p99_us, Some(149_000));
        assert_eq!(s.latency_sum_us, (1..=150).sum::<u64>() * 1000 + 10);
        let le = |bound: u64| {
            s.latency_buckets
                .iter()
                .find(|b| b.le_us == bound)
                .unwrap()
                .count
        };
        assert_eq!(le(100), 1);
        assert_eq!(le(1_000), 2);
        assert_eq!(le(100_000), 101);
        assert_eq!(le(10_000_000), 151);
        assert_eq!(s.latency_buckets.len(), BUCKETS_US.len());
    }

    #[test]
    fn old_samples_leave_the_window() {
        let t0 = Instant::now();
        let mut f = CallFigures::default();
        f.record(t0, "a", "ok", us(5), LIMITS);
        let later = t0 + Duration::from_secs(61);
        let s = &f.stats(later, LIMITS)["a"];
        assert_eq!((s.window_calls, s.p50_us, s.p99_us), (0, None, None));
        assert_eq!(s.calls["ok"], 1, "counts stay");
        f.record(later, "a", "ok", us(9), LIMITS);
        assert_eq!(f.stats(later, LIMITS)["a"].p99_us, Some(9));
    }

    #[test]
    fn names_beyond_the_limit_count_as_other() {
        let now = Instant::now();
        let mut f = CallFigures::default();
        for name in ["a", "b", "c", "d", "a"] {
            f.record(now, name, "ok", us(1), LIMITS);
        }
        let s = f.stats(now, LIMITS);
        let names: Vec<&str> = s.keys().map(String::as_str).collect();
        assert_eq!(names, [OTHER, "a", "b"]);
        assert_eq!(s["a"].calls["ok"], 2);
        assert_eq!(s[OTHER].calls["ok"], 2);
    }
}
