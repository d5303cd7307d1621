//! The blocking connection to `rpcd`: one Unix socket, many concurrent requests.
//!
//! Every request gets a fresh id and a one-shot channel registered under it; a reader thread
//! decodes the daemon's frames and hands each reply to the waiting caller, and `Invoke`
//! frames to a bounded queue for serving apps. Writes share the socket under a mutex, one
//! whole frame at a time.
//!
//! Nothing waits forever: when the connection closes every waiting caller is woken with the
//! reason at once, and each wait is bounded by the call's deadline plus [`REPLY_GRACE`] in
//! case a reply is lost.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ipc::{
    decode_frame, try_encode_frame, ClientMsg, DaemonMsg, ErrorCode, FrameError, Outcome, Stats,
    FRAME_MAX_DEFAULT, PROTOCOL_VERSION,
};

/// How long past a call's deadline the client still waits for the daemon's answer (the
/// daemon reports `deadline_exceeded` itself; this only guards against a lost reply).
pub const REPLY_GRACE: Duration = Duration::from_secs(2);

/// The longest a call without a deadline waits for its reply (plus [`REPLY_GRACE`]). The
/// daemon applies its configured default deadline, normally much shorter.
pub const CALL_WAIT_MAX: Duration = Duration::from_secs(300);

/// The longest a request other than a call (register, list, stats, ping) waits for its reply.
pub const REQUEST_WAIT_MAX: Duration = Duration::from_secs(30);

/// The longest the handshake waits for `HelloOk`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a write may block on a daemon that does not read; the connection is then
/// closed, as a partial frame leaves the stream out of sync.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Invocations received and not yet taken by [`Connection::next_invocation`]. When full,
/// further invocations are answered at once with an application error.
pub const INVOCATION_QUEUE_MAX: usize = 1024;

/// Bytes read from the socket per `read` call.
const READ_CHUNK: usize = 64 * 1024;

/// Why [`Connection::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens on the socket path (no file, or a stale one).
    #[error("is rpcd running? tried {}: {source}", .path.display())]
    NotRunning {
        /// The socket path tried.
        path: PathBuf,
        /// The error from `connect`.
        source: io::Error,
    },
    /// Connecting, or the handshake's reads and writes, failed otherwise (permissions,
    /// timeout, reset).
    #[error("cannot talk to rpcd at {}: {source}", .path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The daemon speaks another protocol version.
    #[error("protocol version mismatch: this client speaks version {ours}; rpcd: {message}")]
    VersionMismatch {
        /// [`PROTOCOL_VERSION`].
        ours: u32,
        /// The daemon's explanation, or the version it announced.
        message: String,
    },
    /// The daemon refused the handshake for another reason.
    #[error("rpcd refused the connection ({code}): {message}")]
    Refused {
        /// The daemon's code.
        code: ErrorCode,
        /// The daemon's message.
        message: String,
    },
    /// The daemon's answer to `Hello` made no sense, or it closed the connection.
    #[error("handshake with rpcd failed: {0}")]
    Protocol(String),
}

/// Why a request on a [`Connection`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The daemon answered with an error: a transport error, a refusal, or (code
    /// `app_error`) the handler's error message.
    #[error("{code}: {message}")]
    Remote {
        /// The daemon's code.
        code: ErrorCode,
        /// The daemon's message.
        message: String,
    },
    /// This library refused the request (too large to send) or gave up waiting for its
    /// reply (`deadline_exceeded` after the deadline plus [`REPLY_GRACE`]).
    #[error("{code}: {message}")]
    Local {
        /// The code the daemon would have used.
        code: ErrorCode,
        /// What happened.
        message: String,
    },
    /// The daemon closed the connection for a protocol violation.
    #[error("rpcd closed the connection ({code}): {message}")]
    Fatal {
        /// The daemon's code.
        code: ErrorCode,
        /// The problem, as the daemon named it.
        message: String,
    },
    /// The connection to the daemon is closed (daemon gone, or the connection dropped).
    #[error("connection to rpcd closed")]
    Disconnected,
    /// Writing to the socket failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The daemon sent something this library does not understand; the connection is
    /// closed.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl RequestError {
    /// The protocol error code, when there is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RequestError::Remote { code, .. }
            | RequestError::Local { code, .. }
            | RequestError::Fatal { code, .. } => Some(*code),
            RequestError::Disconnected | RequestError::Io(_) | RequestError::Protocol(_) => None,
        }
    }

    /// True when a call that failed this way may nevertheless have run: a code with
    /// [`ErrorCode::outcome_unknown`], or the connection failing under it.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            RequestError::Remote { code, .. } | RequestError::Local { code, .. } => {
                code.outcome_unknown()
            }
            RequestError::Fatal { .. }
            | RequestError::Disconnected
            | RequestError::Io(_)
            | RequestError::Protocol(_) => true,
        }
    }
}

