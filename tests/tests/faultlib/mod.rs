//! Shared by `faults.rs` and `reliability_figures.rs`: `kv` calls encoded as the stub
//! generator encodes them, and a bounded run of concurrent `kv.incr` calls that records
//! every outcome and its latency.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpcd_client::conn::{CallOptions, Connection, RequestError};
use rpcd_client::ipc::ErrorCode;

/// The key every `kv.incr` of these tests adds to.
pub const KEY: &str = "counter";

/// How late past its deadline a call may end and still count as "within its deadline":
/// the daemon's timers and two socket hops on a loaded 2-core machine.
pub const DEADLINE_GRACE: Duration = Duration::from_millis(1500);

/// Config shared by every host: default transport settings (documented in
/// `docs/reliability.md`), a short SIGTERM grace.
pub fn base_config() -> String {
    "[limits]\nshutdown_grace_ms = 1000\n".to_owned()
}

fn options(deadline: Duration, idempotent: bool) -> CallOptions {
    CallOptions {
        deadline: Some(deadline),
        idempotent,
    }
}

/// `kv.incr(KEY)` on `target`: the new value.
pub fn incr(conn: &Connection, target: &str, deadline: Duration) -> Result<i64, RequestError> {
    let args = rmp_serde::to_vec_named(&(KEY,)).expect("encode");
    let reply = conn.call(target, "kv.incr", args, options(deadline, false))?;
    Ok(rmp_serde::from_slice(&reply).expect("kv.incr returns an i64"))
}

/// `kv.get(key)` on `target`.
pub fn kv_get(conn: &Connection, target: &str, key: &str) -> Option<String> {
    let args = rmp_serde::to_vec_named(&(key,)).expect("encode");
    let reply = conn
        .call(
            target,
            "kv.get",
            args,
            options(Duration::from_secs(10), true),
        )
        .expect("kv.get");
    rmp_serde::from_slice(&reply).expect("kv.get returns an Option<String>")
}

/// `kv.put(key, value)` on `target`.
pub fn kv_put(conn: &Connection, target: &str, key: &str, value: &str) {
    let args = rmp_serde::to_vec_named(&(key, value)).expect("encode");
    conn.call(
        target,
        "kv.put",
        args,
        options(Duration::from_secs(10), false),
    )
    .expect("kv.put");
}

/// A run of `kv.incr` calls.
#[derive(Debug)]
pub struct Calls<'a> {
    /// Connections the callers share (caller `i` uses `conns[i % len]`).
    pub conns: &'a [Arc<Connection>],
    /// Where `kv` is served.
    pub target: String,
    /// Concurrent callers (threads).
    pub callers: usize,
    /// Calls in all (an upper bound when `stop` is given).
    pub calls: usize,
    /// Deadline of each call.
    pub deadline: Duration,
    /// When set, callers start no new call once it is true.
    pub stop: Option<&'a AtomicBool>,
}

/// One finished call.
#[derive(Debug, Clone)]
pub struct Record {
    /// `"ok"`, an error code, or how the library failed (`"disconnected"`, ...).
    pub outcome: String,
    /// The value `kv.incr` returned, on success.
    pub value: Option<i64>,
    /// Whether the library gave up waiting (no answer from the daemon in time).
    pub local: bool,
    /// How long the call took.
    pub took: Duration,
    /// Whether a failed call may have run.
    pub unknown: bool,
}

/// What a run of calls produced.
#[derive(Debug, Default)]
pub struct Tally {
    /// Every call, in no particular order.
    pub records: Vec<Record>,
    /// Latencies of the successful calls.
    pub latencies: Vec<Duration>,
    /// The deadline the calls had.
    pub deadline: Duration,
}

/// Run the calls; every caller thread is bounded by `calls` and each call by its deadline.
pub fn run_calls(c: &Calls<'_>) -> Tally {
    let next = AtomicUsize::new(0);
    let records = Mutex::new(Vec::with_capacity(c.calls));
    std::thread::scope(|s| {
        for t in 0..c.callers {
            let conn = &c.conns[t % c.conns.len()];
            let (next, records) = (&next, &records);
            s.spawn(move || {
                let mut mine = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < c.calls {
                    if c.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                        break;
                    }
                    let started = Instant::now();
                    let r = incr(conn, &c.target, c.deadline);
                    let took = started.elapsed();
                    mine.push(record(r, took));
                }
                records.lock().expect("records").extend(mine);
            });
        }
    });
    let records = records.into_inner().expect("records");
    let latencies = records
        .iter()
        .filter(|r| r.value.is_some())
        .map(|r| r.took)
        .collect();
    Tally {
        records,
        latencies,
        deadline: c.deadline,
    }
}

fn record(r: Result<i64, RequestError>, took: Duration) -> Record {
    match r {
        Ok(v) => Record {
            outcome: "ok".into(),
            value: Some(v),
            local: false,
            took,
            unknown: false,
        },
        Err(e) => Record {
            outcome: outcome_name(&e),
            value: None,
            local: matches!(e, RequestError::Local { .. }),
            took,
            unknown: may_have_run(&e),
        },
    }
}

