//! The performance benchmark of issue 12 (ignored by default; timing is not a test):
//!
//! ```text
//! cargo build --release --workspace --bins --examples && \
//!   cargo test --release -p rpcd-tests --test perf_bench -- --ignored --nocapture
//! ```
//!
//! In one run on this machine it starts and measures, side by side:
//! - **floor**: app -UDS-> relay -UDP-> relay -UDS-> app, plain relays (`perf_helper`),
//!   4 processes, 1 and 32 requests in flight;
//! - **tarpc** 0.36 over TCP loopback, `kv.get`, 1 caller and 32 concurrent callers on one
//!   client;
//! - **rpcd**: `kv.get` (32 bytes of arguments) served by the `kv_server` example behind
//!   daemon B, called from daemon A by 1 and by 32 threads sharing one blocking
//!   `Connection` (rows `…, threads`), and by 1 and 32 tasks of one tokio multi-thread
//!   runtime sharing one async client (rows `…, tokio tasks`: the like-for-like comparison
//!   with tarpc's tasks), with the daemons in plaintext (the default without a key) and
//!   with keys;
//! - **bulk**: one 16 MiB message through two daemons (`bulk.digest`) against a plain TCP
//!   loopback copy of the same bytes.
//!
//! For each it prints p50, p99, calls/s, CPU microseconds per call of every process
//! (`/proc/PID/stat`, user + system) and UDP datagrams per call each way (the daemons'
//! counters), the medians of `PERF_REPS` repetitions (default 3), with ratios to the floor
//! and to tarpc. `PERF_ONLY=rpcd,floor` limits the run to the rows whose name contains one
//! of the words (`floor`, `tarpc`, `rpcd`, `keys`, `threads`, `tasks`, `bulk`).

// In a benchmark a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod perf;
#[path = "../examples/perf_common/mod.rs"]
mod perf_common;

use std::collections::HashMap;
use std::time::Duration;

use perf::setups::{self, Setup};
use rpcd_tests::tempdir;

/// Calls per repetition with 1 caller and with 32.
const CALLS_1: u64 = 4_000;
const CALLS_32: u64 = 32_000;
/// Calls before the first repetition (connection, channel, RTT estimate, caches).
const WARMUP: u64 = 500;

/// What one row reports: medians over the repetitions.
struct Row {
    name: String,
    callers: usize,
    p50_us: f64,
    p99_us: f64,
    rate: f64,
    cpu: setups::Labelled,
    datagrams: Option<(f64, f64)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn reps() -> usize {
    std::env::var("PERF_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1)
}

fn wanted(name: &str) -> bool {
    match std::env::var("PERF_ONLY") {
        Ok(only) => only.split(',').any(|w| name.contains(w.trim())),
        Err(_) => true,
    }
}

/// Measures `setup` with `callers` in flight: `reps()` repetitions of `calls` calls after a
/// warm-up, each with its CPU and datagram deltas.
fn measure(name: &str, setup: &mut dyn Setup, calls: u64, callers: usize) -> Row {
    setup.run(WARMUP, callers.min(WARMUP as usize));
    let procs = setup.procs();
    let (mut p50, mut p99, mut rate, mut outs, mut ins) = (vec![], vec![], vec![], vec![], vec![]);
    let mut cpu: HashMap<&'static str, Vec<f64>> = HashMap::new();
    for _ in 0..reps() {
        let before: HashMap<u32, f64> = procs
            .iter()
            .map(|(_, p)| (*p, setups::cpu_us(*p)))
            .collect();
        let d0 = setup.datagrams();
        let (mut lat, elapsed) = setup.run(calls, callers);
        let per_call = setups::cpu_per_call(&before, &procs, lat.len() as u64);
        if let (Some((o0, i0)), Some((o1, i1))) = (d0, setup.datagrams()) {
            outs.push((o1 - o0) as f64 / lat.len() as f64);
            ins.push((i1 - i0) as f64 / lat.len() as f64);
        }
        lat.sort();
        p50.push(percentile_us(&lat, 0.50));
        p99.push(percentile_us(&lat, 0.99));
        rate.push(lat.len() as f64 / elapsed.as_secs_f64());
        for (label, us) in per_call {
            cpu.entry(label).or_default().push(us);
        }
    }
    let row = Row {
        name: name.to_owned(),
        callers,
        p50_us: median(p50),
        p99_us: median(p99),
        rate: median(rate),
        cpu: procs
            .iter()
            .map(|(label, _)| (*label, median(cpu[label].clone())))
            .collect(),
        datagrams: (!outs.is_empty()).then(|| (median(outs), median(ins))),
    };
    eprintln!(
        "measured {name}: p50 {:.0} µs, p99 {:.0} µs, {:.0} calls/s",
        row.p50_us, row.p99_us, row.rate
    );
    row
}

fn ratio(x: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 => format!("{:.2}x", x / b),
        _ => "–".to_owned(),
    }
}

fn print_table(rows: &[Row]) {
    let find = |prefix: &str, callers: usize| {
        rows.iter()
            .find(|r| r.name.starts_with(prefix) && r.callers == callers)
    };
    println!();
    println!("| path | in flight | p50 µs | p99 µs | calls/s | p50 / floor | p99 / floor | calls/s / tarpc | CPU µs per call | datagrams per call A→B, B→A |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let floor = find("floor", r.callers);
        let tarpc = find("tarpc", r.callers);
        let cpu: Vec<String> = r
            .cpu
            .iter()
            .map(|(label, us)| format!("{label} {us:.1}"))
            .collect();
        let total: f64 = r.cpu.iter().map(|(_, us)| us).sum();
        let datagrams = r
            .datagrams
            .map_or("–".to_owned(), |(o, i)| format!("{o:.2}, {i:.2}"));
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} (total {total:.1}) | {datagrams} |",
            r.name,
            r.callers,
            r.p50_us,
            r.p99_us,
            r.rate,
            ratio(r.p50_us, floor.map(|f| f.p50_us)),
            ratio(r.p99_us, floor.map(|f| f.p99_us)),
            ratio(r.rate, tarpc.map(|t| t.rate)),
            cpu.join(", "),
        );
    }
}

