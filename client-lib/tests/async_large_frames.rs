//! The async client (`rpcd_client::tokio`) with large frames: a call's large arguments
//! reach the daemon byte for byte, not mixed with the small frames other tasks send
//! meanwhile; a large `invoke` and a large reply arrive whole however the socket cuts them;
//! a call too large for the daemon's frame maximum fails here and writes nothing.
//!
//! The daemon is played by hand on a Unix socket in a temp dir, on a thread of its own.
#![cfg(feature = "tokio")]

use std::io::Write;
use std::time::Duration;

mod fake_daemon;
use fake_daemon::{frame, listen, pattern, Peer};

use rpcd_client::ipc::{
    ClientMsg, DaemonMsg, Outcome, FRAME_MAX_DEFAULT, LENGTH_PREFIX_LEN, POOLED_CAPACITY_MIN,
};
use rpcd_client::tokio::{Client, Handler, Request, Server};
use rpcd_client::{CallError, CallOptions};

const MIB: usize = 1024 * 1024;

impl Peer {
    /// Waits for the app to close the connection, with no frame (not even part of one)
    /// sent before.
    fn expect_closed(&mut self) {
        loop {
            let msg: Option<ClientMsg> = self.frames.next_frame().expect("a frame");
            assert!(msg.is_none(), "the app sent {msg:?}");
            let n = self.frames.read_from(&mut self.stream).expect("read");
            if n == 0 {
                assert_eq!(self.frames.buffered(), 0, "part of a frame before the end");
                return;
            }
        }
    }

