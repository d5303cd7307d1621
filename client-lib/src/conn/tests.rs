//! The connection against a fake daemon: requests and replies, invocations and their
//! cancellation, closing, the handshake.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::thread;
use std::time::{Duration, Instant};

use super::fake_daemon::{connected, FakeDaemon};
use super::*;
use crate::ipc::PROTOCOL_VERSION;

fn call_id(msg: &ClientMsg) -> (u64, String) {
    match msg {
        ClientMsg::Call { id, function, .. } => (*id, function.clone()),
        other => panic!("expected a call, got {other:?}"),
    }
}

#[test]
fn connection_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Connection>();
}

#[test]
fn handshake_reports_the_daemon() {
    let fake = FakeDaemon::start();
    let (conn, _peer) = connected(&fake);
    assert_eq!(
        conn.daemon(),
        &DaemonInfo {
            version: PROTOCOL_VERSION,
            daemon: "fake 0".into(),
            listen: "127.0.0.1:7000".into(),
            epoch: 42,
            limits: Some(fake_daemon::limits()),
        }
    );
    assert!(!conn.is_closed());
}

#[test]
fn concurrent_calls_answered_in_reverse_order_reach_their_callers() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    thread::scope(|s| {
        let first = s.spawn(|| conn.call("h:1", "first", vec![1], CallOptions::default()));
        let second = s.spawn(|| conn.call("h:1", "second", vec![2], CallOptions::default()));
        let a = call_id(&peer.recv());
        let b = call_id(&peer.recv());
        assert_ne!(a.0, b.0, "each request has its own id");
        for (id, function) in [b, a] {
            peer.send(&DaemonMsg::CallOk {
                id,
                data: function.into_bytes(),
                trace: None,
            });
        }
        assert_eq!(first.join().unwrap().unwrap(), b"first");
        assert_eq!(second.join().unwrap().unwrap(), b"second");
    });
}

#[test]
fn call_carries_deadline_and_flags() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    thread::scope(|s| {
        let call = s.spawn(|| {
            let opts = CallOptions {
                deadline: Some(Duration::from_micros(1500)),
                idempotent: true,
            };
            conn.call("svc", "f", vec![0x90], opts)
        });
        let ClientMsg::Call {
            id,
            target,
            function,
            args,
            deadline_ms,
            idempotent,
            ..
        } = peer.recv()
        else {
            panic!("expected a call");
        };
        assert_eq!(
            (
                target.as_str(),
                function.as_str(),
                &args[..],
                deadline_ms,
                idempotent
            ),
            ("svc", "f", &[0x90u8][..], Some(2), true)
        );
        peer.send(&DaemonMsg::CallOk {
            id,
            data: vec![],
            trace: None,
        });
        assert_eq!(call.join().unwrap().unwrap(), Vec::<u8>::new());
    });
}

#[test]
fn failed_frames_become_remote_errors_with_their_code() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    thread::scope(|s| {
        let call = s.spawn(|| conn.call("h:1", "nope", vec![], CallOptions::default()));
        let (id, _) = call_id(&peer.recv());
        peer.send(&DaemonMsg::Failed {
            id,
            code: ErrorCode::UnknownFunction,
            message: "no function nope on h:1".into(),
            trace: None,
        });
        let err = call.join().unwrap().unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownFunction));
        assert!(!err.outcome_unknown());
        assert_eq!(err.to_string(), "unknown_function: no function nope on h:1");

        let register = s.spawn(|| conn.register("taken"));
        let ClientMsg::Register { id, function, .. } = peer.recv() else {
            panic!("expected register");
        };
        assert_eq!(function, "taken");
        peer.send(&DaemonMsg::Failed {
            id,
            code: ErrorCode::NameTaken,
            message: "taken is owned by another app".into(),
            trace: None,
        });
        let err = register.join().unwrap().unwrap_err();
        assert!(matches!(
            err,
            RequestError::Remote {
                code: ErrorCode::NameTaken,
                ..
            }
        ));
    });
    // The connection is still usable after a failed request.
    assert!(!conn.is_closed());
}

