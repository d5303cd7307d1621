//! `rpcd_client::Server` through real daemons: handler panics, pool saturation, graceful
//! stop, reconnecting (with re-registration) after the daemon restarts, and who called.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rpcd_client::{CallError, CallOptions, Client, Handler, Outcome, Server, ServerOptions};
use rpcd_tests::{tempdir, wait_until, Daemon};

fn deadline(ms: u64) -> CallOptions {
    CallOptions::new(Some(Duration::from_millis(ms)), false)
}

/// A handler that panics fails that call with an application error naming the panic;
/// the worker survives and serves the next call (one worker, so it is the same one).
#[test]
fn handler_panic_is_an_app_error_and_the_worker_survives() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let client = Client::connect_to(&a.socket).unwrap();
    let server = Server::with_options(&client, ServerOptions::new(1, 4)).unwrap();
    server
        .register_fn("test.div", |(a, b): (i64, i64)| {
            if b == 0 {
                panic!("division of {a} by zero");
            }
            Ok::<_, String>(a / b)
        })
        .unwrap();
    let me = client.daemon().listen;
    let err = client
        .call_with::<_, i64>(me.as_str(), "test.div", &(1, 0), deadline(10_000))
        .unwrap_err();
    match &err {
        CallError::App(message) => {
            assert!(message.contains("panicked"), "{message}");
            assert!(message.contains("division of 1 by zero"), "{message}");
        }
        other => panic!("expected an application error, got {other:?}"),
    }
    for i in 1..=5 {
        let q: i64 = client
            .call_with(me.as_str(), "test.div", &(10 * i, i), deadline(10_000))
            .unwrap();
        assert_eq!(q, 10);
    }
    let stats = server.stats();
    assert_eq!(stats.panicked, 1);
    assert_eq!(stats.completed, 6);
}

/// One worker busy and the queue (of 1) full: the next caller gets `Overloaded` at once,
/// not a hang; once the worker is free, calls succeed again.
#[test]
fn pool_saturation_answers_overloaded() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let server_client = Client::connect_to(&b.socket).unwrap();
    let server = Server::with_options(&server_client, ServerOptions::new(1, 1)).unwrap();
    let (started_tx, started_rx) = mpsc::channel::<u64>();
    let started_tx = Mutex::new(started_tx);
    let gate = Arc::new(Mutex::new(()));
    let closed = gate.lock().unwrap();
    {
        let gate = Arc::clone(&gate);
        server
            .register_fn("test.block", move |(n,): (u64,)| {
                let _ = started_tx.lock().unwrap().send(n);
                drop(gate.lock().unwrap());
                Ok::<_, String>(n)
            })
            .unwrap();
    }
    let client = Client::connect_to(&a.socket).unwrap();
    let target = b.udp;
    let call = |n: u64| {
        let client = client.clone();
        thread::spawn(move || {
            client.call_with::<_, u64>(target, "test.block", &(n,), deadline(30_000))
        })
    };
    // Call 1 occupies the worker; call 2 waits in the queue.
    let first = call(1);
    assert_eq!(started_rx.recv_timeout(Duration::from_secs(10)), Ok(1));
    let second = call(2);
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .queued
        == 1));
    // Call 3 finds no room.
    let err = client
        .call_with::<_, u64>(target, "test.block", &(3u64,), deadline(30_000))
        .unwrap_err();
    assert!(matches!(err, CallError::Overloaded(_)), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(server.stats().refused_overloaded, 1);
    drop(closed);
    assert_eq!(first.join().unwrap().unwrap(), 1);
    assert_eq!(second.join().unwrap().unwrap(), 2);
    assert_eq!(
        client
            .call_with::<_, u64>(target, "test.block", &(4u64,), deadline(30_000))
            .unwrap(),
        4
    );
}

