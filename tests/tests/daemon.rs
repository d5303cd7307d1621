//! Two real `rpcd` processes on loopback, apps speaking the real socket
//! protocol through `rpcd-client`'s low-level connection.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rpcd_client::conn::{CallOptions, RequestError};
use rpcd_client::ipc::{ErrorCode, Outcome};
use rpcd_tests::{tempdir, wait_until, Daemon, Faults, Relay, Serving};

fn opts(deadline_ms: u64) -> CallOptions {
    CallOptions::new(Some(Duration::from_millis(deadline_ms)), false)
}

fn code(e: &RequestError) -> Option<ErrorCode> {
    match e {
        RequestError::Remote { code, .. } => Some(*code),
        _ => None,
    }
}

/// Small and multi-megabyte arguments cross two daemons intact, both to a
/// built-in and to a registered function.
#[test]
fn round_trips_small_and_multi_megabyte_arguments() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let server = Arc::new(b.connect("server"));
    let _t = Serving::start(server.clone(), "test.reverse", |mut v| {
        v.reverse();
        Outcome::Ok(v)
    });
    let client = a.connect("client");
    let target = b.udp.to_string();
    assert_eq!(
        client
            .call(&target, "rpcd.echo", b"hello".to_vec(), opts(5000))
            .unwrap(),
        b"hello"
    );
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let back = client
        .call(&target, "rpcd.echo", big.clone(), opts(20_000))
        .unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back == big, "3 MiB echo corrupted");
    let rev = client
        .call(&target, "test.reverse", big.clone(), opts(20_000))
        .unwrap();
    let mut expect = big;
    expect.reverse();
    assert!(rev == expect, "3 MiB reverse corrupted");
    // Empty arguments are fine too.
    assert_eq!(
        client
            .call(&target, "rpcd.echo", Vec::new(), opts(5000))
            .unwrap(),
        Vec::<u8>::new()
    );
}

