//! `[metrics]`: the Prometheus endpoint and the per-function latency window.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::metrics::latency::WindowLimits;

/// `[metrics]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSettings {
    /// `metrics.listen`: the TCP address serving `GET /metrics`; `None` (the
    /// default) serves nothing. Read at start only: a reload that changes it
    /// is refused with a warning (the other keys apply).
    pub listen: Option<SocketAddr>,
    /// `metrics.request_timeout_ms`: the longest one scrape may hold the
    /// endpoint, reading the request and writing the response together.
    pub request_timeout: Duration,
    /// `metrics.latency_window`: latencies kept per function for p50/p99.
    pub latency_window: usize,
    /// `metrics.latency_window_ms`: latencies older than this leave p50/p99.
    pub latency_window_age: Duration,
    /// `metrics.functions_max`: function names tracked by name; calls to
    /// further names count under `(other)`.
    pub functions_max: usize,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            listen: None,
            request_timeout: Duration::from_secs(2),
            latency_window: 1024,
            latency_window_age: Duration::from_secs(60),
            functions_max: 256,
        }
    }
}

/// Upper bound of `metrics.latency_window`.
pub const LATENCY_WINDOW_MAX: usize = 65_536;
/// Upper bound of `metrics.functions_max`.
pub const FUNCTIONS_TRACKED_MAX: usize = 4096;

impl MetricsSettings {
    /// What the router's call figures keep.
    pub fn window(&self) -> WindowLimits {
        WindowLimits {
            calls: self.latency_window,
            age: self.latency_window_age,
            functions_max: self.functions_max,
        }
    }

    /// The key and the problem of the first value out of range.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.request_timeout.is_zero() || self.request_timeout > Duration::from_secs(60) {
            return Err((
                "metrics.request_timeout_ms",
                "must be 1 to 60000".to_owned(),
            ));
        }
        if !(1..=LATENCY_WINDOW_MAX).contains(&self.latency_window) {
            return Err((
                "metrics.latency_window",
                format!("must be 1 to {LATENCY_WINDOW_MAX}"),
            ));
        }
        if self.latency_window_age.is_zero() {
            return Err(("metrics.latency_window_ms", "must be at least 1".to_owned()));
        }
        if !(1..=FUNCTIONS_TRACKED_MAX).contains(&self.functions_max) {
            return Err((
                "metrics.functions_max",
                format!("must be 1 to {FUNCTIONS_TRACKED_MAX}"),
            ));
        }
        Ok(())
    }
}

/// `[metrics]` as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMetrics {
    /// `""` turns the endpoint off (so an environment override can).
    listen: Option<String>,
    request_timeout_ms: Option<u64>,
    latency_window: Option<usize>,
    latency_window_ms: Option<u64>,
    functions_max: Option<usize>,
}

impl FileMetrics {
    /// Overlay these keys on `m`.
    pub(super) fn overlay(self, m: &mut MetricsSettings) -> Result<(), String> {
        if let Some(l) = self.listen {
            m.listen = if l.is_empty() {
                None
            } else {
                Some(l.parse().map_err(|_| {
                    format!("`metrics.listen`: {l:?} is not an address ip:port (\"\" for off)")
                })?)
            };
        }
        if let Some(ms) = self.request_timeout_ms {
            m.request_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = self.latency_window {
            m.latency_window = n;
        }
        if let Some(ms) = self.latency_window_ms {
            m.latency_window_age = Duration::from_millis(ms);
        }
        if let Some(n) = self.functions_max {
            m.functions_max = n;
        }
        Ok(())
    }
}
