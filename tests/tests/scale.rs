//! Scale: many calls in flight through one daemon, many peers at one daemon, and a soak.
//! Ignored (they take minutes and want a release build); `docs/reliability.md` has the
//! commands and the figures of a run.
//!
//! - `scale_100_apps_10000_in_flight`: 100 app connections on daemon A (one test process,
//!   one connection and one reader thread per app, `scale/driver.rs`) call a function
//!   served by apps on daemon B, at 1, 100, 1,000 and 10,000 calls in flight.
//! - `scale_200_peers`: 200 daemons, one app connection each, call a function served on
//!   one hub daemon, which so has 200 peers, at the same levels.
//! - `scale_soak_10_minutes` / `scale_soak_1_minute`: A and B at 10,000 in flight for that
//!   long (`SCALE_SOAK_SECS` overrides), resident memory sampled every second.
//!
//! At each level all `L` calls are first held at the serving apps, and the daemons' own
//! counters must say exactly `L` (`calls_in_flight` on the callers' daemons,
//! `invocations_in_flight` on the serving one); resident memory is sampled then. The
//! serving apps then answer, and a closed loop keeps `L` in flight until the level's calls
//! are made ([`measure::calls_for`]); CPU time (user + system) of each daemon over the
//! level, divided by its calls, is its CPU per call. Each level runs `SCALE_REPS` times
//! (default 3) and each daemon's figure is the least of its runs: whatever else runs on the
//! machine only adds to a daemon's CPU per call (fewer datagrams per wakeup, a colder
//! cache), so the least run is the one that measures the daemon rather than the machine.
//! The claims asserted:
//!
//! - CPU per call does not grow with calls in flight: for every pair of levels `a < b`,
//!   CPU per call at `b` <= [`CPU_GROWTH_MAX`] x CPU per call at `a`, for every daemon
//!   reported. (It falls from 1 to 100 in flight, as wakeups are shared by more calls.)
//! - Memory stays within the limits: the daemons are configured with the bounds that let
//!   10,000 calls be in flight (`calls_per_peer_max`, `invocations_per_app_max`,
//!   `transport.send_queue_max`: the defaults, 4,096, 1,024 and 4,096, refuse them with
//!   `overloaded`), and the resident memory
//!   while 10,000 are held is at most the idle daemon's plus [`HELD_CALL_BYTES_MAX`] per
//!   call in flight.
//! - The soak: every call succeeds, and the resident memory of each daemon in the last
//!   quarter of the run is at most [`SOAK_GROWTH_MAX`] x its resident memory at the end of
//!   the first quarter, plus [`SOAK_SLACK_BYTES`].
//!
//! `scale_driver_holds_and_counts` (not ignored, no timing) checks the driver itself and
//! the daemons' in-flight counters at 200 in flight.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

#[path = "scale/driver.rs"]
mod driver;
#[path = "scale/measure.rs"]
mod measure;

use std::path::Path;
use std::time::{Duration, Instant};

use driver::{Callers, Servers};
use measure::{calls_for, least_cpu, repetitions, rss, table, worst_growth, Level, LevelRun, Proc};
use rpcd_tests::{raise_fd_limit, tempdir, Daemon};

/// The most CPU per call may grow from a level to any level with more calls in flight.
const CPU_GROWTH_MAX: f64 = 1.2;

/// Resident bytes a daemon may add per call held in flight (over its idle size).
const HELD_CALL_BYTES_MAX: u64 = 4096;

/// Resident memory in a soak's last quarter over that at the end of its first quarter.
const SOAK_GROWTH_MAX: f64 = 1.05;

/// Allocator slack a soak tolerates on top of [`SOAK_GROWTH_MAX`].
const SOAK_SLACK_BYTES: u64 = 2 << 20;

/// The levels of calls in flight.
const LEVELS: [u64; 4] = [1, 100, 1_000, 10_000];

/// The served function.
const FUNCTION: &str = "scale.echo";

/// Serving connections on the serving daemon: one (a function has one serving
/// connection; `invocations_per_app_max` is raised to let it hold 10,000).
const SERVERS: usize = 1;

/// The caller daemon's settings: 10,000 calls to one peer (`calls_per_peer_max`, default
/// 4,096), and as many requests queued to it unacknowledged (`send_queue_max`, default
/// 4,096 messages; beyond it calls fail `overloaded`).
const CALLER_CONFIG: &str =
    "[limits]\ncalls_per_peer_max = 10000\n[transport]\nsend_queue_max = 10000\n";

