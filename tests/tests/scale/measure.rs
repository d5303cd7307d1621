//! What the scale tests measure of a daemon process, and one level of load: hold `L`
//! calls in flight at once, check the daemons count exactly `L`, sample resident memory,
//! then run the closed loop for a number of calls and take the CPU time per call.

use std::time::{Duration, Instant};

use rpcd_client::conn::Connection;

use super::driver::{Callers, Servers};

/// A process whose resources a test reports.
#[derive(Debug, Clone)]
pub struct Proc {
    /// How the report names it.
    pub label: String,
    /// Its pid.
    pub pid: u32,
}

/// CPU time (user + system, all threads) of `pid` so far, in microseconds, from
/// `/proc/PID/stat` (clock ticks of 10 ms: the kernel's USER_HZ is 100 on Linux).
pub fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name may hold spaces; the fields after it are space-separated.
    let rest = &stat[stat.rfind(')').expect("comm in parentheses") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the name: state is field 3 of stat(5), so utime (14) and stime (15) are 11, 12.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 * 10_000.0
}

/// Resident memory of `pid` now, in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in kB");
    kb * 1024
}

/// The daemons' own count of what is in flight: calls awaiting their outcome, summed over
/// the callers' daemons, and invocations the serving daemon's apps are running.
pub fn daemon_in_flight(
    caller_sockets: &[&std::path::Path],
    server: &std::path::Path,
) -> (u64, u64) {
    let stats = |socket: &std::path::Path| {
        Connection::connect(socket, "scale-stats")
            .expect("connect for stats")
            .stats()
            .expect("stats")
    };
    let mut calls = 0;
    let mut seen = std::collections::HashSet::new();
    for socket in caller_sockets {
        if seen.insert(*socket) {
            calls += stats(socket).calls_in_flight;
        }
    }
    (calls, stats(server).invocations_in_flight)
}

/// The serving daemon's transport counters (summed over its peers), per call of a level:
/// what a change in CPU per call between levels goes with.
#[derive(Debug, Clone, Copy, Default)]
pub struct PerCall {
    /// Datagrams it received.
    pub received: f64,
    /// Datagrams it sent.
    pub sent: f64,
    /// Of those sent, retransmissions (probes and repairs).
    pub retransmitted: f64,
    /// Of those received, duplicates.
    pub duplicates: f64,
}

/// The serving daemon's totals now: (received, sent, retransmissions, duplicates).
fn counters(server: &std::path::Path) -> [u64; 4] {
    let t = Connection::connect(server, "scale-stats")
        .expect("connect for stats")
        .stats()
        .expect("stats")
        .totals;
    [
        t.datagrams_received,
        t.datagrams_sent,
        t.retransmissions,
        t.duplicates,
    ]
}

/// The figures of one level.
#[derive(Debug, Clone)]
pub struct Level {
    /// Calls in flight at once.
    pub in_flight: u64,
    /// Calls made at this level.
    pub calls: u64,
    /// Wall time of the level.
    pub wall: Duration,
    /// Per process of the report: CPU µs per call over the level.
    pub cpu_us_per_call: Vec<f64>,
    /// Per process: resident bytes while all `in_flight` calls were held at the serving app.
    pub rss_held: Vec<u64>,
    /// The serving daemon's datagrams per call over the level.
    pub serving: PerCall,
}

/// How one level runs.
pub struct LevelRun<'a> {
    pub callers: &'a Callers,
    pub servers: &'a Servers,
    pub procs: &'a [Proc],
    pub caller_sockets: &'a [&'a std::path::Path],
    pub server_socket: &'a std::path::Path,
}