#[test]
fn list_stats_ping_register_unregister_round_trip() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    thread::scope(|s| {
        let app = s.spawn(|| {
            conn.ping().unwrap();
            assert_eq!(conn.list().unwrap(), ["rpcd.ping"]);
            assert_eq!(conn.stats().unwrap().uptime_ms, 5);
            conn.register("f").unwrap();
            conn.unregister("f").unwrap();
        });
        for _ in 0..5 {
            let reply = match peer.recv() {
                ClientMsg::Ping { id } => DaemonMsg::Pong { id },
                ClientMsg::List { id } => DaemonMsg::List {
                    id,
                    functions: vec!["rpcd.ping".into()],
                },
                ClientMsg::Stats { id } => DaemonMsg::Stats {
                    id,
                    stats: Stats {
                        uptime_ms: 5,
                        ..Stats::default()
                    },
                },
                ClientMsg::Register { id, .. } | ClientMsg::Unregister { id, .. } => {
                    DaemonMsg::Done { id }
                }
                other => panic!("unexpected {other:?}"),
            };
            peer.send(&reply);
        }
        app.join().unwrap();
    });
}

#[test]
fn wrong_reply_type_is_a_protocol_error() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    thread::scope(|s| {
        let ping = s.spawn(|| conn.ping());
        let ClientMsg::Ping { id } = peer.recv() else {
            panic!("expected ping");
        };
        peer.send(&DaemonMsg::Done { id });
        let err = ping.join().unwrap().unwrap_err();
        assert_eq!(err.to_string(), "protocol error: expected pong, got done");
    });
}

#[test]
fn daemon_closing_mid_call_fails_every_waiting_call_promptly() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    thread::scope(|s| {
        let calls: Vec<_> = (0..3)
            .map(|_| s.spawn(|| conn.call("h:1", "f", vec![], CallOptions::default())))
            .collect();
        for _ in 0..3 {
            peer.recv();
        }
        let closed_at = Instant::now();
        drop(peer);
        for call in calls {
            assert!(matches!(
                call.join().unwrap(),
                Err(RequestError::Disconnected)
            ));
        }
        assert!(closed_at.elapsed() < Duration::from_secs(1));
    });
    assert!(conn.is_closed());
    // Later requests fail at once too.
    assert!(matches!(conn.ping(), Err(RequestError::Disconnected)));
    assert!(conn.next_invocation(None).is_none());
}

#[test]
fn fatal_frame_fails_waiting_calls_with_its_code() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    thread::scope(|s| {
        let call = s.spawn(|| conn.call("h:1", "f", vec![], CallOptions::default()));
        peer.recv();
        peer.send(&DaemonMsg::Fatal {
            code: ErrorCode::ProtocolError,
            message: "trailing 3 bytes after the message".into(),
        });
        let err = call.join().unwrap().unwrap_err();
        assert!(matches!(
            err,
            RequestError::Fatal {
                code: ErrorCode::ProtocolError,
                ..
            }
        ));
    });
    assert!(matches!(conn.ping(), Err(RequestError::Fatal { .. })));
}

#[test]
fn garbage_from_the_daemon_closes_with_a_protocol_error() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    thread::scope(|s| {
        let call = s.spawn(|| conn.call("h:1", "f", vec![], CallOptions::default()));
        peer.recv();
        peer.stream.write_all(&[0, 0, 0, 1, 0xc1]).unwrap();
        let err = call.join().unwrap().unwrap_err();
        assert!(matches!(err, RequestError::Protocol(_)), "{err}");
        assert!(err.to_string().contains("invalid MessagePack"), "{err}");
    });
}