/// Many calls in flight on one connection from many threads: every reply
/// matches its own call.
#[test]
fn concurrent_calls_on_one_connection_are_matched() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let client = Arc::new(a.connect("client"));
    let target = b.udp.to_string();
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let client = client.clone();
            let target = target.clone();
            thread::spawn(move || {
                for i in 0..200u32 {
                    let payload = format!("thread {t} call {i} {}", "x".repeat((i % 50) as usize));
                    let r = client
                        .call(
                            &target,
                            "rpcd.echo",
                            payload.clone().into_bytes(),
                            opts(10_000),
                        )
                        .unwrap();
                    assert_eq!(r, payload.as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Two daemons with `faults` between them (a seeded relay), a side-effect
/// counter served on B, and `threads` × `per_thread` calls from A. Asserts
/// that every call succeeds, that every success saw a distinct execution and
/// that executions == successes; returns the daemons and the relay for
/// further checks.
fn counter_calls_through_relay(
    faults: Faults,
    seed: u64,
    threads: usize,
    per_thread: usize,
) -> (tempfile::TempDir, Daemon, Daemon, Relay) {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let relay = Relay::start(b.udp, faults, seed);
    let counter = Arc::new(AtomicU64::new(0));
    let c2 = counter.clone();
    let server = Arc::new(b.connect("server"));
    let _t = Serving::start(server, "counter.incr", move |_| {
        let v = c2.fetch_add(1, Ordering::SeqCst) + 1;
        Outcome::Ok(v.to_be_bytes().to_vec())
    });
    let client = Arc::new(a.connect("client"));
    let target = relay.front.to_string();
    let seen = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let callers: Vec<_> = (0..threads)
        .map(|_| {
            let (client, target, seen) = (client.clone(), target.clone(), seen.clone());
            thread::spawn(move || {
                for _ in 0..per_thread {
                    let r = client
                        .call(&target, "counter.incr", Vec::new(), opts(20_000))
                        .expect("a faulty path must not fail a call with a 20 s deadline");
                    let v = u64::from_be_bytes(r.try_into().expect("8 bytes"));
                    assert!(
                        seen.lock().unwrap().insert(v),
                        "execution {v} answered twice"
                    );
                }
            })
        })
        .collect();
    for t in callers {
        t.join().unwrap();
    }
    let calls = (threads * per_thread) as u64;
    assert_eq!(seen.lock().unwrap().len() as u64, calls);
    assert_eq!(
        counter.load(Ordering::SeqCst),
        calls,
        "executions != successes"
    );
    (dir, a, b, relay)
}

/// At-most-once under loss, duplication and reordering: a side-effect
/// counter on B equals the number of successful calls, and every success
/// saw a distinct execution.
#[test]
fn at_most_once_through_a_lossy_relay() {
    let faults = Faults {
        loss: 0.10,
        duplicate: 0.05,
        reorder: 0.05,
        ..Faults::default()
    };
    let (_dir, a, _b, relay) = counter_calls_through_relay(faults, 0x5eed, 4, 150);
    let dropped = relay.stats.dropped.load(Ordering::Relaxed);
    let duplicated = relay.stats.duplicated.load(Ordering::Relaxed);
    assert!(
        dropped > 0 && duplicated > 0,
        "the relay injected no faults"
    );
    let stats = a.connect("stats").stats().unwrap();
    assert!(
        stats.totals.retransmissions > 0,
        "loss caused no retransmission"
    );
    // The loss-recovery counters, through the socket: every retransmission
    // is accounted for by loss detection, a probe or a redundant copy, and a
    // detected loss is a congestion event.
    let t = &stats.totals;
    assert!(
        t.fast_retransmissions + t.probes + t.redundant_copies >= t.retransmissions,
        "{t:?}"
    );
    assert!(
        t.fast_retransmissions > 0 && t.congestion_events > 0,
        "10 % loss: losses detected, the window reduced: {t:?}"
    );
    let peer_sum: u64 = stats
        .peers
        .iter()
        .map(|p| p.counters.congestion_events)
        .sum();
    assert_eq!(peer_sum, t.congestion_events, "totals sum the peers");
}

/// B is killed and restarted on the same address: calls in flight end
/// "peer restarted" soon after the restart (well before their 30 s deadline);
/// later calls succeed without restarting A.
#[test]
fn peer_restart_fails_in_flight_calls_then_recovers() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let mut b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let server = Arc::new(b.connect("server"));
    server.register("test.hang").unwrap();
    let client = Arc::new(a.connect("client"));
    let target = b.udp.to_string();
    // Wait until the request reached the serving app, so it is in flight.
    let caller = {
        let (client, target) = (client.clone(), target.clone());
        thread::spawn(move || client.call(&target, "test.hang", Vec::new(), opts(30_000)))
    };
    let inv = server
        .next_invocation(Some(Duration::from_secs(5)))
        .expect("invocation reached the app");
    assert_eq!(inv.function, "test.hang");
    // From the kill: the restart itself (up to 20 s on a loaded machine) is inside the
    // bound, which is why the deadline is 30 s and the bound well below it.
    let killed = Instant::now();
    b.restart_after_kill(dir.path(), "b");
    let err = caller.join().unwrap().expect_err("the call cannot succeed");
    let took = killed.elapsed();
    assert_eq!(code(&err), Some(ErrorCode::PeerRestarted), "{err:?}");
    assert!(
        took < Duration::from_secs(20),
        "peer_restarted {took:?} after the kill: waited for something else"
    );
    assert_eq!(
        client
            .call(&target, "rpcd.echo", b"again".to_vec(), opts(5000))
            .unwrap(),
        b"again"
    );
}

/// The app serving a function disconnects mid-call: the caller gets
/// "server app gone" at once, and the name is free again.
#[test]
fn serving_app_gone_mid_call() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let server = b.connect("server");
    server.register("test.vanish").unwrap();
    let client = Arc::new(a.connect("client"));
    let target = b.udp.to_string();
    let caller = {
        let (client, target) = (client.clone(), target.clone());
        thread::spawn(move || client.call(&target, "test.vanish", Vec::new(), opts(10_000)))
    };
    server
        .next_invocation(Some(Duration::from_secs(5)))
        .expect("invocation reached the app");
    let t = Instant::now();
    drop(server);
    let err = caller.join().unwrap().expect_err("the app is gone");
    assert_eq!(code(&err), Some(ErrorCode::ServerAppGone), "{err:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let again = b.connect("server2");
    again
        .register("test.vanish")
        .expect("the name was released");
}

/// A hung app: the caller gets "deadline exceeded" at its deadline, the app
/// is told (a `cancel` frame), and its late result is dropped and counted.
#[test]
fn deadline_exceeded_when_the_app_hangs() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let server = b.connect("server");
    server.register("test.hang").unwrap();
    let client = Arc::new(a.connect("client"));
    let target = b.udp.to_string();
    let t = Instant::now();
    let caller = {
        let (client, target) = (client.clone(), target.clone());
        thread::spawn(move || client.call(&target, "test.hang", Vec::new(), opts(300)))
    };
    // The app takes the invocation and hangs on it.
    let inv = server
        .next_invocation(Some(Duration::from_secs(5)))
        .expect("the invocation reached the app");
    let err = caller.join().unwrap().expect_err("nobody answers");
    assert_eq!(code(&err), Some(ErrorCode::DeadlineExceeded), "{err:?}");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(
        wait_until(Duration::from_secs(5), || inv.is_cancelled()),
        "the hung app is told its caller gave up"
    );
    // The hung invocation's late result is dropped, not delivered anywhere.
    server
        .send_result(inv.invocation, Outcome::Ok(vec![1]))
        .unwrap();
    let stats_b = b.connect("stats");
    assert!(
        wait_until(Duration::from_secs(5), || stats_b
            .stats()
            .is_ok_and(|s| s.late_results == 1)),
        "the late result was not counted"
    );
    client
        .call(&target, "rpcd.ping", Vec::new(), opts(5000))
        .expect("the daemon still serves after a late result");
}

/// Unknown functions, bad targets and oversize arguments get typed errors.
#[test]
fn typed_errors_for_bad_calls() {
    let dir = tempdir();
    let a = Daemon::start(
        dir.path(),
        "a",
        "127.0.0.1:0",
        Some("[transport]\nmessage_max = 100000\npayload_max_loopback = 0\nreassembly_bytes_max = 200000\nsend_queue_bytes_max = 200000\n"),
    );
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let client = a.connect("client");
    let target = b.udp.to_string();
    let err = client
        .call(&target, "no.such", Vec::new(), opts(5000))
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::UnknownFunction), "{err:?}");
    let err = client
        .call("not a target", "rpcd.echo", Vec::new(), opts(5000))
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::BadRequest), "{err:?}");
    let err = client
        .call(&target, "rpcd.echo", vec![0; 200_000], opts(5000))
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::MessageTooLarge), "{err:?}");
    // A name owned by a live connection cannot be taken.
    let owner = b.connect("owner");
    owner.register("dup.name").unwrap();
    let thief = b.connect("thief");
    let err = thief.register("dup.name").unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::NameTaken), "{err:?}");
}

