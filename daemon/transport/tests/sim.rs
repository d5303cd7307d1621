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
//! acknowledged; every endpoint ends idle.
//!
//! About half the seeds (bit 2 of the seed, independent of the fault class
//! in its two low bits) run keyed: every node has a key and speaks
//! authenticated mode, and the network also injects forged datagrams
//! (plaintext ones, junk, replays, strangers), each checked to be dropped
//! and counted without effect. A keyed seed sends half of `SIM_MESSAGES`
//! (its crypto makes a message about three times dearer). See
//! `sim/net/keyed.rs`, which also lists the wire-level checks that only
//! plaintext runs can make.
//!
//! Rerun one seed: `SIM_SEED=1234 cargo test -p rpcd-transport --test sim`
//! (its mode follows from the seed; `SIM_MODE=plain|keyed` forces one).
//! Sweep size: `SIM_SEEDS` (default 200), `SIM_MESSAGES` per seed (1000).
//! Soak: `SIM_SOAK_MESSAGES=5000000 cargo test --release -p rpcd-transport
//! --test sim -- --ignored --nocapture`.

mod sim {
    pub mod net;
}

use sim::net::{mode_name, run_seed, Outcome, Totals};
use std::time::Instant as WallInstant;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

/// One seed, with a panic inside the transport reported as its failure.
fn run_caught(seed: u64, messages: u64) -> Result<Outcome, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_seed(seed, messages)))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {msg}"))
        })
}

/// Run `seeds` on all cores; panics naming the first failing seed.
fn sweep(seeds: Vec<u64>, messages: u64) -> Totals {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(seeds.len().max(1));
    let chunks: Vec<Vec<u64>> = (0..threads)
        .map(|t| seeds.iter().copied().skip(t).step_by(threads).collect())
        .collect();
    let results: Vec<Vec<(u64, Result<Outcome, String>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|&seed| (seed, run_caught(seed, messages)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("simulation thread panicked"))
            .collect()
    });
    let mut all: Vec<(u64, Result<Outcome, String>)> = results.into_iter().flatten().collect();
    all.sort_by_key(|(seed, _)| *seed);
    let mut totals = Totals::default();
    let mut failures = Vec::new();
    for (seed, r) in all {
        match r {
            Ok(o) => totals.add(&o),
            Err(e) => failures.push((seed, e)),
        }
    }
    if let Some((seed, e)) = failures.first() {
        let list: Vec<String> = failures
            .iter()
            .map(|(s, _)| format!("{s} ({})", mode_name(*s)))
            .collect();
        let mode = mode_name(*seed);
        let forced: String = ["SIM_MODE", "SIM_MESSAGES"]
            .iter()
            .filter_map(|v| std::env::var(v).ok().map(|x| format!("{v}={x} ")))
            .collect();
        panic!(
            "{} of the seeds failed ({}).\nfirst: seed {seed} ({mode}): {e}\nrerun it ({mode}) with: {forced}SIM_SEED={seed} cargo test -p rpcd-transport --test sim -- --nocapture",
            failures.len(),
            list.join(", ")
        );
    }
    totals
}

#[test]
fn sweep_seeds() {
    let messages = env_u64("SIM_MESSAGES").unwrap_or(1000);
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("SIM_FIRST_SEED").unwrap_or(0);
            (first..first + env_u64("SIM_SEEDS").unwrap_or(200)).collect()
        }
    };
    let started = WallInstant::now();
    let t = sweep(seeds, messages);
    println!("{}", t.summary(started.elapsed()));
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

/// Millions of messages: `SIM_SOAK_MESSAGES` in total (default 2,000,000),
/// 10,000 per seed, seeds from `SIM_FIRST_SEED` (default 1,000,000).
#[test]
#[ignore = "soak: minutes of CPU; run with --ignored"]
fn soak() {
    let total = env_u64("SIM_SOAK_MESSAGES").unwrap_or(2_000_000);
    let per_seed = env_u64("SIM_MESSAGES").unwrap_or(10_000);
    let first = env_u64("SIM_FIRST_SEED").unwrap_or(1_000_000);
    let seeds: Vec<u64> = (first..first + total.div_ceil(per_seed)).collect();
    let started = WallInstant::now();
    let t = sweep(seeds, per_seed);
    println!("{}", t.summary(started.elapsed()));
}
