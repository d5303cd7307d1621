//! Fault tests on a real network: hosts are network namespaces (`rpcd_tests::netns`),
//! one `rpcd` per host, the at-most-once oracle's serving app (`fault_helper oracle`) on
//! the serving host, and faults made by the
//! kernel: random loss with `iptables -m statistic` (both directions and one), partitions
//! (drop everything, then heal), duplication (`nft dup`), corruption that passes UDP's
//! checksum (`nft` payload rewrite), daemons killed with SIGKILL and restarted on the same
//! address, serving apps killed mid-call, SIGTERM with calls in flight, a name with two
//! hosts of which one dies.
//!
//! The oracle is exact: every call sends a nonce of its own and the serving app logs
//! each execution by nonce before it replies. After the calls, whatever their outcomes,
//! no nonce ran twice, every `ok` ran exactly once and got its own nonce back, every
//! definite failure never ran, nothing ran that no call sent (`faultlib::verdict`); and
//! every daemon still answers `rpcd.ping`.
//!
//! The daemons run with keys (each host its own, every other host a configured peer), or
//! in plaintext with `RPCD_TEST_PLAINTEXT=1`: see `rpcd_tests::netns`. Every test holds
//! in both modes.
//!
//! Without root, `ip` or `iptables` these tests print why and pass as skipped, unless
//! `RPCD_REQUIRE_NETNS=1` (set by `.ci/run`), where a skip is a failure.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod faultlib;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use faultlib::{base_config, kv_put, record, run_calls, run_once, Calls, Oracle, ORACLE_FN};
use nix::sys::signal::Signal;
use rpcd_client::conn::{CallOptions, Connection};
use rpcd_client::ipc::{ErrorCode, Outcome};
use rpcd_tests::netns::{Direction, Net};
use rpcd_tests::{bin, ProcessGuard};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// Two hosts, `rpcd` on both with `config`, the oracle's serving app on B.
fn two_hosts(config: &str) -> Option<(Net, Oracle)> {
    let mut net = Net::start(2)?;
    net.start_daemon(A, config);
    net.start_daemon(B, config);
    let oracle = Oracle::start(&net, B);
    Some((net, oracle))
}

/// Every daemon in `hosts` runs, answers on its socket, and answers `rpcd.ping` from A.
fn all_up(net: &mut Net, hosts: &[usize]) {
    for &i in hosts {
        assert!(
            net.daemon_alive(i),
            "rpcd on host {i} died:\n{}",
            net.host(i).log_text()
        );
        net.connect(i, "ping").ping().unwrap();
        let from_a = net.connect(A, "ping-from-a");
        from_a
            .call(
                &net.host(i).target(),
                "rpcd.ping",
                Vec::new(),
                CallOptions::new(Some(Duration::from_secs(5)), true),
            )
            .unwrap_or_else(|e| panic!("rpcd.ping to host {i}: {e}"));
    }
}

/// 10 % loss both ways: 10,000 `oracle.run` calls from 32 callers on two connections all
/// succeed, each ran exactly once and nothing else ran.
#[test]
fn loss_10_percent_both_ways_10000_calls_all_succeed() {
    let Some((mut net, oracle)) = two_hosts(&base_config()) else {
        return;
    };
    net.loss(B, Direction::Both, 0.10);
    let conns = [net.connect(A, "caller-1"), net.connect(A, "caller-2")].map(Arc::new);
    let tally = run_calls(&Calls {
        conns: &conns,
        target: net.host(B).target(),
        callers: 32,
        calls: 10_000,
        deadline: Duration::from_secs(30),
        stop: None,
    });
    eprintln!("10% loss both ways: {}", tally.summary());
    tally.assert_all_ok();
    oracle.check(&tally.records);
    assert_eq!(oracle.total(), tally.ok(), "executions != successes");
    let stats = net.connect(A, "stats").stats().unwrap();
    // UDP datagrams (coalesced: several messages share one) both ways
    // through B's rules, 10 % of which were dropped.
    let udp = stats.totals.datagrams_sent + stats.totals.datagrams_received;
    let dropped = net.dropped(B);
    assert!(
        dropped * 20 > udp,
        "the loss rules dropped too little: {dropped} of about {udp}"
    );
    assert!(
        stats.totals.retransmissions > 0,
        "loss caused no retransmission"
    );
    net.heal(B);
    all_up(&mut net, &[A, B]);
}

