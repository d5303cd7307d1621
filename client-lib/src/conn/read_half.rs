//! The socket's read half: the bytes read and not yet routed, the read timeout, and the wait
//! for readability in `poll` (see [`ReadHalf::read_more`] for why not in the read).

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::ipc::FrameReader;

/// The socket's read half, with the bytes read from it not yet routed.
#[derive(Debug)]
pub(super) struct ReadHalf {
    pub(super) stream: UnixStream,
    pub(super) frames: FrameReader,
    /// The socket's read timeout as last set (`None`: reads block until bytes come or the
    /// socket is shut down), so that it is changed only when it must be.
    timeout: Option<Duration>,
}

impl ReadHalf {
    /// `stream`, whose read timeout is `timeout` now.
    pub(super) fn new(stream: UnixStream, frames: FrameReader, timeout: Option<Duration>) -> Self {
        ReadHalf {
            stream,
            frames,
            timeout,
        }
    }

    /// Makes each read block at most `timeout` (`None`: until bytes come or the socket is
    /// shut down, as the connection's close does).
    pub(super) fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if self.timeout != timeout {
            self.stream.set_read_timeout(timeout)?;
            self.timeout = timeout;
        }
        Ok(())
    }

    /// One read into `frames`, after waiting (at most the read timeout) until the socket is
    /// readable. Waiting in `poll` rather than in the read spares this thread a wake-up per
    /// frame it wrote: the kernel wakes every thread blocked in a Unix socket's read whenever
    /// the other end takes bytes this end wrote (write space), while a thread in `poll` is
    /// woken only by what it asked for (`POLLIN`, the end of the stream, an error). The daemon
    /// pays for those wake-ups too: each is an inter-processor interrupt sent from its read.
    /// A timeout is `TimedOut`; what the read itself returns is returned.
    pub(super) fn read_more(&mut self) -> io::Result<usize> {
        let wait = match self.timeout {
            None => PollTimeout::NONE,
            // Rounded up: a wait rounded down to 0 ms would spin until the deadline.
            Some(t) => i32::try_from(t.as_micros().div_ceil(1000))
                .ok()
                .and_then(|ms| PollTimeout::try_from(ms).ok())
                .unwrap_or(PollTimeout::MAX),
        };
        match self.poll_in(wait) {
            Ok(false) => return Err(io::ErrorKind::TimedOut.into()),
            Err(Errno::EINTR) => return Err(io::ErrorKind::Interrupted.into()),
            // Readable, ended or failed: the read says which. Should `poll` itself fail, the
            // read (bounded by the same timeout) finds out.
            Ok(true) | Err(_) => {}
        }
        let ReadHalf { stream, frames, .. } = self;
        frames.read_from(stream)
    }

    /// Whether a read would return at once (bytes, the end of the stream, or an error),
    /// without waiting.
    pub(super) fn readable_now(&self) -> bool {
        // Cannot tell: let the read (bounded by the read timeout) find out.
        self.poll_in(PollTimeout::ZERO).unwrap_or(true)
    }

    /// Waits up to `wait` for the socket to be readable (or ended, or failed): whether it is.
    fn poll_in(&self, wait: PollTimeout) -> Result<bool, Errno> {
        let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, wait).map(|n| n > 0)
    }
}
