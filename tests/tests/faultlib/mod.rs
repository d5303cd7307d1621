//! Shared by `faults.rs` and `reliability_figures.rs`: calls to the at-most-once oracle
//! (`oracle.run(nonce)`, served by `fault_helper oracle`, which logs every execution by
//! its nonce), a bounded run of concurrent calls that records every outcome and its
//! latency, and the oracle's check over a run's records; plus `kv` calls encoded as the
//! stub generator encodes them.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpcd_client::conn::{CallOptions, Connection, RequestError};
use rpcd_client::ipc::ErrorCode;
use rpcd_tests::netns::Net;
use rpcd_tests::ProcessGuard;

/// How late past its deadline a call may end and still count as "within its deadline":
/// the daemon's timers and two socket hops on a loaded 2-core machine.
pub const DEADLINE_GRACE: Duration = Duration::from_millis(1500);

/// The oracle's function.
pub const ORACLE_FN: &str = "oracle.run";

/// Config shared by every host: default transport settings (documented in
/// `docs/reliability.md`), a short SIGTERM grace.
pub fn base_config() -> String {
    "[limits]\nshutdown_grace_ms = 1000\n".to_owned()
}

fn options(deadline: Duration, idempotent: bool) -> CallOptions {
    CallOptions::new(Some(deadline), idempotent)
}

/// A nonce no other call of this test process uses.
pub fn nonce() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `oracle.run(nonce)` on `target` with a fresh nonce: the nonce, and the call's result
/// (the nonce the server echoed).
pub fn run_once(
    conn: &Connection,
    target: &str,
    deadline: Duration,
) -> (u64, Result<u64, RequestError>) {
    let n = nonce();
    let args = rmp_serde::to_vec_named(&(n,)).expect("encode");
    let r = conn
        .call(target, ORACLE_FN, args, options(deadline, false))
        .map(|reply| rmp_serde::from_slice(&reply).expect("oracle.run returns a u64"));
    (n, r)
}

/// The at-most-once oracle: a `fault_helper oracle` serving app on one host and the log
/// of every execution it made, by nonce. The log outlives the app: [`Oracle::restart`]
/// starts a new one appending to it.
#[derive(Debug)]
pub struct Oracle {
    /// The serving app (killed on drop).
    pub app: ProcessGuard,
    host: usize,
    log: PathBuf,
}

impl Oracle {
    /// Serve `oracle.run` on `net`'s host `host`, logging into the network's directory.
    pub fn start(net: &Net, host: usize) -> Oracle {
        let log = net.dir().join(format!("oracle-{host}.log"));
        Oracle {
            app: net.oracle_server(host, &log),
            host,
            log,
        }
    }

    /// SIGKILL the serving app (mid-call if calls run).
    pub fn kill(&mut self) {
        self.app.kill();
    }

    /// A new serving app on the same host and log.
    pub fn restart(&mut self, net: &Net) {
        self.app.kill();
        self.app = net.oracle_server(self.host, &self.log);
    }

    /// How many times each nonce ran.
    pub fn executions(&self) -> HashMap<u64, usize> {
        executions(&self.log)
    }

    /// Executions in all.
    pub fn total(&self) -> usize {
        self.executions().values().sum()
    }

    /// The exact at-most-once check over every call made against this oracle: see
    /// [`verdict`]. Panics with the violations.
    pub fn check(&self, records: &[Record]) {
        if let Err(why) = verdict(&self.executions(), records) {
            panic!("at-most-once violated: {why}");
        }
    }
}

/// Each nonce in the log at `path`, with how many times it ran.
pub fn executions(path: &Path) -> HashMap<u64, usize> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut runs = HashMap::new();
    for line in text.lines() {
        let n: u64 = line
            .parse()
            .unwrap_or_else(|_| panic!("bad oracle log line {line:?}"));
        *runs.entry(n).or_insert(0) += 1;
    }
    runs
}

/// The oracle's judgement of `records` (every call made) against `runs` (what the
/// serving app executed): `Ok` with a one-line summary, or every violation of
/// - no nonce ran twice;
/// - every `ok` ran exactly once, and its reply was its own nonce;
/// - every definite failure (not outcome-unknown) never ran;
/// - nothing ran that no call asked for.
///
/// Outcome-unknown failures may have run at most once.
pub fn verdict(runs: &HashMap<u64, usize>, records: &[Record]) -> Result<String, String> {
    let mut bad = Vec::new();
    let mut made = HashMap::new();
    for r in records {
        made.insert(r.nonce, r);
    }
    for (n, k) in runs {
        if *k > 1 {
            bad.push(format!("nonce {n} ran {k} times"));
        }
        if !made.contains_key(n) {
            bad.push(format!("nonce {n} ran but no call sent it"));
        }
    }
    let (mut ok, mut unknown_ran, mut unknown) = (0, 0, 0);
    for r in records {
        let k = runs.get(&r.nonce).copied().unwrap_or(0);
        if r.outcome == "ok" {
            ok += 1;
            if k != 1 {
                bad.push(format!("ok call {} ran {k} times", r.nonce));
            }
            if r.value != Some(r.nonce) {
                bad.push(format!("call {} got reply {:?}", r.nonce, r.value));
            }
        } else if r.unknown {
            unknown += 1;
            unknown_ran += k;
        } else if k != 0 {
            bad.push(format!(
                "call {} ended {} (definite) but ran {k} times",
                r.nonce, r.outcome
            ));
        }
    }
    if bad.is_empty() {
        Ok(format!(
            "{ok} ok ran once each; {unknown_ran} of {unknown} unknown ran; no double run"
        ))
    } else {
        bad.sort();
        let shown = bad.len().min(20);
        Err(format!(
            "{} violations, first {shown}: {}",
            bad.len(),
            bad[..shown].join("; ")
        ))
    }
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

/// A run of `oracle.run` calls.
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
    /// The call's nonce.
    pub nonce: u64,
    /// `"ok"`, an error code, or how the library failed (`"disconnected"`, ...).
    pub outcome: String,
    /// The nonce `oracle.run` echoed, on success.
    pub value: Option<u64>,
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
                    let (n, r) = run_once(conn, &c.target, c.deadline);
                    let took = started.elapsed();
                    mine.push(record(n, r, took));
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

/// The record of call `nonce` that ended with `r` after `took`.
pub fn record(nonce: u64, r: Result<u64, RequestError>, took: Duration) -> Record {
    match r {
        Ok(v) => Record {
            nonce,
            outcome: "ok".into(),
            value: Some(v),
            local: false,
            took,
            unknown: false,
        },
        Err(e) => Record {
            nonce,
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
        other => format!("{other}"),
    }
}

/// Whether a failed call may nevertheless have run. Broader than
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
