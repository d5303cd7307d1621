//! One chaos run: three hosts (a daemon and an oracle serving app each), callers on
//! every host calling both other hosts' apps without pause, the seeded fault schedule
//! driven in real time, then the final heal and the liveness calls. It returns the
//! recorded history; judging it is the checker's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rpcd_client::conn::Connection;
use rpcd_tests::netns::Net;
use rpcd_tests::ProcessGuard;

use super::checker::{Call, Fault, History};
use super::faultlib::{base_config, executions, record, run_once};
use super::schedule::{name, schedule, Action, Episode, Kind, HOSTS, PEER_TIMEOUT_MS};

/// Concurrent callers per ordered pair of hosts (each with its own connection).
pub const CALLERS_PER_PAIR: usize = 4;

/// The deadlines calls draw from: shorter and longer than the faults' holds.
pub const DEADLINES_MS: [u64; 4] = [500, 1000, 2000, 3000];

/// How long a caller pauses after a failed call, so a host whose app is down is not
/// called in a spin.
pub const PAUSE_AFTER_FAILURE: Duration = Duration::from_millis(5);

/// The deadline of each liveness call after the final heal.
pub const LIVENESS_CALL_DEADLINE: Duration = Duration::from_secs(1);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The fault schedule's seed.
    pub seed: u64,
    /// How long calls and faults run.
    pub length: Duration,
    /// Break every serving app on purpose: every Nth invocation logged twice.
    pub double_every: Option<u64>,
    /// How long after the final heal the liveness calls keep trying.
    pub liveness: Duration,
    /// The least time between the starts of one caller's calls (`ZERO`: no pause), to
    /// bound a long run's history.
    pub pace: Duration,
}

/// What a run produced beside its history.
#[derive(Debug, Default)]
pub struct Counts {
    /// Faults applied, by kind.
    pub faults: BTreeMap<Kind, usize>,
    /// Datagrams sent through the reordering lanes.
    pub reordered: u64,
}