/// 30 % loss both ways: every call succeeds or ends with a transport error within its
/// deadline (answered by the daemon, never by the library giving up); the oracle's
/// check holds.
#[test]
fn loss_30_percent_both_ways_every_call_ends_within_its_deadline() {
    let Some((mut net, oracle)) = two_hosts(&base_config()) else {
        return;
    };
    net.loss(B, Direction::Both, 0.30);
    let conn = [Arc::new(net.connect(A, "caller"))];
    let tally = run_calls(&Calls {
        conns: &conn,
        target: net.host(B).target(),
        callers: 16,
        calls: 320,
        deadline: Duration::from_secs(3),
        stop: None,
    });
    eprintln!("30% loss both ways: {}", tally.summary());
    tally.assert_within_deadline();
    tally.assert_codes(&["ok", "deadline_exceeded", "peer_unreachable"]);
    assert!(tally.ok() > 0, "nothing got through 30% loss");
    net.heal(B);
    oracle.check(&tally.records);
    all_up(&mut net, &[A, B]);
}

/// Loss in one direction only (requests lost, or replies lost), 1 % to 30 %: every call
/// succeeds and runs exactly once — lost replies are retransmitted from
/// the reply kept by B, never executed again.
#[test]
fn loss_one_direction_1_to_30_percent() {
    let Some((mut net, oracle)) = two_hosts(&base_config()) else {
        return;
    };
    let conn = [Arc::new(net.connect(A, "caller"))];
    let mut all = Vec::new();
    for (dir, p) in [
        (Direction::In, 0.01),
        (Direction::Out, 0.05),
        (Direction::In, 0.30),
        (Direction::Out, 0.30),
    ] {
        net.heal(B);
        net.loss(B, dir, p);
        let tally = run_calls(&Calls {
            conns: &conn,
            target: net.host(B).target(),
            callers: 16,
            calls: 500,
            deadline: Duration::from_secs(20),
            stop: None,
        });
        eprintln!("{:.0}% loss at B {dir:?}: {}", p * 100.0, tally.summary());
        tally.assert_all_ok();
        all.extend(tally.records);
        net.heal(B);
        oracle.check(&all);
        assert_eq!(oracle.total(), all.len(), "executions != successes");
    }
    all_up(&mut net, &[A, B]);
}

/// 2000 `oracle.run` calls from 16 callers at A to B over a link `damage` has
/// spoiled both ways: every call succeeds and runs exactly once,
/// then the link heals and both daemons answer. Returns each host's stats.
fn calls_over_a_damaged_link(
    damage: impl Fn(&mut Net, usize, usize),
    label: &str,
) -> Option<[rpcd_client::ipc::Stats; 2]> {
    let (mut net, oracle) = two_hosts(&base_config())?;
    damage(&mut net, A, B);
    damage(&mut net, B, A);
    let conn = [Arc::new(net.connect(A, "caller"))];
    let tally = run_calls(&Calls {
        conns: &conn,
        target: net.host(B).target(),
        callers: 16,
        calls: 2000,
        deadline: Duration::from_secs(10),
        stop: None,
    });
    eprintln!("{label}: {}", tally.summary());
    tally.assert_all_ok();
    oracle.check(&tally.records);
    assert_eq!(oracle.total(), 2000, "executions != successes");
    let stats = [A, B].map(|i| net.connect(i, "stats").stats().unwrap());
    net.heal(A);
    net.heal(B);
    all_up(&mut net, &[A, B]);
    Some(stats)
}