#[test]
fn lost_reply_ends_at_deadline_plus_grace() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    let started = Instant::now();
    let opts = CallOptions {
        deadline: Some(Duration::from_millis(10)),
        idempotent: false,
    };
    thread::scope(|s| {
        let call = s.spawn(|| conn.call("h:1", "f", vec![], opts));
        let (id, _) = call_id(&peer.recv());
        let err = call.join().unwrap().unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::DeadlineExceeded));
        assert!(err.outcome_unknown());
        // A reply after the caller gave up is dropped, and the connection still works.
        peer.send(&DaemonMsg::CallOk {
            id,
            data: vec![],
            trace: None,
        });
        let ping = s.spawn(|| conn.ping());
        let ClientMsg::Ping { id } = peer.recv() else {
            panic!("expected ping");
        };
        peer.send(&DaemonMsg::Pong { id });
        ping.join().unwrap().unwrap();
    });
    let waited = started.elapsed();
    assert!(
        waited >= REPLY_GRACE && waited < REPLY_GRACE * 3,
        "{waited:?}"
    );
}

#[test]
fn oversized_args_are_refused_before_sending() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    let err = conn
        .call(
            "h:1",
            "f",
            vec![0; FRAME_MAX_DEFAULT],
            CallOptions::default(),
        )
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge));
    // Nothing was written: the next frame the daemon sees is the ping.
    thread::scope(|s| {
        let ping = s.spawn(|| conn.ping());
        assert!(matches!(peer.recv(), ClientMsg::Ping { .. }));
        drop(peer);
        let _ = ping.join().unwrap();
    });
}

/// `submit` sends what `call` sends, through the same step: large arguments arrive whole
/// (written around the app's buffer), and arguments over the frame maximum are refused
/// before anything is written.
#[test]
fn submit_sends_large_arguments_whole_and_refuses_oversized_ones_unsent() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    let big: Vec<u8> = (0..2 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
    let opts = CallOptions::new(Some(Duration::from_secs(9)), true);
    // Written by another thread: the socket holds less than the frame.
    let (pending, msg) = thread::scope(|s| {
        let submitting = s.spawn(|| conn.submit("svc", "f", big.clone(), opts));
        let msg = peer.recv();
        (submitting.join().unwrap().unwrap(), msg)
    });
    let ClientMsg::Call {
        id,
        target,
        function,
        args,
        deadline_ms,
        idempotent,
        trace,
    } = msg
    else {
        panic!("expected a call");
    };
    assert_eq!(id, pending.id());
    assert_eq!(
        (
            target.as_str(),
            function.as_str(),
            deadline_ms,
            idempotent,
            trace
        ),
        ("svc", "f", Some(9000), true, false)
    );
    assert!(args[..] == big[..], "the arguments whole");
    peer.send(&DaemonMsg::CallOk {
        id,
        data: b"ok".to_vec(),
        trace: None,
    });
    assert_eq!(pending.wait().unwrap(), b"ok");
    let err = conn
        .submit("h:1", "f", vec![0; FRAME_MAX_DEFAULT], opts)
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge), "{err}");
    thread::scope(|s| {
        let ping = s.spawn(|| conn.ping());
        assert!(matches!(peer.recv(), ClientMsg::Ping { .. }));
        drop(peer);
        let _ = ping.join().unwrap();
    });
}

/// The daemon's reported `frame_max` is the bound: a request over it fails locally,
/// before anything is written, instead of making the daemon close the connection.
#[test]
fn the_daemons_reported_frame_max_bounds_requests() {
    let fake = FakeDaemon::start();
    let path = fake.path.clone();
    let app = thread::spawn(move || Connection::connect(&path, "app"));
    let mut peer = fake.accept();
    let ClientMsg::Hello {
        id,
        version,
        version_min,
        ..
    } = peer.recv()
    else {
        panic!("expected hello");
    };
    assert_eq!((version, version_min), (PROTOCOL_VERSION, Some(1)));
    let mut hello_ok = fake_daemon::hello_ok(id);
    if let DaemonMsg::HelloOk { limits, .. } = &mut hello_ok {
        *limits = Some(crate::ipc::Limits {
            frame_max: 2048,
            ..crate::ipc::Limits::default()
        });
    }
    peer.send(&hello_ok);
    let conn = app.join().unwrap().unwrap();
    let err = conn
        .call("h:1", "f", vec![0; 4096], CallOptions::default())
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge), "{err}");
    thread::scope(|s| {
        let ping = s.spawn(|| conn.ping());
        assert!(matches!(peer.recv(), ClientMsg::Ping { .. }));
        drop(peer);
        let _ = ping.join().unwrap();
    });
}

