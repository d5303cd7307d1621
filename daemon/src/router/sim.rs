//! The RPC layer simulated on the channels: two or three [`Router`]s over a
//! simulated network (loss, duplication, delay and reordering, partitions
//! that heal, daemon crashes and restarts), apps on each daemon that serve
//! `kv.put` / `kv.get` and make calls (with deadlines, cancelled, some
//! callers disconnecting), a virtual clock and one seed per run.
//!
//! Every serving app records each execution by the call's nonce (its
//! arguments), and the oracle (`sim/oracle.rs`) checks per seed: every `ok`
//! is exactly one execution's own result; a call that is not idempotent runs
//! at most once (an idempotent one at most once per daemon: it may fail
//! over); a definite failure (a code whose outcome is known) ran nowhere;
//! every call ends once, by its deadline (plus [`oracle::DEADLINE_SLACK`]);
//! a cancel ends a pending call at once; and after the network healed,
//! every daemon answers every other (`kv.put` and `rpcd.ping`).
//!
//! `cargo test -p rpcd --lib router::sim` sweeps seeds 0..200;
//! `ROUTER_SIM_SEEDS=<n>` sweeps more, `ROUTER_SIM_BASE=<b>` starts
//! elsewhere, `ROUTER_SIM_SEED=<s>` reruns one seed (add `-- --nocapture` to
//! see the per-seed lines). See `docs/reliability.md`.
//!
//! [`Router`]: super::Router

mod net;
mod oracle;
mod world;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use net::{dead_addr, Cut, Faults, Net, NetCounts, Rng};
use oracle::Kind;
use world::{Action, CallPlan, Injected, World, GET, PUT, SVC};

use crate::settings::Settings;

/// Faults (partitions, crashes, disconnects) and new calls happen in the
/// first this long of a run; then it heals.
const FAULT_WINDOW: Duration = Duration::from_secs(6);
/// Longest a run waits after the fault window for every call to end.
const SETTLE_MAX: Duration = Duration::from_secs(15);
/// Quiet time before the probes: longer than the transport's
/// `revalidate_after`, so a restarted peer is known before they are sent.
const QUIET: Duration = Duration::from_secs(1);
/// The probes' deadline: far above any give-up bound of the transport.
const PROBE_DEADLINE_MS: u64 = 30_000;
/// Seeds in the default sweep.
const SEEDS_DEFAULT: u64 = 200;

/// What one seed did, for the sweep's report.
#[derive(Debug, Default)]
struct Report {
    nodes: usize,
    calls: u64,
    executions: u64,
    outcomes: BTreeMap<&'static str, u64>,
    net: NetCounts,
    cuts: u64,
    injected: Injected,
    reruns: u64,
    definite_after_failover: u64,
    frames_after_close: u64,
    max_overshoot: Duration,
}

/// The sweep: every seed's oracle holds.
#[test]
fn routers_under_faults_keep_their_promises() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds: Vec<u64> = match env("ROUTER_SIM_SEED") {
        Some(s) => vec![s],
        None => {
            let base = env("ROUTER_SIM_BASE").unwrap_or(0);
            (base..base + env("ROUTER_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT)).collect()
        }
    };
    if std::env::var_os("ROUTER_SIM_TRACE").is_some() {
        // The routers' own debug log, between the virtual times of the world.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("rpcd=debug"))
            .with_test_writer()
            .without_time()
            .try_init();
    }
    let mut total = Report::default();
    let mut failed = Vec::new();
    for &seed in &seeds {
        let rerun =
            format!("ROUTER_SIM_SEED={seed} cargo test -p rpcd --lib router::sim -- --nocapture");
        let r = match catch_unwind(AssertUnwindSafe(|| run_seed(seed))) {
            Ok(Ok(r)) => r,
            Ok(Err(violations)) => {
                println!(
                    "SEED={seed}: {} violation(s):\n  {}\nrerun: {rerun}",
                    violations.len(),
                    violations.join("\n  ")
                );
                failed.push(seed);
                continue;
            }
            Err(_) => {
                println!("SEED={seed} panicked (above)\nrerun: {rerun}");
                failed.push(seed);
                continue;
            }
        };
        println!(
            "seed {seed}: {} nodes, {} calls, {} executions, faults: loss {}% dup {}% {} cuts {} crashes \
             {} app disconnects {} cancels {} holds; datagrams {} lost {} duplicated {} cut {}; outcomes{}",
            r.nodes,
            r.calls,
            r.executions,
            faults_of(seed).loss,
            faults_of(seed).duplicate,
            r.cuts,
            r.injected.crashes,
            r.injected.app_disconnects,
            r.injected.cancels,
            r.injected.holds,
            r.net.sent,
            r.net.lost,
            r.net.duplicated,
            r.net.cut,
            outcomes(&r.outcomes),
        );
        total.add(&r);
    }
    println!(
        "{} seeds: {} calls, {} executions ({} idempotent reruns after failover, {} idempotent calls \
         ended by a definite failure after running elsewhere), {} frames for closed connections, latest end {:?} after a \
         deadline; datagrams {} sent {} lost {} duplicated {} cut {} unheard; {} cuts, {} crashes, {} app \
         disconnects, {} cancels, {} holds, {} app errors; outcomes{}",
        seeds.len(),
        total.calls,
        total.executions,
        total.reruns,
        total.definite_after_failover,
        total.frames_after_close,
        total.max_overshoot,
        total.net.sent,
        total.net.lost,
        total.net.duplicated,
        total.net.cut,
        total.net.unheard,
        total.cuts,
        total.injected.crashes,
        total.injected.app_disconnects,
        total.injected.cancels,
        total.injected.holds,
        total.injected.app_errors,
        outcomes(&total.outcomes),
    );
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed: {failed:?} (their violations and rerun lines are above; \
         with --nocapture)",
        failed.len(),
        seeds.len()
    );
    if seeds.len() as u64 >= SEEDS_DEFAULT {
        // A sweep that injected nothing would prove nothing.
        let i = &total.injected;
        let n = &total.net;
        let injected = [
            ("loss", n.lost),
            ("duplication", n.duplicated),
            ("cuts", n.cut),
            ("crashes", i.crashes),
            ("app disconnects", i.app_disconnects),
            ("cancels", i.cancels),
            ("holds", i.holds),
            ("app errors", i.app_errors),
            ("failover reruns", total.reruns),
        ];
        for (what, count) in injected {
            assert!(count > 0, "the sweep injected no {what}");
        }
        for code in [
            "ok",
            "deadline_exceeded",
            "cancelled",
            "unknown_function",
            "app_error",
            "peer_unreachable",
            "peer_restarted",
            "server_app_gone",
            "caller_gone",
        ] {
            assert!(
                total.outcomes.contains_key(code),
                "no call of the sweep ended {code}"
            );
        }
    }
}