/// Duplication (nftables `dup to`, 10 % of the datagrams each way): duplicates are
/// dropped and counted, never delivered twice: every call succeeds and runs exactly
/// once. With keys the session's replay window drops the copies (`replayed`); in
/// plaintext the channel acknowledges them (`duplicates`).
#[test]
fn duplicated_datagrams_are_never_executed_twice() {
    let Some(stats) = calls_over_a_damaged_link(
        |net, from, to| net.duplicate(from, to, 0.10),
        "10% duplication each way",
    ) else {
        return;
    };
    let dups: u64 = stats
        .iter()
        .map(|s| match s.public_key {
            Some(_) => security(s, "replayed"),
            None => s.totals.duplicates,
        })
        .sum();
    assert!(dups > 0, "no duplicate was counted");
}

/// The authenticated layer's counter `name` in `stats` (0 when absent).
fn security(stats: &rpcd_client::ipc::Stats, name: &str) -> u64 {
    stats.security.get(name).copied().unwrap_or(0)
}

/// Corruption that passes UDP (a byte rewritten by nftables, UDP checksum zeroed) in 5 %
/// of the datagrams each way: the datagram is dropped and counted — with keys its
/// authentication tag fails (`auth_failed`), in plaintext CRC32C catches it (`corrupt`)
/// — and the retransmission delivers it; every call succeeds exactly once.
#[test]
fn corrupted_datagrams_are_dropped_and_counted() {
    let Some(stats) = calls_over_a_damaged_link(
        |net, from, to| net.corrupt(from, to, 0.05),
        "5% corruption each way",
    ) else {
        return;
    };
    let corrupt: Vec<u64> = stats
        .iter()
        .map(|s| match s.public_key {
            Some(_) => security(s, "auth_failed"),
            None => s.corrupt,
        })
        .collect();
    assert!(
        corrupt.iter().all(|&c| c > 0),
        "corrupt not counted: {corrupt:?}"
    );
}

/// A 2 s partition with 5 s deadlines: calls made during it succeed once it heals.
/// (The 2 s is below `peer_timeout_ms`, 5 s by default, so the peer is not declared
/// unreachable.)
#[test]
fn partition_shorter_than_the_deadline_calls_succeed_after_heal() {
    let Some((mut net, oracle)) = two_hosts(&base_config()) else {
        return;
    };
    let conn = [Arc::new(net.connect(A, "caller"))];
    // Warm up: the channel exists and has an RTT estimate.
    let warm = run_calls(&Calls {
        conns: &conn,
        target: net.host(B).target(),
        callers: 4,
        calls: 20,
        deadline: Duration::from_secs(5),
        stop: None,
    });
    warm.assert_all_ok();
    net.partition(B);
    let partitioned = Instant::now();
    let (tally, dropped) = thread::scope(|s| {
        let calls = s.spawn(|| {
            run_calls(&Calls {
                conns: &conn,
                target: net.host(B).target(),
                callers: 8,
                calls: 8,
                deadline: Duration::from_secs(5),
                stop: None,
            })
        });
        thread::sleep(Duration::from_secs(2).saturating_sub(partitioned.elapsed()));
        let dropped = net.dropped(B);
        net.heal(B);
        (calls.join().unwrap(), dropped)
    });
    eprintln!("2 s partition, 5 s deadlines: {}", tally.summary());
    tally.assert_all_ok();
    assert!(dropped > 0, "the partition dropped nothing");
    let mut all = warm.records;
    all.extend(tally.records);
    oracle.check(&all);
    assert_eq!(oracle.total(), 28);
    all_up(&mut net, &[A, B]);
}