/// Options of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// Time budget of the call; `None` takes the daemon's configured default.
    pub deadline: Option<Duration>,
    /// Whether the call may be retried on another daemon of a service.
    pub idempotent: bool,
}

/// What the daemon said about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonInfo {
    /// The protocol version it speaks.
    pub version: u32,
    /// Its name and version, e.g. `rpcd 0.1.0`.
    pub daemon: String,
    /// Its UDP address, `host:port`.
    pub listen: String,
    /// Its current epoch.
    pub epoch: u64,
}

/// One request for a serving app to run a registered function; answer it with
/// [`Connection::send_result`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The id to echo in the result.
    pub invocation: u64,
    /// The registered function to run.
    pub function: String,
    /// The arguments.
    pub args: Vec<u8>,
    /// The calling daemon's `host:port`.
    pub caller: String,
    /// When the caller gives up; a result after this is dropped by the daemon.
    pub deadline: Instant,
}

/// A blocking, thread-safe connection to `rpcd`. Share it by reference or in an `Arc`; any
/// number of threads may have requests in flight on it at once.
#[derive(Debug)]
pub struct Connection {
    shared: Arc<Shared>,
    invocations: Mutex<Receiver<Invocation>>,
    reader: Option<JoinHandle<()>>,
    daemon: DaemonInfo,
    path: PathBuf,
}

impl Connection {
    /// Connects to the daemon's socket at `path` and does the `Hello` handshake, announcing
    /// this app as `name`.
    pub fn connect(path: &Path, name: &str) -> Result<Connection, ConnectError> {
        let io_err = |source: io::Error| ConnectError::Io {
            path: path.to_owned(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ConnectError::NotRunning {
                    path: path.to_owned(),
                    source,
                }
            }
            _ => io_err(source),
        })?;
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(io_err)?;
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(io_err)?;

        let next_id = AtomicU64::new(1);
        let hello_id = next_id.fetch_add(1, Ordering::Relaxed);
        let hello = ClientMsg::Hello {
            id: hello_id,
            version: PROTOCOL_VERSION,
            name: name.to_owned(),
        };
        let frame = try_encode_frame(&hello, FRAME_MAX_DEFAULT)
            .map_err(|err| ConnectError::Protocol(format!("cannot send hello: {err}")))?;
        (&stream).write_all(&frame).map_err(io_err)?;