/// A call to the daemon's own address, in every spelling of it, is served
/// without any UDP.
#[test]
fn call_to_own_address_short_circuits() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let server = Arc::new(a.connect("server"));
    let _t = Serving::start(server, "test.double", |v| {
        Outcome::Ok(v.iter().flat_map(|&b| [b, b]).collect())
    });
    let client = a.connect("client");
    let port = a.udp.port();
    let spellings = [
        a.udp.to_string(),
        format!("0.0.0.0:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("localhost:{port}"),
    ];
    for me in &spellings {
        assert_eq!(
            client
                .call(me, "test.double", vec![1, 2], opts(5000))
                .unwrap_or_else(|e| panic!("{me}: {e}")),
            vec![1, 1, 2, 2],
            "{me}"
        );
        assert_eq!(
            client.call(me, "rpcd.echo", vec![7], opts(5000)).unwrap(),
            vec![7],
            "{me}"
        );
    }
    let stats = client.stats().unwrap();
    assert_eq!(stats.totals.datagrams_sent, 0, "a local call used UDP");
    assert!(stats.peers.is_empty());
    assert_eq!(stats.calls.get("ok"), Some(&(2 * spellings.len() as u64)));
}

/// Garbage datagrams at B's UDP port and garbage frames on B's socket while
/// good calls run: the good calls succeed, the daemon stays up, and the
/// garbage is counted.
#[test]
fn garbage_does_not_disturb_good_calls() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let mut b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let client = Arc::new(a.connect("client"));
    let target = b.udp.to_string();
    let good = {
        let (client, target) = (client.clone(), target.clone());
        thread::spawn(move || {
            for i in 0..200u32 {
                let r = client
                    .call(&target, "rpcd.echo", i.to_be_bytes().to_vec(), opts(10_000))
                    .unwrap();
                assert_eq!(r, i.to_be_bytes());
            }
        })
    };
    // Datagram garbage: empty, short, wrong magic, right magic with a bad
    // CRC, and oversize (65,000 bytes: within the read buffer, so it is parsed
    // and refused like the rest). Sent in batches, each waited for until B has
    // counted it, so no burst overflows B's receive buffer and every datagram
    // must be counted exactly once: 906 malformed, 300 corrupt.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    // A bundle (wire v2: "RD", version 2, one datagram) whose one 96-byte
    // datagram has the right magic and version and a zero CRC.
    let mut bad_crc = b"RD\x02\x01".to_vec();
    bad_crc.extend_from_slice(&[0u8; 96]);
    bad_crc[4..8].copy_from_slice(b"RD\x02\x01");
    let stats_conn = b.connect("stats");
    let (mut malformed, mut corrupt) = (0u64, 0u64);
    for batch in 0..10u32 {
        for i in batch * 30..(batch + 1) * 30 {
            junk.send_to(&[], b.udp).unwrap();
            junk.send_to(&i.to_be_bytes(), b.udp).unwrap();
            junk.send_to(&[0xAB; 200], b.udp).unwrap();
            junk.send_to(&bad_crc, b.udp).unwrap();
            malformed += 3;
            corrupt += 1;
            if i % 50 == 0 {
                junk.send_to(&vec![0x55; 65_000], b.udp).unwrap();
                malformed += 1;
            }
        }
        let counted = wait_until(Duration::from_secs(10), || {
            let s = stats_conn.stats().unwrap();
            (s.malformed, s.corrupt) == (malformed, corrupt)
        });
        let s = stats_conn.stats().unwrap();
        assert!(
            counted,
            "after batch {batch}: malformed {} (sent {malformed}), corrupt {} (sent {corrupt})",
            s.malformed, s.corrupt
        );
    }
    assert_eq!((malformed, corrupt), (906, 300));
    // Socket garbage, each on its own connection: a huge length prefix,
    // bad MessagePack, a valid frame with trailing bytes.
    for garbage in [
        vec![0xff, 0xff, 0xff, 0xff],
        vec![0, 0, 0, 3, 0xc1, 0xc1, 0xc1],
        vec![0, 0, 0, 2, 0x80, 0x00],
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&b.socket).unwrap();
        use std::io::{Read, Write};
        s.write_all(&garbage).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        assert!(reply.len() > 4, "expected an error frame before close");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.contains("fatal"), "no fatal frame: {text}");
    }
    good.join().unwrap();
    assert!(b.alive(), "rpcd died");
    // Nothing else was counted meanwhile (the good calls and the socket garbage).
    let stats = b.connect("stats").stats().unwrap();
    assert_eq!((stats.malformed, stats.corrupt), (906, 300));
    assert!(b.alive(), "rpcd died");
}

