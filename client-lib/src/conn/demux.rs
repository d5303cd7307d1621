//! The reader side of a connection: routes each frame from the daemon to whoever waits for
//! it. A reply goes to the request waiting under its id, an `invoke` to the bounded
//! invocation queue, a `cancel` to the invocation it names, and `fatal` (or a bad frame, or
//! the end of the stream) closes the connection, waking every waiting request at once.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{Closed, Invocation, RequestError, INVOCATION_QUEUE_MAX, LIVE_INVOCATIONS_MAX};
use crate::client::lock;
use crate::ipc::{try_encode_frame, ClientMsg, DaemonMsg, ErrorCode, FrameReader, Outcome};

/// State shared between the callers and the reader thread.
#[derive(Debug)]
pub(super) struct Shared {
    /// Held by the one thread writing at a time.
    writer: Mutex<UnixStream>,
    /// Frames that came while another thread was writing: that thread writes them too.
    outbox: Mutex<Outbox>,
    waiters: Mutex<Waiters>,
    /// Invocations handed to the app and not answered yet, so that a `cancel` reaches them.
    /// Weak: an invocation the app drops without answering leaves nothing behind to find
    /// once the map is full.
    live: Mutex<HashMap<u64, Weak<AtomicBool>>>,
    pub(super) next_id: AtomicU64,
    pub(super) frame_max: usize,
}

/// Frames waiting for the thread that is writing, so that concurrent callers share one
/// `write` instead of queueing on the socket one frame at a time.
#[derive(Debug, Default)]
struct Outbox {
    /// Whether a thread is writing now (it writes `queued` before it stops).
    writing: bool,
    /// Whole frames, back to back.
    queued: Vec<u8>,
    /// The buffer written last, kept for reuse.
    spare: Vec<u8>,
}

/// Largest buffer kept for reuse between writes: a bulk frame's is given back.
const SPARE_MAX: usize = 64 * 1024;

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
            outbox: Mutex::new(Outbox::default()),
            waiters: Mutex::new(Waiters::default()),
            live: Mutex::new(HashMap::new()),
            next_id,
            frame_max,
        }
    }

    pub(super) fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        lock(&self.waiters)
    }

    /// Writes one whole frame (or raw bytes). When another thread is writing, the frame
    /// joins its queue and that thread writes it with the others in one `write`; else this
    /// thread writes it, then whatever queued meanwhile. A failed write may leave half a
    /// frame on the stream, so it closes the connection (which wakes every waiting request,
    /// also those whose frames were queued).
    pub(super) fn write(&self, bytes: &[u8]) -> Result<(), RequestError> {
        {
            let mut outbox = lock(&self.outbox);
            if outbox.writing {
                outbox.queued.extend_from_slice(bytes);
                return Ok(());
            }
            outbox.writing = true;
        }
        let mut result = lock(&self.writer).write_all(bytes);
        while result.is_ok() {
            let mut batch = {
                let mut outbox = lock(&self.outbox);
                if outbox.queued.is_empty() {
                    outbox.writing = false;
                    return Ok(());
                }
                let spare = std::mem::take(&mut outbox.spare);
                std::mem::replace(&mut outbox.queued, spare)
            };
            result = lock(&self.writer).write_all(&batch);
            batch.clear();
            if batch.capacity() <= SPARE_MAX {
                lock(&self.outbox).spare = batch;
            }
        }
        {
            let mut outbox = lock(&self.outbox);
            outbox.writing = false;
            outbox.queued.clear();
        }
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

    /// Forgets an invocation that has been answered: a `cancel` for it is now moot.
    pub(super) fn answered(&self, invocation: u64) {
        lock(&self.live).remove(&invocation);
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
    fn route(&self, msg: DaemonMsg, invocations: &SyncSender<Invocation>) -> Option<Closed> {
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
                peer,
                deadline_ms,
                credentials,
            } => {
                let deadline =
                    Instant::now() + Duration::from_millis(deadline_ms.min(u32::MAX.into()));
                let mut work = Invocation::new(invocation, function, args, caller, peer, deadline);
                work.credentials = credentials;
                let Err(refusal) = self.accept(work, invocations) else {
                    return None;
                };
                let answer = ClientMsg::Result {
                    invocation,
                    outcome: refusal,
                };
                match try_encode_frame(&answer, self.frame_max) {
                    Ok(frame) => self.write(&frame).err().map(|_| Closed::Disconnected),
                    Err(err) => Some(Closed::Protocol(err.to_string())),
                }
            }
            DaemonMsg::Cancel { invocation } => {
                // Unknown: answered already, dropped by the app, or never ours. The protocol
                // says to ignore it.
                let flag = lock(&self.live).remove(&invocation);
                if let Some(flag) = flag.and_then(|flag| flag.upgrade()) {
                    flag.store(true, Ordering::Release);
                }
                None
            }
            // Only a connection that sent `monitor` gets events; this one never does.
            DaemonMsg::Event { .. } => None,
            DaemonMsg::Fatal { code, message } => Some(Closed::Fatal { code, message }),
        }
    }

    /// Queues an invocation for the app and makes it cancellable; when it cannot be taken,
    /// the refusal to answer it with at once.
    fn accept(
        &self,
        work: Invocation,
        invocations: &SyncSender<Invocation>,
    ) -> Result<(), Outcome> {
        let invocation = work.invocation;
        {
            let mut live = lock(&self.live);
            if live.len() >= LIVE_INVOCATIONS_MAX {
                // Only when full: forget the invocations the app dropped unanswered.
                live.retain(|_, flag| flag.strong_count() > 0);
            }
            if live.len() >= LIVE_INVOCATIONS_MAX {
                return Err(Outcome::Refused {
                    code: ErrorCode::Overloaded,
                    message: format!(
                        "{LIVE_INVOCATIONS_MAX} invocations in progress in the serving app"
                    ),
                });
            }
            live.insert(invocation, work.cancel_flag());
        }
        let refusal = match invocations.try_send(work) {
            Ok(()) => return Ok(()),
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
        self.answered(invocation);
        Err(refusal)
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
                    if let Some(reason) = shared.route(msg, invocations) {
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
