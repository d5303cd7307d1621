//! A test-only daemon for the connection's tests (and the server's): a listener in a temp
//! dir whose one app connection the test drives by hand, frame by frame.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use super::Connection;
use crate::ipc::{
    encode_frame, ClientMsg, DaemonMsg, FrameReader, Limits, FRAME_MAX_DEFAULT, PROTOCOL_VERSION,
};

/// A test-only daemon: a listener in a temp dir, driven by hand from the test.
pub struct FakeDaemon {
    listener: UnixListener,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

/// One accepted app connection on the fake daemon.
pub struct Peer {
    pub stream: UnixStream,
    frames: FrameReader,
}

impl FakeDaemon {
    pub fn start() -> FakeDaemon {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rpcd.sock");
        let listener = UnixListener::bind(&path).unwrap();
        FakeDaemon {
            listener,
            path,
            _dir: dir,
        }
    }

    pub fn accept(&self) -> Peer {
        let (stream, _) = self.listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Peer {
            stream,
            frames: FrameReader::new(FRAME_MAX_DEFAULT),
        }
    }

    /// Accepts one app and completes its handshake.
    pub fn accept_hello(&self) -> Peer {
        let mut peer = self.accept();
        let ClientMsg::Hello { id, version, .. } = peer.recv() else {
            panic!("expected hello first");
        };
        assert_eq!(version, PROTOCOL_VERSION);
        peer.send(&hello_ok(id));
        peer
    }
}

pub fn hello_ok(id: u64) -> DaemonMsg {
    DaemonMsg::HelloOk {
        id,
        version: PROTOCOL_VERSION,
        daemon: "fake 0".into(),
        listen: "127.0.0.1:7000".into(),
        epoch: 42,
        limits: Some(limits()),
    }
}

/// The limits the fake daemon reports.
pub fn limits() -> Limits {
    Limits {
        frame_max: FRAME_MAX_DEFAULT as u64,
        ..Limits::default()
    }
}

impl Peer {
    /// The next frame from the app (the socket has a read timeout).
    pub fn recv(&mut self) -> ClientMsg {
        loop {
            if let Some(msg) = self.frames.next_frame().unwrap() {
                return msg;
            }
            let n = self.frames.read_from(&mut self.stream).unwrap();
            assert!(n > 0, "app closed the connection");
        }
    }

    pub fn send(&mut self, msg: &DaemonMsg) {
        self.stream.write_all(&encode_frame(msg)).unwrap();
    }
}

/// Connects an app to `fake` while the fake daemon handshakes on this thread.
pub fn connected(fake: &FakeDaemon) -> (Connection, Peer) {
    let path = fake.path.clone();
    let app = thread::spawn(move || Connection::connect(&path, "test-app"));
    let peer = fake.accept_hello();
    (app.join().unwrap().unwrap(), peer)
}
