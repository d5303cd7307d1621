//! The async connection: one tokio `UnixStream`, many concurrent requests matched by id.
//!
//! The same protocol code as the blocking [`crate::Connection`] (`crate::ipc` framing and
//! messages, the handshake's reading of `hello_ok`), on two tasks: a reader that routes each
//! frame from the daemon (a reply to the request waiting under its id, an `invoke` to the
//! bounded invocation queue, a `cancel` to the invocation it names), and a writer that
//! writes the frames callers queue, several per `write` when they queue up.
//!
//! The bytes queued and not yet written are bounded ([`ASYNC_WRITE_QUEUE_MAX`], the
//! connection's *write queue*): a request waits for room before its frame is queued, within
//! its deadline. The frames sent from sync code (results, cancels, refusals) never wait; see
//! [`Shared::send`] for why and how they are counted.
//!
//! Large frames are not copied more than the socket needs: the reader reads straight into
//! its [`FrameReader`], and a call's large arguments are written from the caller's own
//! buffer, between the frame's head and tail ([`split_call_frame`]), as the blocking
//! connection writes them.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

mod read;
mod socket;
mod write;

use read::read_loop;
use write::{write_loop, Outgoing, Queued, Room};

use crate::client::lock;
use crate::conn::handshake::greeting;
use crate::conn::{
    CallOptions, ConnectError, DaemonInfo, RequestError, CALL_WAIT_MAX, HANDSHAKE_TIMEOUT,
    INVOCATION_QUEUE_MAX, REPLY_GRACE, REQUEST_WAIT_MAX,
};
use crate::ipc::{
    recycle, try_encode_frame, ClientMsg, DaemonMsg, ErrorCode, FrameReader, Outcome, Stats,
    FRAME_MAX_DEFAULT, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, READ_CHUNK,
};

/// The default bound of an async connection's write queue, in bytes: frames queued for the
/// writer task and not yet written. A request whose frame finds no room waits for it
/// (within its deadline); see [`crate::tokio::Client::connect_with_write_queue_max`] to
/// set another bound.
///
/// One largest default frame ([`FRAME_MAX_DEFAULT`]) plus 4 MiB: a maximal call fits, with
/// room beside it for the small frames of other tasks. A frame larger than the bound (a
/// daemon may announce a larger frame maximum) waits until the queue is empty and then
/// takes all of it, so it is still sent, alone.
pub const ASYNC_WRITE_QUEUE_MAX: usize = FRAME_MAX_DEFAULT + 4 * 1024 * 1024;

const _: () = assert!(ASYNC_WRITE_QUEUE_MAX >= FRAME_MAX_DEFAULT);

/// An invocation received for a function this connection registered.
#[derive(Debug)]
pub(super) struct Work {
    pub invocation: u64,
    pub function: String,
    pub args: crate::ipc::Payload,
    pub caller: String,
    pub peer: String,
    pub deadline: Instant,
    pub credentials: Option<crate::Credentials>,
    /// Becomes true when the daemon cancels the invocation.
    pub cancelled: watch::Receiver<bool>,
}

/// Why the connection closed; every request then fails with its error.
#[derive(Debug, Clone)]
enum Closed {
    Disconnected,
    Fatal { code: ErrorCode, message: String },
    Protocol(String),
}

impl Closed {
    fn to_error(&self) -> RequestError {
        match self {
            Closed::Disconnected => RequestError::Disconnected,
            Closed::Fatal { code, message } => RequestError::Fatal {
                code: *code,
                message: message.clone(),
            },
            Closed::Protocol(message) => RequestError::Protocol(message.clone()),
        }
    }
}

#[derive(Debug, Default)]
struct Waiters {
    pending: HashMap<u64, oneshot::Sender<DaemonMsg>>,
    closed: Option<Closed>,
}

/// What the callers and the two tasks share.
#[derive(Debug)]
struct Shared {
    waiters: Mutex<Waiters>,
    /// Invocations handed out and not answered, so that a `cancel` reaches them.
    live: Mutex<HashMap<u64, watch::Sender<bool>>>,
    out: mpsc::UnboundedSender<Queued>,
    /// Free room in the write queue, one permit per byte, [`Shared::room_max`] in all;
    /// closed when the connection closes, which fails the requests waiting for room.
    room: Semaphore,
    /// The write queue's bound in bytes (and permits), from 1 to `u32::MAX`.
    room_max: usize,
    /// Bytes of the frames queued and not yet written, those sent without waiting too.
    queued: AtomicUsize,
    next_id: AtomicU64,
    frame_max: usize,
}

impl Shared {
    /// Marks the connection closed (the first reason wins) and wakes every waiting request.
    fn close(&self, reason: Closed) {
        let mut waiters = lock(&self.waiters);
        if waiters.closed.is_none() {
            waiters.closed = Some(reason);
        }
        waiters.pending.clear();
        self.room.close();
    }

