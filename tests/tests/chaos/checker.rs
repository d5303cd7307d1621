//! The chaos test's history and its checker.
//!
//! A history is what a run recorded: every call (caller host, target host, nonce,
//! start and duration from the run's beginning, deadline, outcome), every fault
//! applied or undone with its time, the executions every serving app logged (by nonce
//! and host), and when the final heal was done. [`check`] judges it:
//!
//! 1. every `ok` ran exactly once, on the host it called, and got its own nonce back;
//! 2. every definite failure never ran;
//! 3. every outcome-unknown failure ran at most once (no nonce runs twice), and only on
//!    the host it called; nothing ran that no call sent;
//! 4. every call ended within its deadline plus [`Bounds::overrun`];
//! 5. after the final heal, every host got an `ok` from every other host within
//!    [`Bounds::liveness`], and no daemon had exited on its own.
//!
//! [`report`] prints a failure: the seed, the command that replays it, and for each
//! violation the history around it (faults and the calls touching the same host,
//! within a window of its time).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use super::schedule::name;

/// One call in the history.
#[derive(Debug, Clone)]
pub struct Call {
    /// The call's nonce (what the serving app logs).
    pub nonce: u64,
    /// The calling host.
    pub from: usize,
    /// The called host.
    pub to: usize,
    /// When the call started, from the run's beginning.
    pub start: Duration,
    /// How long it took.
    pub took: Duration,
    /// Its deadline.
    pub deadline: Duration,
    /// `"ok"`, an error code, or how the library failed.
    pub outcome: String,
    /// The nonce echoed, on success.
    pub value: Option<u64>,
    /// Whether a failure may have run (outcome unknown).
    pub unknown: bool,
    /// Whether the library gave up waiting for the daemon.
    pub local: bool,
    /// Made after the final heal, to prove every daemon answers.
    pub liveness: bool,
}

impl Call {
    fn end(&self) -> Duration {
        self.start + self.took
    }
}

/// A fault applied or undone.
#[derive(Debug, Clone)]
pub struct Fault {
    /// When, from the run's beginning.
    pub at: Duration,
    /// What (`partition b`, `heal b`, `SIGKILL rpcd a`, ...).
    pub what: String,
}

/// Everything a run recorded.
#[derive(Debug, Default)]
pub struct History {
    /// The seed of the fault schedule.
    pub seed: u64,
    /// Every call.
    pub calls: Vec<Call>,
    /// Every fault event.
    pub faults: Vec<Fault>,
    /// Each nonce that ran, with the host of each execution.
    pub executions: HashMap<u64, Vec<usize>>,
    /// When every fault was undone and every process was up again.
    pub healed_at: Option<Duration>,
    /// Hosts in the network.
    pub hosts: usize,
    /// What went wrong outside the schedule (a daemon that exited on its own).
    pub unexpected: Vec<String>,
    /// Each host's daemon log (every instance, appended), kept for a failure report.
    pub daemon_logs: Vec<String>,
}

/// The checker's time bounds.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// How long past its deadline a call may end.
    pub overrun: Duration,
    /// How soon after the final heal every host must get an answer from every other.
    pub liveness: Duration,
}

/// One broken property.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The call it concerns, if one.
    pub nonce: Option<u64>,
    /// When (the call's start, or the heal's time).
    pub at: Duration,
    /// What is wrong.
    pub what: String,
}