    /// Writes `bytes` a few at a time, pausing now and then, so that the app's reads find
    /// pieces of frames (a length prefix too) and, between them, nothing.
    fn send_in_pieces(&mut self, bytes: &[u8]) {
        const SIZES: [usize; 7] = [1, 3, 4093, 2, 1021, 7, 16381];
        let mut at = 0;
        for n in 0.. {
            if at == bytes.len() {
                return;
            }
            let end = bytes.len().min(at + SIZES[n % SIZES.len()]);
            self.stream.write_all(&bytes[at..end]).expect("write");
            at = end;
            if n < 64 || n % 32 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn opts() -> CallOptions {
    CallOptions::default().with_deadline(Duration::from_secs(10))
}

/// Three calls of 3 MiB + 7 bytes of arguments, among 128 small calls from eight other
/// tasks at the same time: the daemon reads every frame whole, each large call's arguments
/// byte for byte (a small frame written between a large frame's parts would break the
/// stream), and every caller gets its own reply.
#[test]
fn large_async_calls_reach_the_daemon_whole_among_small_calls_from_other_tasks() {
    const LARGE: usize = 3 * MIB + 7;
    const LARGE_CALLS: u8 = 3;
    const SMALL_TASKS: usize = 8;
    const SMALL_CALLS: usize = 16;
    let (_dir, listener, path) = listen();
    let daemon = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener, Some(FRAME_MAX_DEFAULT), Duration::from_secs(10));
        let (mut large, mut small) = (0, 0);
        while large < LARGE_CALLS || small < SMALL_TASKS * SMALL_CALLS {
            let ClientMsg::Call {
                id, function, args, ..
            } = peer.recv()
            else {
                panic!("expected a call");
            };
            let data = match function.strip_prefix("large.") {
                Some(seed) => {
                    let seed: u8 = seed.parse().expect("a seed");
                    assert!(args[..] == pattern(LARGE, seed)[..], "large call {seed}");
                    large += 1;
                    LARGE.to_string().into_bytes()
                }
                None => {
                    assert_eq!(function, "small");
                    small += 1;
                    args.to_vec()
                }
            };
            peer.send(&DaemonMsg::CallOk {
                id,
                data,
                trace: None,
            });
        }
    });
    runtime().block_on(async {
        let client = Client::connect_to(&path).await.expect("connected");
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..SMALL_TASKS {
            let client = client.clone();
            tasks.spawn(async move {
                for i in 0..SMALL_CALLS {
                    let args = format!("task {task} call {i}").into_bytes();
                    let reply = client
                        .call_raw_with("h:1", "small", args.clone(), opts())
                        .await
                        .expect("small call");
                    assert_eq!(reply, args);
                }
            });
        }
        for seed in 0..LARGE_CALLS {
            let client = client.clone();
            tasks.spawn(async move {
                let function = format!("large.{seed}");
                let reply = client
                    .call_raw_with("h:1", &function, pattern(LARGE, seed), opts())
                    .await
                    .expect("large call");
                assert_eq!(reply, LARGE.to_string().into_bytes());
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.expect("task");
        }
    });
    daemon.join().expect("daemon thread");
}

/// A 5 MiB invoke and, right behind it in the stream, a 4 MiB reply, written by the daemon
/// a few bytes at a time: the serving handler gets the invocation's arguments byte for byte
/// (it echoes them, and the daemon checks the result) and the caller its reply.
#[test]
fn a_large_invoke_and_a_large_reply_read_in_small_pieces_arrive_whole() {
    const ARGS: usize = 5 * MIB + 3;
    const DATA: usize = 4 * MIB + 1;
    let (_dir, listener, path) = listen();
    let daemon = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener, Some(FRAME_MAX_DEFAULT), Duration::from_secs(10));
        peer.accept_register("echo");
        let ClientMsg::Call { id, .. } = peer.recv() else {
            panic!("expected a call");
        };
        let invoke = frame(&DaemonMsg::Invoke {
            invocation: 7,
            function: "echo".into(),
            args: pattern(ARGS, 1).into(),
            caller: "local".into(),
            peer: "local".into(),
            deadline_ms: 10_000,
            credentials: None,
        });
        let reply = frame(&DaemonMsg::CallOk {
            id,
            data: pattern(DATA, 2),
            trace: None,
        });
        peer.send_in_pieces(&[invoke, reply].concat());
        let ClientMsg::Result {
            invocation,
            outcome,
        } = peer.recv()
        else {
            panic!("expected a result");
        };
        assert_eq!(invocation, 7);
        let Outcome::Ok(echoed) = outcome else {
            panic!("expected Ok, got {outcome:?}");
        };
        assert!(echoed == pattern(ARGS, 1), "the invocation's arguments");
    });
    runtime().block_on(async {
        let client = Client::connect_to(&path).await.expect("connected");
        let server = Server::new(&client);
        let echo = Handler::new(|req: Request| async move { Outcome::Ok(req.args.to_vec()) });
        server.register("echo", echo).await.expect("registered");
        let reply = client
            .call_raw_with("h:1", "f", b"x".to_vec(), opts())
            .await
            .expect("call");
        assert!(reply == pattern(DATA, 2), "the reply");
        tokio::task::spawn_blocking(move || daemon.join())
            .await
            .expect("join task")
            .expect("daemon thread");
        server.stop().await;
    });
}

/// With a daemon whose frame maximum is 1 MiB, calls over it fail with `message_too_large`
/// (arguments of the size written from the caller's buffer, and smaller ones encoded into
/// one frame), the connection stays open, and the daemon receives nothing of them.
#[test]
fn an_oversized_async_call_fails_here_and_writes_nothing() {
    const FRAME_MAX: usize = MIB;
    let (_dir, listener, path) = listen();
    let daemon = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener, Some(FRAME_MAX), Duration::from_secs(10));
        let ClientMsg::Ping { id } = peer.recv() else {
            panic!("expected ping: nothing of the calls before it");
        };
        peer.send(&DaemonMsg::Pong { id });
        peer.expect_closed();
    });
    runtime().block_on(async {
        let client = Client::connect_to(&path).await.expect("connected");
        for len in [POOLED_CAPACITY_MIN, FRAME_MAX - LENGTH_PREFIX_LEN, 3 * MIB] {
            let err = client
                .call_raw_with("h:1", "f", vec![9; len], opts())
                .await
                .expect_err("too large");
            assert!(
                matches!(&err, CallError::MessageTooLarge(m) if m.contains("frame maximum")),
                "{len} bytes: {err:?}"
            );
        }
        client.ping().await.expect("still open");
    });
    daemon.join().expect("daemon thread");
}
