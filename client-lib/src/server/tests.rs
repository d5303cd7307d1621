use std::panic::catch_unwind;

use super::threads::panic_message;
use super::*;
use crate::ipc::ErrorCode;

#[test]
fn panic_messages_are_recovered() {
    let p = catch_unwind(|| panic!("static")).unwrap_err();
    assert_eq!(panic_message(p.as_ref()), "static");
    let n = 7;
    let p = catch_unwind(|| panic!("formatted {n}")).unwrap_err();
    assert_eq!(panic_message(p.as_ref()), "formatted 7");
}

/// A cancel reaches a running handler through `is_cancelled`, and a queued invocation
/// cancelled before a worker took it never runs; neither is answered.
#[test]
fn cancelled_invocations_are_seen_by_handlers_or_never_run() {
    use std::sync::mpsc::channel;

    use crate::conn::fake_daemon::FakeDaemon;
    use crate::ipc::{ClientMsg, DaemonMsg};

    let fake = FakeDaemon::start();
    let path = fake.path.clone();
    let app = std::thread::spawn(move || Client::connect_to(path));
    let mut peer = fake.accept_hello();
    let client = app.join().unwrap().unwrap();
    let options = ServerOptions::new(1, 4);
    let server = Server::with_options(&client, options).unwrap();
    let (started_tx, started) = channel();
    let (saw_cancel_tx, saw_cancel) = channel();
    let handler = Handler::with_request(move |req: &Request<'_>| {
        started_tx.send(req.args.to_vec()).unwrap();
        if req.args == b"wait" {
            let until = Instant::now() + Duration::from_secs(10);
            while !req.is_cancelled() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            saw_cancel_tx.send(req.is_cancelled()).unwrap();
        }
        Outcome::Ok(req.args.to_vec())
    });
    std::thread::scope(|s| {
        let registering = s.spawn(|| server.register("f", handler));
        let ClientMsg::Register { id, .. } = peer.recv() else {
            panic!("expected register");
        };
        peer.send(&DaemonMsg::Done { id });
        registering.join().unwrap().unwrap();
    });
    let invoke = |invocation, args: &[u8]| DaemonMsg::Invoke {
        invocation,
        function: "f".into(),
        args: args.to_vec().into(),
        caller: "local".into(),
        peer: "local".into(),
        deadline_ms: 10_000,
        credentials: None,
    };
    peer.send(&invoke(1, b"wait"));
    assert_eq!(
        started.recv_timeout(Duration::from_secs(5)).unwrap(),
        b"wait"
    );
    // The only worker is busy: 2 waits (in the connection or the server's queue).
    peer.send(&invoke(2, b"queued"));
    peer.send(&DaemonMsg::Cancel { invocation: 2 });
    peer.send(&DaemonMsg::Cancel { invocation: 1 });
    assert!(saw_cancel.recv_timeout(Duration::from_secs(5)).unwrap());
    // The next frame the daemon sees is the answer to 3: nothing for 1 or 2.
    peer.send(&invoke(3, b"after"));
    assert_eq!(
        started.recv_timeout(Duration::from_secs(5)).unwrap(),
        b"after"
    );
    assert_eq!(
        peer.recv(),
        ClientMsg::Result {
            invocation: 3,
            outcome: Outcome::Ok(b"after".to_vec())
        }
    );
    assert!(started.try_recv().is_err(), "the cancelled queued one ran");
    let stats = server.stats();
    assert_eq!(stats.completed, 2);
    assert!(stats.cancelled >= 1, "{stats:?}");
    // Closing the fake daemon first lets the stop's unregister fail at once.
    drop(peer);
    server.stop();
}

#[test]
fn typed_handler_refuses_undecodable_arguments() {
    let h = Handler::typed("t.add", |(a, b): (i64, i64)| Ok::<_, String>(a + b));
    let req = |args: &[u8]| {
        h.call(&Request {
            function: "t.add",
            args,
            caller: "x",
            peer: "",
            deadline: Instant::now(),
            credentials: None,
            cancelled: &AtomicBool::new(false),
        })
    };
    let ok = req(&rmp_serde::to_vec(&(2, 3)).unwrap());
    assert_eq!(ok, Outcome::Ok(rmp_serde::to_vec(&5).unwrap()));
    assert!(matches!(
        req(b"\xc1"),
        Outcome::Refused {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
}

/// A handler sees who called: `peer` as the daemon sent it and its typed view, for a local
/// caller, an authenticated peer and a plaintext one.
#[test]
fn handlers_see_who_called() {
    use crate::conn::fake_daemon::FakeDaemon;
    use crate::ipc::{ClientMsg, DaemonMsg};
    use crate::Identity;

    let fake = FakeDaemon::start();
    let path = fake.path.clone();
    let app = std::thread::spawn(move || Client::connect_to(path));
    let mut peer = fake.accept_hello();
    let client = app.join().unwrap().unwrap();
    let options = ServerOptions::new(1, 4);
    let server = Server::with_options(&client, options).unwrap();
    let handler = Handler::with_request(|req: &Request<'_>| {
        let named = matches!(req.identity(), Identity::Peer(name) if name == req.peer);
        let seen = format!("{}|{}|{named}", req.peer, req.identity());
        Outcome::Ok(seen.into_bytes())
    });
    std::thread::scope(|s| {
        let registering = s.spawn(|| server.register("whoami", handler));
        let ClientMsg::Register { id, .. } = peer.recv() else {
            panic!("expected register");
        };
        peer.send(&DaemonMsg::Done { id });
        registering.join().unwrap().unwrap();
    });
    let cases = [
        ("local", "local", "local|local|false"),
        ("10.0.0.2:7400", "db-2", "db-2|peer db-2|true"),
        ("10.0.0.3:7400", "", "|unauthenticated 10.0.0.3:7400|false"),
    ];
    for (invocation, (caller, who, seen)) in (1u64..).zip(cases) {
        peer.send(&DaemonMsg::Invoke {
            invocation,
            function: "whoami".into(),
            args: Vec::new().into(),
            caller: caller.into(),
            peer: who.into(),
            deadline_ms: 10_000,
            credentials: None,
        });
        assert_eq!(
            peer.recv(),
            ClientMsg::Result {
                invocation,
                outcome: Outcome::Ok(seen.as_bytes().to_vec())
            }
        );
    }
    drop(peer);
    server.stop();
}