impl Report {
    fn add(&mut self, r: &Report) {
        self.calls += r.calls;
        self.executions += r.executions;
        for (k, v) in &r.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        let (a, b) = (&mut self.net, &r.net);
        a.sent += b.sent;
        a.lost += b.lost;
        a.duplicated += b.duplicated;
        a.cut += b.cut;
        a.unheard += b.unheard;
        a.delivered += b.delivered;
        self.cuts += r.cuts;
        let (a, b) = (&mut self.injected, &r.injected);
        a.crashes += b.crashes;
        a.app_disconnects += b.app_disconnects;
        a.cancels += b.cancels;
        a.holds += b.holds;
        a.app_errors += b.app_errors;
        self.reruns += r.reruns;
        self.definite_after_failover += r.definite_after_failover;
        self.frames_after_close += r.frames_after_close;
        self.max_overshoot = self.max_overshoot.max(r.max_overshoot);
    }
}

fn outcomes(m: &BTreeMap<&'static str, u64>) -> String {
    m.iter().map(|(k, v)| format!(" {k}={v}")).collect()
}

/// The datagram faults of `seed` (without its cuts, which need a clock).
fn faults_of(seed: u64) -> Faults {
    let mut rng = Rng::keyed(seed, &[0xfa]);
    Faults {
        loss: if rng.percent(25) {
            0
        } else {
            1 + rng.below(20)
        },
        duplicate: if rng.percent(40) {
            0
        } else {
            1 + rng.below(10)
        },
        delay_min: rng.ms(1, 10),
        jitter: rng.ms(0, 40),
        cuts: Vec::new(),
    }
}

