//! An async serving app gives a large invocation's arguments back to the process's pool
//! (`ipc::buffer_pool`) once the library is done with them: after a typed handler decoded
//! them, and when the invocation is answered without a handler. The next large invocation
//! is then read into that buffer, not into a freshly allocated one.
//!
//! One test in its own file: the pool is the process's, so no other test may use it at the
//! same time. The daemon is played by hand on a Unix socket in a temp dir.
#![cfg(feature = "tokio")]

use std::time::Duration;

mod fake_daemon;
use fake_daemon::{listen, Peer};

use rpcd_client::ipc::{buffer_pool, ClientMsg, DaemonMsg, Outcome, FRAME_MAX_DEFAULT};
use rpcd_client::tokio::{Client, Server};

const MIB: usize = 1024 * 1024;

#[test]
fn large_invocations_of_an_async_server_reuse_the_arguments_buffer() {
    const LEN: usize = 3 * MIB;
    let (_dir, listener, path) = listen();
    let daemon = std::thread::spawn(move || {
        let mut peer = Peer::accept(&listener, Some(FRAME_MAX_DEFAULT), Duration::from_secs(10));
        peer.accept_register("len");
        let args = rmp_serde::to_vec(&serde_bytes::ByteBuf::from(vec![7u8; LEN])).expect("args");
        let mut invoke = |invocation: u64, function: &str| {
            peer.send(&DaemonMsg::Invoke {
                invocation,
                function: function.into(),
                args: args.clone().into(),
                caller: "local".into(),
                peer: "local".into(),
                deadline_ms: 10_000,
                credentials: None,
            });
            let ClientMsg::Result {
                invocation: answered,
                outcome,
            } = peer.recv()
            else {
                panic!("expected a result");
            };
            assert_eq!(answered, invocation);
            outcome
        };
        let pool = buffer_pool();
        pool.clear();
        // The first is read into a new buffer; each later one into the one given back.
        let expected = Outcome::Ok(rmp_serde::to_vec(&LEN).expect("reply"));
        assert_eq!(invoke(1, "len"), expected);
        let before = pool.stats();
        assert_eq!(invoke(2, "len"), expected, "a typed handler");
        assert!(
            matches!(invoke(3, "unknown"), Outcome::Error(_)),
            "a function the server does not serve"
        );
        assert_eq!(invoke(4, "len"), expected, "a typed handler again");
        let after = pool.stats();
        assert_eq!(after.missed, before.missed, "{before:?} -> {after:?}");
        assert!(after.reused >= before.reused + 3, "{before:?} -> {after:?}");
        assert!(after.bytes <= pool.max(), "{after:?}");
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let client = Client::connect_to(&path).await.expect("connected");
        let server = Server::new(&client);
        server
            .register_fn("len", |args: serde_bytes::ByteBuf| async move {
                Ok::<_, String>(args.len())
            })
            .await
            .expect("registered");
        tokio::task::spawn_blocking(move || daemon.join())
            .await
            .expect("join task")
            .expect("daemon thread");
        server.stop().await;
    });
}