/// `stop` lets running handlers finish and answer, then unregisters: later calls get
/// `UnknownFunction`.
#[test]
fn graceful_stop_finishes_running_handlers_then_unregisters() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let client = Client::connect_to(&a.socket).unwrap();
    let server = Server::with_options(&client, ServerOptions::new(2, 8)).unwrap();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    server
        .register_fn("test.slow", move |(ms,): (u64,)| {
            let _ = started_tx.lock().unwrap().send(());
            thread::sleep(Duration::from_millis(ms));
            Ok::<_, String>(ms)
        })
        .unwrap();
    let me = client.daemon().listen;
    let running = {
        let (client, me) = (client.clone(), me.clone());
        thread::spawn(move || {
            client.call_with::<_, u64>(me.as_str(), "test.slow", &(300u64,), deadline(30_000))
        })
    };
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    server.stop();
    assert_eq!(
        running.join().unwrap().unwrap(),
        300,
        "the running call finished"
    );
    let err = client
        .call_with::<_, u64>(me.as_str(), "test.slow", &(1u64,), deadline(10_000))
        .unwrap_err();
    assert!(matches!(err, CallError::UnknownFunction(_)), "{err:?}");
    assert!(!client.list().unwrap().contains(&"test.slow".to_string()));
}

/// The local daemon is SIGKILLed and restarted on the same socket: a call in flight fails
/// at once with a clear error; the client reconnects on its next call, and the server
/// re-registers its functions on its own.
#[test]
fn daemon_restart_client_reconnects_and_server_reregisters() {
    let dir = tempdir();
    let mut a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let server_client = Client::connect_to(&a.socket).unwrap();
    let server = Server::with_options(&server_client, ServerOptions::new(2, 8)).unwrap();
    let count = Arc::new(AtomicU64::new(0));
    {
        let count = Arc::clone(&count);
        server
            .register_fn("test.count", move |(): ()| {
                Ok::<_, String>(count.fetch_add(1, Ordering::SeqCst) + 1)
            })
            .unwrap();
    }
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    server
        .register_fn("test.hang", move |(): ()| {
            let _ = started_tx.lock().unwrap().send(());
            thread::sleep(Duration::from_secs(3));
            Ok::<_, String>(())
        })
        .unwrap();
    let client = Client::connect_to(&a.socket).unwrap();
    let me = client.daemon().listen;
    assert_eq!(
        client
            .call_with::<_, u64>(me.as_str(), "test.count", &(), deadline(10_000))
            .unwrap(),
        1
    );
    let in_flight = {
        let (client, me) = (client.clone(), me.clone());
        thread::spawn(move || {
            client.call_with::<_, ()>(me.as_str(), "test.hang", &(), deadline(60_000))
        })
    };
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    a.restart_after_kill(dir.path(), "a");

    let err = in_flight.join().unwrap().unwrap_err();
    assert_eq!(err, CallError::ConnectionLost, "{err:?}");
    assert!(err.outcome_unknown());
    // The server notices on its own and registers again on the new daemon.
    assert!(
        wait_until(Duration::from_secs(20), || {
            server.stats().reregistrations >= 1
                && a.connect("probe")
                    .list()
                    .is_ok_and(|l| l.contains(&"test.count".to_string()))
        }),
        "the server did not re-register; last error: {:?}",
        server.last_error()
    );
    // The caller's next call reconnects transparently.
    assert_eq!(
        client
            .call_with::<_, u64>(me.as_str(), "test.count", &(), deadline(10_000))
            .unwrap(),
        2
    );
    assert_eq!(client.generation(), 2);
    assert_eq!(server_client.generation(), 2);
    server.stop();
}

/// A handler sees who called (`Request::peer`, `Request::identity`): `"local"` for an app
/// on its own daemon; for a call through two plaintext daemons an empty peer, the caller
/// being known only by the calling daemon's address (the keyed case, a configured name,
/// comes with authenticated sessions).
#[test]
fn handlers_see_who_called() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let server_client = Client::connect_to(&b.socket).unwrap();
    let server = Server::new(&server_client).unwrap();
    let whoami = Handler::with_request(|req| {
        let seen = (req.peer, req.caller, req.identity().to_string());
        Outcome::Ok(rmp_serde::to_vec(&seen).expect("strings encode"))
    });
    server.register("test.whoami", whoami).unwrap();
    type Seen = (String, String, String);

    let local = Client::connect_to(&b.socket).unwrap();
    let seen: Seen = local
        .call_with(b.udp, "test.whoami", &(), deadline(10_000))
        .unwrap();
    assert_eq!(seen, ("local".into(), "local".into(), "local".into()));

    let remote = Client::connect_to(&a.socket).unwrap();
    let seen: Seen = remote
        .call_with(b.udp, "test.whoami", &(), deadline(10_000))
        .unwrap();
    let a_addr = a.udp.to_string();
    assert_eq!(
        seen,
        (
            String::new(),
            a_addr.clone(),
            format!("unauthenticated {a_addr}")
        )
    );
    server.stop();
}