/// Judge `h` against [`check`]'s properties (see the module doc): `Ok` with a summary,
/// or every violation, in time order.
pub fn check(h: &History, b: &Bounds) -> Result<String, Vec<Violation>> {
    let mut bad = Vec::new();
    let calls: HashMap<u64, &Call> = h.calls.iter().map(|c| (c.nonce, c)).collect();
    for (&n, hosts) in &h.executions {
        let at = calls.get(&n).map_or(Duration::ZERO, |c| c.start);
        if hosts.len() > 1 {
            bad.push(Violation {
                nonce: Some(n),
                at,
                what: format!("nonce {n} ran {} times (on {})", hosts.len(), names(hosts)),
            });
        }
        if !calls.contains_key(&n) {
            bad.push(Violation {
                nonce: Some(n),
                at,
                what: format!("nonce {n} ran on {} but no call sent it", names(hosts)),
            });
        }
    }
    let (mut ok, mut unknown, mut unknown_ran, mut overrun_max) = (0, 0, 0, Duration::ZERO);
    for c in &h.calls {
        let ran = h.executions.get(&c.nonce).map_or(&[][..], Vec::as_slice);
        let mut wrong = |what: String| {
            bad.push(Violation {
                nonce: Some(c.nonce),
                at: c.start,
                what,
            })
        };
        if c.outcome == "ok" {
            ok += 1;
            if ran.len() != 1 {
                wrong(format!("ok call {} ran {} times", c.nonce, ran.len()));
            }
            if c.value != Some(c.nonce) {
                wrong(format!("ok call {} got reply {:?}", c.nonce, c.value));
            }
        } else if c.unknown {
            unknown += 1;
            unknown_ran += ran.len();
        } else if !ran.is_empty() {
            wrong(format!(
                "call {} ended {} (definite) but ran {} time(s)",
                c.nonce,
                c.outcome,
                ran.len()
            ));
        }
        if ran.iter().any(|&host| host != c.to) {
            wrong(format!(
                "call {} to {} ran on {}",
                c.nonce,
                name(c.to),
                names(ran)
            ));
        }
        let over = c.took.saturating_sub(c.deadline);
        overrun_max = overrun_max.max(over);
        if over > b.overrun {
            wrong(format!(
                "call {} ({}) took {:?}, past its {:?} deadline by more than {:?}{}",
                c.nonce,
                c.outcome,
                c.took,
                c.deadline,
                b.overrun,
                if c.local {
                    " (the daemon never answered; the library gave up)"
                } else {
                    ""
                }
            ));
        }
    }
    for what in &h.unexpected {
        bad.push(Violation {
            nonce: None,
            at: h.healed_at.unwrap_or_default(),
            what: what.clone(),
        });
    }
    let liveness = check_liveness(h, b, &mut bad);
    if bad.is_empty() {
        let mut by = BTreeMap::new();
        for c in &h.calls {
            *by.entry(c.outcome.as_str()).or_insert(0usize) += 1;
        }
        Ok(format!(
            "{} calls {by:?}; {ok} ok ran once each; {unknown_ran} of {unknown} \
             outcome-unknown ran; no double run; longest overrun past a deadline {overrun_max:?} \
             (bound {:?}); {liveness}",
            h.calls.len(),
            b.overrun
        ))
    } else {
        bad.sort_by_key(|v| v.at);
        Err(bad)
    }
}

/// Property 5; a summary of the answers' times.
fn check_liveness(h: &History, b: &Bounds, bad: &mut Vec<Violation>) -> String {
    let Some(healed) = h.healed_at else {
        bad.push(Violation {
            nonce: None,
            at: Duration::ZERO,
            what: "the run never healed".into(),
        });
        return String::new();
    };
    let mut slowest = Duration::ZERO;
    for from in 0..h.hosts {
        for to in (0..h.hosts).filter(|&to| to != from) {
            let first = h
                .calls
                .iter()
                .filter(|c| c.liveness && c.from == from && c.to == to && c.outcome == "ok")
                .map(|c| c.end().saturating_sub(healed))
                .min();
            match first {
                Some(after) if after <= b.liveness => slowest = slowest.max(after),
                _ => {
                    let mut tried = BTreeMap::new();
                    let mut last = None;
                    for c in h
                        .calls
                        .iter()
                        .filter(|c| c.liveness && c.from == from && c.to == to)
                    {
                        *tried.entry(c.outcome.as_str()).or_insert(0usize) += 1;
                        last = Some(format!("{} at {:?}", c.outcome, c.end()));
                    }
                    bad.push(Violation {
                        nonce: None,
                        at: healed,
                        what: format!(
                            "after the final heal, {} got no answer from {} within {:?} \
                             (first ok after the heal: {first:?}; calls {tried:?}, the last \
                             {})",
                            name(from),
                            name(to),
                            b.liveness,
                            last.as_deref().unwrap_or("none")
                        ),
                    });
                }
            }
        }
    }
    format!(
        "after the final heal every host answered every other within {slowest:?} (bound {:?})",
        b.liveness
    )
}

fn names(hosts: &[usize]) -> String {
    let v: Vec<String> = hosts.iter().map(|&h| name(h).to_string()).collect();
    v.join(",")
}

/// How much history around a violation [`report`] shows, either side.
pub const WINDOW: Duration = Duration::from_secs(2);

/// At most this many calls or nonces are shown in detail; of the calls in a window, this
/// many nearest in time, and this many failures.
const SHOWN: usize = 5;
const NEAREST_SHOWN: usize = 8;
const FAILURES_SHOWN: usize = 16;