/// A large result is written after its frame's head from the handler's buffer and
/// arrives as the frame serde would write; one over the frame maximum is replaced by an
/// application error, as before.
#[test]
fn a_large_result_arrives_whole_and_an_oversized_one_as_an_error() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 11).map(|i| (i % 253) as u8).collect();
    let got = thread::scope(|s| {
        let sending = s.spawn(|| conn.send_result(41, Outcome::Ok(big.clone())));
        let got = peer.recv();
        sending.join().unwrap().unwrap();
        got
    });
    assert!(
        got == ClientMsg::Result {
            invocation: 41,
            outcome: Outcome::Ok(big),
        },
        "the result whole"
    );
    let err = conn
        .send_result(42, Outcome::Ok(vec![0; FRAME_MAX_DEFAULT]))
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge), "{err}");
    let ClientMsg::Result {
        invocation: 42,
        outcome: Outcome::Error(message),
    } = peer.recv()
    else {
        panic!("expected the substitute error");
    };
    assert!(message.starts_with("message_too_large"), "{message}");
}

#[test]
fn invocations_are_queued_and_answered() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    assert!(conn
        .next_invocation(Some(Duration::from_millis(10)))
        .is_none());
    peer.send(&DaemonMsg::Invoke {
        invocation: 77,
        function: "echo".into(),
        args: vec![1, 2, 3].into(),
        caller: "10.0.0.1:7000".into(),
        peer: "db-1".into(),
        deadline_ms: 1000,
        credentials: None,
    });
    let work = conn
        .next_invocation(Some(Duration::from_secs(5)))
        .expect("an invocation");
    assert_eq!(
        (work.invocation, work.function.as_str(), &work.args[..]),
        (77, "echo", &[1u8, 2, 3][..])
    );
    assert_eq!(
        (work.caller.as_str(), work.peer.as_str()),
        ("10.0.0.1:7000", "db-1")
    );
    assert_eq!(work.identity(), crate::Identity::Peer("db-1"));
    assert!(work.deadline > Instant::now());
    conn.send_result(work.invocation, Outcome::Ok(work.args.to_vec()))
        .unwrap();
    assert_eq!(
        peer.recv(),
        ClientMsg::Result {
            invocation: 77,
            outcome: Outcome::Ok(vec![1, 2, 3])
        }
    );
}

fn invoke(invocation: u64) -> DaemonMsg {
    DaemonMsg::Invoke {
        invocation,
        function: "f".into(),
        args: vec![].into(),
        caller: "local".into(),
        peer: "local".into(),
        deadline_ms: 10_000,
        credentials: None,
    }
}

#[test]
fn cancel_reaches_a_taken_invocation_and_unknown_cancels_are_ignored() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    peer.send(&invoke(1));
    let work = conn.next_invocation(Some(Duration::from_secs(5))).unwrap();
    let copy = work.clone();
    assert!(!work.is_cancelled());
    // Cancels for invocations this app never had, or already answered, change nothing.
    peer.send(&DaemonMsg::Cancel { invocation: 999 });
    peer.send(&invoke(2));
    let answered = conn.next_invocation(Some(Duration::from_secs(5))).unwrap();
    conn.send_result(2, Outcome::Ok(vec![])).unwrap();
    assert!(matches!(
        peer.recv(),
        ClientMsg::Result { invocation: 2, .. }
    ));
    peer.send(&DaemonMsg::Cancel { invocation: 2 });
    peer.send(&DaemonMsg::Cancel { invocation: 1 });
    let started = Instant::now();
    while !work.is_cancelled() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "cancel not seen"
        );
        thread::sleep(Duration::from_millis(1));
    }
    assert!(copy.is_cancelled(), "clones share the flag");
    assert!(!answered.is_cancelled());
    assert!(!conn.is_closed());
}