        let mut buf = Vec::new();
        let (reply, used) = read_one_frame(&stream, &mut buf).map_err(|err| match err {
            HandshakeRead::Io(source) => io_err(source),
            HandshakeRead::Closed => {
                ConnectError::Protocol("rpcd closed the connection during the handshake".into())
            }
            HandshakeRead::Frame(err) => ConnectError::Protocol(err.to_string()),
        })?;
        buf.drain(..used);
        let daemon = match reply {
            DaemonMsg::HelloOk {
                id,
                version,
                daemon,
                listen,
                epoch,
            } if id == hello_id => {
                if version != PROTOCOL_VERSION {
                    return Err(ConnectError::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        message: format!("{daemon} speaks version {version}"),
                    });
                }
                DaemonInfo {
                    version,
                    daemon,
                    listen,
                    epoch,
                }
            }
            DaemonMsg::Fatal { code, message } | DaemonMsg::Failed { code, message, .. } => {
                return Err(if code == ErrorCode::VersionMismatch {
                    ConnectError::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        message,
                    }
                } else {
                    ConnectError::Refused { code, message }
                });
            }
            other => {
                return Err(ConnectError::Protocol(format!(
                    "expected hello_ok for id {hello_id}, got {}",
                    describe(&other)
                )))
            }
        };
        // From now on the reader thread blocks in `read` until the daemon speaks or the
        // socket is shut down.
        stream.set_read_timeout(None).map_err(io_err)?;
        let read_half = stream.try_clone().map_err(io_err)?;

        let shared = Arc::new(Shared {
            writer: Mutex::new(stream),
            waiters: Mutex::new(Waiters::default()),
            next_id,
            frame_max: FRAME_MAX_DEFAULT,
        });
        let (invocation_tx, invocation_rx) = mpsc::sync_channel(INVOCATION_QUEUE_MAX);
        let reader_shared = Arc::clone(&shared);
        let reader = std::thread::Builder::new()
            .name("rpcd-client-reader".into())
            .spawn(move || read_loop(reader_shared, read_half, buf, invocation_tx))
            .map_err(io_err)?;
        Ok(Connection {
            shared,
            invocations: Mutex::new(invocation_rx),
            reader: Some(reader),
            daemon,
            path: path.to_owned(),
        })
    }

    /// Connects to [`crate::ipc::default_socket_path`].
    pub fn connect_default(name: &str) -> Result<Connection, ConnectError> {
        Connection::connect(&crate::ipc::default_socket_path(), name)
    }

    /// What the daemon said about itself in the handshake.
    pub fn daemon(&self) -> &DaemonInfo {
        &self.daemon
    }

    /// The socket path this connection was made to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `function` on `target` (`host:port`, a service name, or the local daemon's
    /// address) with `args`, and waits for the reply bytes.
    pub fn call(
        &self,
        target: &str,
        function: &str,
        args: Vec<u8>,
        opts: CallOptions,
    ) -> Result<Vec<u8>, RequestError> {
        let deadline_ms = opts.deadline.map(millis_ceil);
        let wait = opts
            .deadline
            .unwrap_or(CALL_WAIT_MAX)
            .saturating_add(REPLY_GRACE);
        let reply = self.request(
            |id| ClientMsg::Call {
                id,
                target: target.to_owned(),
                function: function.to_owned(),
                args,
                deadline_ms,
                idempotent: opts.idempotent,
            },
            wait,
        )?;
        match reply {
            DaemonMsg::CallOk { data, .. } => Ok(data),
            other => Err(unexpected("call_ok", &other)),
        }
    }

    /// Claims `function` for this connection: calls to it arrive as invocations.
    pub fn register(&self, function: &str) -> Result<(), RequestError> {
        self.request_done(|id| ClientMsg::Register {
            id,
            function: function.to_owned(),
        })
    }

    /// Releases `function`.
    pub fn unregister(&self, function: &str) -> Result<(), RequestError> {
        self.request_done(|id| ClientMsg::Unregister {
            id,
            function: function.to_owned(),
        })
    }

    /// A request whose only success reply is `done`.
    fn request_done(&self, build: impl FnOnce(u64) -> ClientMsg) -> Result<(), RequestError> {
        match self.request(build, REQUEST_WAIT_MAX)? {
            DaemonMsg::Done { .. } => Ok(()),
            other => Err(unexpected("done", &other)),
        }
    }

    /// The functions registered on the daemon, built-ins included.
    pub fn list(&self) -> Result<Vec<String>, RequestError> {
        match self.request(|id| ClientMsg::List { id }, REQUEST_WAIT_MAX)? {
            DaemonMsg::List { functions, .. } => Ok(functions),
            other => Err(unexpected("list", &other)),
        }
    }

    /// The daemon's counters.
    pub fn stats(&self) -> Result<Stats, RequestError> {
        match self.request(|id| ClientMsg::Stats { id }, REQUEST_WAIT_MAX)? {
            DaemonMsg::Stats { stats, .. } => Ok(stats),
            other => Err(unexpected("stats", &other)),
        }
    }

    /// Checks that the daemon answers.
    pub fn ping(&self) -> Result<(), RequestError> {
        match self.request(|id| ClientMsg::Ping { id }, REQUEST_WAIT_MAX)? {
            DaemonMsg::Pong { .. } => Ok(()),
            other => Err(unexpected("pong", &other)),
        }
    }

    /// Takes the next invocation for a function this connection registered, waiting up to
    /// `timeout` (`None`: until one arrives). Returns `None` on timeout or once the
    /// connection is closed (see [`Connection::is_closed`]). Several worker threads may wait
    /// here; they take turns.
    pub fn next_invocation(&self, timeout: Option<Duration>) -> Option<Invocation> {
        let started = Instant::now();
        let queue = lock(&self.invocations);
        match timeout {
            None => queue.recv().ok(),
            // Time spent waiting for the lock counts against the timeout.
            Some(timeout) => queue
                .recv_timeout(timeout.saturating_sub(started.elapsed()))
                .ok(),
        }
    }

    /// Answers an invocation. A result too large for a frame is replaced by an application
    /// error sent to the caller, and reported here as `message_too_large`.
    pub fn send_result(&self, invocation: u64, outcome: Outcome) -> Result<(), RequestError> {
        let msg = ClientMsg::Result {
            invocation,
            outcome,
        };
        match try_encode_frame(&msg, self.shared.frame_max) {
            Ok(frame) => self.shared.write(&frame),
            Err(FrameError::TooLarge { len, max }) => {
                let message = format!("result of {len} bytes exceeds the frame maximum of {max}");
                let substitute = ClientMsg::Result {
                    invocation,
                    outcome: Outcome::Error(format!("message_too_large: {message}")),
                };
                let frame = try_encode_frame(&substitute, self.shared.frame_max)
                    .map_err(|err| RequestError::Protocol(err.to_string()))?;
                self.shared.write(&frame)?;
                Err(RequestError::Local {
                    code: ErrorCode::MessageTooLarge,
                    message,
                })
            }
            Err(err) => Err(RequestError::Protocol(err.to_string())),
        }
    }

    /// Writes `bytes` to the socket as they are, for tests that need to send garbage.
    pub fn send_raw(&self, bytes: &[u8]) -> Result<(), RequestError> {
        self.shared.write(bytes)
    }

    /// True once the connection is closed: every request now fails at once.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.waiters).closed.is_some()
    }

    /// Sends one request and waits up to `wait` for its reply; `Failed` becomes
    /// [`RequestError::Remote`].
    fn request(
        &self,
        make: impl FnOnce(u64) -> ClientMsg,
        wait: Duration,
    ) -> Result<DaemonMsg, RequestError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let frame =
            try_encode_frame(&make(id), self.shared.frame_max).map_err(|err| match err {
                FrameError::TooLarge { len, max } => RequestError::Local {
                    code: ErrorCode::MessageTooLarge,
                    message: format!("request of {len} bytes exceeds the frame maximum of {max}"),
                },
                other => RequestError::Protocol(other.to_string()),
            })?;
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        {
            let mut waiters = lock(&self.shared.waiters);
            if let Some(closed) = &waiters.closed {
                return Err(closed.to_error());
            }
            waiters.pending.insert(id, reply_tx);
        }
        if let Err(err) = self.shared.write(&frame) {
            self.shared.forget(id);
            return Err(err);
        }
        let reply = match reply_rx.recv_timeout(wait) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Timeout) => {
                self.shared.forget(id);
                return Err(RequestError::Local {
                    code: ErrorCode::DeadlineExceeded,
                    message: format!("no reply from rpcd within {wait:?}"),
                });
            }
            // The reader dropped our sender: the connection closed.
            Err(RecvTimeoutError::Disconnected) => return Err(self.shared.closed_error()),
        };
        match reply {
            DaemonMsg::Failed { code, message, .. } => Err(RequestError::Remote { code, message }),
            other => Ok(other),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.close(Closed::Dropped);
        if let Some(reader) = self.reader.take() {
            // The socket is shut down, so the reader's `read` returns at once; a panic in it
            // has nothing left to tell anyone.
            let _ = reader.join();
        }
    }
}

