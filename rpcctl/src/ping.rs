//! `rpcctl ping`: probe a daemon with `rpcd.ping`, as `ping` probes a host.
//!
//! One line per probe, then a summary: probes sent and answered, loss, and min/avg/max/mdev of
//! the round-trip times. Without `-c` it runs until SIGINT, which ends it with the summary.
//! With `--json` each of those lines is one JSON object (JSON lines), so a script can read
//! the probes as they come.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rpcd_client::conn::{CallOptions, Connection, RequestError};
use rpcd_client::ipc::ErrorCode;
use serde_json::{json, Value};

use crate::cli::PingArgs;
use crate::{exit, value};

/// How often a sleep between probes checks for SIGINT.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// Runs the probes; succeeds when at least one was answered.
pub fn run(conn: &Connection, args: &PingArgs, json: bool) -> anyhow::Result<u8> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))
        .context("cannot install the SIGINT handler")?;
    let target = args.target.as_str();
    let opts = CallOptions::default()
        .with_deadline(args.deadline)
        .with_idempotent(true);
    let probe_args = value::encode_args(&[])?;
    let via = &conn.daemon().listen;
    exit::print(&if json {
        line(json!({"event": "start", "target": target, "via": via}))
    } else {
        format!("RPCD PING {target} (rpcd.ping via {via})\n")
    })?;

    let started = Instant::now();
    let mut rtts = Summary::default();
    let mut sent = 0u64;
    let mut last_error = None;
    for seq in 1.. {
        let probe = Instant::now();
        let result = conn.call(target, "rpcd.ping", probe_args.clone(), opts);
        let rtt = probe.elapsed();
        sent += 1;
        match result {
            Ok(_) => {
                rtts.add(rtt);
                exit::print(&if json {
                    line(json!({"event": "reply", "seq": seq, "rtt_ms": round3(millis(rtt))}))
                } else {
                    format!(
                        "reply from {target}: seq={seq} time={:.3} ms\n",
                        millis(rtt)
                    )
                })?;
            }
            Err(err) => {
                exit::print(&if json {
                    line(json!({"event": "no_reply", "seq": seq, "error": error_json(&err)}))
                } else {
                    format!("no reply from {target}: seq={seq}: {err}\n")
                })?;
                let hopeless = exit::for_call(&err) == exit::UNREACHABLE
                    || matches!(
                        err.code(),
                        Some(ErrorCode::BadRequest | ErrorCode::AccessDenied)
                    );
                last_error = Some(err);
                if hopeless {
                    break;
                }
            }
        }
        if args.count.is_some_and(|count| seq >= count) || stop.load(Ordering::Relaxed) {
            break;
        }
        let wake = Instant::now() + args.interval;
        while !stop.load(Ordering::Relaxed) {
            let left = wake.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(STOP_CHECK));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }

    let received = rtts.count;
    let loss = (sent - received) as f64 * 100.0 / sent as f64;
    let time_ms = started.elapsed().as_millis();
    let summary = if json {
        let rtt = rtts.min_avg_max_mdev().map(|(min, avg, max, mdev)| {
            json!({"min": round3(min), "avg": round3(avg), "max": round3(max),
                   "mdev": round3(mdev)})
        });
        line(json!({
            "event": "summary", "target": target, "sent": sent, "received": received,
            "loss_percent": round3(loss), "time_ms": time_ms, "rtt_ms": rtt,
        }))
    } else {
        let mut summary = format!(
            "--- {target} rpcd.ping statistics ---\n\
             {sent} probes sent, {received} received, {loss:.0}% loss, time {time_ms} ms\n"
        );
        if let Some((min, avg, max, mdev)) = rtts.min_avg_max_mdev() {
            summary.push_str(&format!(
                "rtt min/avg/max/mdev = {min:.3}/{avg:.3}/{max:.3}/{mdev:.3} ms\n"
            ));
        }
        summary
    };
    exit::print(&summary)?;
    match (received, last_error) {
        (0, Some(err)) => Err(err).with_context(|| format!("no reply from {target}")),
        _ => Ok(exit::SUCCESS),
    }
}

/// One JSON line.
fn line(value: Value) -> String {
    value::render(&value, true)
}

/// A failed probe's error: its code (as in the error object of `--json`) and message.
fn error_json(err: &RequestError) -> Value {
    json!({"code": exit::call_code(err), "message": err.to_string()})
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Running sums of round-trip times, in milliseconds.
#[derive(Debug, Default)]
struct Summary {
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    sum_squares: f64,
}

impl Summary {
    fn add(&mut self, rtt: Duration) {
        let ms = millis(rtt);
        if self.count == 0 || ms < self.min {
            self.min = ms;
        }
        self.max = self.max.max(ms);
        self.count += 1;
        self.sum += ms;
        self.sum_squares += ms * ms;
    }

    /// min, average, max and mean deviation (as `ping` computes it: the standard deviation).
    fn min_avg_max_mdev(&self) -> Option<(f64, f64, f64, f64)> {
        if self.count == 0 {
            return None;
        }
        let n = self.count as f64;
        let avg = self.sum / n;
        let mdev = (self.sum_squares / n - avg * avg).max(0.0).sqrt();
        Some((self.min, avg, self.max, mdev))
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_min_avg_max_and_standard_deviation() {
        let mut s = Summary::default();
        assert_eq!(s.min_avg_max_mdev(), None);
        for ms in [1, 2, 3] {
            s.add(Duration::from_millis(ms));
        }
        let (min, avg, max, mdev) = s.min_avg_max_mdev().unwrap();
        assert_eq!((min, avg, max), (1.0, 2.0, 3.0));
        assert!((mdev - (2.0f64 / 3.0).sqrt()).abs() < 1e-9, "{mdev}");
    }
}