/// The name of a failure: its code, or how the library failed.
pub fn outcome_name(e: &RequestError) -> String {
    match e {
        RequestError::Remote { code, .. }
        | RequestError::Local { code, .. }
        | RequestError::Fatal { code, .. } => code.as_str().to_owned(),
        RequestError::Disconnected => "disconnected".into(),
        RequestError::Io(_) => "io".into(),
        RequestError::Protocol(_) => "protocol".into(),
    }
}

/// Whether a failed `kv.incr` may nevertheless have run. Broader than
/// `RequestError::outcome_unknown`: `peer_unreachable` after sending, `server_app_gone`
/// after the app took the invocation, and `shutting_down` for a call pending at shutdown
/// may all follow an execution.
fn may_have_run(e: &RequestError) -> bool {
    e.outcome_unknown()
        || matches!(
            e.code(),
            Some(ErrorCode::PeerUnreachable | ErrorCode::ServerAppGone | ErrorCode::ShuttingDown)
        )
}

impl Tally {
    /// Successful calls.
    pub fn ok(&self) -> usize {
        self.count("ok")
    }

    /// Calls that ended with `outcome`.
    pub fn count(&self, outcome: &str) -> usize {
        self.records.iter().filter(|r| r.outcome == outcome).count()
    }

    /// Failed calls that may have run.
    pub fn unknown(&self) -> usize {
        self.records.iter().filter(|r| r.unknown).count()
    }

    /// Calls by outcome.
    pub fn by_outcome(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in &self.records {
            *m.entry(r.outcome.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Add another run's calls.
    pub fn merge(&mut self, other: Tally) {
        self.records.extend(other.records);
        self.latencies.extend(other.latencies);
        self.deadline = self.deadline.max(other.deadline);
    }

    /// The `q` quantile (0..=1) of the successful calls' latencies.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.latencies, q)
    }

    /// One line for the test log.
    pub fn summary(&self) -> String {
        format!(
            "{} calls, {:?}, p50 {:?}, p99 {:?}, max {:?}",
            self.records.len(),
            self.by_outcome(),
            self.quantile(0.5).unwrap_or_default(),
            self.quantile(0.99).unwrap_or_default(),
            self.records
                .iter()
                .map(|r| r.took)
                .max()
                .unwrap_or_default(),
        )
    }

    /// Every call succeeded.
    pub fn assert_all_ok(&self) {
        assert!(
            self.records.iter().all(|r| r.outcome == "ok"),
            "not every call succeeded: {:?}",
            self.by_outcome()
        );
        self.assert_replies_distinct();
    }

    /// Every outcome is one of `allowed`.
    pub fn assert_codes(&self, allowed: &[&str]) {
        let by = self.by_outcome();
        for outcome in by.keys() {
            assert!(
                allowed.contains(&outcome.as_str()),
                "unexpected outcome {outcome}: {by:?}"
            );
        }
        self.assert_replies_distinct();
    }

    /// Every call ended within its deadline (plus [`DEADLINE_GRACE`]), answered by the
    /// daemon — never by the library giving up on a silent daemon.
    pub fn assert_within_deadline(&self) {
        for r in &self.records {
            assert!(
                !r.local,
                "the daemon never answered a call ({}, after {:?})",
                r.outcome, r.took
            );
            assert!(
                r.took <= self.deadline + DEADLINE_GRACE,
                "a call ended {:?} after starting, past its {:?} deadline ({})",
                r.took,
                self.deadline,
                r.outcome
            );
        }
    }

    /// Each success returned a value no other success returned: every reply matched its
    /// own call and no execution was answered twice.
    pub fn assert_replies_distinct(&self) {
        let mut seen = HashSet::new();
        for v in self.records.iter().filter_map(|r| r.value) {
            assert!(seen.insert(v), "value {v} returned to two calls");
        }
    }

    /// `successes <= counter <= successes + calls whose outcome is unknown`, and the
    /// counter is at least every returned value.
    pub fn check_counter(&self, counter: i64) {
        self.assert_replies_distinct();
        let ok = self.ok() as i64;
        let unknown = self.unknown() as i64;
        assert!(
            ok <= counter && counter <= ok + unknown,
            "counter {counter} outside [{ok}, {ok} + {unknown}]: {:?}",
            self.by_outcome()
        );
        let max = self.records.iter().filter_map(|r| r.value).max();
        assert!(max.unwrap_or(0) <= counter, "a value beyond the counter");
    }

    /// `"ok"` when [`Tally::check_counter`] holds for `counter`, else why not.
    pub fn counter_verdict(&self, counter: i64) -> String {
        let ok = self.ok() as i64;
        let unknown = self.unknown() as i64;
        let distinct = {
            let mut seen = HashSet::new();
            self.records
                .iter()
                .filter_map(|r| r.value)
                .all(|v| seen.insert(v))
        };
        if !distinct {
            "FAIL (a value returned twice)".into()
        } else if ok <= counter && counter <= ok + unknown {
            if counter == ok {
                format!("{counter} = successes")
            } else {
                format!("{ok} ≤ {counter} ≤ {ok} + {unknown}")
            }
        } else {
            format!("FAIL ({counter} outside [{ok}, {ok} + {unknown}])")
        }
    }
}

/// The `q` quantile (0..=1) of `samples` (nearest rank).
pub fn quantile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}
