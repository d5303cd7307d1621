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
//! - **relays in an event loop**: the floor again, its relays each one thread waiting in
//!   `epoll` (mio) as rpcd's shell does, forwarding the same way (one datagram per frame):
//!   what the event loop alone adds to the floor;
//! - **tarpc** 0.36 over TCP loopback, `kv.get`, 1 caller and 32 concurrent callers on one
//!   client;
//! - **rpcd**: `kv.get` (32 bytes of arguments) served by the `kv_server` example behind
//!   daemon B, called from daemon A by 1 and by 32 threads sharing one blocking
//!   `Connection` (rows `…, threads`), and by 1 and 32 tasks of one tokio multi-thread
//!   runtime sharing one async client (rows `…, tokio tasks`: the like-for-like comparison
//!   with tarpc's tasks), with the daemons in plaintext (the default without a key), with
//!   keys, and in plaintext with busy polling off (`daemon.busy_poll_us = 0`: each input
//!   wakes a daemon sleeping in `epoll_wait`), to show what the default's polling buys and
//!   what it costs;
//! - **bulk**: one 16 MiB message through two daemons (`bulk.digest`) against a plain TCP
//!   loopback copy of the same bytes.
//!
//! For each it prints p50, p99, calls/s, CPU microseconds per call of every process
//! (`/proc/PID/stat`, user + system) and UDP datagrams per call each way (the daemons'
//! counters), the medians of `PERF_REPS` repetitions (default 3), with ratios to the floor
//! and to tarpc. The repetitions of all rows take turns (every path stays up for the whole
//! run), so that each ratio compares figures taken close together in time.
//! `PERF_ONLY=rpcd,floor` limits the run to the rows whose name contains one of the words
//! (`floor`, `loop`, `tarpc`, `rpcd`, `plaintext`, `keys`, `busy_poll`, `threads`, `tasks`,
//! `bulk`).

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
/// Bulk messages before the first measured one: each process's buffer pool and the
/// allocator's thresholds (glibc raises its `mmap` threshold once a large block is freed)
/// reach their steady state over the first two or three, as the window does.
const BULK_WARMUP: usize = 3;

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

/// Which started path a row measures (`Threads` and `Tasks` by index: 0 plaintext, 1 keys).
#[derive(Debug, Clone, Copy)]
enum Which {
    Floor,
    LoopFloor,
    Tarpc,
    Threads(usize),
    Tasks(usize),
}

/// Every path started for the run, alive together so that their repetitions can take turns.
#[derive(Default)]
struct Paths {
    floor: Option<setups::Floor>,
    loop_floor: Option<setups::Floor>,
    tarpc: Option<setups::Tarpc>,
    rpcd: [Option<setups::Rpcd>; 3],
    tokio: [Option<setups::TokioCaller>; 3],
}

impl Paths {
    /// Runs `f` on the path `which` names (started before its rows were listed).
    fn with<R>(&mut self, which: Which, f: impl FnOnce(&mut dyn Setup) -> R) -> R {
        match which {
            Which::Floor => f(self.floor.as_mut().expect("the floor was started")),
            Which::LoopFloor => f(self
                .loop_floor
                .as_mut()
                .expect("the event-loop relays were started")),
            Which::Tarpc => f(self.tarpc.as_mut().expect("tarpc was started")),
            Which::Threads(k) => f(self.rpcd[k].as_mut().expect("the daemons were started")),
            Which::Tasks(k) => f(&mut setups::RpcdTasks {
                rpcd: self.rpcd[k].as_ref().expect("the daemons were started"),
                caller: self.tokio[k]
                    .as_ref()
                    .expect("the tokio caller was started"),
            }),
        }
    }
}

/// One row's figures, a repetition at a time.
struct Samples {
    name: String,
    which: Which,
    calls: u64,
    callers: usize,
    procs: Vec<(&'static str, u32)>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    rate: Vec<f64>,
    outs: Vec<f64>,
    ins: Vec<f64>,
    cpu: HashMap<&'static str, Vec<f64>>,
}

impl Samples {
    fn new(name: &str, which: Which, calls: u64, callers: usize) -> Samples {
        Samples {
            name: name.to_owned(),
            which,
            calls,
            callers,
            procs: Vec::new(),
            p50: Vec::new(),
            p99: Vec::new(),
            rate: Vec::new(),
            outs: Vec::new(),
            ins: Vec::new(),
            cpu: HashMap::new(),
        }
    }

    /// The warm-up before the first repetition: connection, channel, RTT estimate, caches.
    fn warm_up(&mut self, setup: &mut dyn Setup) {
        setup.run(WARMUP, self.callers.min(WARMUP as usize));
        self.procs = setup.procs();
    }

