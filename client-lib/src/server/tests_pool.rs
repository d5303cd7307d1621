//! The worker pool against a fake daemon: the worker that reads an invocation runs it while
//! another reads on, so a long handler holds up nothing, cancels arrive while every worker is
//! busy, the queue bound holds, and a stop gives the connection back to the client.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use super::*;
use crate::conn::fake_daemon::{FakeDaemon, Peer};
use crate::conn::CallOptions;
use crate::ipc::{ClientMsg, DaemonMsg, ErrorCode};

const WAIT: Duration = Duration::from_secs(5);

/// A server of `workers` threads and `queue_max` on a fake daemon, serving `f`: `"block"`
/// reports itself started on `started` and runs until it is cancelled or a value comes on
/// the returned sender; anything else is echoed at once (after reporting too).
struct Fixture {
    peer: Peer,
    client: Client,
    server: Server,
    started: Receiver<Vec<u8>>,
    release: Sender<()>,
    saw_cancel: Receiver<bool>,
    _fake: FakeDaemon,
}

fn fixture(workers: usize, queue_max: usize) -> Fixture {
    fixture_with(ServerOptions::new(workers, queue_max))
}

fn fixture_with(options: ServerOptions) -> Fixture {
    let fake = FakeDaemon::start();
    let path = fake.path.clone();
    let app = std::thread::spawn(move || Client::connect_to(path));
    let mut peer = fake.accept_hello();
    let client = app.join().unwrap().unwrap();
    let server = Server::with_options(&client, options).unwrap();
    let (started_tx, started) = channel();
    let (release, release_rx) = channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let (saw_cancel_tx, saw_cancel) = channel();
    let handler = Handler::with_request(move |req: &Request<'_>| {
        started_tx.send(req.args.to_vec()).unwrap();
        if req.args == b"block" {
            let until = Instant::now() + Duration::from_secs(10);
            let mut released = false;
            while !req.is_cancelled() && !released && Instant::now() < until {
                released = lock(&release_rx)
                    .recv_timeout(Duration::from_millis(1))
                    .is_ok();
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
    Fixture {
        peer,
        client,
        server,
        started,
        release,
        saw_cancel,
        _fake: fake,
    }
}

impl Fixture {
    /// Closes the daemon's end, then stops the server.
    fn stop(self) {
        drop(self.peer);
        self.server.stop();
    }

    /// Each of `invocations` in turn, with `args`: sent, then its echo awaited.
    fn echo_one_at_a_time(&mut self, invocations: std::ops::RangeInclusive<u64>, args: &[u8]) {
        for i in invocations {
            self.peer.send(&invoke(i, args));
            assert_eq!(self.peer.recv(), ok(i, args));
        }
    }
}

/// The server's counters once `done` holds of them, or as they are after [`WAIT`].
fn stats_once(server: &Server, done: impl Fn(&ServerStats) -> bool) -> ServerStats {
    let until = Instant::now() + WAIT;
    loop {
        let stats = server.stats();
        if done(&stats) || Instant::now() >= until {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn invoke(invocation: u64, args: &[u8]) -> DaemonMsg {
    DaemonMsg::Invoke {
        invocation,
        function: "f".into(),
        args: args.to_vec().into(),
        caller: "local".into(),
        peer: "local".into(),
        deadline_ms: 10_000,
        credentials: None,
    }
}

fn ok(invocation: u64, data: &[u8]) -> ClientMsg {
    ClientMsg::Result {
        invocation,
        outcome: Outcome::Ok(data.to_vec()),
    }
}

/// While one handler runs (it blocks), the next invocation is read, run and answered by
/// another worker.
#[test]
fn a_long_handler_does_not_hold_up_the_next_invocation() {
    let mut f = fixture(2, 0);
    f.peer.send(&invoke(1, b"block"));
    assert_eq!(f.started.recv_timeout(WAIT).unwrap(), b"block");
    f.peer.send(&invoke(2, b"quick"));
    assert_eq!(f.started.recv_timeout(WAIT).unwrap(), b"quick");
    assert_eq!(f.peer.recv(), ok(2, b"quick"));
    f.release.send(()).unwrap();
    assert_eq!(f.saw_cancel.recv_timeout(WAIT), Ok(false));
    assert_eq!(f.peer.recv(), ok(1, b"block"));
    assert_eq!(f.server.stats().completed, 2);
    f.stop();
}

/// With `inline_below` at `limit`.
fn inlining_below(limit: Duration) -> ServerOptions {
    let mut options = ServerOptions::new(2, 0);
    options.inline_below = limit;
    options
}

/// A function whose recent runs were short runs on the thread that read it, which reads on:
/// after its first run (handed off: nothing is known of it yet), every invocation is run
/// inline, those that come one at a time and those that come together.
#[test]
fn short_handlers_run_on_the_reading_thread() {
    // Every run of the fixture's echo is shorter than that, whatever the machine's load.
    let mut f = fixture_with(inlining_below(Duration::from_secs(10)));
    f.echo_one_at_a_time(1..=1, b"first");
    assert_eq!(f.server.stats().inlined, 0);
    f.echo_one_at_a_time(2..=11, b"one");
    assert_eq!(f.server.stats().inlined, 10);
    for i in 12..=21 {
        f.peer.send(&invoke(i, b"many"));
    }
    let mut answered: Vec<u64> = (12..=21)
        .map(|_| match f.peer.recv() {
            ClientMsg::Result {
                invocation,
                outcome: Outcome::Ok(data),
            } if data == b"many" => invocation,
            other => panic!("expected a result, got {other:?}"),
        })
        .collect();
    answered.sort_unstable();
    assert_eq!(answered, (12..=21).collect::<Vec<_>>());
    let stats = f.server.stats();
    assert_eq!((stats.inlined, stats.completed), (20, 21), "{stats:?}");
    f.stop();
}

/// A run as long as `inline_below` makes the function's next runs handed off again, until
/// that run has decayed below the bound (by an eighth per run: 400 ms, then 350, 306, 268,
/// 234, 205 and 179 against 200 ms; the short runs take far less): the 7th short run after
/// it is inlined.
#[test]
fn a_long_run_hands_the_function_off_until_it_has_decayed() {
    let mut f = fixture_with(inlining_below(Duration::from_millis(200)));
    f.peer.send(&invoke(1, b"block"));
    assert_eq!(f.started.recv_timeout(WAIT).unwrap(), b"block");
    std::thread::sleep(Duration::from_millis(400));
    f.release.send(()).unwrap();
    assert_eq!(f.peer.recv(), ok(1, b"block"));
    f.echo_one_at_a_time(2..=7, b"short");
    assert_eq!(f.server.stats().inlined, 0);
    f.echo_one_at_a_time(8..=8, b"short");
    assert_eq!(f.server.stats().inlined, 1);
    f.stop();
}

/// `inline_below` is zero by default: however short a function's runs, none is inlined.
#[test]
fn by_default_nothing_is_inlined() {
    assert_eq!(ServerOptions::default().inline_below, Duration::ZERO);
    assert_eq!(ServerOptions::new(2, 0).inline_below, Duration::ZERO);
    let mut f = fixture(2, 0);
    f.echo_one_at_a_time(1..=5, b"short");
    let stats = f.server.stats();
    assert_eq!((stats.inlined, stats.completed), (0, 5), "{stats:?}");
    f.stop();
}

/// With every worker running a handler, cancels still arrive: each running handler sees
/// its own, no result is sent for either, and the workers serve again afterwards.
#[test]
fn cancels_arrive_while_every_worker_is_busy() {
    let mut f = fixture(2, 0);
    f.peer.send(&invoke(1, b"block"));
    f.peer.send(&invoke(2, b"block"));
    assert_eq!(f.started.recv_timeout(WAIT).unwrap(), b"block");
    assert_eq!(f.started.recv_timeout(WAIT).unwrap(), b"block");
    assert_eq!(f.server.stats().running, 2);
    f.peer.send(&DaemonMsg::Cancel { invocation: 2 });
    assert_eq!(f.saw_cancel.recv_timeout(WAIT), Ok(true));
    f.peer.send(&DaemonMsg::Cancel { invocation: 1 });
    assert_eq!(f.saw_cancel.recv_timeout(WAIT), Ok(true));
    // The next frame the daemon sees is the answer to 3: nothing for 1 or 2.
    f.peer.send(&invoke(3, b"after"));
    assert_eq!(f.peer.recv(), ok(3, b"after"));
    // A cancelled handler's thread counts it after the handler returns, which can be after
    // 3 is answered: wait for the counts rather than read them once.
    let stats = stats_once(&f.server, |s| (s.completed, s.cancelled) == (3, 2));
    assert_eq!((stats.completed, stats.cancelled), (3, 2), "{stats:?}");
    f.stop();
}

/// With the only worker busy, one invocation waits in the queue (`queue_max` 1) and the next
/// is refused as `overloaded` at once; the queued one runs when the worker is free.
#[test]
fn the_queue_bound_holds_while_the_workers_are_busy() {
    let mut f = fixture(1, 1);
    f.peer.send(&invoke(1, b"block"));
    assert_eq!(f.started.recv_timeout(WAIT).unwrap(), b"block");
    f.peer.send(&invoke(2, b"queued"));
    f.peer.send(&invoke(3, b"refused"));
    let ClientMsg::Result {
        invocation: 3,
        outcome:
            Outcome::Refused {
                code: ErrorCode::Overloaded,
                ..
            },
    } = f.peer.recv()
    else {
        panic!("expected 3 refused as overloaded");
    };
    assert!(
        f.started.try_recv().is_err(),
        "2 ran beside the busy worker"
    );
    f.release.send(()).unwrap();
    assert_eq!(f.peer.recv(), ok(1, b"block"));
    assert_eq!(f.started.recv_timeout(WAIT).unwrap(), b"queued");
    assert_eq!(f.peer.recv(), ok(2, b"queued"));
    let stats = f.server.stats();
    assert_eq!((stats.completed, stats.refused_overloaded), (2, 1));
    f.stop();
}

/// Stopping answers what runs, unregisters, and gives the socket back to the connection: a
/// call through the same client gets its reply afterwards.
#[test]
fn after_a_stop_the_client_still_gets_its_replies() {
    let mut f = fixture(1, 0);
    f.peer.send(&invoke(1, b"x"));
    assert_eq!(f.peer.recv(), ok(1, b"x"));
    let Fixture {
        mut peer,
        client,
        server,
        ..
    } = f;
    std::thread::scope(|s| {
        let stopping = s.spawn(|| server.stop());
        loop {
            match peer.recv() {
                ClientMsg::Unregister { id, .. } => peer.send(&DaemonMsg::Done { id }),
                ClientMsg::Ping { id } => {
                    peer.send(&DaemonMsg::Pong { id });
                    break;
                }
                other => panic!("unexpected {other:?} while stopping"),
            }
        }
        stopping.join().unwrap();
        let calling = s.spawn(|| {
            let opts = CallOptions::default().with_deadline(Duration::from_secs(1));
            client.call_raw_with("h:1", "g", vec![], opts)
        });
        let ClientMsg::Call { id, .. } = peer.recv() else {
            panic!("expected the call");
        };
        peer.send(&DaemonMsg::CallOk {
            id,
            data: b"reply".to_vec(),
            trace: None,
        });
        assert_eq!(calling.join().unwrap().unwrap(), b"reply");
    });
}

/// A connection that a reader thread reads already (here: the app took invocations itself
/// first) cannot be read by the pool: invocations reach the workers through a sink, and are
/// served all the same.
#[test]
fn a_connection_with_a_reader_thread_is_served_through_a_sink() {
    let fake = FakeDaemon::start();
    let path = fake.path.clone();
    let app = std::thread::spawn(move || Client::connect_to(path));
    let mut peer = fake.accept_hello();
    let client = app.join().unwrap().unwrap();
    let (conn, _) = client.connection().unwrap();
    // Starts the connection's reader thread.
    assert!(conn.next_invocation(Some(Duration::ZERO)).is_none());
    assert!(!conn.attach_readers().unwrap());
    let server = Server::with_options(&client, ServerOptions::new(1, 0)).unwrap();
    std::thread::scope(|s| {
        let handler = Handler::new(|args| Outcome::Ok(args.to_vec()));
        let registering = s.spawn(|| server.register("f", handler));
        let ClientMsg::Register { id, .. } = peer.recv() else {
            panic!("expected register");
        };
        peer.send(&DaemonMsg::Done { id });
        registering.join().unwrap().unwrap();
    });
    peer.send(&invoke(1, b"sunk"));
    assert_eq!(peer.recv(), ok(1, b"sunk"));
    drop(peer);
    server.stop();
}