/// The serving daemon's settings: 10,000 invocations for one app
/// (`invocations_per_app_max`, default 1,024), and as many replies queued to one peer.
const SERVER_CONFIG: &str =
    "[limits]\ninvocations_per_app_max = 10000\n[transport]\nsend_queue_max = 10000\n";

/// Two daemons: `apps` app connections on A calling B's serving apps.
struct TwoDaemons {
    // Dropped first: the load's threads end before the daemons do.
    callers: Callers,
    servers: Servers,
    a: Daemon,
    b: Daemon,
    _dir: tempfile::TempDir,
}

impl TwoDaemons {
    fn start(apps: usize) -> TwoDaemons {
        raise_fd_limit(4096);
        let dir = tempdir();
        let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(CALLER_CONFIG));
        let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", Some(SERVER_CONFIG));
        let servers = Servers::start(&b.socket, FUNCTION, SERVERS);
        let sockets: Vec<&Path> = vec![&a.socket; apps];
        let callers = Callers::connect(&sockets, &b.udp.to_string(), FUNCTION);
        TwoDaemons {
            callers,
            servers,
            a,
            b,
            _dir: dir,
        }
    }

    fn procs(&self) -> Vec<Proc> {
        vec![
            Proc {
                label: "rpcd A (callers')".into(),
                pid: self.a.process.pid(),
            },
            Proc {
                label: "rpcd B (serving)".into(),
                pid: self.b.process.pid(),
            },
        ]
    }

    fn level_run<'a>(&'a self, procs: &'a [Proc], sockets: &'a [&'a Path]) -> LevelRun<'a> {
        LevelRun {
            callers: &self.callers,
            servers: &self.servers,
            procs,
            caller_sockets: sockets,
            server_socket: &self.b.socket,
        }
    }
}

/// Runs every level after a warm-up (channels open, allocator warm); prints the table,
/// asserts CPU per call and memory.
fn run_levels(run: &LevelRun<'_>, what: &str) -> Vec<Level> {
    let idle: Vec<u64> = run.procs.iter().map(|p| rss(p.pid)).collect();
    run.run(100, 2_000);
    let reps = repetitions();
    let levels: Vec<Level> = LEVELS
        .iter()
        .map(|&l| {
            let runs: Vec<Level> = (0..reps)
                .map(|_| {
                    let level = run.run(l, calls_for(l));
                    eprintln!("{what}: {level:?}");
                    level
                })
                .collect();
            least_cpu(runs)
        })
        .collect();
    println!("(CPU per call: the least of {reps} runs of each level, per daemon)");
    println!("{what}\n\n{}\n", table(run.procs, &levels));
    let top = levels.last().expect("levels");
    for (i, p) in run.procs.iter().enumerate() {
        let (ratio, low, high) = worst_growth(&levels, i);
        println!(
            "{}: idle RSS {:.1} MiB; worst CPU-per-call growth {ratio:.2}x (from {low} to {high} in flight)",
            p.label,
            idle[i] as f64 / 1048576.0
        );
        let bound = idle[i] + top.in_flight * HELD_CALL_BYTES_MAX;
        assert!(
            top.rss_held[i] <= bound,
            "{}: {} resident bytes with {} calls held, above idle {} + {HELD_CALL_BYTES_MAX} per call",
            p.label,
            top.rss_held[i],
            top.in_flight,
            idle[i]
        );
        assert!(
            ratio <= CPU_GROWTH_MAX,
            "{}: CPU per call grew {ratio:.2}x from {low} to {high} calls in flight (at most {CPU_GROWTH_MAX}x)",
            p.label
        );
    }
    levels
}

#[test]
#[ignore = "minutes; run in release, see docs/reliability.md"]
fn scale_100_apps_10000_in_flight() {
    let setup = TwoDaemons::start(100);
    let procs = setup.procs();
    let sockets = [setup.a.socket.as_path()];
    run_levels(
        &setup.level_run(&procs, &sockets),
        "100 apps on daemon A calling daemon B",
    );
}

