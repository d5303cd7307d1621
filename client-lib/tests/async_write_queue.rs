//! The async client's write queue is bounded in bytes: with a daemon that does not read,
//! calls queue at most the bound and the others wait for room (and all complete, byte for
//! byte, once it reads); a caller whose deadline passes while it waits for room gets
//! `deadline_exceeded` and takes no room with it; a connection that closes fails the
//! callers waiting for room at once.
//!
//! The daemon is played by hand on a Unix socket in a temp dir, on a thread of its own that
//! reads nothing until the test tells it to. The runtime has one thread, so that "every
//! task has gone as far as it can" is a state the test can wait for (see `settle`).
#![cfg(feature = "tokio")]

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

mod fake_daemon;
use fake_daemon::{listen, pattern, Peer};

use rpcd_client::ipc::{ClientMsg, DaemonMsg, POOLED_CAPACITY_MIN};
use rpcd_client::tokio::Client;
use rpcd_client::{CallError, CallOptions, ClientOptions};

const MIB: usize = 1024 * 1024;

/// How long a test may take before it counts as hung (a caller that waits for room forever).
const TEST_MAX: Duration = Duration::from_secs(20);

impl Peer {
    /// Reads one call, checks its arguments are `pattern(len, seed)` for the seed its
    /// function names (`f.SEED`), and echoes them; returns the function's name.
    fn echo_call(&mut self) -> String {
        let msg = self.recv();
        let ClientMsg::Call {
            id, function, args, ..
        } = msg
        else {
            panic!("expected a call, got {msg:?}");
        };
        let seed: u8 = function
            .strip_prefix("f.")
            .and_then(|seed| seed.parse().ok())
            .expect("a seed");
        assert!(
            args[..] == pattern(args.len(), seed)[..],
            "{function}: arguments changed"
        );
        self.send(&DaemonMsg::CallOk {
            id,
            data: args.to_vec(),
            trace: None,
        });
        function
    }
}

/// A runtime of one thread: `settle` then sees every task stopped where it waits.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn opts(deadline: Duration) -> CallOptions {
    CallOptions::default().with_deadline(deadline)
}

/// A client whose write queue holds `bound` bytes.
async fn connect(path: &PathBuf, bound: usize) -> Client {
    Client::connect_with_write_queue_max(path, ClientOptions::default(), bound)
        .await
        .expect("connected")
}

/// Lets every other task run until it waits (for room, a reply, a socket that takes
/// nothing more) and returns the bytes queued then: yields until the queued bytes have not
/// changed for many yields in a row. On a one-thread runtime a yield runs every task that
/// can run, and polls the sockets, before this one again.
async fn settle(client: &Client) -> usize {
    const STILL: usize = 200;
    let mut last = client.write_queue_bytes();
    let mut still = 0;
    while still < STILL {
        tokio::task::yield_now().await;
        let now = client.write_queue_bytes();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    last
}

/// A call's frame is its arguments and at most this many bytes more (its length prefix,
/// id, target, function name, deadline), with the short names these tests use.
const CALL_OVERHEAD_MAX: usize = 256;

/// Whether `queued` bytes are the frames of calls with arguments of `args` bytes each.
fn frames_of(queued: usize, args: &[usize]) -> bool {
    let least: usize = args.iter().sum();
    (least..=least + args.len() * CALL_OVERHEAD_MAX).contains(&queued)
}

/// Sixteen tasks call at once with 1 MiB + 5 bytes of arguments each (written from the
/// caller's buffer, between the frame's head and tail) through a 4 MiB write queue, to a
/// daemon that reads nothing: three frames are queued, which is as many as fit, and the
/// other callers wait. Once the daemon reads, every call reaches it byte for byte and every
/// caller gets its echo, and the queue is empty.
#[test]
fn calls_beyond_the_write_queue_wait_for_room_and_all_complete_once_the_daemon_reads() {
    const BOUND: usize = 4 * MIB;
    const ARGS: usize = MIB + 5;
    const CALLS: u8 = 16;
    const FIT: usize = 3;
    // Arguments of this size are written from the caller's buffer (`ipc::split`).
    const _: () = assert!(ARGS >= POOLED_CAPACITY_MIN);
    const _: () = assert!(FIT * (ARGS + CALL_OVERHEAD_MAX) <= BOUND);
    const _: () = assert!((FIT + 1) * ARGS > BOUND);
    let (_dir, listener, path) = listen();
    let (go, read) = mpsc::channel::<()>();
    let daemon = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener, None, TEST_MAX);
        read.recv().expect("told to read");
        let mut seen: Vec<String> = (0..CALLS).map(|_| peer.echo_call()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), usize::from(CALLS), "every call once");
    });
    runtime().block_on(async {
        tokio::time::timeout(TEST_MAX, async {
            let client = connect(&path, BOUND).await;
            let mut tasks = tokio::task::JoinSet::new();
            for seed in 0..CALLS {
                let client = client.clone();
                tasks.spawn(async move {
                    let args = pattern(ARGS, seed);
                    let reply = client
                        .call_raw_with("h:1", &format!("f.{seed}"), args.clone(), opts(TEST_MAX))
                        .await
                        .expect("call");
                    assert!(reply == args, "f.{seed}: the echo");
                });
            }
            let queued = settle(&client).await;
            assert!(
                queued <= BOUND,
                "{queued} bytes queued, over the bound of {BOUND}"
            );
            assert!(
                frames_of(queued, &[ARGS; FIT]),
                "{queued} bytes: {FIT} calls fit"
            );
            assert!(tasks.try_join_next().is_none(), "no call completed");
            go.send(()).expect("daemon thread");
            while let Some(joined) = tasks.join_next().await {
                joined.expect("task");
            }
            assert_eq!(client.write_queue_bytes(), 0, "all written");
        })
        .await
        .expect("no caller waits forever");
    });
    daemon.join().expect("daemon thread");
}

