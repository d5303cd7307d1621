//! The chaos test: three hosts (network namespaces, `rpcd_tests::netns`), each with a
//! daemon and the at-most-once oracle's serving app (`fault_helper oracle`, which logs
//! every execution by nonce); on every host, callers call both other hosts' apps
//! without pause, each call with a nonce of its own and a deadline of 0.5–3 s, while a
//! seeded scheduler (`chaos/schedule.rs`) injects loss bursts, partitions that heal,
//! duplication, corruption, reordering, daemon SIGKILL + restart and app SIGKILL +
//! restart, every fault logged with its time. Then everything is healed and every host
//! calls every other. The checker (`chaos/checker.rs`) judges the recorded history:
//! every `ok` ran exactly once; every definite failure never ran; every outcome-unknown
//! ran at most once; no call outlived its deadline by more than [`OVERRUN`]; after the
//! final heal every daemon answered every other within [`LIVENESS`].
//!
//! `chaos_20s` runs in `cargo test` (20 s of chaos, about 30 s in all);
//! `chaos_10_minutes` is ignored. The seed comes from `CHAOS_SEED` or is drawn at
//! random and printed; the length from `CHAOS_SECS`. A failure prints the seed, the
//! command replaying it, and the history around each violation, and writes the whole
//! history to `$TMPDIR/rpcd-chaos-SEED.log` and each daemon's log (every instance) to
//! `$TMPDIR/rpcd-chaos-SEED-HOST.log`. A seed replays the fault schedule; the
//! calls' interleaving with it is real time.
//!
//! `chaos_checker_catches_an_injected_double_execution` (ignored) runs the chaos with
//! serving apps broken on purpose (every 2000th invocation logged twice) and passes only
//! if the checker reports those double runs.
//!
//! Without root these tests print why and pass as skipped, unless
//! `RPCD_REQUIRE_NETNS=1` (set by `.ci/run`).

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod faultlib;

#[path = "chaos/checker.rs"]
mod checker;
#[path = "chaos/run.rs"]
mod run;
#[path = "chaos/schedule.rs"]
mod schedule;

use std::time::Duration;

use checker::{check, dump, report, Bounds};
use run::Plan;
use schedule::Kind;

/// How long past its deadline a call may end: the daemon's timers and two socket hops
/// on a loaded machine (`faultlib::DEADLINE_GRACE`). A call the daemon never answers
/// ends only after the library's own grace (2 s past the deadline), so it fails this.
pub const OVERRUN: Duration = faultlib::DEADLINE_GRACE;

/// How soon after the final heal every daemon must answer a call from every other.
pub const LIVENESS: Duration = Duration::from_secs(10);

/// The length of the default run.
const DEFAULT_SECS: u64 = 20;

/// The length of the long run.
const LONG_SECS: u64 = 600;

/// The least time between the starts of one caller's calls in the long run.
const LONG_PACE: Duration = Duration::from_millis(20);

fn bounds() -> Bounds {
    Bounds {
        overrun: OVERRUN,
        liveness: LIVENESS,
    }
}

/// `CHAOS_SEED`, or a random seed; printed either way.
fn seed() -> u64 {
    let seed = match std::env::var("CHAOS_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("CHAOS_SEED={s:?}: a u64")),
        Err(_) => rand::random(),
    };
    eprintln!("chaos seed {seed} (replay with CHAOS_SEED={seed})");
    seed
}

/// `CHAOS_SECS`, or `default`.
fn length(default: u64) -> Duration {
    let secs = match std::env::var("CHAOS_SECS") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("CHAOS_SECS={s:?}: whole seconds")),
        Err(_) => default,
    };
    Duration::from_secs(secs)
}

/// Run the chaos for `length` and judge it; panics with the report on a violation.
fn chaos(test: &str, ignored: bool, length: Duration, pace: Duration) {
    chaos_with(seed(), test, ignored, length, pace);
}

fn chaos_with(seed: u64, test: &str, ignored: bool, length: Duration, pace: Duration) {
    let plan = Plan {
        seed,
        length,
        double_every: None,
        liveness: LIVENESS,
        pace,
    };
    let Some((history, counts)) = run::run(&plan) else {
        return;
    };
    let rerun = format!(
        "CHAOS_SEED={seed} CHAOS_SECS={} RPCD_REQUIRE_NETNS=1 cargo test -p rpcd-tests \
         --test chaos -- {test} --exact --nocapture{}",
        length.as_secs(),
        if ignored { " --ignored" } else { "" }
    );
    eprintln!(
        "chaos: faults applied {:?}; {} datagrams through the reordering lanes",
        counts.faults, counts.reordered
    );
    let timeline: Vec<String> = history
        .faults
        .iter()
        .map(|f| format!("  {:>10.3?} {}", f.at, f.what))
        .collect();
    eprintln!("chaos: the faults\n{}", timeline.join("\n"));
    match check(&history, &bounds()) {
        Ok(summary) => eprintln!("chaos seed {seed}: {summary}"),
        Err(violations) => {
            let file = std::env::temp_dir().join(format!("rpcd-chaos-{seed}.log"));
            let text = report(&history, &violations, &rerun);
            let mut saved = match std::fs::write(&file, format!("{text}\n{}", dump(&history))) {
                Ok(()) => format!("whole history in {}", file.display()),
                Err(e) => format!("could not save the history to {}: {e}", file.display()),
            };
            for (host, log) in history.daemon_logs.iter().enumerate() {
                let name = schedule::name(host);
                let file = std::env::temp_dir().join(format!("rpcd-chaos-{seed}-{name}.log"));
                if std::fs::write(&file, log).is_ok() {
                    saved.push_str(&format!("\nrpcd {name}'s log in {}", file.display()));
                }
            }
            panic!("{text}\n{saved}");
        }
    }
    // The run did what it claims: every kind of fault, reordering that took effect,
    // and calls between every pair.
    if length >= Duration::from_secs(DEFAULT_SECS) {
        for kind in Kind::ALL {
            assert!(
                counts.faults.contains_key(&kind),
                "seed {seed}: no {kind:?} fault in the run ({rerun})"
            );
        }
        assert!(
            counts.reordered > 0,
            "seed {seed}: nothing went through a reordering lane ({rerun})"
        );
    }
    for from in 0..schedule::HOSTS {
        for to in (0..schedule::HOSTS).filter(|&to| to != from) {
            let ok = history
                .calls
                .iter()
                .filter(|c| !c.liveness && c.from == from && c.to == to && c.outcome == "ok")
                .count();
            assert!(
                ok > 0,
                "seed {seed}: no call from {from} to {to} succeeded during the chaos ({rerun})"
            );
        }
    }
}