/// Pending invocations per serving app are bounded: the next caller gets
/// `overloaded` at once instead of a queue.
#[test]
fn pending_invocations_per_app_are_bounded() {
    let dir = tempdir();
    let b = Daemon::start(
        dir.path(),
        "b",
        "127.0.0.1:0",
        Some("[limits]\ninvocations_per_app_max = 2\n"),
    );
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let server = b.connect("server");
    server.register("test.hang").unwrap();
    let target = b.udp.to_string();
    let client = Arc::new(a.connect("client"));
    let hung: Vec<_> = (0..2)
        .map(|_| {
            let (c, target) = (client.clone(), target.clone());
            thread::spawn(move || c.call(&target, "test.hang", Vec::new(), opts(30_000)))
        })
        .collect();
    for _ in 0..2 {
        server
            .next_invocation(Some(Duration::from_secs(5)))
            .unwrap();
    }
    // Refused at once: long before the 30 s deadline it would otherwise wait.
    let t = Instant::now();
    let err = client
        .call(&target, "test.hang", Vec::new(), opts(30_000))
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::Overloaded), "{err:?}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "queued instead of refused"
    );
    // The two pending calls end when their app goes away.
    drop(server);
    for h in hung {
        let e = h.join().unwrap().unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::ServerAppGone), "{e:?}");
    }
}

