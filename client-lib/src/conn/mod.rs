//! The blocking connection to `rpcd`: one Unix socket, many concurrent requests.
//!
//! Every request gets a fresh id and a slot registered under it. Whoever reads the socket
//! (`reading`: a waiting caller itself, leader/follower, or the reader thread of a serving
//! connection; `pooled`: the serving app's worker threads, one turn each) routes each frame
//! (`demux`): a reply into its caller's slot, `invoke` frames to the serving app (the reading
//! worker, its sink or a bounded queue), `cancel` frames to the invocation they name. Writes
//! share the socket: a frame written while another thread writes joins its `write`.
//!
//! Nothing waits forever: the handshake (`handshake`) is bounded by [`HANDSHAKE_TIMEOUT`];
//! when the connection closes every waiting caller is woken with the reason at once; and each
//! wait is bounded by the call's deadline plus [`REPLY_GRACE`] in case a reply is lost.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::lock;
use crate::identity::Identity;
use crate::ipc::{
    recycle, split_result_frame, try_encode_frame, ClientMsg, DaemonMsg, Declaration, ErrorCode,
    FrameError, Limits, Outcome, Stats, FRAME_MAX_DEFAULT,
};

mod demux;
mod error;
pub(crate) mod handshake;
mod pending;
mod pooled;
mod read_half;
mod reading;
mod request;
mod wakeup;

pub(crate) use demux::InvocationSink;
use demux::Shared;
use error::Closed;
pub use error::{ConnectError, RequestError, TriedSocket};
pub use pending::PendingReply;
pub(crate) use pooled::Turn;
use read_half::ReadHalf;
pub(crate) use wakeup::Wakeup;

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
/// further invocations are refused at once as `overloaded`.
pub const INVOCATION_QUEUE_MAX: usize = 1024;

/// Invocations handed to the app and not answered yet that a `cancel` can still reach. When
/// full (an app holding this many unanswered), further invocations are refused as
/// `overloaded`.
pub const LIVE_INVOCATIONS_MAX: usize = 64 * INVOCATION_QUEUE_MAX;

/// Options of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// Time budget of the call; `None` takes the daemon's configured default.
    pub deadline: Option<Duration>,
    /// Whether the call may be retried on another daemon of a service.
    pub idempotent: bool,
}

impl CallOptions {
    /// Options with a time budget (`None`: the daemon's default) and whether the call may
    /// be retried on another daemon of a service.
    pub fn new(deadline: Option<Duration>, idempotent: bool) -> CallOptions {
        CallOptions {
            deadline,
            idempotent,
        }
    }

    /// These options with a time budget of `deadline`.
    pub fn with_deadline(mut self, deadline: Duration) -> CallOptions {
        self.deadline = Some(deadline);
        self
    }

    /// These options with `idempotent` set as given.
    pub fn with_idempotent(mut self, idempotent: bool) -> CallOptions {
        self.idempotent = idempotent;
        self
    }
}

/// What the daemon said about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DaemonInfo {
    /// The protocol version of the session: the highest both this library and the daemon
    /// speak.
    pub version: u32,
    /// Its name and version, e.g. `rpcd 0.1.0`.
    pub daemon: String,
    /// Its UDP address, `host:port`.
    pub listen: String,
    /// Its current epoch.
    pub epoch: u64,
    /// The bounds it holds this connection to; `None` from a daemon of protocol version 1,
    /// which does not report them.
    pub limits: Option<Limits>,
}

/// One request for a serving app to run a registered function; answer it with
/// [`Connection::send_result`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The id to echo in the result.
    pub invocation: u64,
    /// The registered function to run.
    pub function: String,
    /// The arguments: where the frame reader read them for a large frame ([`Payload`],
    /// read as `&[u8]`).
    ///
    /// [`Payload`]: crate::ipc::Payload
    pub args: crate::ipc::Payload,
    /// Where the call came from: the calling daemon's `host:port`, or `"local"` for an app
    /// on this daemon.
    pub caller: String,
    /// Who called, as the wire says it: the authenticated calling daemon's configured name,
    /// `"local"` for an app on this daemon, empty for an unauthenticated remote daemon.
    /// [`Invocation::identity`] is the typed view.
    pub peer: String,
    /// When the caller gives up; a result after this is dropped by the daemon.
    pub deadline: Instant,
    /// For a call from an app on this daemon, the calling process's uid, gid and pid.
    pub credentials: Option<crate::identity::Credentials>,
    /// Set when the daemon says the caller is gone; shared by every clone.
    cancelled: CancelFlag,
}

impl Invocation {
    fn new(
        invocation: u64,
        function: String,
        args: crate::ipc::Payload,
        caller: String,
        peer: String,
        deadline: Instant,
    ) -> Invocation {
        Invocation {
            invocation,
            function,
            args,
            caller,
            peer,
            deadline,
            credentials: None,
            cancelled: CancelFlag::default(),
        }
    }

