//! Large buffers are reused across messages through the process's pool (`ipc::buffer_pool`),
//! in a caller and in a serving app, and the pool stays within its bound.
//!
//! One test in its own file: the pool is the process's, so no other test may use it at the
//! same time. The daemon is played by hand on a Unix socket in a temp dir.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use rpcd_client::ipc::{
    buffer_pool, BufferPool, ClientMsg, DaemonMsg, FrameReader, Limits, Outcome,
    CLIENT_POOL_MAX_DEFAULT, FRAME_MAX_DEFAULT, PROTOCOL_VERSION,
};
use rpcd_client::{CallOptions, Client, Connection, Handler, Server, ServerOptions};

const MIB: usize = 1024 * 1024;

/// One app connection, the daemon's end.
struct Peer {
    stream: UnixStream,
    frames: FrameReader,
}

impl Peer {
    /// Accepts one app and answers its `hello`.
    fn accept(listener: &UnixListener) -> Peer {
        let (stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut peer = Peer {
            stream,
            // The daemon's end lives in the same process: it must not use the app's pool.
            frames: FrameReader::new(FRAME_MAX_DEFAULT)
                .with_pool(Box::leak(Box::new(BufferPool::new(0)))),
        };
        let ClientMsg::Hello { id, .. } = peer.recv() else {
            panic!("expected hello first");
        };
        let mut limits = Limits::default();
        limits.frame_max = FRAME_MAX_DEFAULT as u64;
        peer.send(&DaemonMsg::HelloOk {
            id,
            version: PROTOCOL_VERSION,
            daemon: "fake 0".into(),
            listen: "127.0.0.1:7000".into(),
            epoch: 1,
            limits: Some(limits),
        });
        peer
    }

    fn recv(&mut self) -> ClientMsg {
        loop {
            if let Some(msg) = self.frames.next_frame().expect("a frame") {
                return msg;
            }
            let n = self.frames.read_from(&mut self.stream).expect("read");
            assert!(n > 0, "the app closed the connection");
        }
    }

    /// Sends `msg` as a frame encoded apart from the pool (not by `encode_frame`).
    fn send(&mut self, msg: &DaemonMsg) {
        let body = rmp_serde::to_vec_named(msg).expect("encodes");
        let len = u32::try_from(body.len()).expect("a frame");
        self.stream.write_all(&len.to_be_bytes()).expect("write");
        self.stream.write_all(&body).expect("write");
    }
}

#[test]
fn large_frames_and_payloads_reuse_pooled_buffers_within_the_bound() {
    let pool = buffer_pool();
    assert_eq!(pool.max(), CLIENT_POOL_MAX_DEFAULT);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rpcd.sock");
    let listener = UnixListener::bind(&path).expect("bind");

    // A caller: two large calls, each with a large reply.
    let app_path = path.clone();
    let app = std::thread::spawn(move || Connection::connect(&app_path, "caller"));
    let mut peer = Peer::accept(&listener);
    let conn = app.join().expect("connect thread").expect("connected");
    pool.clear();
    let before = pool.stats();
    for (n, (len, byte)) in [(3 * MIB, 0x11u8), (3 * MIB - 5000, 0x22)]
        .into_iter()
        .enumerate()
    {
        let reply = std::thread::scope(|s| {
            let call = s.spawn(|| {
                conn.call("h:1", "f", vec![byte; len], CallOptions::new(None, false))
                    .expect("call")
            });
            let ClientMsg::Call { id, args, .. } = peer.recv() else {
                panic!("expected call {n}");
            };
            assert!(
                args.len() == len && args.iter().all(|&b| b == byte),
                "call {n}"
            );
            peer.send(&DaemonMsg::CallOk {
                id,
                data: vec![!byte; len + 100],
                trace: None,
            });
            call.join().expect("caller thread")
        });
        assert!(reply.len() == len + 100 && reply.iter().all(|&b| b == !byte));
        assert!(pool.stats().bytes <= pool.max());
    }
    // The large calls were written from their own arguments, without a frame buffer; the
    // second reply was read into the first one's buffer. (The replies' data go to the
    // caller, so those are allocated.)
    let after = pool.stats();
    assert!(after.reused > before.reused, "{before:?} -> {after:?}");

    // A serving app: its worker gives an invocation's arguments back once the handler
    // returns, besides the reader's buffer.
    let app_path = path.clone();
    let app = std::thread::spawn(move || Client::connect_to(app_path));
    let mut peer = Peer::accept(&listener);
    let client = app.join().expect("connect thread").expect("connected");
    let server = Server::with_options(&client, ServerOptions::new(1, 4)).expect("server");
    let handler = Handler::new(|args: &[u8]| Outcome::Ok((args.len() as u64).to_be_bytes().into()));
    std::thread::scope(|s| {
        let registering = s.spawn(|| server.register("f", handler));
        let ClientMsg::Register { id, .. } = peer.recv() else {
            panic!("expected register");
        };
        peer.send(&DaemonMsg::Done { id });
        registering
            .join()
            .expect("register thread")
            .expect("registered");
    });
    pool.clear();
    let before = pool.stats();
    let len = 3 * MIB;
    peer.send(&DaemonMsg::Invoke {
        invocation: 1,
        function: "f".into(),
        args: vec![7; len].into(),
        caller: "local".into(),
        peer: "local".into(),
        deadline_ms: 10_000,
        credentials: None,
    });
    assert_eq!(
        peer.recv(),
        ClientMsg::Result {
            invocation: 1,
            outcome: Outcome::Ok((len as u64).to_be_bytes().into()),
        }
    );
    // The reader's buffer went with the arguments (left where they were read) and is given
    // back after the result is sent.
    let until = Instant::now() + Duration::from_secs(5);
    // Wait for what is asserted below: a buffer the caller's half gave back late counts in
    // `kept` too, so `kept` alone can be reached before the arguments' buffer is back.
    while (pool.stats().kept < before.kept + 1 || pool.stats().bytes < len)
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = pool.stats();
    drop(peer);
    server.stop();
    assert!(after.kept > before.kept, "{before:?} -> {after:?}");
    assert!(after.bytes <= pool.max() && after.bytes >= len, "{after:?}");
}
