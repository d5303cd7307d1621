//! `rpcctl bench`: N calls from C threads sharing one connection; throughput and a latency
//! histogram.
//!
//! Threads claim calls from a shared counter until N are taken, so the total is exact
//! whatever the concurrency. Each thread records the latency of its successful calls in its
//! own HDR histogram (nanoseconds, 3 significant digits), merged at the end; failed calls
//! are counted by error code. While it runs for more than a second, a progress line is
//! rewritten in place on stderr, only when stderr is a terminal and the output is not JSON
//! (with `--json`, standard error holds nothing but the error object).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rpcd_client::conn::{CallOptions, Connection, RequestError};
use serde_json::json;

use crate::cli::BenchArgs;
use crate::exit;

/// Largest latency the histogram tracks exactly (longer ones are recorded as this): one hour.
const LATENCY_MAX_NS: u64 = 3_600_000_000_000;

/// Runs before the progress line appears.
const PROGRESS_AFTER: Duration = Duration::from_secs(1);

/// Time between progress updates.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Runs the benchmark and prints its report; fails (after the report) if any call failed.
pub fn run(
    conn: &Connection,
    args: &BenchArgs,
    payload: Vec<u8>,
    json: bool,
) -> anyhow::Result<u8> {
    let mut opts = CallOptions::default();
    opts.deadline = args.opts.deadline;
    opts.idempotent = args.opts.idempotent;
    let claimed = AtomicU64::new(0);
    let finished = AtomicU64::new(0);
    let concurrency = args.concurrency.max(1);
    let progress = !json && std::io::stderr().is_terminal();
    let started = Instant::now();

    let results: Vec<Worker> = std::thread::scope(|s| -> anyhow::Result<Vec<Worker>> {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let handles = (0..concurrency)
            .map(|i| {
                let done_tx = done_tx.clone();
                let (claimed, finished, payload) = (&claimed, &finished, &payload);
                std::thread::Builder::new()
                    .name(format!("bench-{i}"))
                    .spawn_scoped(s, move || {
                        let worker = Worker::run(conn, args, opts, payload, claimed, finished);
                        let _ = done_tx.send(());
                        worker
                    })
                    .context("cannot start a bench thread")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        drop(done_tx);

        let mut shown = false;
        loop {
            match done_rx.recv_timeout(PROGRESS_EVERY) {
                Ok(()) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if progress && started.elapsed() >= PROGRESS_AFTER {
                let done = finished.load(Ordering::Relaxed);
                let rate = done as f64 / started.elapsed().as_secs_f64();
                // Progress is a courtesy: a failed write to stderr changes nothing.
                let _ = write!(
                    std::io::stderr(),
                    "\r{done}/{} calls, {rate:.0} calls/s\x1b[K",
                    args.calls
                );
                shown = true;
            }
        }
        if shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a bench thread panicked"))
            })
            .collect()
    })?;

    let mut report = Report::new(args);
    let mut first_error = None;
    for worker in results {
        report.elapsed = report.elapsed.max(worker.ended.duration_since(started));
        report
            .latency
            .add(&worker.latency)
            .context("cannot merge latency histograms")?;
        for (code, n) in worker.errors {
            *report.errors.entry(code).or_default() += n;
        }
        if first_error.is_none() {
            first_error = worker.first_error;
        }
    }
    let text = if json {
        crate::value::render(&report.json(), true)
    } else {
        report.text()
    };
    exit::print(&text)?;
    match first_error {
        Some(err) => {
            let failed: u64 = report.errors.values().sum();
            Err(err).with_context(|| format!("{failed} of {} calls failed; the first", args.calls))
        }
        None => Ok(exit::SUCCESS),
    }
}

/// What one thread measured.
struct Worker {
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    first_error: Option<RequestError>,
    ended: Instant,
}

impl Worker {
    fn run(
        conn: &Connection,
        args: &BenchArgs,
        opts: CallOptions,
        payload: &[u8],
        claimed: &AtomicU64,
        finished: &AtomicU64,
    ) -> Worker {
        let mut worker = Worker {
            latency: new_histogram(),
            errors: BTreeMap::new(),
            first_error: None,
            ended: Instant::now(),
        };
        while claimed.fetch_add(1, Ordering::Relaxed) < args.calls {
            let start = Instant::now();
            let result = conn.call(&args.target, &args.function, payload.to_vec(), opts);
            let took = start.elapsed();
            match result {
                Ok(_) => {
                    let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
                    worker.latency.saturating_record(ns.max(1));
                }
                Err(err) => {
                    let code = exit::call_code(&err).to_owned();
                    *worker.errors.entry(code).or_default() += 1;
                    worker.first_error.get_or_insert(err);
                }
            }
            finished.fetch_add(1, Ordering::Relaxed);
        }
        worker.ended = Instant::now();
        worker
    }
}

fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low,
    // sigfig <= 5).
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3).expect("valid histogram bounds")
}

