//! A raw session on the daemon's socket, for the requests the blocking
//! [`Connection`](rpcd_client::conn::Connection) does not make: a traced `call`, whose
//! `call_ok` / `failed` carries a timeline, and `monitor`, which turns the connection into
//! a stream of `event` frames (`docs/ipc-protocol.md` §5, §8).

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context};
use rpcd_client::ipc::{
    encode_frame, ClientMsg, DaemonMsg, FrameReader, FRAME_MAX_DEFAULT, PROTOCOL_VERSION,
    PROTOCOL_VERSION_MIN,
};

/// One connection, past its handshake.
#[derive(Debug)]
pub struct Session {
    stream: UnixStream,
    reader: FrameReader,
}

impl Session {
    /// Connect to the daemon at `path` and say hello as `name`.
    pub fn open(path: &Path, name: &str) -> anyhow::Result<Session> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("cannot connect to {}", path.display()))?;
        let mut s = Session {
            stream,
            reader: FrameReader::new(FRAME_MAX_DEFAULT),
        };
        s.send(&ClientMsg::Hello {
            id: 0,
            version: PROTOCOL_VERSION,
            version_min: Some(PROTOCOL_VERSION_MIN),
            name: name.to_owned(),
        })?;
        match s.recv()? {
            Some(DaemonMsg::HelloOk { .. }) => Ok(s),
            Some(DaemonMsg::Fatal { code, message }) => {
                bail!("rpcd refused the connection ({code}): {message}")
            }
            Some(other) => bail!("rpcd answered hello with {}", other.op()),
            None => bail!("rpcd closed the connection during the handshake"),
        }
    }

    /// Send one message.
    pub fn send(&mut self, msg: &ClientMsg) -> io::Result<()> {
        self.stream.write_all(&encode_frame(msg))
    }

    /// The next message from the daemon; None at the end of the stream.
    pub fn recv(&mut self) -> anyhow::Result<Option<DaemonMsg>> {
        loop {
            if let Some(msg) = self.reader.next_frame::<DaemonMsg>()? {
                return Ok(Some(msg));
            }
            match self.reader.read_from(&mut self.stream) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading from rpcd"),
            }
        }
    }
}