/// One seed: set up, run the faulty window, let every call end, heal,
/// probe, and check. The violations found, if any.
fn run_seed(seed: u64) -> Result<Report, Vec<String>> {
    let mut rng = Rng::keyed(seed, &[0x5e]);
    let nodes = 2 + rng.below(2) as usize;
    // Shorter than the default 5 s in most seeds, so that peers are declared
    // unreachable (and idempotent calls fail over) within the calls' deadlines.
    let peer_timeout = rng.ms(1_000, 5_000);
    let settings: Vec<Settings> = (0..nodes)
        .map(|i| {
            let mut s = Settings {
                listen: net::node_addr(i),
                ..Settings::default()
            };
            s.transport.peer_timeout = peer_timeout;
            // The name: the other nodes in a seeded order, often behind a dead address.
            let mut addrs: Vec<String> = (0..nodes).filter(|&j| j != i).map(World::addr).collect();
            if rng.percent(70) {
                addrs.insert(0, dead_addr().to_string());
            }
            if rng.percent(50) {
                addrs.reverse();
            }
            s.names.insert(SVC.into(), addrs);
            s
        })
        .collect();
    let mut world = World::new(seed, Net::new(seed, faults_of(seed)), settings);
    let start = world.start;
    let window_ms = FAULT_WINDOW.as_millis() as u64;

    let mut cuts = Vec::new();
    for _ in 0..rng.below(4) {
        let a = rng.below(nodes as u64) as usize;
        let b = (a + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
        let from = start + rng.ms(0, window_ms - 500);
        let until = (from + rng.ms(100, 4_000)).min(start + FAULT_WINDOW);
        cuts.push(Cut {
            a,
            b,
            one_way: rng.percent(30),
            from,
            until,
        });
    }
    world.net.faults.cuts = cuts;
    if rng.percent(30) {
        let node = rng.below(nodes as u64) as usize;
        let at = start + rng.ms(300, window_ms - 1_500);
        world.at(at, Action::Crash(node));
        world.at(at + rng.ms(0, 1_500), Action::Restart(node));
    }
    for app in 0..world.apps.len() {
        if rng.percent(20) {
            let at = start + rng.ms(0, window_ms);
            world.at(at, Action::Disconnect(app));
            world.at(at + rng.ms(0, 800), Action::Connect(app));
        }
    }
    for app in world.callers() {
        let me = world.apps[app].node;
        for _ in 0..10 + rng.below(21) {
            let at = start + rng.ms(0, window_ms);
            let plan = plan_call(&mut rng, me, nodes);
            world.at(at, Action::Call(app, plan));
        }
    }

    world.run_until(start + FAULT_WINDOW);
    let settle_end = world.now + SETTLE_MAX;
    while !(world.actions_left() == 0
        && world.all_up()
        && !world
            .oracle
            .calls
            .keys()
            .any(|&n| world.oracle.is_pending(n)))
    {
        if world.now >= settle_end {
            break;
        }
        let next = world.now + Duration::from_millis(250);
        world.run_until(next);
    }
    let mut problems = Vec::new();
    if !world.all_up() {
        problems.push(format!(
            "after {:?} not every daemon and app is back",
            world.elapsed()
        ));
    } else {
        let quiet = world.now + QUIET;
        world.run_until(quiet);
        // After healing: every caller reaches every daemon, its own included.
        let probes_from = world.now;
        for app in world.callers() {
            let me = world.apps[app].node;
            for j in 0..nodes {
                let put = CallPlan {
                    kind: Kind::Probe,
                    target: World::addr(j),
                    function: PUT,
                    idempotent: false,
                    deadline_ms: Some(PROBE_DEADLINE_MS),
                    cancel_after: None,
                };
                let ping = CallPlan {
                    function: "rpcd.ping",
                    ..put.clone()
                };
                world.at(probes_from, Action::Call(app, put));
                if j != me {
                    world.at(probes_from, Action::Call(app, ping));
                }
            }
        }
        let probes_end = probes_from + Duration::from_millis(PROBE_DEADLINE_MS + 1_000);
        world.run_until(probes_from);
        while world.now < probes_end
            && world
                .oracle
                .calls
                .keys()
                .any(|&n| world.oracle.is_pending(n))
        {
            let next = world.now + Duration::from_millis(250);
            world.run_until(next);
        }
    }
    world.oracle.check(start);
    problems.append(&mut world.oracle.violations);
    if !problems.is_empty() {
        return Err(problems);
    }
    let cuts = world.net.faults.cuts.len() as u64;
    Ok(Report {
        nodes,
        calls: world.oracle.calls.len() as u64,
        executions: world.oracle.execs.values().map(|e| e.len() as u64).sum(),
        outcomes: world.oracle.outcome_counts(),
        net: world.net.counts,
        cuts,
        injected: world.injected,
        reruns: world.oracle.reruns,
        definite_after_failover: world.oracle.definite_after_failover,
        frames_after_close: world.oracle.frames_after_close,
        max_overshoot: world.oracle.max_overshoot,
    })
}

/// One call of a caller on node `me`: what, to whom, how long, cancelled or not.
fn plan_call(rng: &mut Rng, me: usize, nodes: usize) -> CallPlan {
    let other = (me + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
    let deadline_ms = Some(rng.below(8_000) + 50);
    let mut plan = CallPlan {
        kind: Kind::Put,
        target: World::addr(other),
        function: PUT,
        idempotent: false,
        deadline_ms,
        cancel_after: None,
    };
    match rng.below(100) {
        0..=49 => {}
        50..=59 => {
            plan.kind = Kind::LocalPut;
            plan.target = World::addr(me);
        }
        60..=74 => {
            plan.kind = Kind::NamedGet;
            plan.target = SVC.into();
            plan.function = GET;
            plan.idempotent = true;
        }
        75..=82 => {
            plan.kind = Kind::Unknown;
            plan.function = "kv.nosuch";
        }
        83..=87 => {
            plan.kind = Kind::ZeroDeadline;
            plan.deadline_ms = Some(0);
        }
        88..=92 => plan.deadline_ms = None,
        _ => {
            plan.kind = Kind::Ping;
            plan.function = "rpcd.ping";
        }
    }
    if plan.kind != Kind::ZeroDeadline && rng.percent(10) {
        let budget = plan.deadline_ms.unwrap_or(10_000);
        plan.cancel_after = Some(Duration::from_millis(rng.below(budget)));
    }
    plan
}