/// The merged results.
struct Report<'a> {
    args: &'a BenchArgs,
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
}

impl<'a> Report<'a> {
    fn new(args: &'a BenchArgs) -> Report<'a> {
        Report {
            args,
            latency: new_histogram(),
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn ok(&self) -> u64 {
        self.latency.len()
    }

    fn calls_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.args.calls as f64 / secs
        } else {
            0.0
        }
    }

    /// (label, JSON key, microseconds) of each reported latency statistic.
    fn percentiles(&self) -> Vec<(&'static str, &'static str, f64)> {
        let us = |ns: u64| ns as f64 / 1000.0;
        let h = &self.latency;
        vec![
            ("min", "min", us(h.min())),
            ("mean", "mean", h.mean() / 1000.0),
            ("p50", "p50", us(h.value_at_quantile(0.5))),
            ("p90", "p90", us(h.value_at_quantile(0.9))),
            ("p99", "p99", us(h.value_at_quantile(0.99))),
            ("p99.9", "p99_9", us(h.value_at_quantile(0.999))),
            ("max", "max", us(h.max())),
        ]
    }

    fn json(&self) -> serde_json::Value {
        let latency: serde_json::Map<String, serde_json::Value> = if self.ok() == 0 {
            serde_json::Map::new()
        } else {
            self.percentiles()
                .into_iter()
                .map(|(_, key, us)| (key.to_owned(), json!(round3(us))))
                .collect()
        };
        json!({
            "target": self.args.target,
            "function": self.args.function,
            "calls": self.args.calls,
            "concurrency": self.args.concurrency,
            "ok": self.ok(),
            "errors": self.errors,
            "elapsed_s": round3(self.elapsed.as_secs_f64()),
            "calls_per_s": round3(self.calls_per_s()),
            "latency_us": latency,
        })
    }

    fn text(&self) -> String {
        let a = self.args;
        let failed: u64 = self.errors.values().sum();
        let mut out = format!(
            "{} on {}: {} calls, concurrency {}\n\
             elapsed      {:.3} s\n\
             throughput   {:.0} calls/s\n\
             ok           {}\n\
             failed       {failed}\n",
            a.function,
            a.target,
            a.calls,
            a.concurrency,
            self.elapsed.as_secs_f64(),
            self.calls_per_s(),
            self.ok(),
        );
        if self.ok() > 0 {
            out.push_str("latency of successful calls:\n");
            for (label, _, us) in self.percentiles() {
                out.push_str(&format!("  {label:<6} {us:>10.1} µs\n"));
            }
        }
        if !self.errors.is_empty() {
            out.push_str("errors by code:\n");
            let width = self.errors.keys().map(String::len).max().unwrap_or(0);
            for (code, n) in &self.errors {
                out.push_str(&format!("  {code:<width$}  {n}\n"));
            }
        }
        out
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