/// Calls in flight per connection are bounded.
#[test]
fn calls_per_connection_are_bounded() {
    let dir = tempdir();
    let a = Daemon::start(
        dir.path(),
        "a",
        "127.0.0.1:0",
        Some("[limits]\ncalls_per_connection_max = 3\n"),
    );
    let server = a.connect("server");
    server.register("test.hang").unwrap();
    let me = a.udp.to_string();
    let client = Arc::new(a.connect("client"));
    let hung: Vec<_> = (0..3)
        .map(|_| {
            let (c, me) = (client.clone(), me.clone());
            thread::spawn(move || c.call(&me, "test.hang", Vec::new(), opts(2000)))
        })
        .collect();
    for _ in 0..3 {
        server
            .next_invocation(Some(Duration::from_secs(5)))
            .unwrap();
    }
    let err = client
        .call(&me, "rpcd.ping", Vec::new(), opts(2000))
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::Overloaded), "{err:?}");
    // Another connection is unaffected.
    a.connect("other")
        .call(&me, "rpcd.ping", Vec::new(), opts(2000))
        .unwrap();
    for h in hung {
        assert!(h.join().unwrap().is_err());
    }
}

/// Connections are bounded: one over the limit is refused with an error.
#[test]
fn connections_are_bounded() {
    let dir = tempdir();
    let a = Daemon::start(
        dir.path(),
        "a",
        "127.0.0.1:0",
        Some("[limits]\nconnections_max = 2\n"),
    );
    let c1 = a.connect("one");
    let _c2 = a.connect("two");
    // Refused at once with `overloaded`, not by the handshake timing out (5 s).
    let t = Instant::now();
    let third = rpcd_client::conn::Connection::connect(&a.socket, "three");
    let took = t.elapsed();
    match third {
        Err(rpcd_client::conn::ConnectError::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::Overloaded, "{message}");
            assert!(message.contains("connections"), "{message}");
        }
        // The daemon sends its refusal and closes at once; when that close wins the
        // race with the hello, the library sees the pipe break before it reads the
        // refusal. Still a refusal, never a timeout.
        Err(rpcd_client::conn::ConnectError::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) => {}
        other => panic!("a third connection was not refused: {other:?}"),
    }
    assert!(took < Duration::from_secs(2), "refused only after {took:?}");
    drop(c1);
    assert!(wait_until(Duration::from_secs(5), || {
        rpcd_client::conn::Connection::connect(&a.socket, "again").is_ok()
    }));
}

/// A calling app that disconnects while waiting: its calls are cancelled
/// at the serving daemon too — the invocation's slot is free at once (with
/// one slot per app, the next caller is served, not refused `overloaded`),
/// the late result is dropped and counted, and nothing stays in flight.
#[test]
fn calling_app_disconnect_cancels_its_calls() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(
        dir.path(),
        "b",
        "127.0.0.1:0",
        Some("[limits]\ninvocations_per_app_max = 1\n"),
    );
    let server = b.connect("server");
    server.register("test.slow").unwrap();
    let target = b.udp.to_string();
    // The calling app speaks the protocol by hand so it can vanish mid-call.
    use rpcd_client::ipc::{encode_frame, ClientMsg, PROTOCOL_VERSION};
    use std::io::Write;
    let mut raw = std::os::unix::net::UnixStream::connect(&a.socket).unwrap();
    raw.write_all(&encode_frame(&ClientMsg::Hello {
        id: 1,
        version: PROTOCOL_VERSION,
        version_min: None,
        name: "vanishing".into(),
    }))
    .unwrap();
    raw.write_all(&encode_frame(&ClientMsg::Call {
        id: 2,
        target: target.clone(),
        function: "test.slow".into(),
        args: Vec::new().into(),
        deadline_ms: Some(10_000),
        idempotent: false,
        trace: false,
    }))
    .unwrap();
    let inv = server
        .next_invocation(Some(Duration::from_secs(5)))
        .unwrap();
    let t = Instant::now();
    drop(raw);
    assert!(
        wait_until(Duration::from_secs(5), || inv.is_cancelled()),
        "the serving app is told its caller is gone (a cancel frame)"
    );
    let watcher = a.connect("watcher");
    assert!(wait_until(Duration::from_secs(5), || {
        watcher
            .stats()
            .is_ok_and(|s| s.peers.iter().all(|p| p.calls_in_flight == 0))
    }));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the call lingered until its deadline"
    );
    // The serving daemon withdrew the invocation: its one slot serves the
    // next caller (before the fix it stayed taken until the 10 s deadline).
    let next = {
        let (watcher, target) = (Arc::new(watcher), target.clone());
        let w = watcher.clone();
        (
            watcher,
            thread::spawn(move || w.call(&target, "test.slow", vec![5], opts(5000))),
        )
    };
    let second = server
        .next_invocation(Some(Duration::from_secs(5)))
        .expect("the next caller is served, not refused");
    assert_ne!(second.invocation, inv.invocation);
    server
        .send_result(second.invocation, Outcome::Ok(vec![6]))
        .unwrap();
    assert_eq!(next.1.join().unwrap().unwrap(), vec![6]);
    // The late result goes nowhere and breaks nothing; it is counted.
    server
        .send_result(inv.invocation, Outcome::Ok(vec![9]))
        .unwrap();
    let stats_b = b.connect("stats");
    assert!(wait_until(Duration::from_secs(5), || stats_b
        .stats()
        .is_ok_and(|s| s.late_results == 1)));
    next.0
        .call(&target, "rpcd.ping", Vec::new(), opts(5000))
        .unwrap();
}