/// A failure report: the seed, `rerun`, and each violating call (or other violation)
/// with the history around it: faults, and the calls to the same host (the nearest in
/// time and the failures among them).
pub fn report(h: &History, violations: &[Violation], rerun: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "chaos: {} violation(s) with seed {}\nreplay: {rerun}",
        violations.len(),
        h.seed
    );
    // Violations grouped by call, in time order.
    let mut groups: Vec<(Option<u64>, Duration, Vec<&str>)> = Vec::new();
    for v in violations {
        match groups
            .iter_mut()
            .find(|g| v.nonce.is_some() && g.0 == v.nonce)
        {
            Some(g) => g.2.push(&v.what),
            None => groups.push((v.nonce, v.at, vec![&v.what])),
        }
    }
    for (nonce, at, whats) in groups.iter().take(SHOWN) {
        let _ = writeln!(out, "\n--- at {at:?}: {}", whats.join("; "));
        let call = nonce.and_then(|n| h.calls.iter().find(|c| c.nonce == n));
        let (from, to, target) = match call {
            Some(c) => {
                let _ = writeln!(out, "call: {}", line(c));
                let ran = h.executions.get(&c.nonce).map_or(&[][..], Vec::as_slice);
                let _ = writeln!(
                    out,
                    "executions of {}: {} ({})",
                    c.nonce,
                    ran.len(),
                    names(ran)
                );
                (c.start, c.end(), Some(c.to))
            }
            None => (*at, *at + WINDOW, None),
        };
        window(h, &mut out, from, to, target);
    }
    if groups.len() > SHOWN {
        let _ = writeln!(out, "\n({} more)", groups.len() - SHOWN);
        for (_, at, whats) in &groups[SHOWN..groups.len().min(SHOWN + 20)] {
            let _ = writeln!(out, "  at {at:?}: {}", whats.join("; "));
        }
    }
    out
}

/// The history from `from - WINDOW` to `to + WINDOW`: every fault, and the calls to
/// `target` (every host's calls when `None`).
fn window(h: &History, out: &mut String, from: Duration, to: Duration, target: Option<usize>) {
    let lo = from.saturating_sub(WINDOW);
    let hi = to + WINDOW;
    let whose = target.map_or("every host".to_owned(), |t| name(t).to_string());
    let _ = writeln!(out, "history {lo:?}..{hi:?} (faults; calls to {whose}):");
    let mut events: Vec<(Duration, String)> = h
        .faults
        .iter()
        .filter(|f| f.at >= lo && f.at <= hi)
        .map(|f| (f.at, format!("FAULT {}", f.what)))
        .collect();
    let mut near: Vec<&Call> = h
        .calls
        .iter()
        .filter(|c| c.start <= hi && c.end() >= lo)
        .filter(|c| target.is_none_or(|t| c.to == t))
        .collect();
    near.sort_by_key(|c| c.start.abs_diff(from));
    let mut shown: Vec<&Call> = near.iter().take(NEAREST_SHOWN).copied().collect();
    shown.extend(
        near.iter()
            .skip(NEAREST_SHOWN)
            .filter(|c| c.outcome != "ok")
            .take(FAILURES_SHOWN),
    );
    let skipped = near.len() - shown.len();
    events.extend(shown.iter().map(|c| (c.start, line(c))));
    events.sort();
    for (at, e) in events {
        let _ = writeln!(out, "  {at:>12.3?} {e}");
    }
    if skipped > 0 {
        let _ = writeln!(
            out,
            "  ({skipped} more calls to {whose} in the window not shown)"
        );
    }
}

/// One call as a history line.
fn line(c: &Call) -> String {
    format!(
        "call {} {}->{} deadline {:?} took {:?}: {}{}{}",
        c.nonce,
        name(c.from),
        name(c.to),
        c.deadline,
        c.took,
        c.outcome,
        if c.unknown { " (outcome unknown)" } else { "" },
        if c.liveness { " [after heal]" } else { "" }
    )
}

/// The whole history, one event a line in time order, each call with its executions
/// hosts; executions no call asked for first (written to a file on failure).
pub fn dump(h: &History) -> String {
    let mut events: Vec<(Duration, String)> = h
        .faults
        .iter()
        .map(|f| (f.at, format!("FAULT {}", f.what)))
        .collect();
    events.extend(h.calls.iter().map(|c| {
        let ran = h.executions.get(&c.nonce).map_or(&[][..], Vec::as_slice);
        let reply = match c.value {
            Some(v) if v != c.nonce => format!(" reply {v}"),
            _ => String::new(),
        };
        (
            c.start,
            format!("{}{reply} ran {} ({})", line(c), ran.len(), names(ran)),
        )
    }));
    let called: std::collections::HashSet<u64> = h.calls.iter().map(|c| c.nonce).collect();
    let mut strays: Vec<(&u64, &Vec<usize>)> = h
        .executions
        .iter()
        .filter(|(n, _)| !called.contains(n))
        .collect();
    strays.sort();
    for (n, hosts) in strays {
        events.push((
            Duration::ZERO,
            format!("EXECUTION of {n} by no call, on {}", names(hosts)),
        ));
    }
    if let Some(at) = h.healed_at {
        events.push((at, "HEALED".into()));
    }
    events.sort();
    let mut out = format!("seed {}\n", h.seed);
    for (at, e) in events {
        let _ = writeln!(out, "{at:>12.3?} {e}");
    }
    out
}