    /// Who called: an app on this daemon, an authenticated peer daemon by its configured
    /// name, or an unauthenticated remote daemon by its address.
    pub fn identity(&self) -> Identity<'_> {
        Identity::from_wire(&self.peer, &self.caller)
    }

    /// True once the daemon has said this invocation's caller is gone (a `cancel` frame):
    /// stop working on it. A result sent anyway is dropped by the daemon.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.0.load(Ordering::Acquire)
    }

    /// The flag behind [`Invocation::is_cancelled`], for a handler to poll.
    pub(crate) fn cancelled(&self) -> &AtomicBool {
        &self.cancelled.0
    }

    /// What the reader thread keeps to set the flag, without keeping the invocation alive.
    fn cancel_flag(&self) -> Weak<AtomicBool> {
        Arc::downgrade(&self.cancelled.0)
    }
}

/// Whether an invocation was cancelled. Compared by value, so an [`Invocation`] stays
/// comparable like the plain data it is.
#[derive(Debug, Clone, Default)]
struct CancelFlag(Arc<AtomicBool>);

impl PartialEq for CancelFlag {
    fn eq(&self, other: &CancelFlag) -> bool {
        self.0.load(Ordering::Acquire) == other.0.load(Ordering::Acquire)
    }
}

impl Eq for CancelFlag {}

/// A blocking, thread-safe connection to `rpcd`. Share it by reference or in an `Arc`; any
/// number of threads may have requests in flight on it at once.
#[derive(Debug)]
pub struct Connection {
    shared: Arc<Shared>,
    invocations: Mutex<Receiver<Invocation>>,
    /// The reader thread, started once the connection serves.
    reader: Mutex<Option<JoinHandle<()>>>,
    daemon: DaemonInfo,
    path: PathBuf,
}

impl Connection {
    /// Connects to the daemon's socket at `path` and does the `Hello` handshake, announcing
    /// this app as `name`.
    pub fn connect(path: &Path, name: &str) -> Result<Connection, ConnectError> {
        let next_id = AtomicU64::new(1);
        let hello_id = next_id.fetch_add(1, Ordering::Relaxed);
        let greeted = handshake::handshake(path, name, hello_id)?;
        let io_err = |source| ConnectError::Io {
            path: path.to_owned(),
            source,
        };
        let read_half = greeted.stream.try_clone().map_err(io_err)?;
        // A leading caller's reads wake up now and then to look at its deadline; a serving
        // connection's reads block (`reading`, `pooled`).
        read_half
            .set_read_timeout(Some(reading::LEADER_READ_SLICE))
            .map_err(io_err)?;
        // Frames over the daemon's maximum would make it close the connection: refuse
        // them here instead, as `message_too_large` for that request only.
        let frame_max = greeted
            .daemon
            .limits
            .and_then(|l| usize::try_from(l.frame_max).ok())
            .filter(|&max| max > 0)
            .unwrap_or(FRAME_MAX_DEFAULT);
        let (invocation_tx, invocation_rx) = mpsc::sync_channel(INVOCATION_QUEUE_MAX);
        let read_half = ReadHalf::new(read_half, greeted.frames, Some(reading::LEADER_READ_SLICE));
        let shared = Arc::new(Shared::new(
            greeted.stream,
            read_half,
            next_id,
            frame_max,
            invocation_tx,
        ));
        Ok(Connection {
            shared,
            invocations: Mutex::new(invocation_rx),
            reader: Mutex::new(None),
            daemon: greeted.daemon,
            path: path.to_owned(),
        })
    }

    /// Connects to the first of [`crate::ipc::socket_candidates`] where a daemon accepts
    /// the connection: `RPCD_SOCKET`, the system socket, then this user's own. A path with
    /// no socket, nobody listening or no permission to connect is passed over; once a daemon
    /// accepts, its handshake decides. With no daemon anywhere the error
    /// ([`ConnectError::NoDaemon`]) lists every path and why it failed.
    pub fn connect_default(name: &str) -> Result<Connection, ConnectError> {
        let mut tried = Vec::new();
        for (source, path) in crate::ipc::socket_candidates() {
            match Connection::connect(&path, name) {
                Ok(conn) => return Ok(conn),
                Err(failure) => tried.push(TriedSocket::from_failure(source, failure)?),
            }
        }
        Err(ConnectError::NoDaemon { tried })
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
                args: args.into(),
                deadline_ms,
                idempotent: opts.idempotent,
                trace: false,
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
        self.register_declared(function, &Declaration::default())
    }

