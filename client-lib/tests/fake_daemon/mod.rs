//! The daemon's end of one app connection, played by hand on a Unix socket in a temp dir,
//! for the async client's integration tests. Frames are encoded apart from the library's
//! own encoder. Each test file adds the moves of its own (`impl Peer`).

// Each test crate uses its own part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use rpcd_client::ipc::{
    BufferPool, ClientMsg, DaemonMsg, FrameReader, Limits, FRAME_MAX_DEFAULT, PROTOCOL_VERSION,
};

/// One app connection, the daemon's end.
pub struct Peer {
    pub stream: UnixStream,
    pub frames: FrameReader,
}

impl Peer {
    /// Accepts one app and answers its `hello`, announcing `frame_max` as the daemon's
    /// frame maximum when given (no limits otherwise). It reads frames up to the default
    /// maximum whatever it announced, so a frame the app should not have sent is seen. A
    /// read waits at most `read_timeout`.
    pub fn accept(
        listener: &UnixListener,
        frame_max: Option<usize>,
        read_timeout: Duration,
    ) -> Peer {
        let (stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(read_timeout))
            .expect("timeout");
        let mut peer = Peer {
            stream,
            // The daemon's end lives in the app's process: it keeps out of the app's pool.
            frames: FrameReader::new(FRAME_MAX_DEFAULT)
                .with_pool(Box::leak(Box::new(BufferPool::new(0)))),
        };
        let ClientMsg::Hello { id, .. } = peer.recv() else {
            panic!("expected hello first");
        };
        let limits = frame_max.map(|frame_max| {
            let mut limits = Limits::default();
            limits.frame_max = frame_max as u64;
            limits
        });
        peer.send(&DaemonMsg::HelloOk {
            id,
            version: PROTOCOL_VERSION,
            daemon: "fake 0".into(),
            listen: "127.0.0.1:7000".into(),
            epoch: 1,
            limits,
        });
        peer
    }

    /// Takes the app's `register` of `function` and answers it `done`.
    pub fn accept_register(&mut self, function: &str) {
        let ClientMsg::Register {
            id,
            function: registered,
            ..
        } = self.recv()
        else {
            panic!("expected register");
        };
        assert_eq!(registered, function);
        self.send(&DaemonMsg::Done { id });
    }

    pub fn recv(&mut self) -> ClientMsg {
        loop {
            if let Some(msg) = self.frames.next_frame().expect("a frame") {
                return msg;
            }
            let n = self.frames.read_from(&mut self.stream).expect("read");
            assert!(n > 0, "the app closed the connection");
        }
    }

    pub fn send(&mut self, msg: &DaemonMsg) {
        self.stream.write_all(&frame(msg)).expect("write");
    }
}

/// `msg` as a frame, encoded apart from the library's own encoder.
pub fn frame(msg: &DaemonMsg) -> Vec<u8> {
    let body = rmp_serde::to_vec_named(msg).expect("encodes");
    let len = u32::try_from(body.len()).expect("a frame");
    [&len.to_be_bytes()[..], &body].concat()
}

/// `len` bytes that differ with `seed` and along their length (no period a misplaced
/// piece would hide in).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251 % 253) as u8 ^ seed)
        .collect()
}

/// A listening socket in a new temp dir (kept alive by the returned guard).
pub fn listen() -> (tempfile::TempDir, UnixListener, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rpcd.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    (dir, listener, path)
}