/// A partition longer than the deadline: calls end `deadline_exceeded` within their
/// deadline, and the next calls after healing succeed. `peer_timeout_ms` is raised to
/// 10 s so the deadline (2 s) is what ends the calls, as the issue asks; the next test
/// covers the default, where the keepalive bound ends longer calls first.
#[test]
fn partition_longer_than_the_deadline_calls_end_deadline_exceeded() {
    let config = format!("{}\n[transport]\npeer_timeout_ms = 10000\n", base_config());
    let Some((mut net, oracle)) = two_hosts(&config) else {
        return;
    };
    let conn = [Arc::new(net.connect(A, "caller"))];
    let target = net.host(B).target();
    let mut all = ok_calls(&conn[0], &target, 1);
    net.partition(B);
    let tally = run_calls(&Calls {
        conns: &conn,
        target: target.clone(),
        callers: 8,
        calls: 16,
        deadline: Duration::from_secs(2),
        stop: None,
    });
    eprintln!("partition > deadline: {}", tally.summary());
    tally.assert_within_deadline();
    tally.assert_codes(&["deadline_exceeded"]);
    net.heal(B);
    // The next calls succeed at once (bounded: 50 calls, 5 s deadline each).
    all.extend(ok_calls(&conn[0], &target, 50));
    all.extend(tally.records);
    oracle.check(&all);
    // 1 + 50 succeeded; the 16 that ended deadline_exceeded never got through.
    assert_eq!(
        oracle.total(),
        51,
        "a request sent during the partition ran"
    );
    all_up(&mut net, &[A, B]);
}

/// With the default `peer_timeout_ms` (5 s) and 10 s deadlines, a 7 s partition ends
/// the calls `peer_unreachable` after the keepalive bound, within their deadline; after
/// healing the peer is usable again at once.
#[test]
fn partition_longer_than_the_peer_timeout_calls_end_peer_unreachable() {
    let Some((mut net, oracle)) = two_hosts(&base_config()) else {
        return;
    };
    let conn = [Arc::new(net.connect(A, "caller"))];
    let target = net.host(B).target();
    let mut all = ok_calls(&conn[0], &target, 1);
    net.partition(B);
    let started = Instant::now();
    let tally = run_calls(&Calls {
        conns: &conn,
        target: target.clone(),
        callers: 4,
        calls: 4,
        deadline: Duration::from_secs(10),
        stop: None,
    });
    eprintln!("partition > peer timeout: {}", tally.summary());
    tally.assert_within_deadline();
    tally.assert_codes(&["peer_unreachable"]);
    thread::sleep(Duration::from_secs(7).saturating_sub(started.elapsed()));
    net.heal(B);
    all.extend(ok_calls(&conn[0], &target, 20));
    all.extend(tally.records);
    oracle.check(&all);
    assert_eq!(
        oracle.total(),
        21,
        "a request sent during the partition ran"
    );
    all_up(&mut net, &[A, B]);
}

/// B's `rpcd` is killed with SIGKILL and restarted on the same address while calls run
/// (one of them held by a serving app, so it is surely in flight): in-flight calls end
/// `peer_restarted`, later calls succeed without restarting A, and the oracle's check
/// holds across the restart (the oracle's app reconnects and registers again).
#[test]
fn peer_rpcd_killed_and_restarted_in_flight_calls_end_peer_restarted() {
    let Some((mut net, oracle)) = two_hosts(&base_config()) else {
        return;
    };
    net.loss(B, Direction::Both, 0.05);
    let target = net.host(B).target();
    let hang = net.connect(B, "hang");
    hang.register("test.hang").unwrap();
    let a = Arc::new(net.connect(A, "caller"));
    let held = {
        let (a, target) = (a.clone(), target.clone());
        thread::spawn(move || a.call(&target, "test.hang", Vec::new(), opts(20_000, false)))
    };
    hang.next_invocation(Some(Duration::from_secs(10)))
        .expect("the held call reached B's app");
    let stop = AtomicBool::new(false);
    let conns = [a.clone()];
    let tally = thread::scope(|s| {
        let calls = s.spawn(|| {
            run_calls(&Calls {
                conns: &conns,
                target: target.clone(),
                callers: 8,
                calls: 100_000,
                deadline: Duration::from_secs(10),
                stop: Some(&stop),
            })
        });
        // Restart once calls are flowing, then let them run on until 50 more ran.
        assert!(
            rpcd_tests::wait_until(Duration::from_secs(20), || oracle.total() >= 50),
            "calls are not flowing"
        );
        net.restart_daemon(B);
        net.wait_registered(B, ORACLE_FN);
        let ran = oracle.total();
        let flowing =
            rpcd_tests::wait_until(Duration::from_secs(20), || oracle.total() >= ran + 50);
        stop.store(true, Ordering::Relaxed);
        assert!(flowing, "calls did not flow after the restart");
        calls.join().unwrap()
    });
    eprintln!("peer restart: {}", tally.summary());
    let held = held
        .join()
        .unwrap()
        .expect_err("the held call cannot succeed");
    assert_eq!(held.code(), Some(ErrorCode::PeerRestarted), "{held:?}");
    tally.assert_within_deadline();
    // unknown_function: after the restart, before the oracle's app registered again.
    tally.assert_codes(&["ok", "peer_restarted", "unknown_function"]);
    assert!(tally.ok() > 0);
    // Later calls succeed; A was never restarted.
    let after = run_calls(&Calls {
        conns: &conns,
        target: target.clone(),
        callers: 8,
        calls: 200,
        deadline: Duration::from_secs(10),
        stop: None,
    });
    after.assert_all_ok();
    net.heal(B);
    let mut both = tally;
    both.merge(after);
    oracle.check(&both.records);
    all_up(&mut net, &[A, B]);
}