#[test]
fn invocation_cancelled_while_queued_is_handed_out_marked_cancelled() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    thread::scope(|s| {
        // The pong comes after the other frames, so once the ping returns the reader has
        // routed them all: 1 sits in the queue, cancelled.
        let ping = s.spawn(|| conn.ping());
        let ClientMsg::Ping { id } = peer.recv() else {
            panic!("expected ping");
        };
        peer.send(&invoke(1));
        peer.send(&DaemonMsg::Cancel { invocation: 1 });
        peer.send(&invoke(2));
        peer.send(&DaemonMsg::Pong { id });
        ping.join().unwrap().unwrap();
    });
    let first = conn.next_invocation(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(first.invocation, 1);
    assert!(first.is_cancelled());
    let second = conn.next_invocation(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(second.invocation, 2);
    assert!(!second.is_cancelled());
    // The app may still answer the cancelled one; the daemon counts that result late.
    conn.send_result(1, Outcome::Ok(vec![])).unwrap();
    assert!(matches!(
        peer.recv(),
        ClientMsg::Result { invocation: 1, .. }
    ));
}

#[test]
fn send_raw_writes_bytes_as_they_are() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    conn.send_raw(&[0, 0, 0, 1]).unwrap();
    conn.send_raw(&[0xc1]).unwrap();
    let mut got = [0u8; 5];
    peer.stream.read_exact(&mut got).unwrap();
    assert_eq!(got, [0, 0, 0, 1, 0xc1]);
}

#[test]
fn connect_to_a_missing_socket_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sock");
    let err = Connection::connect(&path, "app").unwrap_err();
    assert!(matches!(err, ConnectError::NotRunning { .. }));
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("is rpcd running? tried {}: ", path.display())),
        "{text}"
    );
}

#[test]
fn connect_to_a_stale_socket_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    let err = Connection::connect(&path, "app").unwrap_err();
    assert!(matches!(err, ConnectError::NotRunning { .. }), "{err}");
}

#[test]
fn version_mismatch_is_reported_clearly() {
    let fake = FakeDaemon::start();
    let path = fake.path.clone();
    let app = thread::spawn(move || Connection::connect(&path, "app"));
    let mut peer = fake.accept();
    peer.recv();
    peer.send(&DaemonMsg::Fatal {
        code: ErrorCode::VersionMismatch,
        message: "protocol versions 1 to 3 are not supported; this daemon speaks 4 to 4".into(),
    });
    let err = app.join().unwrap().unwrap_err();
    assert!(matches!(err, ConnectError::VersionMismatch { ours: 3, .. }));
    assert_eq!(
        err.to_string(),
        "protocol version mismatch: this client speaks versions 1 to 3; \
         rpcd: protocol versions 1 to 3 are not supported; this daemon speaks 4 to 4"
    );
}

#[test]
fn hello_ok_with_another_version_is_a_mismatch() {
    let fake = FakeDaemon::start();
    let path = fake.path.clone();
    let app = thread::spawn(move || Connection::connect(&path, "app"));
    let mut peer = fake.accept();
    let ClientMsg::Hello { id, .. } = peer.recv() else {
        panic!("expected hello");
    };
    peer.send(&DaemonMsg::HelloOk {
        id,
        version: 9,
        daemon: "rpcd 9".into(),
        listen: "x".into(),
        epoch: 1,
        limits: None,
    });
    let err = app.join().unwrap().unwrap_err();
    assert!(matches!(err, ConnectError::VersionMismatch { .. }), "{err}");
}

#[test]
fn daemon_closing_during_handshake_is_an_error_not_a_hang() {
    let fake = FakeDaemon::start();
    let path = fake.path.clone();
    let app = thread::spawn(move || Connection::connect(&path, "app"));
    let mut peer = fake.accept();
    peer.recv();
    drop(peer);
    let err = app.join().unwrap().unwrap_err();
    assert!(matches!(err, ConnectError::Protocol(_)), "{err}");
}

#[test]
fn dropping_the_connection_closes_the_socket() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    drop(conn);
    let mut byte = [0u8; 1];
    assert_eq!(peer.stream.read(&mut byte).unwrap(), 0);
}