/// State shared between the callers and the reader thread.
#[derive(Debug)]
struct Shared {
    writer: Mutex<UnixStream>,
    waiters: Mutex<Waiters>,
    next_id: AtomicU64,
    frame_max: usize,
}

/// Requests waiting for a reply, and whether the connection is closed. One mutex covers
/// both, so a request is either registered before the close (and woken by it) or sees it.
#[derive(Debug, Default)]
struct Waiters {
    pending: HashMap<u64, SyncSender<DaemonMsg>>,
    closed: Option<Closed>,
}

/// Why the connection closed.
#[derive(Debug, Clone)]
enum Closed {
    /// The daemon closed the socket, or reading it failed.
    Disconnected,
    /// The daemon sent `Fatal`.
    Fatal { code: ErrorCode, message: String },
    /// The daemon sent a frame we could not decode.
    Protocol(String),
    /// The `Connection` was dropped.
    Dropped,
}

impl Closed {
    fn to_error(&self) -> RequestError {
        match self {
            Closed::Disconnected | Closed::Dropped => RequestError::Disconnected,
            Closed::Fatal { code, message } => RequestError::Fatal {
                code: *code,
                message: message.clone(),
            },
            Closed::Protocol(message) => RequestError::Protocol(message.clone()),
        }
    }
}