/// The serving app is killed (SIGKILL) mid-call: a call it holds ends `server_app_gone`
/// at once (not at its deadline); the `oracle.run` callers end `ok`, `server_app_gone`,
/// or `unknown_function` once the name is released; a new oracle app serves again, and
/// the oracle's log, kept across both apps, shows no call ran twice.
#[test]
fn serving_app_killed_mid_call() {
    let Some((mut net, mut oracle)) = two_hosts(&base_config()) else {
        return;
    };
    let target = net.host(B).target();
    let mut hang_cmd = std::process::Command::new(bin("fault_helper"));
    hang_cmd
        .arg("hang")
        .arg(&net.host(B).socket)
        .arg("test.hang")
        .stdout(std::process::Stdio::piped());
    let mut hang_child = hang_cmd.spawn().unwrap();
    let mut hang_out = std::io::BufReader::new(hang_child.stdout.take().unwrap());
    let mut hang = ProcessGuard::new("hang", hang_child);
    net.wait_registered(B, "test.hang");
    let a = Arc::new(net.connect(A, "caller"));
    let held = {
        let (a, target) = (a.clone(), target.clone());
        thread::spawn(move || {
            let started = Instant::now();
            let r = a.call(&target, "test.hang", Vec::new(), opts(20_000, false));
            (r, started.elapsed())
        })
    };
    // The held call is in the app's hands once it says so ("registered", then one line
    // per invocation taken); the read ends when the helper does (bounded: 10 minutes).
    let mut lines = std::io::BufRead::lines(&mut hang_out);
    assert_eq!(lines.next().unwrap().unwrap(), "registered");
    assert_eq!(lines.next().unwrap().unwrap(), "invocation");
    hang.kill();
    let (r, took) = held.join().unwrap();
    let err = r.expect_err("the app is gone");
    assert_eq!(err.code(), Some(ErrorCode::ServerAppGone), "{err:?}");
    assert!(took < Duration::from_secs(20), "waited for the deadline");

    let stop = AtomicBool::new(false);
    let conns = [a.clone()];
    let tally = thread::scope(|s| {
        let calls = s.spawn(|| {
            run_calls(&Calls {
                conns: &conns,
                target: target.clone(),
                callers: 16,
                calls: 100_000,
                deadline: Duration::from_secs(10),
                stop: Some(&stop),
            })
        });
        // Kill the app once calls are flowing (mid-call: 16 callers keep it busy).
        let flowing = rpcd_tests::wait_until(Duration::from_secs(20), || oracle.total() >= 50);
        oracle.kill();
        // The name is released: a call from A now ends `unknown_function`.
        let released = rpcd_tests::wait_until(Duration::from_secs(10), || {
            matches!(
                run_once(&a, &target, Duration::from_secs(5)),
                (_, Err(e)) if e.code() == Some(ErrorCode::UnknownFunction)
            )
        });
        stop.store(true, Ordering::Relaxed);
        assert!(flowing, "calls are not flowing");
        assert!(released, "the name was not released");
        calls.join().unwrap()
    });
    eprintln!("oracle app killed: {}", tally.summary());
    tally.assert_within_deadline();
    tally.assert_codes(&["ok", "server_app_gone", "unknown_function"]);
    // A new app on the same log serves again.
    oracle.restart(&net);
    let after = run_calls(&Calls {
        conns: &conns,
        target,
        callers: 8,
        calls: 300,
        deadline: Duration::from_secs(10),
        stop: None,
    });
    after.assert_all_ok();
    let mut both = tally;
    both.merge(after);
    oracle.check(&both.records);
    all_up(&mut net, &[A, B]);
}

