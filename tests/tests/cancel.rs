//! Cancelling calls from the client (`cancel_call`, docs/ipc-protocol.md §5) through real
//! daemons: the caller gets `cancelled`, the handler sees the cancel, and the call's slots
//! are freed at once — on the calling daemon (`calls_per_connection_max = 1`) and on the
//! serving one (`invocations_per_app_max = 1`), for remote and locally-served calls.

use std::sync::mpsc;
use std::time::Duration;

use rpcd_client::ipc::{encode_frame, ClientMsg};
use rpcd_client::{
    CallError, CallOptions, Client, Connection, ErrorCode, Handler, Outcome, Server,
};
use rpcd_tests::{tempdir, wait_until, Daemon};

/// One call in flight per app connection, one invocation pending per serving app.
const TIGHT: &str = "[limits]\ncalls_per_connection_max = 1\ninvocations_per_app_max = 1\n";

/// How long a blocked handler waits for its cancel before giving up (and failing the test).
const BLOCK_MAX: Duration = Duration::from_secs(20);

/// What the serving app reports: a handler started, and whether its wait saw a cancel.
#[derive(Debug, PartialEq)]
enum Seen {
    Started,
    Cancelled(bool),
}

/// Serves `t.block` (waits for its cancel, reports what it saw) and `t.quick` on `client`.
fn serve(client: &Client) -> (Server, mpsc::Receiver<Seen>) {
    let (tx, rx) = mpsc::channel();
    let server = Server::new(client).expect("server");
    server
        .register(
            "t.block",
            Handler::with_request(move |req| {
                let _ = tx.send(Seen::Started);
                let _ = tx.send(Seen::Cancelled(req.wait_cancelled(Some(BLOCK_MAX))));
                Outcome::Ok(rmp_serde::to_vec(&"finished").expect("encode"))
            }),
        )
        .expect("register t.block");
    server
        .register_fn("t.quick", |(n,): (u32,)| Ok::<_, String>(n + 1))
        .expect("register t.quick");
    (server, rx)
}

fn options() -> CallOptions {
    CallOptions::default().with_deadline(Duration::from_secs(30))
}

/// Submits `t.block`, waits until its handler runs, cancels it: the caller gets
/// `cancelled` (outcome unknown), the handler sees the cancel, and — with one slot of
/// each kind — the next call through the same daemons succeeds at once.
fn cancel_round(client: &Client, target: std::net::SocketAddr, seen: &mpsc::Receiver<Seen>) {
    let pending = client
        .submit_with::<_, String>(target, "t.block", &(), options())
        .expect("submit");
    assert_eq!(seen.recv_timeout(BLOCK_MAX), Ok(Seen::Started));
    pending.cancel().expect("cancel");
    let err = pending.wait().expect_err("a cancelled call fails");
    assert!(matches!(err, CallError::Cancelled(_)), "{err:?}");
    assert_eq!(err.code(), Some(ErrorCode::Cancelled));
    assert!(err.outcome_unknown());
    assert_eq!(seen.recv_timeout(BLOCK_MAX), Ok(Seen::Cancelled(true)));
    let next: u32 = client
        .call_with(target, "t.quick", &(41u32,), options())
        .expect("the freed slots take the next call");
    assert_eq!(next, 42);
}

/// Remote: caller on A (one call per connection), server on B (one invocation per app).
#[test]
fn cancel_reaches_the_remote_handler_and_frees_the_slots() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(TIGHT));
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", Some(TIGHT));
    let (_server, seen) = serve(&Client::connect_to(&b.socket).expect("connect b"));
    let client = Client::connect_to(&a.socket).expect("connect a");
    for _ in 0..3 {
        cancel_round(&client, b.udp, &seen);
    }
    let stats = client.stats().expect("stats");
    assert_eq!(stats.calls_in_flight, 0, "{stats:?}");
    assert!(
        wait_until(Duration::from_secs(10), || b
            .connect("probe")
            .stats()
            .is_ok_and(|s| s.invocations_in_flight == 0)),
        "B still counts the cancelled invocation"
    );
}

/// Locally served: the caller and the server on the same daemon.
#[test]
fn cancel_of_a_locally_served_call() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(TIGHT));
    let (_server, seen) = serve(&Client::connect_to(&a.socket).expect("connect server"));
    let client = Client::connect_to(&a.socket).expect("connect caller");
    for _ in 0..3 {
        cancel_round(&client, a.udp, &seen);
    }
}

/// A `PendingCall` dropped unwaited cancels its call like `cancel` does.
#[test]
fn dropping_a_pending_call_cancels_it() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(TIGHT));
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let (_server, seen) = serve(&Client::connect_to(&b.socket).expect("connect b"));
    let client = Client::connect_to(&a.socket).expect("connect a");
    let pending = client
        .submit_with::<_, String>(b.udp, "t.block", &(), options())
        .expect("submit");
    assert_eq!(seen.recv_timeout(BLOCK_MAX), Ok(Seen::Started));
    drop(pending);
    assert_eq!(seen.recv_timeout(BLOCK_MAX), Ok(Seen::Cancelled(true)));
    let next: u32 = client
        .call_with(b.udp, "t.quick", &(1u32,), options())
        .expect("the slot is free");
    assert_eq!(next, 2);
}

/// A cancel for a call that has ended, or for no call at all, changes nothing: no reply,
/// no error, the connection stays open and the call kept its outcome.
#[test]
fn cancel_after_the_end_is_ignored() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let (_server, _seen) = serve(&Client::connect_to(&a.socket).expect("connect server"));
    let conn = Connection::connect(&a.socket, "late-canceller").expect("connect");
    let args = rmp_serde::to_vec(&(6u32,)).expect("encode");
    let pending = conn
        .submit(&a.udp.to_string(), "t.quick", args, options())
        .expect("submit");
    let id = pending.id();
    let reply = pending.wait().expect("the call ends before its cancel");
    assert_eq!(rmp_serde::from_slice::<u32>(&reply).expect("decode"), 7);
    for stale in [id, id + 1000] {
        conn.send_raw(&encode_frame(&ClientMsg::CancelCall { id: stale }))
            .expect("send cancel_call");
    }
    conn.ping().expect("the connection stays open");
    assert!(!conn.is_closed());
}