    /// One repetition of `calls` calls with `callers` in flight, with its CPU and datagram
    /// deltas.
    fn repetition(&mut self, setup: &mut dyn Setup) {
        let before: HashMap<u32, f64> = self
            .procs
            .iter()
            .map(|(_, p)| (*p, setups::cpu_us(*p)))
            .collect();
        let d0 = setup.datagrams();
        let (mut lat, elapsed) = setup.run(self.calls, self.callers);
        let per_call = setups::cpu_per_call(&before, &self.procs, lat.len() as u64);
        if let (Some((o0, i0)), Some((o1, i1))) = (d0, setup.datagrams()) {
            self.outs.push((o1 - o0) as f64 / lat.len() as f64);
            self.ins.push((i1 - i0) as f64 / lat.len() as f64);
        }
        lat.sort();
        self.p50.push(percentile_us(&lat, 0.50));
        self.p99.push(percentile_us(&lat, 0.99));
        self.rate.push(lat.len() as f64 / elapsed.as_secs_f64());
        for (label, us) in per_call {
            self.cpu.entry(label).or_default().push(us);
        }
    }

    /// The row: the median of each figure over the repetitions.
    fn row(self) -> Row {
        let row = Row {
            cpu: self
                .procs
                .iter()
                .map(|(label, _)| (*label, median(self.cpu[label].clone())))
                .collect(),
            datagrams: (!self.outs.is_empty()).then(|| (median(self.outs), median(self.ins))),
            name: self.name,
            callers: self.callers,
            p50_us: median(self.p50),
            p99_us: median(self.p99),
            rate: median(self.rate),
        };
        eprintln!(
            "measured {}, {} in flight: p50 {:.0} µs, p99 {:.0} µs, {:.0} calls/s",
            row.name, row.callers, row.p50_us, row.p99_us, row.rate
        );
        row
    }
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
    let mut paths = Paths::default();
    let mut listed: Vec<(String, Which)> = Vec::new();
    if wanted("floor") {
        paths.floor = Some(setups::Floor::start(dir.path(), false));
        listed.push(("floor (plain relays)".to_owned(), Which::Floor));
    }
    if wanted("relays in an event loop") {
        paths.loop_floor = Some(setups::Floor::start(dir.path(), true));
        listed.push(("relays in an event loop".to_owned(), Which::LoopFloor));
    }
    if wanted("tarpc") {
        paths.tarpc = Some(setups::Tarpc::start());
        listed.push(("tarpc, TCP loopback".to_owned(), Which::Tarpc));
    }
    let with_bulk = wanted("bulk");
    let variants = [
        "rpcd, plaintext",
        "rpcd, keys",
        "rpcd, plaintext, busy_poll_us = 0",
    ];
    for (k, name) in variants.into_iter().enumerate() {
        let threads = format!("{name}, threads");
        let tasks = format!("{name}, tokio tasks");
        let bulk_here = with_bulk && k == 0;
        if !(wanted(&threads) || wanted(&tasks) || bulk_here) {
            continue;
        }
        let rpcd = paths.rpcd[k].insert(setups::Rpcd::start(dir.path(), k == 1, k == 2));
        if wanted(&tasks) {
            paths.tokio[k] = Some(setups::TokioCaller::start(rpcd));
        }
        if wanted(&threads) {
            listed.push((threads, Which::Threads(k)));
        }
        if wanted(&tasks) {
            listed.push((tasks, Which::Tasks(k)));
        }
    }
    let mut samples: Vec<Samples> = listed
        .iter()
        .flat_map(|(name, which)| {
            [(CALLS_1, 1), (CALLS_32, 32)]
                .map(|(calls, callers)| Samples::new(name, *which, calls, callers))
        })
        .collect();
    for s in &mut samples {
        paths.with(s.which, |setup| s.warm_up(setup));
    }
    // Repetition r runs every row once, starting r rows further down the list: a row's
    // median then spans the whole run, and the ratios compare figures taken minutes, not
    // a whole run, apart, whatever the machine's load did meanwhile.
    let n = samples.len();
    for rep in 0..reps() {
        for i in 0..n {
            let s = &mut samples[(i + rep) % n];
            paths.with(s.which, |setup| s.repetition(setup));
        }
    }
    let rows: Vec<Row> = samples.into_iter().map(Samples::row).collect();
    print_table(&rows);
    if let Some(rpcd) = paths.rpcd[0].as_ref().filter(|_| with_bulk) {
        // One message through the daemons, then one copy over TCP, in turns, as above.
        let len = 16 * 1024 * 1024 - 4096;
        for _ in 0..BULK_WARMUP {
            setups::bulk_rpcd(rpcd, len);
            setups::bulk_tcp(len);
        }
        let (mut through, mut tcp) = (Vec::new(), Vec::new());
        let mut totals = setups::BulkCounters::default();
        for _ in 0..reps() {
            let before = setups::BulkCounters::of(rpcd);
            through.push(setups::bulk_rpcd(rpcd, len));
            totals.add(&before, &setups::BulkCounters::of(rpcd));
            tcp.push(setups::bulk_tcp(len));
        }
        let counters = setups::BulkCounters::default().per_message(&totals, reps() as u64);
        let (through, tcp) = (median(through), median(tcp));
        println!(
            "\nbulk, one {len}-byte argument: rpcd (plaintext) {through:.0} MiB/s, \
             TCP loopback copy {tcp:.0} MiB/s: {:.1} % of TCP\n  {counters}",
            100.0 * through / tcp
        );
    }
}
