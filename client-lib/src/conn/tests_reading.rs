//! Who reads the socket (`reading`): a waiting caller itself while the connection only
//! calls, handing the token on when its reply came; the reader thread once it serves; the
//! serving app's sink.

use std::sync::mpsc::channel;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::fake_daemon::{connected, FakeDaemon};
use super::*;

fn call_id(msg: &ClientMsg) -> u64 {
    match msg {
        ClientMsg::Call { id, .. } => *id,
        other => panic!("expected a call, got {other:?}"),
    }
}

fn ok(id: u64, data: &[u8]) -> DaemonMsg {
    DaemonMsg::CallOk {
        id,
        data: data.to_vec(),
        trace: None,
    }
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

/// A connection that only calls starts no reader thread: the callers read.
#[test]
fn a_calling_connection_has_no_reader_thread() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    thread::scope(|s| {
        let call = s.spawn(|| conn.call("h:1", "f", vec![], CallOptions::default()));
        let id = call_id(&peer.recv());
        peer.send(&ok(id, b"done"));
        assert_eq!(call.join().unwrap().unwrap(), b"done");
    });
    assert!(lock(&conn.reader).is_none());
    assert!(!conn.is_closed());
}

/// The caller whose reply comes first leaves; the one still waiting takes over the socket
/// and gets its reply (with a deadline far away, a missing hand-off would hang it).
#[test]
fn the_token_passes_to_a_waiting_caller_when_the_leader_is_answered() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    thread::scope(|s| {
        let (done_tx, done) = channel();
        let spawn = |i: u8| {
            let (conn, done_tx) = (&conn, done_tx.clone());
            s.spawn(move || {
                let reply = conn.call("h:1", "f", vec![i], CallOptions::default());
                done_tx.send(()).unwrap();
                reply
            })
        };
        // The first caller is reading (leading) by the time the others come.
        let mut calls = vec![spawn(0)];
        let mut ids = vec![call_id(&peer.recv())];
        thread::sleep(Duration::from_millis(20));
        calls.extend([spawn(1), spawn(2)]);
        ids.extend([call_id(&peer.recv()), call_id(&peer.recv())]);
        // One at a time, each after the previous caller has left: whoever read last is gone
        // every time, and the token must have been handed on.
        for (n, id) in ids.iter().enumerate() {
            peer.send(&ok(*id, &[n as u8]));
            done.recv_timeout(Duration::from_secs(5))
                .expect("the reply reached its caller");
        }
        let mut replies: Vec<Vec<u8>> = calls
            .into_iter()
            .map(|c| c.join().unwrap().unwrap())
            .collect();
        replies.sort();
        assert_eq!(replies, vec![vec![0], vec![1], vec![2]]);
    });
}

/// Whoever reads routes every frame: a reply read by one caller reaches another, both
/// ways round.
#[test]
fn a_reply_read_by_one_caller_reaches_the_other() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    for _ in 0..20 {
        thread::scope(|s| {
            let a = s.spawn(|| conn.call("h:1", "a", vec![], CallOptions::default()));
            let b = s.spawn(|| conn.call("h:1", "b", vec![], CallOptions::default()));
            let (x, y) = (peer.recv(), peer.recv());
            let name = |m: &ClientMsg| match m {
                ClientMsg::Call { function, .. } => function.clone(),
                _ => unreachable!(),
            };
            // Both replies in one write, in the order the calls were not made.
            let mut both = crate::ipc::encode_frame(&ok(call_id(&y), name(&y).as_bytes()));
            both.extend(crate::ipc::encode_frame(&ok(
                call_id(&x),
                name(&x).as_bytes(),
            )));
            std::io::Write::write_all(&mut peer.stream, &both).unwrap();
            assert_eq!(a.join().unwrap().unwrap(), b"a");
            assert_eq!(b.join().unwrap().unwrap(), b"b");
        });
    }
}

/// With nobody reading, `is_closed` still sees the daemon go away, and the reason it gave.
#[test]
fn is_closed_sees_a_fatal_and_the_end_of_the_stream_while_nobody_reads() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    assert!(!conn.is_closed());
    peer.send(&DaemonMsg::Fatal {
        code: ErrorCode::Overloaded,
        message: "full".into(),
    });
    drop(peer);
    let started = Instant::now();
    while !conn.is_closed() {
        assert!(started.elapsed() < Duration::from_secs(5), "close not seen");
        thread::sleep(Duration::from_millis(1));
    }
    assert!(matches!(
        conn.ping(),
        Err(RequestError::Fatal {
            code: ErrorCode::Overloaded,
            ..
        })
    ));
}

