//! The connection's socket, registered with the runtime for what is awaited only: the read
//! side for readability always, the write side for writability only while a write waits for
//! room.
//!
//! tokio's `UnixStream` registers for both at once. Then every time the daemon takes bytes
//! this end wrote, the socket has write space again and the kernel wakes the runtime's
//! thread parked in `epoll_wait`, for nothing: one extra wake-up per call for a lone caller,
//! which the daemon's read pays for as well (an inter-processor wake-up). Registered for
//! readability alone, the socket wakes the runtime only when bytes (or the end) come.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::ipc::FrameReader;

/// The socket's read side: registered for readability only.
#[derive(Debug)]
pub(super) struct ReadSide(AsyncFd<UnixStream>);

/// The socket's write side: a second descriptor of the same socket, never registered except
/// while a write waits for room (a full socket buffer: large frames, a daemon not reading).
#[derive(Debug)]
pub(super) struct WriteSide(UnixStream);

/// Splits `stream` (connected, handshake done) into its two sides.
pub(super) fn split(stream: tokio::net::UnixStream) -> io::Result<(ReadSide, WriteSide)> {
    // Deregistered from the runtime; still non-blocking, which the duplicate shares.
    let stream = stream.into_std()?;
    let write = stream.try_clone()?;
    let read = register(stream, Interest::READABLE)?;
    Ok((ReadSide(read), WriteSide(write)))
}

/// Registers `stream` with the runtime for `interest` only.
///
/// tokio deprecated the safe `AsyncFd::with_interest` for the unsafe `register_with_interest`
/// because an arbitrary `AsRawFd` may close or change its descriptor while registered. A
/// `UnixStream` owns its descriptor, which stays open and the same until the `AsyncFd` that
/// owns the stream drops: the safe call is sound here, and the workspace forbids `unsafe`.
#[allow(deprecated)]
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    AsyncFd::with_interest(stream, interest)
}

impl ReadSide {
    /// One read straight into `frames`, once the socket is readable: the bytes read (0: the
    /// end of the stream). A readiness that was stale is cleared and waited for again.
    ///
    /// A read that got less than it asked for emptied the socket: the readiness is cleared
    /// then too, so that the next read waits for the next bytes instead of first trying
    /// the socket only to hear `WouldBlock` (one system call per read saved). Bytes coming
    /// meanwhile are not missed: tokio clears a readiness only if no new event came since
    /// this one, and the socket is registered edge-triggered, so the next bytes bring an
    /// event.
    pub(super) async fn read_into(&self, frames: &mut FrameReader) -> io::Result<usize> {
        loop {
            let mut ready = self.0.readable().await?;
            let mut asked = 0;
            match ready.try_io(|stream| {
                frames.read_from(&mut Asked {
                    stream: stream.get_ref(),
                    asked: &mut asked,
                })
            }) {
                Ok(Ok(read)) => {
                    if read > 0 && read < asked {
                        ready.clear_ready();
                    }
                    return Ok(read);
                }
                Ok(err) => return err,
                // Would block: `try_io` cleared the readiness.
                Err(_would_block) => {}
            }
        }
    }
}

/// A socket that remembers how many bytes its read was given room for.
struct Asked<'a> {
    stream: &'a UnixStream,
    asked: &'a mut usize,
}

impl Read for Asked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        *self.asked = buf.len();
        self.stream.read(buf)
    }
}

impl WriteSide {
    /// One vectored write, waiting for room in the socket while it has none.
    pub(super) async fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            match (&self.0).write_vectored(bufs) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.room().await?,
                other => return other,
            }
        }
    }

    /// Waits until the socket has room, on a descriptor registered for writability for that
    /// wait only. Registering reports the socket's state at once, so room made between the
    /// failed write and the registration is not missed.
    async fn room(&self) -> io::Result<()> {
        let waiting = register(self.0.try_clone()?, Interest::WRITABLE)?;
        let _ready = waiting.writable().await?;
        Ok(())
    }
}

impl Drop for WriteSide {
    /// No more bytes from this end (as tokio's write half does when dropped): the daemon
    /// reads the end of the stream even while the read side lives on.
    fn drop(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }
}