#[test]
#[ignore = "minutes and 200 daemons; run in release, see docs/reliability.md"]
fn scale_200_peers() {
    const PEERS: usize = 200;
    raise_fd_limit(8192);
    let dir = tempdir();
    let hub = Daemon::start(dir.path(), "hub", "127.0.0.1:0", Some(SERVER_CONFIG));
    let spokes: Vec<Daemon> = (0..PEERS)
        .map(|i| Daemon::start(dir.path(), &format!("spoke{i}"), "127.0.0.1:0", None))
        .collect();
    let servers = Servers::start(&hub.socket, FUNCTION, SERVERS);
    let sockets: Vec<&Path> = spokes.iter().map(|d| d.socket.as_path()).collect();
    let callers = Callers::connect(&sockets, &hub.udp.to_string(), FUNCTION);
    let procs = [Proc {
        label: "rpcd hub".into(),
        pid: hub.process.pid(),
    }];
    let run = LevelRun {
        callers: &callers,
        servers: &servers,
        procs: &procs,
        caller_sockets: &sockets,
        server_socket: &hub.socket,
    };
    run_levels(
        &run,
        "200 daemons, one app each, calling the hub's serving apps",
    );
    let stats = hub.connect("scale-stats").stats().unwrap();
    assert!(
        stats.peers.len() >= PEERS && stats.refused_peers == 0,
        "the hub knows {} peers, refused {}",
        stats.peers.len(),
        stats.refused_peers
    );
    let spoke_rss: u64 = spokes.iter().map(|d| rss(d.process.pid())).sum();
    println!(
        "hub peers {}; the {PEERS} spoke daemons' resident memory together {:.0} MiB",
        stats.peers.len(),
        spoke_rss as f64 / 1048576.0
    );
    drop(callers);
    drop(servers);
}

/// The soak: A and B at 10,000 in flight for `secs` seconds.
fn soak(secs: u64) {
    let secs = std::env::var("SCALE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(secs);
    let setup = TwoDaemons::start(100);
    let procs = setup.procs();
    let started = Instant::now();
    setup.callers.start(10_000, u64::MAX);
    let mut samples: Vec<Vec<u64>> = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(procs.iter().map(|p| rss(p.pid)).collect());
        let (_, _, failed) = setup.callers.counts();
        assert_eq!(failed, 0, "failures: {:?}", setup.callers.errors());
    }
    setup.callers.stop_sending();
    assert!(
        setup.callers.wait_done(Duration::from_secs(120)),
        "the soak's last calls never finished: {:?}",
        setup.callers.counts()
    );
    let (sent, ok, failed) = setup.callers.counts();
    assert_eq!((ok, failed), (sent, 0), "{:?}", setup.callers.errors());
    println!(
        "soak: {secs} s at 10,000 in flight, {ok} calls ({:.0}/s), all ok",
        ok as f64 / started.elapsed().as_secs_f64()
    );
    let quarter = samples.len() / 4;
    assert!(quarter >= 1, "a soak needs at least 4 s");
    for (i, p) in procs.iter().enumerate() {
        let at_quarter = samples[quarter - 1][i];
        let last_max = samples[samples.len() - quarter..]
            .iter()
            .map(|s| s[i])
            .max()
            .expect("samples");
        let first = samples[0][i];
        println!(
            "{}: RSS after 1 s {:.1} MiB, at the first quarter {:.1} MiB, most in the last quarter {:.1} MiB",
            p.label,
            first as f64 / 1048576.0,
            at_quarter as f64 / 1048576.0,
            last_max as f64 / 1048576.0
        );
        let bound = (at_quarter as f64 * SOAK_GROWTH_MAX) as u64 + SOAK_SLACK_BYTES;
        assert!(
            last_max <= bound,
            "{}: resident memory grew from {at_quarter} to {last_max} bytes",
            p.label
        );
    }
}

#[test]
#[ignore = "10 minutes; run in release, see docs/reliability.md"]
fn scale_soak_10_minutes() {
    soak(600);
}

#[test]
#[ignore = "1 minute; run in release, see docs/reliability.md"]
fn scale_soak_1_minute() {
    soak(60);
}

/// The driver and the daemons' in-flight counters, at 200 calls from 10 apps: held at
/// once, counted by both daemons, then all answered. No timing.
#[test]
fn scale_driver_holds_and_counts() {
    let setup = TwoDaemons::start(10);
    let procs = setup.procs();
    let sockets = [setup.a.socket.as_path()];
    let level = setup.level_run(&procs, &sockets).run(200, 1_000);
    assert_eq!(level.calls, 1_000);
    assert_eq!(setup.callers.counts(), (1_000, 1_000, 0));
    assert_eq!(setup.servers.answered(), 1_000);
}