#[test]
#[ignore = "benchmark: run explicitly, see the module docs"]
fn floor_tarpc_and_rpcd_side_by_side() {
    let dir = tempdir();
    let mut rows = Vec::new();
    if wanted("floor") {
        let mut floor = setups::Floor::start(dir.path());
        rows.push(measure("floor (plain relays)", &mut floor, CALLS_1, 1));
        rows.push(measure("floor (plain relays)", &mut floor, CALLS_32, 32));
    }
    if wanted("tarpc") {
        let mut tarpc = setups::Tarpc::start();
        rows.push(measure("tarpc, TCP loopback", &mut tarpc, CALLS_1, 1));
        rows.push(measure("tarpc, TCP loopback", &mut tarpc, CALLS_32, 32));
    }
    let mut bulk = None;
    for keyed in [false, true] {
        let name = if keyed {
            "rpcd, keys"
        } else {
            "rpcd, plaintext"
        };
        let with_bulk = wanted("bulk") && !keyed;
        let threads = format!("{name}, threads");
        let tasks = format!("{name}, tokio tasks");
        if !wanted(&threads) && !wanted(&tasks) && !with_bulk {
            continue;
        }
        let mut rpcd = setups::Rpcd::start(dir.path(), keyed);
        if wanted(&threads) {
            rows.push(measure(&threads, &mut rpcd, CALLS_1, 1));
            rows.push(measure(&threads, &mut rpcd, CALLS_32, 32));
        }
        if wanted(&tasks) {
            let mut on_tokio = setups::RpcdTasks::start(&rpcd);
            rows.push(measure(&tasks, &mut on_tokio, CALLS_1, 1));
            rows.push(measure(&tasks, &mut on_tokio, CALLS_32, 32));
        }
        if with_bulk {
            let len = 16 * 1024 * 1024 - 4096;
            setups::bulk_rpcd(&rpcd, len);
            let before = setups::BulkCounters::of(&rpcd);
            let through = median((0..reps()).map(|_| setups::bulk_rpcd(&rpcd, len)).collect());
            let counters = before.per_message(&setups::BulkCounters::of(&rpcd), reps() as u64);
            let tcp = median((0..reps()).map(|_| setups::bulk_tcp(len)).collect());
            bulk = Some((len, through, tcp, counters));
        }
    }
    print_table(&rows);
    if let Some((len, through, tcp, counters)) = bulk {
        println!(
            "\nbulk, one {len}-byte argument: rpcd (plaintext) {through:.0} MiB/s, \
             TCP loopback copy {tcp:.0} MiB/s: {:.1} % of TCP\n  {counters}",
            100.0 * through / tcp
        );
    }
}