impl LevelRun<'_> {
    /// Holds `in_flight` calls at the serving apps, checks both daemons count exactly that
    /// many, samples memory, releases them, and runs the closed loop until `calls` calls
    /// were made; every call must succeed with its own arguments back.
    pub fn run(&self, in_flight: u64, calls: u64) -> Level {
        let counted0 = counters(self.server_socket);
        let cpu0: Vec<f64> = self.procs.iter().map(|p| cpu_us(p.pid)).collect();
        let t0 = Instant::now();
        self.servers.hold();
        self.callers.start(in_flight, calls);
        let all_held = rpcd_tests::wait_until(Duration::from_secs(120), || {
            self.servers.held() == in_flight
        });
        assert!(
            all_held,
            "{in_flight} calls never all reached the serving apps: {} held, callers (sent, ok, failed) {:?}, errors {:?}",
            self.servers.held(),
            self.callers.counts(),
            self.callers.errors()
        );
        let (calls_in_flight, invocations_in_flight) =
            daemon_in_flight(self.caller_sockets, self.server_socket);
        assert_eq!(
            (calls_in_flight, invocations_in_flight),
            (in_flight, in_flight),
            "the daemons' calls_in_flight and invocations_in_flight while {in_flight} calls are held"
        );
        let rss_held = self.procs.iter().map(|p| rss(p.pid)).collect();
        self.servers.release();
        let finished = self.callers.wait_done(Duration::from_secs(600));
        let wall = t0.elapsed();
        let (sent, ok, failed) = self.callers.counts();
        assert!(
            finished && failed == 0,
            "level {in_flight}: sent {sent}, ok {ok}, failed {failed}; first errors {:?}",
            self.callers.errors()
        );
        let cpu_us_per_call = self
            .procs
            .iter()
            .zip(cpu0)
            .map(|(p, c0)| (cpu_us(p.pid) - c0) / calls as f64)
            .collect();
        let counted = counters(self.server_socket);
        let per = |i: usize| (counted[i] - counted0[i]) as f64 / calls as f64;
        Level {
            in_flight,
            calls,
            wall,
            cpu_us_per_call,
            rss_held,
            serving: PerCall {
                received: per(0),
                sent: per(1),
                retransmitted: per(2),
                duplicates: per(3),
            },
        }
    }
}

/// Calls per level: 20,000 at 1 in flight (each call waits for the one before), else 20
/// per call in flight and at least `SCALE_CALLS` (default 100,000), so each level's CPU
/// time is about a second or more (the clock ticks are 10 ms; with 20,000 calls at 1,000
/// in flight the figure moved by 30 % between runs).
pub fn calls_for(in_flight: u64) -> u64 {
    if in_flight == 1 {
        return 20_000;
    }
    let least = std::env::var("SCALE_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    least.max(20 * in_flight)
}

/// How many times each level runs: `SCALE_REPS`, default 3, at least 1.
pub fn repetitions() -> usize {
    std::env::var("SCALE_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize)
        .max(1)
}

/// One level from several runs of it: per process the least CPU per call of the runs; the
/// other figures (memory held, the serving daemon's datagrams) those of the run in which the
/// first process spent least.
pub fn least_cpu(runs: Vec<Level>) -> Level {
    let best = |i: usize| {
        runs.iter()
            .map(|r| r.cpu_us_per_call[i])
            .fold(f64::INFINITY, f64::min)
    };
    let procs = runs[0].cpu_us_per_call.len();
    let cpu: Vec<f64> = (0..procs).map(best).collect();
    let mut level = runs
        .into_iter()
        .min_by(|a, b| a.cpu_us_per_call[0].total_cmp(&b.cpu_us_per_call[0]))
        .expect("at least one run");
    level.cpu_us_per_call = cpu;
    level
}

/// The table of a run, in the Markdown of `docs/reliability.md`.
pub fn table(procs: &[Proc], levels: &[Level]) -> String {
    let mut s = String::from("| in flight | calls | calls/s |");
    for p in procs {
        s += &format!(" {} CPU µs/call | {} RSS MiB (held) |", p.label, p.label);
    }
    s += " serving daemon's datagrams per call: received, sent (retransmitted), duplicates |";
    s += "\n|---|---|---|";
    for _ in procs {
        s += "---|---|";
    }
    s += "---|";
    for l in levels {
        s += &format!(
            "\n| {} | {} | {:.0} |",
            l.in_flight,
            l.calls,
            l.calls as f64 / l.wall.as_secs_f64()
        );
        for (cpu, rss) in l.cpu_us_per_call.iter().zip(&l.rss_held) {
            s += &format!(" {cpu:.1} | {:.1} |", *rss as f64 / (1024.0 * 1024.0));
        }
        let d = l.serving;
        s += &format!(
            " {:.3}, {:.3} ({:.4}), {:.4} |",
            d.received, d.sent, d.retransmitted, d.duplicates
        );
    }
    s
}

/// The largest ratio of CPU per call at a level over CPU per call at any level with fewer
/// calls in flight, for process `proc`: above 1 means a call costs more when more are in
/// flight.
pub fn worst_growth(levels: &[Level], proc: usize) -> (f64, u64, u64) {
    let mut worst = (0.0, 0, 0);
    for (i, low) in levels.iter().enumerate() {
        for high in &levels[i + 1..] {
            let ratio = high.cpu_us_per_call[proc] / low.cpu_us_per_call[proc];
            if ratio > worst.0 {
                worst = (ratio, low.in_flight, high.in_flight);
            }
        }
    }
    worst
}