    fn closed_error(&self) -> RequestError {
        lock(&self.waiters)
            .closed
            .as_ref()
            .map_or(RequestError::Disconnected, Closed::to_error)
    }

    /// Queues a whole frame for the writer task without waiting for room: for the frames
    /// sent from sync code (a serving app's result, a refused invocation, a `cancel_call`
    /// from a dropped call's `drop`).
    ///
    /// These cannot wait: `send_result` is a sync fn called from handlers, a refusal is
    /// sent by the reader task (which must keep reading, or the daemon, blocked writing to
    /// us, would stop reading what our writer writes) and a cancel comes from `drop`. Nor
    /// may they be dropped (a caller would wait for its result until its deadline) or held
    /// back (a result would overtake nothing, but a cancel must follow its call). So they
    /// are always admitted, in order, and counted: each takes as much of the free room as
    /// it finds, up to its size, which the writer gives back once it is written, so the
    /// requests behind it wait for it too. The queue may thus exceed its bound by these
    /// frames alone, which other limits bound: one result per live invocation
    /// (`LIVE_INVOCATIONS_MAX`), one cancel per call admitted.
    fn send(&self, frame: Vec<u8>) -> Result<(), RequestError> {
        let len = frame.len();
        let permits = self.room.forget_permits(self.permits_for(len));
        let room = Room {
            len,
            permits: u32::try_from(permits).expect("at most room_max, which fits a u32"),
        };
        self.push(Outgoing::Frame(frame), room)
    }