impl Shared {
    /// Writes one whole frame (or raw bytes). A failed write may leave half a frame on the
    /// stream, so it closes the connection.
    fn write(&self, bytes: &[u8]) -> Result<(), RequestError> {
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
    fn forget(&self, id: u64) {
        lock(&self.waiters).pending.remove(&id);
    }

    /// The error every request gets once the connection is closed.
    fn closed_error(&self) -> RequestError {
        lock(&self.waiters)
            .closed
            .as_ref()
            .map_or(RequestError::Disconnected, Closed::to_error)
    }

    /// Marks the connection closed (the first reason wins), wakes every waiting request by
    /// dropping its sender, and shuts the socket down so the reader and writers stop.
    fn close(&self, reason: Closed) {
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
                let work = Invocation {
                    invocation,
                    function,
                    args,
                    caller,
                    deadline: Instant::now()
                        + Duration::from_millis(deadline_ms.min(u32::MAX.into())),
                };
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
fn read_loop(
    shared: Arc<Shared>,
    stream: UnixStream,
    buf: Vec<u8>,
    invocations: SyncSender<Invocation>,
) {
    let reason = read_frames(&shared, stream, buf, &invocations);
    shared.close(reason);
}

fn read_frames(
    shared: &Shared,
    mut stream: UnixStream,
    mut buf: Vec<u8>,
    invocations: &SyncSender<Invocation>,
) -> Closed {
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        // Decode every whole frame buffered, then drop them in one move. `decode_frame`
        // refuses a length over the maximum, so `buf` stays under frame_max + READ_CHUNK.
        let mut start = 0;
        loop {
            match decode_frame::<DaemonMsg>(&buf[start..], shared.frame_max) {
                Ok(Some((msg, used))) => {
                    start += used;
                    if let Some(reason) = shared.dispatch(msg, invocations) {
                        return reason;
                    }
                }
                Ok(None) => break,
                Err(err) => return Closed::Protocol(format!("bad frame from rpcd: {err}")),
            }
        }
        buf.drain(..start);
        match stream.read(&mut chunk) {
            Ok(0) => return Closed::Disconnected,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Closed::Disconnected,
        }
    }
}

/// What went wrong reading the handshake reply.
enum HandshakeRead {
    Io(io::Error),
    Closed,
    Frame(FrameError),
}

/// Reads until `buf` holds one whole frame and decodes it (the socket has a read timeout).
fn read_one_frame(
    mut stream: &UnixStream,
    buf: &mut Vec<u8>,
) -> Result<(DaemonMsg, usize), HandshakeRead> {
    let mut chunk = [0u8; 4096];
    loop {
        match decode_frame::<DaemonMsg>(buf, FRAME_MAX_DEFAULT) {
            Ok(Some(decoded)) => return Ok(decoded),
            Ok(None) => {}
            Err(err) => return Err(HandshakeRead::Frame(err)),
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(HandshakeRead::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(HandshakeRead::Io(err)),
        }
    }
}

/// A poisoned lock only means another thread panicked holding it; the data (a map of
/// senders, a socket) is still consistent, so carry on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whole milliseconds, rounded up so a short deadline never becomes zero.
fn millis_ceil(duration: Duration) -> u64 {
    let millis = duration.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

fn unexpected(wanted: &str, got: &DaemonMsg) -> RequestError {
    RequestError::Protocol(format!("expected {wanted}, got {}", describe(got)))
}

/// The op name of a daemon message, for error messages.
fn describe(msg: &DaemonMsg) -> &'static str {
    match msg {
        DaemonMsg::HelloOk { .. } => "hello_ok",
        DaemonMsg::Done { .. } => "done",
        DaemonMsg::CallOk { .. } => "call_ok",
        DaemonMsg::Failed { .. } => "failed",
        DaemonMsg::List { .. } => "list",
        DaemonMsg::Stats { .. } => "stats",
        DaemonMsg::Pong { .. } => "pong",
        DaemonMsg::Invoke { .. } => "invoke",
        DaemonMsg::Fatal { .. } => "fatal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::encode_frame;
    use std::os::unix::net::UnixListener;
    use std::thread;

    /// A test-only daemon: a listener in a temp dir, driven by hand from the test.
    struct FakeDaemon {
        listener: UnixListener,
        path: PathBuf,
        _dir: tempfile::TempDir,
    }

    /// One accepted app connection on the fake daemon.
    struct Peer {
        stream: UnixStream,
        buf: Vec<u8>,
    }

    impl FakeDaemon {
        fn start() -> FakeDaemon {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("rpcd.sock");
            let listener = UnixListener::bind(&path).unwrap();
            FakeDaemon {
                listener,
                path,
                _dir: dir,
            }
        }

        fn accept(&self) -> Peer {
            let (stream, _) = self.listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            Peer {
                stream,
                buf: Vec::new(),
            }
        }

        /// Accepts one app and completes its handshake.
        fn accept_hello(&self) -> Peer {
            let mut peer = self.accept();
            let ClientMsg::Hello { id, version, .. } = peer.recv() else {
                panic!("expected hello first");
            };
            assert_eq!(version, PROTOCOL_VERSION);
            peer.send(&hello_ok(id));
            peer
        }
    }

    fn hello_ok(id: u64) -> DaemonMsg {
        DaemonMsg::HelloOk {
            id,
            version: PROTOCOL_VERSION,
            daemon: "fake 0".into(),
            listen: "127.0.0.1:7000".into(),
            epoch: 42,
        }
    }

    impl Peer {
        fn recv(&mut self) -> ClientMsg {
            loop {
                if let Some((msg, used)) = decode_frame(&self.buf, FRAME_MAX_DEFAULT).unwrap() {
                    self.buf.drain(..used);
                    return msg;
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).unwrap();
                assert!(n > 0, "app closed the connection");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }

        fn send(&mut self, msg: &DaemonMsg) {
            self.stream.write_all(&encode_frame(msg)).unwrap();
        }
    }

    /// Connects an app to `fake` while the fake daemon handshakes on this thread.
    fn connected(fake: &FakeDaemon) -> (Connection, Peer) {
        let path = fake.path.clone();
        let app = thread::spawn(move || Connection::connect(&path, "test-app"));
        let peer = fake.accept_hello();
        (app.join().unwrap().unwrap(), peer)
    }

    fn call_id(msg: &ClientMsg) -> (u64, String) {
        match msg {
            ClientMsg::Call { id, function, .. } => (*id, function.clone()),
            other => panic!("expected a call, got {other:?}"),
        }
    }

    #[test]
    fn connection_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Connection>();
    }

    #[test]
    fn handshake_reports_the_daemon() {
        let fake = FakeDaemon::start();
        let (conn, _peer) = connected(&fake);
        assert_eq!(
            conn.daemon(),
            &DaemonInfo {
                version: PROTOCOL_VERSION,
                daemon: "fake 0".into(),
                listen: "127.0.0.1:7000".into(),
                epoch: 42,
            }
        );
        assert!(!conn.is_closed());
    }

    #[test]
    fn concurrent_calls_answered_in_reverse_order_reach_their_callers() {
        let fake = FakeDaemon::start();
        let (conn, mut peer) = connected(&fake);
        thread::scope(|s| {
            let first = s.spawn(|| conn.call("h:1", "first", vec![1], CallOptions::default()));
            let second = s.spawn(|| conn.call("h:1", "second", vec![2], CallOptions::default()));
            let a = call_id(&peer.recv());
            let b = call_id(&peer.recv());
            assert_ne!(a.0, b.0, "each request has its own id");
            for (id, function) in [b, a] {
                peer.send(&DaemonMsg::CallOk {
                    id,
                    data: function.into_bytes(),
                });
            }
            assert_eq!(first.join().unwrap().unwrap(), b"first");
            assert_eq!(second.join().unwrap().unwrap(), b"second");
        });
    }

    #[test]
    fn call_carries_deadline_and_flags() {
        let fake = FakeDaemon::start();
        let (conn, mut peer) = connected(&fake);
        thread::scope(|s| {
            let call = s.spawn(|| {
                let opts = CallOptions {
                    deadline: Some(Duration::from_micros(1500)),
                    idempotent: true,
                };
                conn.call("svc", "f", vec![0x90], opts)
            });
            let ClientMsg::Call {
                id,
                target,
                function,
                args,
                deadline_ms,
                idempotent,
            } = peer.recv()
            else {
                panic!("expected a call");
            };
            assert_eq!(
                (
                    target.as_str(),
                    function.as_str(),
                    args,
                    deadline_ms,
                    idempotent
                ),
                ("svc", "f", vec![0x90], Some(2), true)
            );
            peer.send(&DaemonMsg::CallOk { id, data: vec![] });
            assert_eq!(call.join().unwrap().unwrap(), Vec::<u8>::new());
        });
    }

    #[test]
    fn failed_frames_become_remote_errors_with_their_code() {
        let fake = FakeDaemon::start();
        let (conn, mut peer) = connected(&fake);
        thread::scope(|s| {
            let call = s.spawn(|| conn.call("h:1", "nope", vec![], CallOptions::default()));
            let (id, _) = call_id(&peer.recv());
            peer.send(&DaemonMsg::Failed {
                id,
                code: ErrorCode::UnknownFunction,
                message: "no function nope on h:1".into(),
            });
            let err = call.join().unwrap().unwrap_err();
            assert_eq!(err.code(), Some(ErrorCode::UnknownFunction));
            assert!(!err.outcome_unknown());
            assert_eq!(err.to_string(), "unknown_function: no function nope on h:1");

            let register = s.spawn(|| conn.register("taken"));
            let ClientMsg::Register { id, function } = peer.recv() else {
                panic!("expected register");
            };
            assert_eq!(function, "taken");
            peer.send(&DaemonMsg::Failed {
                id,
                code: ErrorCode::NameTaken,
                message: "taken is owned by another app".into(),
            });
            let err = register.join().unwrap().unwrap_err();
            assert!(matches!(
                err,
                RequestError::Remote {
                    code: ErrorCode::NameTaken,
                    ..
                }
            ));
        });
        // The connection is still usable after a failed request.
        assert!(!conn.is_closed());
    }

    #[test]
    fn list_stats_ping_register_unregister_round_trip() {
        let fake = FakeDaemon::start();
        let (conn, mut peer) = connected(&fake);
        thread::scope(|s| {
            let app = s.spawn(|| {
                conn.ping().unwrap();
                assert_eq!(conn.list().unwrap(), ["rpcd.ping"]);
                assert_eq!(conn.stats().unwrap().uptime_ms, 5);
                conn.register("f").unwrap();
                conn.unregister("f").unwrap();
            });
            for _ in 0..5 {
                let reply = match peer.recv() {
                    ClientMsg::Ping { id } => DaemonMsg::Pong { id },
                    ClientMsg::List { id } => DaemonMsg::List {
                        id,
                        functions: vec!["rpcd.ping".into()],
                    },
                    ClientMsg::Stats { id } => DaemonMsg::Stats {
                        id,
                        stats: Stats {
                            uptime_ms: 5,
                            ..Stats::default()
                        },
                    },
                    ClientMsg::Register { id, .. } | ClientMsg::Unregister { id, .. } => {
                        DaemonMsg::Done { id }
                    }
                    other => panic!("unexpected {other:?}"),
                };
                peer.send(&reply);
            }
            app.join().unwrap();
        });
    }

    #[test]
    fn wrong_reply_type_is_a_protocol_error() {
        let fake = FakeDaemon::start();
        let (conn, mut peer) = connected(&fake);
        thread::scope(|s| {
            let ping = s.spawn(|| conn.ping());
            let ClientMsg::Ping { id } = peer.recv() else {
                panic!("expected ping");
            };
            peer.send(&DaemonMsg::Done { id });
            let err = ping.join().unwrap().unwrap_err();
            assert_eq!(err.to_string(), "protocol error: expected pong, got done");
        });
    }

    #[test]
    fn daemon_closing_mid_call_fails_every_waiting_call_promptly() {
        let fake = FakeDaemon::start();
        let (conn, mut peer) = connected(&fake);
        thread::scope(|s| {
            let calls: Vec<_> = (0..3)
                .map(|_| s.spawn(|| conn.call("h:1", "f", vec![], CallOptions::default())))
                .collect();
            for _ in 0..3 {
                peer.recv();
            }
            let closed_at = Instant::now();
            drop(peer);
            for call in calls {
                assert!(matches!(
                    call.join().unwrap(),
                    Err(RequestError::Disconnected)
                ));
            }
            assert!(closed_at.elapsed() < Duration::from_secs(1));
        });
        assert!(conn.is_closed());
        // Later requests fail at once too.
        assert!(matches!(conn.ping(), Err(RequestError::Disconnected)));
        assert!(conn.next_invocation(None).is_none());
    }

    #[test]
    fn fatal_frame_fails_waiting_calls_with_its_code() {
        let fake = FakeDaemon::start();
        let (conn, mut peer) = connected(&fake);
        thread::scope(|s| {
            let call = s.spawn(|| conn.call("h:1", "f", vec![], CallOptions::default()));
            peer.recv();
            peer.send(&DaemonMsg::Fatal {
                code: ErrorCode::ProtocolError,
                message: "trailing 3 bytes after the message".into(),
            });
            let err = call.join().unwrap().unwrap_err();
            assert!(matches!(
                err,
                RequestError::Fatal {
                    code: ErrorCode::ProtocolError,
                    ..
                }
            ));
        });
        assert!(matches!(conn.ping(), Err(RequestError::Fatal { .. })));
    }

    #[test]
    fn garbage_from_the_daemon_closes_with_a_protocol_error() {
        let fake = FakeDaemon::start();
        let (conn, mut peer) = connected(&fake);
        thread::scope(|s| {
            let call = s.spawn(|| conn.call("h:1", "f", vec![], CallOptions::default()));
            peer.recv();
            peer.stream.write_all(&[0, 0, 0, 1, 0xc1]).unwrap();
            let err = call.join().unwrap().unwrap_err();
            assert!(matches!(err, RequestError::Protocol(_)), "{err}");
            assert!(err.to_string().contains("invalid MessagePack"), "{err}");
        });
    }

    #[test]
    fn lost_reply_ends_at_deadline_plus_grace() {
        let fake = FakeDaemon::start();
        let (conn, mut peer) = connected(&fake);
        let started = Instant::now();
        let opts = CallOptions {
            deadline: Some(Duration::from_millis(10)),
            idempotent: false,
        };
        thread::scope(|s| {
            let call = s.spawn(|| conn.call("h:1", "f", vec![], opts));
            let (id, _) = call_id(&peer.recv());
            let err = call.join().unwrap().unwrap_err();
            assert_eq!(err.code(), Some(ErrorCode::DeadlineExceeded));
            assert!(err.outcome_unknown());
            // A reply after the caller gave up is dropped, and the connection still works.
            peer.send(&DaemonMsg::CallOk { id, data: vec![] });
            let ping = s.spawn(|| conn.ping());
            let ClientMsg::Ping { id } = peer.recv() else {
                panic!("expected ping");
            };
            peer.send(&DaemonMsg::Pong { id });
            ping.join().unwrap().unwrap();
        });
        let waited = started.elapsed();
        assert!(
            waited >= REPLY_GRACE && waited < REPLY_GRACE * 3,
            "{waited:?}"
        );
    }

    #[test]
    fn oversized_args_are_refused_before_sending() {
        let fake = FakeDaemon::start();
        let (conn, mut peer) = connected(&fake);
        let err = conn
            .call(
                "h:1",
                "f",
                vec![0; FRAME_MAX_DEFAULT],
                CallOptions::default(),
            )
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge));
        // Nothing was written: the next frame the daemon sees is the ping.
        thread::scope(|s| {
            let ping = s.spawn(|| conn.ping());
            assert!(matches!(peer.recv(), ClientMsg::Ping { .. }));
            drop(peer);
            let _ = ping.join().unwrap();
        });
    }

    #[test]
    fn invocations_are_queued_and_answered() {
        let fake = FakeDaemon::start();
        let (conn, mut peer) = connected(&fake);
        assert!(conn
            .next_invocation(Some(Duration::from_millis(10)))
            .is_none());
        peer.send(&DaemonMsg::Invoke {
            invocation: 77,
            function: "echo".into(),
            args: vec![1, 2, 3],
            caller: "10.0.0.1:7000".into(),
            deadline_ms: 1000,
        });
        let work = conn
            .next_invocation(Some(Duration::from_secs(5)))
            .expect("an invocation");
        assert_eq!(
            (
                work.invocation,
                work.function.as_str(),
                work.args.as_slice()
            ),
            (77, "echo", &[1u8, 2, 3][..])
        );
        assert!(work.deadline > Instant::now());
        conn.send_result(work.invocation, Outcome::Ok(work.args.clone()))
            .unwrap();
        assert_eq!(
            peer.recv(),
            ClientMsg::Result {
                invocation: 77,
                outcome: Outcome::Ok(vec![1, 2, 3])
            }
        );
    }

    #[test]
    fn send_raw_writes_bytes_as_they_are() {
        let fake = FakeDaemon::start();
        let (conn, mut peer) = connected(&fake);
        conn.send_raw(&[0, 0, 0, 1]).unwrap();
        conn.send_raw(&[0xc1]).unwrap();
        let mut got = [0u8; 5];
        peer.stream.read_exact(&mut got).unwrap();
        assert_eq!(got, [0, 0, 0, 1, 0xc1]);
    }

    #[test]
    fn connect_to_a_missing_socket_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        let err = Connection::connect(&path, "app").unwrap_err();
        assert!(matches!(err, ConnectError::NotRunning { .. }));
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("is rpcd running? tried {}: ", path.display())),
            "{text}"
        );
    }

    #[test]
    fn connect_to_a_stale_socket_file_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        drop(UnixListener::bind(&path).unwrap());
        let err = Connection::connect(&path, "app").unwrap_err();
        assert!(matches!(err, ConnectError::NotRunning { .. }), "{err}");
    }

    #[test]
    fn version_mismatch_is_reported_clearly() {
        let fake = FakeDaemon::start();
        let path = fake.path.clone();
        let app = thread::spawn(move || Connection::connect(&path, "app"));
        let mut peer = fake.accept();
        peer.recv();
        peer.send(&DaemonMsg::Fatal {
            code: ErrorCode::VersionMismatch,
            message: "rpcd speaks version 2, client sent 1".into(),
        });
        let err = app.join().unwrap().unwrap_err();
        assert!(matches!(err, ConnectError::VersionMismatch { ours: 1, .. }));
        assert_eq!(
            err.to_string(),
            "protocol version mismatch: this client speaks version 1; \
             rpcd: rpcd speaks version 2, client sent 1"
        );
    }

    #[test]
    fn hello_ok_with_another_version_is_a_mismatch() {
        let fake = FakeDaemon::start();
        let path = fake.path.clone();
        let app = thread::spawn(move || Connection::connect(&path, "app"));
        let mut peer = fake.accept();
        let ClientMsg::Hello { id, .. } = peer.recv() else {
            panic!("expected hello");
        };
        peer.send(&DaemonMsg::HelloOk {
            id,
            version: 9,
            daemon: "rpcd 9".into(),
            listen: "x".into(),
            epoch: 1,
        });
        let err = app.join().unwrap().unwrap_err();
        assert!(matches!(err, ConnectError::VersionMismatch { .. }), "{err}");
    }

    #[test]
    fn daemon_closing_during_handshake_is_an_error_not_a_hang() {
        let fake = FakeDaemon::start();
        let path = fake.path.clone();
        let app = thread::spawn(move || Connection::connect(&path, "app"));
        let mut peer = fake.accept();
        peer.recv();
        drop(peer);
        let err = app.join().unwrap().unwrap_err();
        assert!(matches!(err, ConnectError::Protocol(_)), "{err}");
    }

    #[test]
    fn dropping_the_connection_closes_the_socket() {
        let fake = FakeDaemon::start();
        let (conn, mut peer) = connected(&fake);
        drop(conn);
        let mut byte = [0u8; 1];
        assert_eq!(peer.stream.read(&mut byte).unwrap(), 0);
    }
}
