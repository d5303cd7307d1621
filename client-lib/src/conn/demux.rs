//! The state a connection's threads share, and the routing of each frame from the daemon to
//! whoever waits for it: a reply to the request waiting under its id (its own cell, then its
//! thread is unparked; a whole read's replies are delivered under one lock of the waiters,
//! so the callers they wake do not queue behind the reader for it), an `invoke` to the
//! serving app's sink or the bounded invocation queue, a `cancel` to the invocation it
//! names, and `fatal` (or a bad frame, or the end of the stream) closes the connection,
//! waking every waiting request at once. Who reads the socket is `reading`'s business.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::read_half::ReadHalf;
use super::wakeup::Wakeup;
use super::{Closed, Invocation, RequestError, INVOCATION_QUEUE_MAX, LIVE_INVOCATIONS_MAX};
use crate::client::lock;
use crate::ipc::{try_encode_frame, ClientMsg, DaemonMsg, ErrorCode, Outcome};

/// Where a serving app wants its invocations delivered, straight from the thread that read
/// them (no hand-off through the connection's queue); `Err` is the refusal to answer with.
pub(crate) type InvocationSink = dyn Fn(Invocation) -> Result<(), Outcome> + Send + Sync;

/// State shared between the callers and the reader thread.
#[derive(Debug)]
pub(super) struct Shared {
    /// Held by the one thread writing at a time.
    writer: Mutex<UnixStream>,
    /// Frames that came while another thread was writing: that thread writes them too.
    outbox: Mutex<Outbox>,
    waiters: Mutex<Waiters>,
    /// Signalled when the read token is put back while a reader thread serves the
    /// connection (it waits for the token here).
    pub(super) token_free: Condvar,
    /// The read half and its frame buffer, locked only by the thread holding the read
    /// token (`Waiters::reading`), so never contended.
    pub(super) read_half: Mutex<ReadHalf>,
    /// Where invocations go; emptied when the connection closes.
    invocations: Mutex<InvocationOut>,
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

/// Requests waiting for a reply, whether the connection is closed, and who reads. One mutex
/// covers them all, so a request is either registered before the close (and woken by it) or
/// sees it, and the read token changes hands under it.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    pub(super) pending: HashMap<u64, Slot>,
    pub(super) closed: Option<Closed>,
    /// The read token: a thread is reading the socket (or about to).
    pub(super) reading: bool,
    /// A reader thread serves this connection (it registered functions or takes
    /// invocations), or the serving app's pool does (`pooled`): it reads everything, and
    /// callers only wait.
    pub(super) serving: bool,
    /// The serving app's own threads read this connection, one turn at a time
    /// (`pooled.rs`), instead of a reader thread.
    pub(super) pooled: bool,
    /// Notified once when the connection closes ([`super::Connection::notify_on_close`]):
    /// a serving app's dispatcher sleeps on one until then. Each at most once; taken by the
    /// close.
    pub(super) on_close: Vec<Arc<Wakeup>>,
}

/// One request waiting for its reply: where to put it, and the thread to unpark then. A
/// slot leaves `pending` when its reply is delivered, so every slot there still waits.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) cell: Arc<ReplyCell>,
    pub(super) thread: Thread,
    /// A thread waits in [`Shared::wait_reply`] for it (a submitted call nobody waits for
    /// yet is not handed the read token).
    pub(super) waiting: bool,
}

/// Where one request's reply is delivered. Its own lock, so that a woken caller takes its
/// reply without the connection-wide lock of [`Waiters`] (which 32 callers woken by one
/// read would otherwise queue on).
#[derive(Debug, Default)]
pub(super) struct ReplyCell(Mutex<Option<DaemonMsg>>);

impl ReplyCell {
    pub(super) fn take(&self) -> Option<DaemonMsg> {
        lock(&self.0).take()
    }

    fn put(&self, msg: DaemonMsg) {
        *lock(&self.0) = Some(msg);
    }
}

/// Where routed invocations go: the serving app's sink when it installed one, else the
/// connection's own queue (for [`super::Connection::next_invocation`]).
struct InvocationOut {
    queue: Option<SyncSender<Invocation>>,
    sink: Option<Arc<InvocationSink>>,
}

impl std::fmt::Debug for InvocationOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationOut")
            .field("queue", &self.queue.is_some())
            .field("sink", &self.sink.is_some())
            .finish()
    }
}

/// What one routed frame leaves to the thread that read it. Lives for one frame and moves
/// its message once: boxing the reply would cost an allocation per reply for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Routed {
    /// Nothing: a cancel went to its invocation, or the frame is ignored.
    Done,
    /// A reply to request `id`, for [`Shared::deliver_replies`] (with the others of the
    /// same read).
    Reply(u64, DaemonMsg),
    /// An invocation, for the reader to deliver or run.
    Invocation(Invocation),
    /// The daemon said to close (`fatal`).
    Close(Closed),
}

