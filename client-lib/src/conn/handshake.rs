//! Opening a connection: connect to the socket, send `hello`, wait (bounded) for `hello_ok`.
//!
//! The handshake runs on the caller's thread with a read timeout, before the reader thread
//! exists; whatever the daemon sent after `hello_ok` stays in the returned [`FrameReader`],
//! which the reader thread takes over.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::{ConnectError, DaemonInfo, HANDSHAKE_TIMEOUT, WRITE_TIMEOUT};
use crate::ipc::{
    try_encode_frame, ClientMsg, DaemonMsg, ErrorCode, FrameReader, FRAME_MAX_DEFAULT,
    PROTOCOL_VERSION, PROTOCOL_VERSION_MIN,
};

/// A connected, greeted socket (blocking, no read timeout, writes bounded by
/// [`WRITE_TIMEOUT`]), what the daemon said about itself, and the frames it sent after.
pub(super) struct Greeted {
    pub stream: UnixStream,
    pub daemon: DaemonInfo,
    pub frames: FrameReader,
}

/// Connects to `path` and does the `Hello` handshake as `name`, with request id `hello_id`.
pub(super) fn handshake(path: &Path, name: &str, hello_id: u64) -> Result<Greeted, ConnectError> {
    let io_err = |source: io::Error| ConnectError::Io {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ConnectError::NotRunning {
            path: path.to_owned(),
            source,
        },
        _ => io_err(source),
    })?;
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(io_err)?;
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(io_err)?;

    let hello = ClientMsg::Hello {
        id: hello_id,
        version: PROTOCOL_VERSION,
        version_min: Some(PROTOCOL_VERSION_MIN),
        name: name.to_owned(),
    };
    let frame = try_encode_frame(&hello, FRAME_MAX_DEFAULT)
        .map_err(|err| ConnectError::Protocol(format!("cannot send hello: {err}")))?;
    (&stream).write_all(&frame).map_err(io_err)?;

    let mut frames = FrameReader::new(FRAME_MAX_DEFAULT);
    let reply = first_frame(&stream, &mut frames).map_err(|err| match err {
        FirstFrame::Io(source) => io_err(source),
        FirstFrame::Closed => {
            ConnectError::Protocol("rpcd closed the connection during the handshake".into())
        }
        FirstFrame::Bad(message) => ConnectError::Protocol(message),
    })?;
    let daemon = greeting(reply, hello_id)?;
    // From now on the reader thread blocks in `read` until the daemon speaks or the socket
    // is shut down.
    stream.set_read_timeout(None).map_err(io_err)?;
    Ok(Greeted {
        stream,
        daemon,
        frames,
    })
}

/// What the daemon's first frame says: who it is, or why it refuses us.
pub(crate) fn greeting(reply: DaemonMsg, hello_id: u64) -> Result<DaemonInfo, ConnectError> {
    match reply {
        DaemonMsg::HelloOk {
            id,
            version,
            daemon,
            listen,
            epoch,
            limits,
        } if id == hello_id => {
            // The daemon picks a version in the range we sent; anything else is a daemon
            // that did not understand the range.
            if !(PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&version) {
                return Err(ConnectError::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    message: format!("{daemon} chose version {version}"),
                });
            }
            Ok(DaemonInfo {
                version,
                daemon,
                listen,
                epoch,
                limits,
            })
        }
        DaemonMsg::Fatal { code, message } | DaemonMsg::Failed { code, message, .. } => {
            Err(if code == ErrorCode::VersionMismatch {
                ConnectError::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    message,
                }
            } else {
                ConnectError::Refused { code, message }
            })
        }
        other => Err(ConnectError::Protocol(format!(
            "expected hello_ok for id {hello_id}, got {}",
            other.op()
        ))),
    }
}

/// What went wrong reading the handshake reply.
enum FirstFrame {
    Io(io::Error),
    Closed,
    Bad(String),
}

/// Reads until one whole frame is in and decodes it (the socket has a read timeout).
fn first_frame(mut stream: &UnixStream, frames: &mut FrameReader) -> Result<DaemonMsg, FirstFrame> {
    loop {
        match frames.next_frame::<DaemonMsg>() {
            Ok(Some(msg)) => return Ok(msg),
            Ok(None) => {}
            Err(err) => return Err(FirstFrame::Bad(err.to_string())),
        }
        match frames.read_from(&mut stream) {
            Ok(0) => return Err(FirstFrame::Closed),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(FirstFrame::Io(err)),
        }
    }
}
