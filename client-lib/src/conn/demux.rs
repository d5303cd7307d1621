//! The reader side of a connection: routes each frame from the daemon to whoever waits for
//! it. A reply goes to the request waiting under its id, an `invoke` to the bounded
//! invocation queue, and `fatal` (or a bad frame, or the end of the stream) closes the
//! connection, waking every waiting request at once.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Closed, Invocation, RequestError, INVOCATION_QUEUE_MAX};
use crate::client::lock;
use crate::ipc::{try_encode_frame, ClientMsg, DaemonMsg, ErrorCode, FrameReader, Outcome};

/// State shared between the callers and the reader thread.
#[derive(Debug)]
pub(super) struct Shared {
    writer: Mutex<UnixStream>,
    waiters: Mutex<Waiters>,
    pub(super) next_id: AtomicU64,
    pub(super) frame_max: usize,
}

/// Requests waiting for a reply, and whether the connection is closed. One mutex covers
/// both, so a request is either registered before the close (and woken by it) or sees it.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    pub(super) pending: HashMap<u64, SyncSender<DaemonMsg>>,
    pub(super) closed: Option<Closed>,
}

impl Shared {
    pub(super) fn new(stream: UnixStream, next_id: AtomicU64, frame_max: usize) -> Shared {
        Shared {
            writer: Mutex::new(stream),
            waiters: Mutex::new(Waiters::default()),
            next_id,
            frame_max,
        }
    }

    pub(super) fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        lock(&self.waiters)
    }

    /// Writes one whole frame (or raw bytes). A failed write may leave half a frame on the
    /// stream, so it closes the connection.
    pub(super) fn write(&self, bytes: &[u8]) -> Result<(), RequestError> {
        let result = lock(&self.writer).write_all(bytes);
        result.map_err(|err| {
            let kind = err.kind();
            self.close(Closed::Disconnected);
            match kind {
                io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::NotConnected => self.closed_error(),
                _ => RequestError::Io(err),
            }
        })
    }

    /// Forgets a request that will not wait for its reply any more.
    pub(super) fn forget(&self, id: u64) {
        lock(&self.waiters).pending.remove(&id);
    }

    /// The error every request gets once the connection is closed.
    pub(super) fn closed_error(&self) -> RequestError {
        lock(&self.waiters)
            .closed
            .as_ref()
            .map_or(RequestError::Disconnected, Closed::to_error)
    }

    /// Marks the connection closed (the first reason wins), wakes every waiting request by
    /// dropping its sender, and shuts the socket down so the reader and writers stop.
    pub(super) fn close(&self, reason: Closed) {
        {
            let mut waiters = lock(&self.waiters);
            if waiters.closed.is_none() {
                waiters.closed = Some(reason);
            }
            waiters.pending.clear();
        }
        // Shutting down an already shut down or reset socket fails harmlessly.
        let _ = lock(&self.writer).shutdown(Shutdown::Both);
    }

    /// Routes one frame from the daemon; returns why to close, if it says so.
    fn dispatch(&self, msg: DaemonMsg, invocations: &SyncSender<Invocation>) -> Option<Closed> {
        match msg {
            DaemonMsg::HelloOk { id, .. }
            | DaemonMsg::Done { id }
            | DaemonMsg::CallOk { id, .. }
            | DaemonMsg::Failed { id, .. }
            | DaemonMsg::List { id, .. }
            | DaemonMsg::Stats { id, .. }
            | DaemonMsg::Pong { id } => {
                let waiter = lock(&self.waiters).pending.remove(&id);
                // No waiter: it gave up (timeout) before the reply came; drop the reply.
                if let Some(waiter) = waiter {
                    let _ = waiter.try_send(msg);
                }
                None
            }
            DaemonMsg::Invoke {
                invocation,
                function,
                args,
                caller,
                deadline_ms,
            } => {
                let deadline =
                    Instant::now() + Duration::from_millis(deadline_ms.min(u32::MAX.into()));
                let work = Invocation::new(invocation, function, args, caller, deadline);
                let outcome = match invocations.try_send(work) {
                    Ok(()) => return None,
                    Err(TrySendError::Full(_)) => Outcome::Refused {
                        code: ErrorCode::Overloaded,
                        message: format!(
                            "{INVOCATION_QUEUE_MAX} invocations already queued in the serving app"
                        ),
                    },
                    Err(TrySendError::Disconnected(_)) => Outcome::Refused {
                        code: ErrorCode::ServerAppGone,
                        message: "the serving app is closing".to_owned(),
                    },
                };
                let answer = ClientMsg::Result {
                    invocation,
                    outcome,
                };
                match try_encode_frame(&answer, self.frame_max) {
                    Ok(frame) => self.write(&frame).err().map(|_| Closed::Disconnected),
                    Err(err) => Some(Closed::Protocol(err.to_string())),
                }
            }
            DaemonMsg::Fatal { code, message } => Some(Closed::Fatal { code, message }),
        }
    }
}

/// The reader thread: decodes frames until the connection closes, then wakes everyone.
pub(super) fn read_loop(
    shared: Arc<Shared>,
    stream: UnixStream,
    frames: FrameReader,
    invocations: SyncSender<Invocation>,
) {
    let reason = read_frames(&shared, stream, frames, &invocations);
    shared.close(reason);
}

fn read_frames(
    shared: &Shared,
    mut stream: UnixStream,
    mut frames: FrameReader,
    invocations: &SyncSender<Invocation>,
) -> Closed {
    loop {
        // Take every whole frame buffered before reading more: that keeps the reader within
        // its bound.
        loop {
            match frames.next_frame::<DaemonMsg>() {
                Ok(Some(msg)) => {
                    if let Some(reason) = shared.dispatch(msg, invocations) {
                        return reason;
                    }
                }
                Ok(None) => break,
                Err(err) => return Closed::Protocol(format!("bad frame from rpcd: {err}")),
            }
        }
        match frames.read_from(&mut stream) {
            Ok(0) => return Closed::Disconnected,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Closed::Disconnected,
        }
    }
}