/// 20 s of chaos (`CHAOS_SECS`), 3 hosts, [`run::CALLERS_PER_PAIR`] callers per ordered pair:
/// the checker's five properties hold, every kind of fault was injected.
#[test]
fn chaos_20s() {
    chaos("chaos_20s", false, length(DEFAULT_SECS), Duration::ZERO);
}

/// The same for 10 minutes (`CHAOS_SECS`), each caller's calls started at least
/// [`LONG_PACE`] apart (a bounded history: at most 1,200 calls a second).
#[test]
#[ignore = "10 minutes: run with --ignored"]
fn chaos_10_minutes() {
    chaos("chaos_10_minutes", true, length(LONG_SECS), LONG_PACE);
}

/// Seeds whose runs failed only on a heavily overloaded machine (load average ~50 on 2
/// cores: five chaos runs at once beside other builds); a replay repeated their faults,
/// not their timing, so these passed on a quiet machine. Since long partitions joined the
/// deck (an eighth kind) these seeds draw other schedules: the faults described below are
/// those of the schedule before that. Kept for whoever investigates:
/// - 10632602938232783001: right after a 28 ms burst of corruption on its datagrams to
///   b, rpcd c answered almost nothing for 178 s (about 230 calls through it against
///   150,000 between a and b), its own apps' calls got no reply and no
///   `deadline_exceeded` from it (the library gave up at deadline + 2 s), until the
///   schedule SIGKILLed it; its log shows nothing in that time.
/// - 8510604098574366462: a restarted rpcd a accepted its apps' calls and answered none
///   of them, not even at their deadlines, for 3.2 s until SIGKILLed, while b and c served
///   about 1,000 calls a second.
///
/// Neither is a daemon stall: in both the schedule (far behind, so with no sleep before
/// it) sent the daemon its SIGKILL a few milliseconds after its last sign of life (c:
/// `heal c` logged at 280.407 s, c's last datagram at about 280.40 s; a: the SIGKILL
/// right after its restart answered at 201.626 s), and the killed process took 178 s
/// (3.2 s) to be reaped, its sockets open meanwhile: its apps' calls ended
/// `disconnected` at the reaping, logged then as the SIGKILL. Faults are now logged
/// when issued, with how long applying them took when slow (`run::issued_fault`).
#[test]
#[ignore = "failed only under heavy overload; run several at once to load the machine"]
fn chaos_overload_regression_seeds() {
    for seed in [10632602938232783001, 8510604098574366462] {
        eprintln!("chaos seed {seed}");
        chaos_with(
            seed,
            "chaos_overload_regression_seeds",
            true,
            Duration::from_secs(DEFAULT_SECS),
            Duration::ZERO,
        );
    }
}

/// How often the broken apps of the double-execution run log a run twice.
const DOUBLE_EVERY: u64 = 2000;

/// Serving apps broken on purpose (`fault_helper oracle --double-every 2000`: every
/// 2000th invocation each app takes is logged as two executions), 8 s of chaos: the checker
/// reports those nonces as run twice. Proves the chaos checker sees a double execution
/// in a real run; ignored because its failure report is long.
#[test]
#[ignore = "a scratch run with broken apps: run with --ignored --nocapture"]
fn chaos_checker_catches_an_injected_double_execution() {
    let seed = seed();
    let plan = Plan {
        seed,
        length: Duration::from_secs(8),
        double_every: Some(DOUBLE_EVERY),
        liveness: LIVENESS,
        pace: Duration::ZERO,
    };
    let Some((history, _)) = run::run(&plan) else {
        return;
    };
    let doubled: Vec<u64> = history
        .executions
        .iter()
        .filter(|(_, hosts)| hosts.len() == 2)
        .map(|(&n, _)| n)
        .collect();
    assert!(!doubled.is_empty(), "the broken apps doubled nothing");
    let violations = check(&history, &bounds()).expect_err("the checker missed the double runs");
    eprintln!(
        "{}",
        report(&history, &violations, "(a scratch run with broken apps)")
    );
    for n in &doubled {
        assert!(
            violations
                .iter()
                .any(|v| v.nonce == Some(*n) && v.what.contains("ran 2 times")),
            "double run of nonce {n} not reported"
        );
    }
    eprintln!(
        "the checker reported all {} doubled nonces among {} violations",
        doubled.len(),
        violations.len()
    );
}

#[path = "chaos/checker_tests.rs"]
mod checker_tests;