/// SIGTERM to B's `rpcd` with two calls held by B's app, after calls flowed and then a
/// quiet spell longer than `revalidate_after` (250 ms): B stops taking calls; the held
/// call its app answers after the SIGTERM reaches A's caller (not `peer_unreachable`
/// later), the other ends `shutting_down` after the grace (1 s here); calls A makes
/// meanwhile see typed outcomes within their deadlines; B removes its socket and exits 0.
/// A new B on the same address serves again (the oracle's app reconnects) and the
/// oracle's check holds over every call.
#[test]
fn sigterm_with_calls_in_flight() {
    let Some((mut net, oracle)) = two_hosts(&base_config()) else {
        return;
    };
    let target = net.host(B).target();
    let hang = net.connect(B, "hang");
    hang.register("test.hang").unwrap();
    let a = Arc::new(net.connect(A, "caller"));
    let hold = |arg: &'static [u8]| {
        let (a, target) = (a.clone(), target.clone());
        thread::spawn(move || a.call(&target, "test.hang", arg.to_vec(), opts(20_000, false)))
    };
    let answered = hold(b"answered");
    let first = hang
        .next_invocation(Some(Duration::from_secs(10)))
        .expect("the first held call reached B's app");
    let ignored = hold(b"ignored");
    let second = hang
        .next_invocation(Some(Duration::from_secs(10)))
        .expect("the second held call reached B's app");
    let keep = if first.args[..] == b"answered"[..] {
        first
    } else {
        second
    };
    let conns = [a.clone()];
    let calls = |calls, stop| Calls {
        conns: &conns,
        target: target.clone(),
        callers: 8,
        calls,
        deadline: Duration::from_secs(8),
        stop: Some(stop),
    };
    // Calls flow, then stop.
    let stop = AtomicBool::new(false);
    let mut tally = thread::scope(|s| {
        let running = s.spawn(|| run_calls(&calls(100_000, &stop)));
        let flowing = rpcd_tests::wait_until(Duration::from_secs(20), || oracle.total() >= 50);
        stop.store(true, Ordering::Relaxed);
        assert!(flowing, "calls are not flowing");
        running.join().unwrap()
    });
    tally.assert_all_ok();
    // The quiet spell is the condition under test: longer than revalidate_after, so
    // B's reply waits behind an epoch revalidation.
    thread::sleep(Duration::from_millis(400));
    net.signal_daemon(B, Signal::SIGTERM);
    // B is shutting down once it refuses a local call (no datagram to A).
    assert!(rpcd_tests::wait_until(Duration::from_secs(5), || {
        matches!(
            hang.call(&target, "rpcd.ping", Vec::new(), opts(2000, false)),
            Err(e) if e.code() == Some(ErrorCode::ShuttingDown)
        )
    }));
    hang.send_result(keep.invocation, Outcome::Ok(b"done".to_vec()))
        .unwrap();
    let reply = answered.join().unwrap();
    assert_eq!(
        reply.as_deref().ok(),
        Some(&b"done"[..]),
        "the reply sent after SIGTERM did not arrive: {reply:?}"
    );
    // Calls from A while B drains and exits (refused at once, so a few thousand).
    let stop = AtomicBool::new(false);
    let mut status = None;
    let during = thread::scope(|s| {
        let running = s.spawn(|| run_calls(&calls(5_000, &stop)));
        status = net.wait_daemon(B, Duration::from_secs(15));
        stop.store(true, Ordering::Relaxed);
        running.join().unwrap()
    });
    eprintln!("SIGTERM at B: {}", during.summary());
    let status = status.expect("rpcd exits after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        net.host(B).log_text()
    );
    assert!(!net.host(B).socket.exists(), "socket file left behind");
    let ignored = ignored
        .join()
        .unwrap()
        .expect_err("the ignored call cannot succeed");
    assert_eq!(ignored.code(), Some(ErrorCode::ShuttingDown), "{ignored:?}");
    during.assert_within_deadline();
    during.assert_codes(&[
        "ok",
        "shutting_down",
        "peer_unreachable",
        "deadline_exceeded",
    ]);
    tally.merge(during);
    // B again on the same address, after a silence longer than `revalidate_after`
    // (250 ms; the silence is the condition, not a synchronisation): A revalidates B's
    // epoch before sending, so even the first call to the new B succeeds. (Restarted
    // sooner, that call may end `peer_restarted`: the quick-restart test below.)
    thread::sleep(Duration::from_millis(400));
    net.start_daemon(B, &base_config());
    net.wait_registered(B, ORACLE_FN);
    let before = oracle.total();
    tally.records.extend(ok_calls(&a, &target, 20));
    assert_eq!(oracle.total(), before + 20);
    oracle.check(&tally.records);
    all_up(&mut net, &[A, B]);
}

