//! Deterministic network simulator for the transport.
//!
//! Two to four [`Endpoint`]s exchange messages over a simulated network with
//! a virtual clock (an origin `Instant` plus offsets; one event queue ordered
//! by time) and a seeded RNG. Each seed draws its own fault rates: loss,
//! duplication, reordering, jittered delay, corruption, truncation, and for
//! some seeds partitions that heal and node restarts (a fresh endpoint with a
//! new epoch on the same address).
//!
//! Every run checks the transport's promises (see `Ledger::check`): each
//! message delivered at most once, never after a definite failure, delivered
//! or failed (unless its sender died), with the bytes it was sent with;
//! fault-only runs lose nothing; retransmission stops once everything is
//! acknowledged; every endpoint ends idle. In runs with partitions or
//! restarts every failure must be explained by a scheduled fault on its
//! pair, within a stated give-up bound, and every message has its outcome
//! within that bound of the last fault (`sim/net/oracle.rs`); cancels and
//! holds keep their promises (`sim/net/app.rs`); the sweep asserts every
//! fault kind was injected many times.
//!
//! Each seed draws its class from its own RNG stream (`sim/net/class.rs`):
//! plain or keyed (about 30 %: every node has a key and speaks
//! authenticated mode, and the network also injects forged datagrams —
//! plaintext ones, junk, replays, strangers — each checked to be dropped
//! and counted without effect; see `sim/net/keyed.rs`, which also lists the
//! wire-level checks that only plaintext runs can make), partitions and
//! restarts independently, and how many messages it sends (most seeds a few
//! hundred, some thousands; a keyed seed a quarter of that).
//!
//! A default run sweeps the regression seeds (0..200), the seeds of past
//! bugs (`PAST_BUGS`) and 1,000 seeds from a random base, which it prints. A failure prints the complete rerun
//! line, e.g. `SIM_SEED=1234 SIM_MESSAGES=800 cargo test -p rpcd-transport
//! --test sim -- --nocapture` (with `SIM_MODE` when it was forced).
//! Settings: `SIM_SEED` (one seed), `SIM_BASE` (the random range's base),
//! `SIM_SEEDS` (its length), `SIM_MESSAGES` (messages per seed, instead of
//! the drawn budget), `SIM_MODE=plain|keyed`, `SIM_TRACE=1` (write a
//! datagram trace of a failing seed).
//! Soak (10^8 messages by default, hours of CPU): `cargo test -p
//! rpcd-transport --test sim -- --ignored soak --nocapture`, or with
//! `--release` and `SIM_SOAK_MESSAGES`.

mod sim {
    pub mod net;
}

use sim::net::{run_seed, Class, Outcome, Totals};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant as WallInstant;

/// Seeds every default run repeats: the regression range.
const REGRESSION_SEEDS: std::ops::Range<u64> = 0..200;
/// Seeds that once failed, outside the regression range, each run by every
/// default sweep with its drawn budget:
/// - 235812855224353: overlapping partitions cut the pair before any data
///   arrived; every counter of the receiver's window was abandoned unseen,
///   so the receiver would not believe the send floor and the sender could
///   not send: both wedged forever (fixed by the window filler, wire
///   protocol §7.5).
const PAST_BUGS: &[u64] = &[235_812_855_224_353];
/// Seeds every default run adds from a random base.
const RANDOM_SEEDS: u64 = 1_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

/// One seed, with a panic inside the transport reported as its failure.
fn run_caught(seed: u64, class: Class) -> Result<Outcome, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_seed(seed, class))).unwrap_or_else(
        |p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {msg}"))
        },
    )
}

/// The command that reruns `seed` alone, with every setting it ran with.
fn rerun_line(seed: u64, class: &Class) -> String {
    let mode = std::env::var("SIM_MODE")
        .map(|m| format!("SIM_MODE={m} "))
        .unwrap_or_default();
    format!(
        "{mode}SIM_SEED={seed} SIM_MESSAGES={} cargo test -p rpcd-transport --test sim -- --nocapture",
        class.budget
    )
}

