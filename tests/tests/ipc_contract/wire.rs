//! The local protocol spoken by hand, as a client written from `docs/ipc-protocol.md` alone
//! would: [`Raw`], an app connection that frames MessagePack itself, and [`FakeDaemon`], a
//! daemon of a later version that adds keys no build of this repository knows to
//! everything it sends.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rpcd_client::ipc::{
    encode_frame, ClientMsg, DaemonMsg, FrameReader, FRAME_MAX_DEFAULT, PROTOCOL_VERSION,
    PROTOCOL_VERSION_MIN,
};
use serde_json::{json, Value};

/// How long a read on a raw connection waits before the test fails.
const READ_WAIT: Duration = Duration::from_secs(15);

/// MessagePack of a JSON value, maps with string keys.
pub fn msgpack(v: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("JSON encodes")
}

/// A 4-byte length and `body`.
pub fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut f = u32::try_from(body.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    f.extend_from_slice(body);
    f
}

/// `body`, a MessagePack map (fixmap), with `"x_new": {"a": [1, "s", nil]}` added.
pub fn with_extra_key(body: &[u8]) -> Vec<u8> {
    let extra = msgpack(&json!({"x_new": {"a": [1, "s", null]}}));
    let mut out = body.to_vec();
    assert!(matches!(out[0], 0x80..=0x8e), "a fixmap with room");
    out[0] += 1;
    out.extend_from_slice(&extra[1..]);
    out
}

/// An app connection that speaks the framing itself.
pub struct Raw {
    stream: UnixStream,
    frames: FrameReader,
}

impl Raw {
    /// Connects without saying hello.
    pub fn connect(path: &Path) -> Raw {
        let stream = UnixStream::connect(path).expect("connect");
        stream.set_read_timeout(Some(READ_WAIT)).expect("timeout");
        Raw {
            stream,
            frames: FrameReader::new(FRAME_MAX_DEFAULT),
        }
    }

    /// Connects and says hello as this build does; returns the `hello_ok`.
    pub fn greeted(path: &Path) -> (Raw, DaemonMsg) {
        let mut raw = Raw::connect(path);
        raw.send(&ClientMsg::Hello {
            id: 1,
            version: PROTOCOL_VERSION,
            version_min: Some(PROTOCOL_VERSION_MIN),
            name: "raw".into(),
        });
        let ok = raw.recv().expect("hello_ok");
        assert!(matches!(ok, DaemonMsg::HelloOk { .. }), "{ok:?}");
        (raw, ok)
    }

    pub fn send(&mut self, msg: &ClientMsg) {
        self.stream.write_all(&encode_frame(msg)).expect("write");
    }

    /// Sends `body` as one frame, whatever it holds.
    pub fn send_body(&mut self, body: &[u8]) {
        self.stream.write_all(&frame_of(body)).expect("write");
    }

    pub fn send_json(&mut self, v: &Value) {
        self.send_body(&msgpack(v));
    }

    /// The next frame from the daemon; `None` once it closed the connection.
    pub fn recv(&mut self) -> Option<DaemonMsg> {
        loop {
            if let Some(msg) = self.frames.next_frame().expect("a valid frame") {
                return Some(msg);
            }
            match self.frames.read_from(&mut self.stream) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The body of the next frame, undecoded.
    pub fn recv_body(&mut self) -> Vec<u8> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).expect("length");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).expect("body");
        body
    }
}

/// A daemon of a later version: it answers `hello`, `ping`, `list`, `stats` and calls of
/// `rpcd.echo` and `rpcd.ping`, each reply carrying keys this repository never defined
/// (in `hello_ok` and its limits, in `stats` at every level, in `call_ok`), as a daemon
/// may under `docs/ipc-protocol.md` §3.
pub struct FakeDaemon {
    pub path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl FakeDaemon {
    pub fn start() -> FakeDaemon {
        let dir = rpcd_tests::tempdir();
        let path = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        std::thread::spawn(move || serve(s));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        FakeDaemon {
            path,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one app connection until it closes.
fn serve(stream: UnixStream) {
    let mut write = stream.try_clone().expect("clone");
    let mut read = stream;
    // Requests arrive as this build encodes them; read them as JSON-ish values.
    let mut frames = FrameReader::new(FRAME_MAX_DEFAULT);
    loop {
        let msg: ClientMsg = loop {
            match frames.next_frame() {
                Ok(Some(m)) => break m,
                Ok(None) => {}
                Err(_) => return,
            }
            match frames.read_from(&mut read) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let Some(body) = reply(msg) else { continue };
        if write.write_all(&frame_of(&body)).is_err() {
            return;
        }
    }
}

/// The fake daemon's answer to one request, with keys from the future.
fn reply(msg: ClientMsg) -> Option<Vec<u8>> {
    let later = json!({"a": [1, "s", null], "b": {"c": true}});
    Some(match msg {
        ClientMsg::Hello { id, version, .. } => msgpack(&json!({
            "op": "hello_ok", "id": id, "version": version.min(PROTOCOL_VERSION + 1),
            "daemon": "rpcd 9.9.9", "listen": "127.0.0.1:7999", "epoch": 7u64,
            "limits": {"frame_max": FRAME_MAX_DEFAULT, "payload_max": 65536, "streams_max": 3},
            "features": later,
        })),
        ClientMsg::Ping { id } => with_extra_key(&msgpack(&json!({"op": "pong", "id": id}))),
        ClientMsg::List { id } => msgpack(&json!({
            "op": "list", "id": id, "functions": ["rpcd.echo", "rpcd.ping"], "owners": later,
        })),
        ClientMsg::Stats { id } => msgpack(&json!({
            "op": "stats", "id": id, "x_new": 1,
            "stats": {
                "epoch": 7u64, "listen": "127.0.0.1:7999", "uptime_ms": 1000,
                "version": "rpcd 9.9.9", "calls": {"ok": 3, "new_code": 1},
                "totals": {"datagrams_sent": 5, "new_counter": 9},
                "peers": [{"addr": "10.0.0.2:7000", "rto_us": 2000,
                           "counters": {"datagrams_sent": 5, "new_counter": 9},
                           "new_peer_field": later}],
                "new_section": later,
            },
        })),
        ClientMsg::Call {
            id, function, args, ..
        } => {
            let data = match function.as_str() {
                "rpcd.echo" => args.to_vec(),
                "rpcd.ping" => rmp_serde::to_vec("pong").expect("encodes"),
                _ => {
                    return Some(with_extra_key(&msgpack(&json!({
                        "op": "failed", "id": id, "code": "unknown_function", "message": function,
                    }))))
                }
            };
            let body = rmp_serde::to_vec_named(&DaemonMsg::CallOk {
                id,
                data,
                trace: None,
            })
            .expect("encodes");
            with_extra_key(&body)
        }
        ClientMsg::Register { id, .. } | ClientMsg::Unregister { id, .. } => {
            with_extra_key(&msgpack(&json!({"op": "done", "id": id})))
        }
        ClientMsg::Result { .. } | ClientMsg::CancelCall { .. } | ClientMsg::Monitor { .. } => {
            return None
        }
    })
}