/// A caller leading when the connection starts serving keeps its reply; the reader thread
/// takes the socket over after it and delivers invocations.
#[test]
fn registering_while_a_caller_reads_hands_the_socket_to_the_reader_thread() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    thread::scope(|s| {
        let call = s.spawn(|| conn.call("h:1", "f", vec![], CallOptions::default()));
        let call_id = call_id(&peer.recv());
        let register = s.spawn(|| conn.register("g"));
        let ClientMsg::Register { id, .. } = peer.recv() else {
            panic!("expected register");
        };
        peer.send(&DaemonMsg::Done { id });
        register.join().unwrap().unwrap();
        peer.send(&ok(call_id, b"x"));
        assert_eq!(call.join().unwrap().unwrap(), b"x");
    });
    peer.send(&invoke(5));
    let work = conn.next_invocation(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(work.invocation, 5);
    assert!(lock(&conn.reader).is_some());
}

/// Invocations queued before a sink is installed go to it first, in order; later ones go
/// straight to it; a refusal from it is answered at once; removing it puts the queue back.
#[test]
fn a_sink_takes_the_queued_invocations_then_the_new_ones() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    thread::scope(|s| {
        // The pong comes after the invokes, so once the ping returns both are queued.
        let ping = s.spawn(|| conn.ping());
        let ClientMsg::Ping { id } = peer.recv() else {
            panic!("expected ping");
        };
        peer.send(&invoke(1));
        peer.send(&invoke(2));
        peer.send(&DaemonMsg::Pong { id });
        ping.join().unwrap().unwrap();
    });
    let (got_tx, got) = channel();
    let got_tx = Mutex::new(got_tx);
    let sink: Arc<InvocationSink> = Arc::new(move |work: Invocation| {
        let refuse = work.invocation == 4;
        lock(&got_tx).send(work.invocation).unwrap();
        if refuse {
            return Err(Outcome::Refused {
                code: ErrorCode::Overloaded,
                message: "busy".into(),
            });
        }
        Ok(())
    });
    conn.set_invocation_sink(Some(sink)).unwrap();
    let wait = Duration::from_secs(5);
    assert_eq!(
        (got.recv_timeout(wait), got.recv_timeout(wait)),
        (Ok(1), Ok(2))
    );
    peer.send(&invoke(3));
    assert_eq!(got.recv_timeout(wait), Ok(3));
    peer.send(&invoke(4));
    assert_eq!(got.recv_timeout(wait), Ok(4));
    assert_eq!(
        peer.recv(),
        ClientMsg::Result {
            invocation: 4,
            outcome: Outcome::Refused {
                code: ErrorCode::Overloaded,
                message: "busy".into()
            }
        }
    );
    conn.set_invocation_sink(None).unwrap();
    peer.send(&invoke(5));
    assert_eq!(conn.next_invocation(Some(wait)).unwrap().invocation, 5);
    assert!(got.try_recv().is_err());
}

/// A caller reading the socket itself waits for its reply no longer than it asked: its read
/// ends by its own deadline, not a whole `LEADER_READ_SLICE` later.
#[test]
fn a_leading_callers_read_ends_by_its_own_deadline() {
    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    let wait = Duration::from_millis(10);
    let started = Instant::now();
    let err = conn
        .request(|id| ClientMsg::Ping { id }, wait)
        .expect_err("the fake daemon does not answer");
    let took = started.elapsed();
    assert!(
        matches!(
            &err,
            RequestError::Local {
                code: ErrorCode::DeadlineExceeded,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(peer.recv(), ClientMsg::Ping { .. }));
    // Well under the slice: the read was cut to the 10 ms left.
    assert!(
        took < reading::LEADER_READ_SLICE * 9 / 10,
        "waited {took:?} for a {wait:?} request"
    );
}

/// A turn of the serving app's pool leaves the frames after an invocation buffered; when
/// the pool hands the socket back (it stops), the reader thread routes them before it reads
/// again: a reply among them reaches its caller though the daemon sends nothing more.
#[test]
fn frames_the_pool_left_buffered_reach_their_callers_after_it_hands_back() {
    use std::io::Write;

    use crate::ipc::encode_frame;

    let fake = FakeDaemon::start();
    let (conn, mut peer) = connected(&fake);
    assert!(conn.attach_readers().unwrap());
    let (pong_tx, pong) = channel();
    thread::scope(|s| {
        s.spawn(|| pong_tx.send(conn.ping()));
        let ClientMsg::Ping { id } = peer.recv() else {
            panic!("expected a ping");
        };
        let mut both = encode_frame(&invoke(1));
        both.extend_from_slice(&encode_frame(&DaemonMsg::Pong { id }));
        peer.stream.write_all(&both).unwrap();
        let Turn::Invocation(work) = conn.read_turn() else {
            panic!("expected the invocation first");
        };
        assert_eq!(work.invocation, 1);
        conn.detach_readers().unwrap();
        let answered = pong.recv_timeout(Duration::from_secs(5));
        assert!(matches!(answered, Ok(Ok(()))), "{answered:?}");
    });
}