/// B restarts after a quiet spell longer than `revalidate_after` (250 ms by default): A
/// probes B's epoch before sending, so the first call to the new B succeeds. With keys the
/// new B cannot read A's probe (its session died with the old B) and stays silent until A
/// starts a new handshake, at A's first send once B has been silent for `peer_timeout / 4`
/// (1.25 s): the call takes about 2 s instead of a round trip (printed).
#[test]
fn first_call_after_a_quiet_peer_restart_succeeds() {
    let Some((mut net, oracle)) = two_hosts(&base_config()) else {
        return;
    };
    let a = net.connect(A, "caller");
    let target = net.host(B).target();
    let mut all = ok_calls(&a, &target, 1);
    net.restart_daemon(B);
    net.wait_registered(B, ORACLE_FN);
    // The quiet spell is the condition under test, not a synchronisation.
    thread::sleep(Duration::from_millis(600));
    let first = ok_calls(&a, &target, 1);
    eprintln!("first call after a quiet restart: {:?}", first[0].took);
    all.extend(first);
    oracle.check(&all);
    assert_eq!(oracle.total(), 2);
}

/// B restarts within `revalidate_after` of its last datagram to A, with nothing in
/// flight. A cannot tell the restart from a quiet peer, so its next call goes out at once,
/// addressed to the old incarnation: the new B never runs it and answers with its epoch,
/// and the call ends `peer_restarted` (outcome unknown, by the documented semantics) or,
/// if the restart took longer than `revalidate_after`, succeeds. Either way the oracle
/// matches the outcome exactly (a `peer_restarted` call never ran: the new B refused it)
/// and the next call succeeds. With keys the new B answers only after A's new handshake
/// (see the test above), so the outcome comes after about 2 s.
#[test]
fn first_call_after_a_quick_peer_restart_is_never_run_twice() {
    let Some((mut net, oracle)) = two_hosts(&base_config()) else {
        return;
    };
    let a = net.connect(A, "caller");
    let target = net.host(B).target();
    let mut all = ok_calls(&a, &target, 1);
    net.restart_daemon(B);
    net.wait_registered(B, ORACLE_FN);
    let started = Instant::now();
    let (nonce, r) = run_once(&a, &target, Duration::from_secs(5));
    if let Err(e) = &r {
        assert_eq!(e.code(), Some(ErrorCode::PeerRestarted), "{e:?}");
    }
    let ok = r.is_ok();
    eprintln!(
        "first call after a quick restart: {} after {:?}",
        if ok { "ok" } else { "peer_restarted" },
        started.elapsed()
    );
    all.push(record(nonce, r, started.elapsed()));
    let next = ok_calls(&a, &target, 1);
    eprintln!("the call after it: {:?}", next[0].took);
    all.extend(next);
    oracle.check(&all);
    assert_eq!(oracle.total(), 2 + usize::from(ok), "outcome vs executions");
}