    /// Claims `function` with what it declares: its attributes and signature. A daemon of
    /// protocol version 3 or later stores them (and serves them through `rpcd.describe`);
    /// to an older one, which would refuse the keys, the declaration is not sent.
    pub fn register_declared(
        &self,
        function: &str,
        declaration: &Declaration,
    ) -> Result<(), RequestError> {
        let declared = (self.daemon().version >= 3).then_some(declaration);
        self.serve()?;
        self.request_done(|id| ClientMsg::Register {
            id,
            function: function.to_owned(),
            idempotent: declared.and_then(|d| d.idempotent),
            deadline_ms: declared.and_then(|d| d.deadline_ms),
            signature: declared
                .and_then(|d| d.signature.as_ref())
                .map(crate::ipc::Signature::encode),
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
    /// here; they take turns. An invocation cancelled while it waited in the queue is still
    /// handed out, with [`Invocation::is_cancelled`] true: whether to skip it is the
    /// caller's decision (the `Server` does; a result sent anyway is counted late).
    pub fn next_invocation(&self, timeout: Option<Duration>) -> Option<Invocation> {
        let started = Instant::now();
        // Without a reader thread the invocation may wait in the socket: start one. If that
        // fails the connection is closed, and the queue then says so.
        let _ = self.serve();
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
        self.shared.answered(invocation);
        let msg = ClientMsg::Result {
            invocation,
            outcome,
        };
        // Large result bytes are written from the handler's buffer, after the frame's head,
        // not copied into one frame.
        if let Some(head) = split_result_frame(&msg, self.shared.frame_max) {
            if let ClientMsg::Result {
                outcome: Outcome::Ok(data),
                ..
            } = msg
            {
                let written = self.shared.write_parts(&[&head, &data]);
                // A large buffer serves the next large frame or result.
                recycle(data);
                return written;
            }
        }
        let encoded = try_encode_frame(&msg, self.shared.frame_max);
        // The result's bytes are in the frame now (or too large for one): a large buffer
        // serves the next large frame.
        if let ClientMsg::Result {
            outcome: Outcome::Ok(data),
            ..
        } = msg
        {
            recycle(data);
        }
        match encoded {
            Ok(frame) => {
                let written = self.shared.write(&frame);
                recycle(frame);
                written
            }
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
        self.shared.check_closed()
    }

    /// Has `wakeup` notified once when this connection closes (at once if it is closed
    /// already), for a thread that sleeps until then instead of looking now and then. Who
    /// notices the close is whoever reads the socket: a serving connection always has a
    /// reader blocked in a read, which the end of the stream wakes.
    pub(crate) fn notify_on_close(&self, wakeup: &Arc<Wakeup>) {
        self.shared.notify_on_close(wakeup);
    }

    /// Delivers invocations to `sink` from the thread that reads them, instead of the queue
    /// of [`Connection::next_invocation`]; what already waits in that queue goes to the sink
    /// first. `None` puts the queue back. Starts the reader thread.
    pub(crate) fn set_invocation_sink(
        &self,
        sink: Option<Arc<InvocationSink>>,
    ) -> Result<(), RequestError> {
        if sink.is_some() {
            self.serve()?;
        }
        self.shared.set_sink(sink, &lock(&self.invocations));
        Ok(())
    }

    /// Starts the reader thread, once: a serving connection must read even while no
    /// caller waits. It takes over the socket when the leading caller (if any) is done.
    fn serve(&self) -> Result<(), RequestError> {
        let mut reader = lock(&self.reader);
        if reader.is_some() {
            return Ok(());
        }
        {
            let mut waiters = self.shared.waiters();
            if let Some(closed) = &waiters.closed {
                return Err(closed.to_error());
            }
            if waiters.pooled {
                // The serving app's threads read it (`pooled.rs`).
                return Ok(());
            }
            waiters.serving = true;
        }
        let shared = Arc::clone(&self.shared);
        match std::thread::Builder::new()
            .name("rpcd-client-reader".into())
            .spawn(move || reading::serve(shared))
        {
            Ok(handle) => {
                *reader = Some(handle);
                Ok(())
            }
            Err(err) => {
                // Callers wait for a reader that will never come: close instead.
                self.shared.close(Closed::Disconnected);
                Err(RequestError::Io(err))
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.close(Closed::Dropped);
        let reader = self
            .reader
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // The reader thread itself may drop the last handle (through a serving app's sink):
        // it then ends by itself, the socket being shut down.
        if let Some(reader) = reader.filter(|r| r.thread().id() != std::thread::current().id()) {
            // The socket is shut down, so the reader's `read` returns at once; a panic in it
            // has nothing left to tell anyone.
            let _ = reader.join();
        }
    }
}

/// Whole milliseconds, rounded up so a short deadline never becomes zero.
fn millis_ceil(duration: Duration) -> u64 {
    let millis = duration.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

fn unexpected(wanted: &str, got: &DaemonMsg) -> RequestError {
    RequestError::Protocol(format!("expected {wanted}, got {}", got.op()))
}

#[cfg(test)]
pub(crate) mod fake_daemon;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_reading;