/// A call of 1.5 MiB fills most of a 2 MiB write queue (the daemon reads nothing); a call of
/// 1 MiB with a deadline of 300 ms waits for room and fails with `deadline_exceeded`,
/// having taken none: the queue holds the first call alone, the daemon never sees the
/// second (neither it nor a `cancel_call` for it), and once the daemon reads, a call larger
/// than the whole queue, which needs all its room back, completes.
#[test]
fn a_caller_whose_deadline_passes_while_waiting_for_room_fails_and_takes_no_room() {
    const BOUND: usize = 2 * MIB;
    let (_dir, listener, path) = listen();
    let (go, read) = mpsc::channel::<()>();
    let daemon = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener, None, TEST_MAX);
        read.recv().expect("told to read");
        assert_eq!(peer.echo_call(), "f.1");
        // Nothing of the call that gave up: the next frame is the last call's.
        assert_eq!(peer.echo_call(), "f.3");
    });
    runtime().block_on(async {
        tokio::time::timeout(TEST_MAX, async {
            let client = connect(&path, BOUND).await;
            let first = tokio::spawn({
                let client = client.clone();
                async move {
                    client
                        .call_raw_with("h:1", "f.1", pattern(3 * MIB / 2, 1), opts(TEST_MAX))
                        .await
                }
            });
            let first_len = settle(&client).await;
            assert!(
                frames_of(first_len, &[3 * MIB / 2]),
                "the first call queued"
            );
            let err = client
                .call_raw_with(
                    "h:1",
                    "f.2",
                    pattern(MIB, 2),
                    opts(Duration::from_millis(300)),
                )
                .await
                .expect_err("no room within the deadline");
            assert!(
                matches!(&err, CallError::DeadlineExceeded(m) if m.contains("write queue")),
                "{err:?}"
            );
            assert_eq!(settle(&client).await, first_len, "the first call alone");
            go.send(()).expect("daemon thread");
            let reply = first.await.expect("task").expect("first call");
            assert!(reply == pattern(3 * MIB / 2, 1), "the first echo");
            let reply = client
                .call_raw_with("h:1", "f.3", pattern(BOUND, 3), opts(TEST_MAX))
                .await
                .expect("a call as large as the queue");
            assert!(reply == pattern(BOUND, 3), "the last echo");
            assert_eq!(client.write_queue_bytes(), 0, "all written");
        })
        .await
        .expect("no caller waits forever");
    });
    daemon.join().expect("daemon thread");
}

/// A call of 1.5 MiB fills most of a 2 MiB write queue and four callers of 1 MiB wait for
/// room, all with deadlines of 20 s; the daemon then closes the connection without reading.
/// Every caller fails with `ConnectionLost` at once, not at its deadline.
#[test]
fn callers_waiting_for_room_fail_promptly_when_the_connection_closes() {
    const BOUND: usize = 2 * MIB;
    const WAITING: u8 = 4;
    const PROMPTLY: Duration = Duration::from_secs(5);
    let (_dir, listener, path) = listen();
    let (close, closing) = mpsc::channel::<()>();
    let daemon = std::thread::spawn(move || {
        let peer = Peer::accept(&listener, None, TEST_MAX);
        closing.recv().expect("told to close");
        drop(peer);
    });
    runtime().block_on(async {
        let client = connect(&path, BOUND).await;
        let mut tasks = tokio::task::JoinSet::new();
        for (seed, len) in std::iter::once((0, 3 * MIB / 2)).chain((1..=WAITING).map(|s| (s, MIB)))
        {
            let caller = client.clone();
            tasks.spawn(async move {
                caller
                    .call_raw_with(
                        "h:1",
                        &format!("f.{seed}"),
                        pattern(len, seed),
                        opts(TEST_MAX),
                    )
                    .await
            });
            // The first call queues before the others come.
            settle(&client).await;
        }
        let queued = settle(&client).await;
        assert!(
            frames_of(queued, &[3 * MIB / 2]),
            "{queued} bytes: one call queued"
        );
        assert!(tasks.try_join_next().is_none(), "no call completed");
        close.send(()).expect("daemon thread");
        let failed = tokio::time::timeout(PROMPTLY, async {
            let mut failed = 0;
            while let Some(joined) = tasks.join_next().await {
                let err = joined.expect("task").expect_err("the connection closed");
                assert_eq!(err, CallError::ConnectionLost);
                failed += 1;
            }
            failed
        })
        .await
        .expect("the callers waiting for room fail promptly");
        assert_eq!(failed, usize::from(WAITING) + 1);
    });
    daemon.join().expect("daemon thread");
}