impl Shared {
    pub(super) fn new(
        stream: UnixStream,
        read_half: ReadHalf,
        next_id: AtomicU64,
        frame_max: usize,
        invocations: SyncSender<Invocation>,
    ) -> Shared {
        Shared {
            writer: Mutex::new(stream),
            outbox: Mutex::new(Outbox::default()),
            waiters: Mutex::new(Waiters::default()),
            token_free: Condvar::new(),
            read_half: Mutex::new(read_half),
            invocations: Mutex::new(InvocationOut {
                queue: Some(invocations),
                sink: None,
            }),
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
        self.write_parts(&[bytes])
    }

    /// [`Shared::write`] of one frame given in parts (a large argument between its frame's
    /// head and tail), written together with one vectored write where the socket takes
    /// them, not copied into one buffer first (unless another thread is writing: then they
    /// join its queue).
    pub(super) fn write_parts(&self, parts: &[&[u8]]) -> Result<(), RequestError> {
        {
            let mut outbox = lock(&self.outbox);
            if outbox.writing {
                for part in parts {
                    outbox.queued.extend_from_slice(part);
                }
                return Ok(());
            }
            outbox.writing = true;
        }
        let mut result = write_all_parts(&mut *lock(&self.writer), parts);
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
            // The daemon may have said why before it closed (a `fatal` nobody has read yet).
            self.check_closed();
            self.close(Closed::Disconnected);
            match kind {
                io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::NotConnected => self.closed_error(),
                _ => RequestError::Io(err),
            }
        })
    }

    /// Has `wakeup` notified when the connection closes, or now if it is closed already.
    /// Asking again with the same `wakeup` is harmless; one whose every other holder is
    /// gone (a stopped server's) is forgotten, so the list stays as long as the number of
    /// servers on the connection.
    pub(super) fn notify_on_close(&self, wakeup: &Arc<Wakeup>) {
        {
            let mut waiters = lock(&self.waiters);
            if waiters.closed.is_none() {
                let on_close = &mut waiters.on_close;
                on_close.retain(|w| Arc::strong_count(w) > 1);
                if !on_close.iter().any(|w| Arc::ptr_eq(w, wakeup)) {
                    on_close.push(Arc::clone(wakeup));
                }
                return;
            }
        }
        wakeup.notify();
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

    /// Marks the connection closed (the first reason wins), wakes every waiting request, a
    /// reader thread waiting for the token and whoever asked to be told of the close, drops
    /// the invocation queue's sender and the sink, and shuts the socket down so the reader
    /// and writers stop.
    pub(super) fn close(&self, reason: Closed) {
        let on_close = {
            let mut waiters = lock(&self.waiters);
            if waiters.closed.is_none() {
                waiters.closed = Some(reason);
            }
            for (_, slot) in waiters.pending.drain() {
                slot.thread.unpark();
            }
            self.token_free.notify_all();
            std::mem::take(&mut waiters.on_close)
        };
        for wakeup in on_close {
            wakeup.notify();
        }
        let gone = {
            let mut out = lock(&self.invocations);
            (out.queue.take(), out.sink.take())
        };
        // Dropped outside the lock: the sink may hold what ends the connection's owner.
        drop(gone);
        // Shutting down an already shut down or reset socket fails harmlessly.
        let _ = lock(&self.writer).shutdown(Shutdown::Both);
    }

    /// Installs (or with `None` removes) the serving app's sink, and moves into it what
    /// waits in the connection's queue, in order (`queued`: that queue's receiving end).
    /// Refusals from the sink are answered here.
    pub(super) fn set_sink(
        &self,
        sink: Option<Arc<InvocationSink>>,
        queued: &std::sync::mpsc::Receiver<Invocation>,
    ) {
        let mut refused = Vec::new();
        {
            let mut out = lock(&self.invocations);
            if out.queue.is_none() {
                // Closed: nothing will be delivered any more.
                return;
            }
            out.sink = sink;
            if let Some(sink) = &out.sink {
                while let Ok(work) = queued.try_recv() {
                    let invocation = work.invocation;
                    if let Err(outcome) = sink(work) {
                        refused.push((invocation, outcome));
                    }
                }
            }
        }
        for (invocation, outcome) in refused {
            self.answered(invocation);
            let _ = self.answer(invocation, outcome);
        }
    }

    /// Writes a result the library decided itself (a refusal).
    pub(super) fn answer(&self, invocation: u64, outcome: Outcome) -> Option<Closed> {
        let answer = ClientMsg::Result {
            invocation,
            outcome,
        };
        match try_encode_frame(&answer, self.frame_max) {
            Ok(frame) => self.write(&frame).err().map(|_| Closed::Disconnected),
            Err(err) => Some(Closed::Protocol(err.to_string())),
        }
    }

    /// Routes one frame from the daemon; an invocation is returned to the reader, which
    /// delivers it ([`Shared::deliver`]) or, in a serving app's pool, runs it
    /// ([`Shared::track`] first).
    pub(super) fn route(&self, msg: DaemonMsg) -> Routed {
        match msg {
            DaemonMsg::HelloOk { id, .. }
            | DaemonMsg::Done { id }
            | DaemonMsg::CallOk { id, .. }
            | DaemonMsg::Failed { id, .. }
            | DaemonMsg::List { id, .. }
            | DaemonMsg::Stats { id, .. }
            | DaemonMsg::Pong { id } => Routed::Reply(id, msg),
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
                Routed::Invocation(work)
            }
            DaemonMsg::Cancel { invocation } => {
                // Unknown: answered already, dropped by the app, or never ours. The protocol
                // says to ignore it.
                let flag = lock(&self.live).remove(&invocation);
                if let Some(flag) = flag.and_then(|flag| flag.upgrade()) {
                    flag.store(true, Ordering::Release);
                }
                Routed::Done
            }
            // Only a connection that sent `monitor` gets events; this one never does.
            DaemonMsg::Event { .. } => Routed::Done,
            DaemonMsg::Fatal { code, message } => Routed::Close(Closed::Fatal { code, message }),
        }
    }

    /// Delivers replies (taking them out of `replies`) to the requests waiting for them,
    /// under one lock of the waiters, then unparks their threads (not this one: it looks at
    /// its own cell after reading). A reply nobody waits for (it gave up before the reply
    /// came) is dropped.
    pub(super) fn deliver_replies(&self, replies: &mut Vec<(u64, DaemonMsg)>) {
        if replies.is_empty() {
            return;
        }
        let me = std::thread::current().id();
        let mut wake = Vec::with_capacity(replies.len());
        {
            let mut waiters = lock(&self.waiters);
            for (id, msg) in replies.drain(..) {
                if let Some(slot) = waiters.pending.remove(&id) {
                    slot.cell.put(msg);
                    if slot.thread.id() != me {
                        wake.push(slot.thread);
                    }
                }
            }
        }
        for thread in wake {
            thread.unpark();
        }
    }

    /// Hands a routed invocation to the app (its sink or the connection's queue), or answers
    /// it with the refusal at once; returns why to close, if that write failed.
    pub(super) fn deliver(&self, work: Invocation) -> Option<Closed> {
        let invocation = work.invocation;
        let Err(refusal) = self.accept(work) else {
            return None;
        };
        self.answer(invocation, refusal)
    }

    /// Makes an invocation cancellable (a `cancel` frame now reaches it) before the app
    /// takes it; when too many are in progress, the refusal to answer it with.
    pub(super) fn track(&self, work: &Invocation) -> Result<(), Outcome> {
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
        live.insert(work.invocation, work.cancel_flag());
        Ok(())
    }

    /// Queues an invocation for the app and makes it cancellable; when it cannot be taken,
    /// the refusal to answer it with at once.
    fn accept(&self, work: Invocation) -> Result<(), Outcome> {
        let invocation = work.invocation;
        self.track(&work)?;
        // Decided under the lock that `set_sink` holds while it empties the queue, so that
        // nothing lands in the queue behind its back.
        let sent = {
            let out = lock(&self.invocations);
            match (&out.sink, &out.queue) {
                (Some(sink), _) => Err((Arc::clone(sink), work)),
                (None, Some(queue)) => Ok(queue.try_send(work)),
                (None, None) => Ok(Err(TrySendError::Disconnected(work))),
            }
        };
        let sent = match sent {
            // Called outside the lock: what the sink drops may end the connection's owner.
            Err((sink, work)) => match sink(work) {
                Ok(()) => return Ok(()),
                Err(refusal) => {
                    self.answered(invocation);
                    return Err(refusal);
                }
            },
            Ok(sent) => sent,
        };
        let refusal = match sent {
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

/// Writes every byte of `parts`, in order, with vectored writes.
fn write_all_parts(w: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    if let [one] = parts {
        return w.write_all(one);
    }
    let mut slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
    let mut left = &mut slices[..];
    io::IoSlice::advance_slices(&mut left, 0);
    while !left.is_empty() {
        match w.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut left, n),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `step` bytes per write, from the first non-empty slice only (as a
    /// socket that takes part of a vectored write), refusing once with `Interrupted`.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        interrupted: bool,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if !self.interrupted {
                self.interrupted = true;
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn parts_written_in_pieces_come_out_whole_and_in_order() {
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let parts: [&[u8]; 4] = [b"head", b"", &body, b"tail"];
        let whole = parts.concat();
        for step in [1, 3, 4, 5, 4096, usize::MAX] {
            let mut w = Trickle {
                out: Vec::new(),
                step,
                interrupted: false,
            };
            write_all_parts(&mut w, &parts).expect("written");
            assert!(w.out == whole, "step {step}");
        }
        let mut full = Trickle {
            out: Vec::new(),
            step: 0,
            interrupted: true,
        };
        let err = write_all_parts(&mut full, &parts).expect_err("a writer taking nothing");
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }
}