/// A name with two hosts (`[names] kv = [B, C]` at A), each serving `kv`; B's `rpcd` is
/// killed with SIGKILL while idempotent calls run: every call succeeds, first through B
/// and then through C.
#[test]
fn name_with_two_hosts_one_killed_idempotent_calls_keep_succeeding() {
    let Some(mut net) = Net::start(3) else {
        return;
    };
    let names = format!(
        "{}\n[names]\nkv = [\"{}\", \"{}\"]\n",
        base_config(),
        net.host(B).target(),
        net.host(C).target()
    );
    net.start_daemon(A, &names);
    net.start_daemon(B, &base_config());
    net.start_daemon(C, &base_config());
    let _kv_b = net.kv_server(B);
    let _kv_c = net.kv_server(C);
    for (i, who) in [(B, "b"), (C, "c")] {
        kv_put(&net.connect(i, "setup"), &net.host(i).target(), "who", who);
    }
    let a = Arc::new(net.connect(A, "caller"));
    let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (a, answers, failures, stop) =
                (a.clone(), answers.clone(), failures.clone(), stop.clone());
            thread::spawn(move || {
                // Bounded: at most 2000 calls per caller, 15 s deadline each.
                for _ in 0..2000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let started = Instant::now();
                    match get_idempotent(&a, "kv", "who") {
                        Ok(v) => answers.lock().unwrap().push(v),
                        Err(e) => {
                            eprintln!("failed after {:?}: {e}", started.elapsed());
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    // Kill B once it has answered (bounded by 30 s).
    let answered = rpcd_tests::wait_until(Duration::from_secs(30), || {
        answers.lock().unwrap().iter().filter(|v| *v == "b").count() >= 50
    });
    assert!(answered, "B never answered");
    net.kill_daemon(B);
    // Run until C has answered for a while (bounded by 30 s).
    let switched = rpcd_tests::wait_until(Duration::from_secs(30), || {
        answers.lock().unwrap().iter().filter(|v| *v == "c").count() >= 100
    });
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.join().unwrap();
    }
    let answers = answers.lock().unwrap();
    let from_b = answers.iter().filter(|v| *v == "b").count();
    let from_c = answers.iter().filter(|v| *v == "c").count();
    eprintln!("name failover: {from_b} answers from B, {from_c} from C");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "an idempotent call failed"
    );
    assert!(switched, "C never took over");
    assert!(from_b > 0, "B never answered before it was killed");
    all_up(&mut net, &[A, C]);
}

fn get_idempotent(
    conn: &Connection,
    target: &str,
    key: &str,
) -> Result<String, rpcd_client::conn::RequestError> {
    let args = rmp_serde::to_vec_named(&(key,)).unwrap();
    let reply = conn.call(target, "kv.get", args, opts(15_000, true))?;
    let v: Option<String> = rmp_serde::from_slice(&reply).unwrap();
    Ok(v.unwrap_or_default())
}

/// `n` calls of `oracle.run` one after the other, each of which must succeed (5 s
/// deadline each); their records.
fn ok_calls(conn: &Connection, target: &str, n: usize) -> Vec<faultlib::Record> {
    (0..n)
        .map(|_| {
            let started = Instant::now();
            let (nonce, r) = run_once(conn, target, Duration::from_secs(5));
            let r = r.unwrap_or_else(|e| panic!("call {nonce}: {e}"));
            record(nonce, Ok(r), started.elapsed())
        })
        .collect()
}

fn opts(deadline_ms: u64, idempotent: bool) -> CallOptions {
    CallOptions::new(Some(Duration::from_millis(deadline_ms)), idempotent)
}