    /// Waits for room for `len` bytes in the write queue: `len` permits, or all of them for
    /// a frame larger than the whole queue. Dropping the future takes nothing (tokio gives
    /// back what a dropped `acquire` had been assigned); a closed connection fails it with
    /// its error.
    async fn room_for(&self, len: usize) -> Result<Room, RequestError> {
        let permits = u32::try_from(self.permits_for(len)).expect("room_max fits a u32");
        match self.room.acquire_many(permits).await {
            Ok(permit) => {
                // Given back by the writer once the frame is written (`Shared::release`).
                permit.forget();
                Ok(Room { len, permits })
            }
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Queues `out`, which holds `room` in the write queue, for the writer task.
    fn push(&self, out: Outgoing, room: Room) -> Result<(), RequestError> {
        self.queued.fetch_add(room.len, Ordering::Relaxed);
        self.out.send(Queued { out, room }).map_err(|unsent| {
            self.release(unsent.0.room);
            self.closed_error()
        })
    }

    /// Gives back the room of frames written (or never queued).
    pub(super) fn release(&self, room: Room) {
        self.queued.fetch_sub(room.len, Ordering::Relaxed);
        self.room.add_permits(room.permits as usize);
    }

    /// The permits a frame of `len` bytes takes: its length, at most the whole queue.
    fn permits_for(&self, len: usize) -> usize {
        len.min(self.room_max)
    }
}

/// An open, greeted async connection to `rpcd`.
#[derive(Debug)]
pub(super) struct Conn {
    shared: Arc<Shared>,
    invocations: tokio::sync::Mutex<mpsc::Receiver<Work>>,
    daemon: DaemonInfo,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.close(Closed::Disconnected);
        // The tasks own the socket's halves: aborting them closes it.
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Conn {
    /// Connects to `path` and does the `hello` handshake as `name`, bounded by
    /// [`HANDSHAKE_TIMEOUT`]; the errors are those of [`crate::Connection::connect`].
    ///
    /// Its write queue holds up to `write_queue_max` bytes (at least 1, at most `u32::MAX`).
    pub(super) async fn open(
        path: &Path,
        name: &str,
        write_queue_max: usize,
    ) -> Result<Conn, ConnectError> {
        let io_err = |source: io::Error| ConnectError::Io {
            path: path.to_owned(),
            source,
        };
        let mut stream = UnixStream::connect(path)
            .await
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ConnectError::NotRunning {
                        path: path.to_owned(),
                        source,
                    }
                }
                _ => io_err(source),
            })?;
        let hello_id = 1;
        let hello = ClientMsg::Hello {
            id: hello_id,
            version: PROTOCOL_VERSION,
            version_min: Some(PROTOCOL_VERSION_MIN),
            name: name.to_owned(),
        };
        let frame = try_encode_frame(&hello, FRAME_MAX_DEFAULT)
            .map_err(|err| ConnectError::Protocol(format!("cannot send hello: {err}")))?;
        let mut frames = FrameReader::new(FRAME_MAX_DEFAULT);
        let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            stream.write_all(&frame).await.map_err(io_err)?;
            let mut buf = vec![0u8; READ_CHUNK];
            loop {
                match frames.next_frame::<DaemonMsg>() {
                    Ok(Some(msg)) => return Ok(msg),
                    Ok(None) => {}
                    Err(err) => return Err(ConnectError::Protocol(err.to_string())),
                }
                let n = stream.read(&mut buf).await.map_err(io_err)?;
                if n == 0 {
                    return Err(ConnectError::Protocol(
                        "rpcd closed the connection during the handshake".into(),
                    ));
                }
                frames.read_from(&mut &buf[..n]).map_err(io_err)?;
            }
        })
        .await
        .map_err(|_| io_err(io::Error::from(io::ErrorKind::TimedOut)))??;
        let daemon = greeting(first, hello_id)?;
        let frame_max = daemon
            .limits
            .and_then(|l| usize::try_from(l.frame_max).ok())
            .filter(|&max| max > 0)
            .unwrap_or(FRAME_MAX_DEFAULT);
        // The channel is unbounded in frames: the room in it is bounded in bytes.
        let (out, out_rx) = mpsc::unbounded_channel();
        let room_max = write_queue_max.clamp(1, u32::MAX as usize);
        let shared = Arc::new(Shared {
            waiters: Mutex::new(Waiters::default()),
            live: Mutex::new(HashMap::new()),
            out,
            room: Semaphore::new(room_max),
            room_max,
            queued: AtomicUsize::new(0),
            next_id: AtomicU64::new(hello_id + 1),
            frame_max,
        });
        let (work_tx, work_rx) = mpsc::channel(INVOCATION_QUEUE_MAX);
        let (read_half, write_half) = socket::split(stream).map_err(io_err)?;
        let reader = tokio::spawn(read_loop(Arc::clone(&shared), read_half, frames, work_tx));
        let writer = tokio::spawn(write_loop(Arc::clone(&shared), write_half, out_rx));
        Ok(Conn {
            shared,
            invocations: tokio::sync::Mutex::new(work_rx),
            daemon,
            tasks: [reader, writer],
        })
    }

    pub(super) fn daemon(&self) -> &DaemonInfo {
        &self.daemon
    }

    pub(super) fn is_closed(&self) -> bool {
        lock(&self.shared.waiters).closed.is_some()
    }

    /// Bytes of the frames queued for the writer and not yet written.
    pub(super) fn write_queue_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// A call; dropping the returned future before it completes sends `cancel_call`.
    pub(super) async fn call(
        &self,
        target: &str,
        function: &str,
        args: Vec<u8>,
        opts: CallOptions,
    ) -> Result<Vec<u8>, RequestError> {
        let deadline_ms = opts
            .deadline
            .map(|d| u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX));
        // Room in the write queue is ours to wait for, not the daemon's: no grace for it.
        // (The deadline the daemon gets counts from when it reads the call, as with the
        // blocking connection, whose writes block instead.)
        let room = opts.deadline.unwrap_or(CALL_WAIT_MAX);
        let wait = Waits {
            room,
            total: room.saturating_add(REPLY_GRACE),
        };
        let msg = |id| ClientMsg::Call {
            id,
            target: target.to_owned(),
            function: function.to_owned(),
            args: args.into(),
            deadline_ms,
            idempotent: opts.idempotent,
            trace: false,
        };
        match self.request(msg, wait, true).await? {
            DaemonMsg::CallOk { data, .. } => Ok(data),
            other => Err(unexpected("call_ok", &other)),
        }
    }

    pub(super) async fn register(&self, function: &str) -> Result<(), RequestError> {
        let msg = |id| ClientMsg::Register {
            id,
            function: function.to_owned(),
            idempotent: None,
            deadline_ms: None,
            signature: None,
        };
        match self.request(msg, Waits::REQUEST, false).await? {
            DaemonMsg::Done { .. } => Ok(()),
            other => Err(unexpected("done", &other)),
        }
    }

    pub(super) async fn unregister(&self, function: &str) -> Result<(), RequestError> {
        let msg = |id| ClientMsg::Unregister {
            id,
            function: function.to_owned(),
        };
        match self.request(msg, Waits::REQUEST, false).await? {
            DaemonMsg::Done { .. } => Ok(()),
            other => Err(unexpected("done", &other)),
        }
    }

    pub(super) async fn list(&self) -> Result<Vec<String>, RequestError> {
        match self
            .request(|id| ClientMsg::List { id }, Waits::REQUEST, false)
            .await?
        {
            DaemonMsg::List { functions, .. } => Ok(functions),
            other => Err(unexpected("list", &other)),
        }
    }

    pub(super) async fn stats(&self) -> Result<Stats, RequestError> {
        match self
            .request(|id| ClientMsg::Stats { id }, Waits::REQUEST, false)
            .await?
        {
            DaemonMsg::Stats { stats, .. } => Ok(stats),
            other => Err(unexpected("stats", &other)),
        }
    }

    pub(super) async fn ping(&self) -> Result<(), RequestError> {
        match self
            .request(|id| ClientMsg::Ping { id }, Waits::REQUEST, false)
            .await?
        {
            DaemonMsg::Pong { .. } => Ok(()),
            other => Err(unexpected("pong", &other)),
        }
    }

    /// The next invocation for a function this connection registered; `None` once the
    /// connection is closed.
    pub(super) async fn next_invocation(&self) -> Option<Work> {
        self.invocations.lock().await.recv().await
    }

    /// Answers an invocation (a result too large for a frame becomes an application error
    /// sent to the caller, as with the blocking connection).
    pub(super) fn send_result(&self, invocation: u64, outcome: Outcome) {
        lock(&self.shared.live).remove(&invocation);
        let msg = ClientMsg::Result {
            invocation,
            outcome,
        };
        let encoded = try_encode_frame(&msg, self.shared.frame_max);
        // The result's bytes are in the frame now (or too large for one).
        if let ClientMsg::Result {
            outcome: Outcome::Ok(data),
            ..
        } = msg
        {
            recycle(data);
        }
        let frame = match encoded {
            Ok(frame) => frame,
            Err(err) => {
                let substitute = ClientMsg::Result {
                    invocation,
                    outcome: Outcome::Error(format!("message_too_large: {err}")),
                };
                match try_encode_frame(&substitute, self.shared.frame_max) {
                    Ok(frame) => frame,
                    Err(_) => return,
                }
            }
        };
        // A closed connection: the daemon answers the caller itself.
        let _ = self.shared.send(frame);
    }

    /// Sends one request, waiting up to `wait.room` for room in the write queue and up to
    /// `wait.total` in all for its reply; `Failed` becomes [`RequestError::Remote`]. With `cancellable`, a drop after the
    /// request was queued and before the reply sends `cancel_call` for it (a drop while it
    /// waits for room sends nothing: the daemon never saw it).
    async fn request(
        &self,
        make: impl FnOnce(u64) -> ClientMsg,
        wait: Waits,
        cancellable: bool,
    ) -> Result<DaemonMsg, RequestError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let out = Outgoing::of(make(id), self.shared.frame_max)?;
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut waiters = lock(&self.shared.waiters);
            if let Some(closed) = &waiters.closed {
                return Err(closed.to_error());
            }
            waiters.pending.insert(id, reply_tx);
        }
        let mut guard = Outstanding {
            shared: &self.shared,
            id,
            cancellable: false,
        };
        let waiting = Instant::now();
        let room = match tokio::time::timeout(wait.room, self.shared.room_for(out.len())).await {
            Ok(room) => room?,
            Err(_) => {
                return Err(RequestError::Local {
                    code: ErrorCode::DeadlineExceeded,
                    message: format!("no room in the write queue within {:?}", wait.room),
                })
            }
        };
        self.shared.push(out, room)?;
        guard.cancellable = cancellable;
        let wait_left = wait.total.saturating_sub(waiting.elapsed());
        let reply = match tokio::time::timeout(wait_left, reply_rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => {
                guard.cancellable = false;
                return Err(self.shared.closed_error());
            }
            Err(_) => {
                return Err(RequestError::Local {
                    code: ErrorCode::DeadlineExceeded,
                    message: format!("no reply from rpcd within {:?}", wait.total),
                })
            }
        };
        guard.cancellable = false;
        match reply {
            DaemonMsg::Failed { code, message, .. } => Err(RequestError::Remote { code, message }),
            other => Ok(other),
        }
    }
}

/// How long a request waits: for room in the write queue, and in all, room and reply.
#[derive(Debug, Clone, Copy)]
struct Waits {
    room: Duration,
    total: Duration,
}

impl Waits {
    /// A request other than a call: [`REQUEST_WAIT_MAX`] in all.
    const REQUEST: Waits = Waits {
        room: REQUEST_WAIT_MAX,
        total: REQUEST_WAIT_MAX,
    };
}

/// A request whose reply has not come: on drop (the future was dropped, or it timed out)
/// it forgets the waiter and, for a call, sends `cancel_call`.
struct Outstanding<'a> {
    shared: &'a Shared,
    id: u64,
    cancellable: bool,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        lock(&self.shared.waiters).pending.remove(&self.id);
        if self.cancellable {
            if let Ok(frame) = try_encode_frame(
                &ClientMsg::CancelCall { id: self.id },
                self.shared.frame_max,
            ) {
                // A closed connection has no call left to cancel.
                let _ = self.shared.send(frame);
            }
        }
    }
}

fn unexpected(wanted: &str, got: &DaemonMsg) -> RequestError {
    RequestError::Protocol(format!("expected {wanted}, got {}", got.op()))
}