/// A slow reader that never drains its socket: the daemon's output buffer
/// for it is bounded, then that connection alone is closed.
#[test]
fn slow_reader_is_disconnected_others_unaffected() {
    use rpcd_client::ipc::{encode_frame, ClientMsg, PROTOCOL_VERSION};
    use std::io::{Read, Write};
    let dir = tempdir();
    let a = Daemon::start(
        dir.path(),
        "a",
        "127.0.0.1:0",
        Some("[limits]\nframe_max = 1048576\nconnection_output_max = 2097152\n"),
    );
    let me = a.udp.to_string();
    let mut raw = std::os::unix::net::UnixStream::connect(&a.socket).unwrap();
    raw.write_all(&encode_frame(&ClientMsg::Hello {
        id: 1,
        version: PROTOCOL_VERSION,
        version_min: None,
        name: "slow".into(),
    }))
    .unwrap();
    // Ask for far more reply bytes than the bound, and read none of them.
    let args = vec![7u8; 512 * 1024];
    raw.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    for id in 2..200u64 {
        let frame = encode_frame(&ClientMsg::Call {
            id,
            target: me.clone(),
            function: "rpcd.echo".into(),
            args: args.clone().into(),
            deadline_ms: Some(10_000),
            idempotent: false,
            trace: false,
        });
        if raw.write_all(&frame).is_err() {
            break; // the daemon already hung up on us
        }
    }
    // Another connection is served meanwhile.
    let other = a.connect("other");
    assert_eq!(
        other.call(&me, "rpcd.echo", vec![1], opts(5000)).unwrap(),
        vec![1]
    );
    // The slow connection was closed: draining it ends (EOF or reset) well
    // short of the ~100 MB it asked for.
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match raw.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(
        total < 8 * 1024 * 1024,
        "read {total} bytes: output was not bounded"
    );
    other
        .call(&me, "rpcd.ping", Vec::new(), opts(5000))
        .expect("the daemon still serves other connections");
}

/// Delay with jitter (which also reorders), truncation and loss through a
/// seeded userspace relay: every call succeeds exactly once, and the
/// truncated datagrams are dropped and counted by the receiving daemons.
#[test]
fn delay_jitter_and_truncation_through_a_relay() {
    let faults = Faults {
        loss: 0.03,
        delay: Duration::from_millis(2),
        jitter: Duration::from_millis(4),
        truncate: 0.05,
        ..Faults::default()
    };
    let (_dir, a, b, relay) = counter_calls_through_relay(faults, 0x7e1a, 4, 100);
    assert!(
        relay.stats.truncated.load(Ordering::Relaxed) > 0,
        "nothing truncated"
    );
    let dropped_bad = |s: rpcd_client::ipc::Stats| s.malformed + s.corrupt;
    let bad =
        dropped_bad(a.connect("s").stats().unwrap()) + dropped_bad(b.connect("s").stats().unwrap());
    assert!(bad > 0, "truncated datagrams were not counted");
}