/// Run `plan`; `None` when network namespaces are unavailable (skipped).
pub fn run(plan: &Plan) -> Option<(History, Counts)> {
    let mut net = Net::start(HOSTS)?;
    // Long partitions outlast the peer timeout (`schedule::LONG_HOLD_MS`).
    let config = format!(
        "{}[transport]\npeer_timeout_ms = {PEER_TIMEOUT_MS}\n",
        base_config()
    );
    for i in 0..HOSTS {
        net.start_daemon(i, &config);
    }
    let logs: Vec<PathBuf> = (0..HOSTS)
        .map(|i| net.dir().join(format!("oracle-{i}.log")))
        .collect();
    let mut apps: Vec<ProcessGuard> = (0..HOSTS)
        .map(|i| start_app(&net, i, &logs[i], plan.double_every))
        .collect();
    let sockets: Vec<PathBuf> = net.hosts.iter().map(|h| h.socket.clone()).collect();
    let targets: Vec<String> = net.hosts.iter().map(|h| h.target()).collect();
    let episodes = schedule(plan.seed, plan.length);
    let stop = AtomicBool::new(false);
    let calls = Mutex::new(Vec::new());
    let t0 = Instant::now();
    let mut counts = Counts::default();
    let faults = std::thread::scope(|s| {
        for (from, socket) in sockets.iter().enumerate() {
            for (to, target) in targets.iter().enumerate().filter(|&(to, _)| to != from) {
                for k in 0..CALLERS_PER_PAIR {
                    let (stop, calls) = (&stop, &calls);
                    let seed = plan.seed ^ ((from * 16 + to * 4 + k) as u64) << 48;
                    let pace = plan.pace;
                    s.spawn(move || {
                        let mine = caller(socket, (from, to), target, seed, pace, t0, stop);
                        calls.lock().expect("calls").extend(mine);
                    });
                }
            }
        }
        // A panic below (a helper's assertion) must still stop the callers, or the
        // scope would wait for them forever.
        let _stop = StopOnDrop(&stop);
        let mut faults = Vec::new();
        for ep in &episodes {
            episode(&mut net, &mut apps, &logs, plan, ep, t0, &mut faults);
            for a in &ep.actions {
                *counts.faults.entry(a.kind()).or_insert(0) += 1;
            }
        }
        sleep_until(t0 + plan.length);
        stop.store(true, Ordering::Relaxed);
        faults
    });
    let mut history = History {
        seed: plan.seed,
        calls: calls.into_inner().expect("calls"),
        faults,
        hosts: HOSTS,
        ..History::default()
    };
    counts.reordered = (0..HOSTS).map(|i| net.reordered(i)).sum();
    heal_all(&mut net, &mut apps, &logs, plan, t0, &mut history);
    let healed = t0.elapsed();
    history.healed_at = Some(healed);
    let after = liveness(&sockets, &targets, t0, healed + plan.liveness);
    history.calls.extend(after);
    drop(apps);
    history.daemon_logs = net.hosts.iter().map(|h| h.log_text()).collect();
    for (host, log) in logs.iter().enumerate() {
        for (nonce, k) in executions(log) {
            history
                .executions
                .entry(nonce)
                .or_default()
                .extend(std::iter::repeat_n(host, k));
        }
    }
    Some((history, counts))
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn start_app(net: &Net, host: usize, log: &Path, double_every: Option<u64>) -> ProcessGuard {
    match double_every {
        Some(n) => net.oracle_server_doubling(host, log, n),
        None => net.oracle_server(host, log),
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Taking longer than this to apply a fault is reported with the fault.
pub const SLOW_FAULT: Duration = Duration::from_millis(500);

/// A fault applied from `issued` until `done` (run times), logged at `issued`: a SIGKILL
/// takes effect when sent, though the process may be reaped much later (its sockets stay
/// open, so its peers and apps see silence, not a reset). Slow application is said.
pub fn issued_fault(what: String, issued: Duration, done: Duration) -> Fault {
    let took = done.saturating_sub(issued);
    let what = if took > SLOW_FAULT {
        format!("{what} (issued here; applied, or the process reaped, {took:.1?} later)")
    } else {
        what
    };
    Fault { at: issued, what }
}

/// Apply `ep`'s faults at its start, undo them after its hold; every step logged.
fn episode(
    net: &mut Net,
    apps: &mut [ProcessGuard],
    logs: &[PathBuf],
    plan: &Plan,
    ep: &Episode,
    t0: Instant,
    faults: &mut Vec<Fault>,
) {
    sleep_until(t0 + ep.start);
    for a in &ep.actions {
        let issued = t0.elapsed();
        match *a {
            Action::Loss { host, dir, p } => net.loss(host, dir, p),
            Action::Partition { host } | Action::LongPartition { host } => net.partition(host),
            Action::Duplicate { from, to, p } => net.duplicate(from, to, p),
            Action::Corrupt { from, to, p } => net.corrupt(from, to, p),
            Action::Reorder { from, to, p } => net.reorder(from, to, p),
            Action::KillDaemon { host } => net.kill_daemon(host),
            Action::KillApp { host } => apps[host].kill(),
        }
        faults.push(issued_fault(a.to_string(), issued, t0.elapsed()));
    }
    sleep_until(t0 + ep.start + ep.hold);
    for a in &ep.actions {
        let host = a.host();
        let what = match a.kind() {
            Kind::KillDaemon => {
                net.restart_daemon(host);
                format!("rpcd {} restarted (answering)", name(host))
            }
            Kind::KillApp => {
                apps[host] = start_app(net, host, &logs[host], plan.double_every);
                format!("app {} restarted (registered)", name(host))
            }
            _ => {
                net.heal(host);
                format!("heal {} (ends: {a})", name(host))
            }
        };
        faults.push(Fault {
            at: t0.elapsed(),
            what,
        });
    }
}

/// The final heal: every link healed; a daemon or app found dead is recorded (a daemon
/// only dies by the schedule's hand, and every such death was already undone) and
/// started again.
fn heal_all(
    net: &mut Net,
    apps: &mut [ProcessGuard],
    logs: &[PathBuf],
    plan: &Plan,
    t0: Instant,
    history: &mut History,
) {
    for host in 0..HOSTS {
        net.heal(host);
        assert!(
            !net.reorder_lane(host),
            "host {}'s reordering lane outlived the heal",
            name(host)
        );
        if !net.daemon_alive(host) {
            history.faults.push(Fault {
                at: t0.elapsed(),
                what: format!("UNEXPECTED: rpcd {} had exited", name(host)),
            });
            history.unexpected.push(format!(
                "rpcd {} exited on its own; its log:\n{}",
                name(host),
                net.host(host).log_text()
            ));
            net.restart_daemon(host);
        }
        if apps[host].wait_timeout(Duration::ZERO).is_some() {
            // The helper's own lifetime bound (10 minutes) can end it in a long run.
            history.faults.push(Fault {
                at: t0.elapsed(),
                what: format!("app {} had exited; restarted", name(host)),
            });
            apps[host] = start_app(net, host, &logs[host], plan.double_every);
        }
    }
    history.faults.push(Fault {
        at: t0.elapsed(),
        what: "final heal: every link healed, every process up".into(),
    });
}

/// One caller: `from`'s daemon calling `to`'s app until `stop`, reconnecting when its
/// daemon restarts. Each call's deadline is drawn from [`DEADLINES_MS`]; calls start at
/// least `pace` apart.
fn caller(
    socket: &Path,
    (from, to): (usize, usize),
    target: &str,
    seed: u64,
    pace: Duration,
    t0: Instant,
    stop: &AtomicBool,
) -> Vec<Call> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut conn: Option<Connection> = None;
    let mut mine = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = conn.as_ref().filter(|c| !c.is_closed()) else {
            conn = Connection::connect(socket, "chaos").ok();
            if conn.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        let deadline = Duration::from_millis(*DEADLINES_MS.choose(&mut rng).unwrap_or(&1000));
        let started = Instant::now();
        let call = one_call(c, from, to, target, deadline, t0, false);
        if call.outcome != "ok" {
            std::thread::sleep(PAUSE_AFTER_FAILURE);
        }
        mine.push(call);
        sleep_until(started + pace);
    }
    mine
}

fn one_call(
    conn: &Connection,
    from: usize,
    to: usize,
    target: &str,
    deadline: Duration,
    t0: Instant,
    liveness: bool,
) -> Call {
    let start = t0.elapsed();
    let (nonce, r) = run_once(conn, target, deadline);
    let took = t0.elapsed().saturating_sub(start);
    let r = record(nonce, r, took);
    Call {
        nonce,
        from,
        to,
        start,
        took,
        deadline,
        outcome: r.outcome,
        value: r.value,
        unknown: r.unknown,
        local: r.local,
        liveness,
    }
}

/// After the final heal: every host calls every other until one call succeeds or
/// `until` (from `t0`) passes; all pairs at once.
fn liveness(sockets: &[PathBuf], targets: &[String], t0: Instant, until: Duration) -> Vec<Call> {
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (from, socket) in sockets.iter().enumerate() {
            for (to, target) in targets.iter().enumerate().filter(|&(to, _)| to != from) {
                let out = &out;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    while t0.elapsed() < until {
                        let Ok(conn) = Connection::connect(socket, "liveness") else {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        };
                        let c = one_call(&conn, from, to, target, LIVENESS_CALL_DEADLINE, t0, true);
                        let ok = c.outcome == "ok";
                        mine.push(c);
                        if ok {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    out.lock().expect("liveness calls").extend(mine);
                });
            }
        }
    });
    out.into_inner().expect("liveness calls")
}

/// A SIGKILL whose process took 178 s to be reaped (seed 10632602938232783001 on an
/// overloaded machine) is logged when it was sent, and says it was slow; a quick one
/// is logged as before.
#[test]
fn a_fault_is_logged_when_issued_and_a_slow_one_says_so() {
    let slow = issued_fault(
        "SIGKILL rpcd c".into(),
        Duration::from_millis(280_410),
        Duration::from_millis(458_403),
    );
    assert_eq!(slow.at, Duration::from_millis(280_410));
    assert!(
        slow.what.starts_with("SIGKILL rpcd c (issued here;") && slow.what.contains("178.0s"),
        "{}",
        slow.what
    );
    let quick = issued_fault(
        "SIGKILL rpcd c".into(),
        Duration::from_millis(22_377),
        Duration::from_millis(22_444),
    );
    assert_eq!(quick.at, Duration::from_millis(22_377));
    assert_eq!(quick.what, "SIGKILL rpcd c");
}