/// Run `seeds` on all cores, largest first, each thread taking the next
/// seed when it is free; panics naming the first failing seed.
fn sweep(seeds: &[u64], forced_messages: Option<u64>, totals: &mut Totals) {
    let mut work: Vec<(u64, Class)> = seeds
        .iter()
        .map(|&s| (s, Class::of(s, forced_messages)))
        .collect();
    work.sort_by_key(|(s, c)| (std::cmp::Reverse(c.messages()), *s));
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(work.len().max(1));
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(work.len()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(seed, class)) = work.get(i) else {
                    break;
                };
                let r = run_caught(seed, class);
                results
                    .lock()
                    .expect("no thread panics holding it")
                    .push((seed, class, r));
            });
        }
    });
    let mut all = results.into_inner().expect("no thread panics holding it");
    all.sort_by_key(|(seed, _, _)| *seed);
    let mut failures = Vec::new();
    for (seed, class, r) in all {
        match r {
            Ok(o) => totals.add(&o),
            Err(e) => failures.push((seed, class, e)),
        }
    }
    if let Some((seed, class, e)) = failures.first() {
        let list: Vec<String> = failures
            .iter()
            .map(|(s, c, _)| format!("{s} ({})", c.name()))
            .collect();
        panic!(
            "{} of the seeds failed ({}).\nfirst: seed {seed} ({}): {e}\nrerun it with: {}",
            failures.len(),
            list.join(", "),
            class.name(),
            rerun_line(*seed, class)
        );
    }
}

/// The seeds of a default run: the regression range, then `SIM_SEEDS`
/// (default 1,000) from `SIM_BASE` (default: random, printed).
fn default_seeds() -> Vec<u64> {
    let base = env_u64("SIM_BASE").unwrap_or_else(|| {
        // Above the regression range, below 2^48 so it reads easily.
        rand::random::<u64>() % (1 << 48) + REGRESSION_SEEDS.end
    });
    let n = env_u64("SIM_SEEDS").unwrap_or(RANDOM_SEEDS);
    println!(
        "sim: regression seeds {}..{} and {} past bugs, random seeds {base}..{} (repeat them with SIM_BASE={base})",
        REGRESSION_SEEDS.start,
        REGRESSION_SEEDS.end,
        PAST_BUGS.len(),
        base + n
    );
    REGRESSION_SEEDS
        .chain(PAST_BUGS.iter().copied())
        .chain(base..base + n)
        .collect()
}

#[test]
fn sweep_seeds() {
    let messages = env_u64("SIM_MESSAGES");
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(seed) => vec![seed],
        None => default_seeds(),
    };
    let started = WallInstant::now();
    let mut t = Totals::default();
    sweep(&seeds, messages, &mut t);
    println!("{}", t.summary(started.elapsed()));
    println!("{}", t.headline(started.elapsed()));
    // Not vacuous: every fault kind was injected, many times over.
    if seeds.len() >= 500 {
        if let Err(e) = t.check_fault_counts(2) {
            panic!("{e}");
        }
    }
    // Coverage, not a property: a sweep of plaintext runs puts bundles of
    // several datagrams through every fault (the seeds with small messages
    // in bursts make them), so their exactly-once checks cover coalescing.
    if t.sum.bundles >= 100_000 {
        assert!(
            t.sum.multi_bundles * 200 >= t.sum.bundles,
            "only {} of {} bundles carried several datagrams",
            t.sum.multi_bundles,
            t.sum.bundles
        );
    }
}

/// Hundreds of millions of messages: `SIM_SOAK_MESSAGES` in total (default
/// 100,000,000), seeds from `SIM_BASE` (default random, printed), each with
/// its drawn budget (or `SIM_MESSAGES`).
#[test]
#[ignore = "soak: hours of CPU; run with --ignored"]
fn soak() {
    let total = env_u64("SIM_SOAK_MESSAGES").unwrap_or(100_000_000);
    let forced = env_u64("SIM_MESSAGES");
    let base = env_u64("SIM_BASE").unwrap_or_else(|| rand::random::<u64>() % (1 << 48));
    println!("sim soak: seeds from {base} (repeat with SIM_BASE={base})");
    let mut seeds = Vec::new();
    let mut planned = 0;
    let mut seed = base;
    while planned < total {
        planned += Class::of(seed, forced).messages();
        seeds.push(seed);
        seed += 1;
    }
    let started = WallInstant::now();
    // In slices, so progress shows and a failure names its seed early.
    let mut all = Totals::default();
    for slice in seeds.chunks(10_000) {
        sweep(slice, forced, &mut all);
        println!("{}", all.headline(started.elapsed()));
    }
}
