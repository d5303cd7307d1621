//! The Unix listener and the app connections: a stream and its buffers,
//! nothing else. What the frames mean is the router's business.

mod output;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use rpcd_client::ipc::{self, ClientMsg, DaemonMsg, FrameError, FrameReader, InvokeFields};
use rustc_hash::FxHashMap;
use tracing::warn;

use self::output::{Output, Unqueued};
use crate::router::{ConnId, Invoke, PeerCred};

/// The first connection's token (lower ones name the fixed sources).
pub const FIRST_CONN: u64 = 16;
/// Connections accepted per wakeup; the rest wait for the next turn.
const ACCEPT_BATCH: usize = 64;
/// How long accept waits after the descriptor limit before trying again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What reading a connection produced.
#[derive(Debug)]
pub enum ConnInput {
    /// A whole message.
    Msg(ClientMsg),
    /// Bytes that are not a frame; reading stops.
    BadFrame(FrameError),
    /// Its partial frame took the bytes buffered across all connections
    /// past `local_buffer_total_max`; reading stops.
    OverBudget,
}

/// An app's connection.
#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    reader: FrameReader,
    out: Output,
    writable_wanted: bool,
    flush_pending: bool,
    /// A bad frame was read: nothing more is read from it.
    stopped: bool,
    /// Bytes of this connection counted in `Local::total`.
    charged: usize,
}

impl Conn {
    /// Bytes it holds now: partial input and output not yet written.
    fn held(&self) -> usize {
        self.reader.buffered() + self.out.len()
    }
}

/// The connection's output would exceed `connection_output_max`, or the
/// bytes buffered across all connections `local_buffer_total_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowReader;

/// The listener and every connection.
#[derive(Debug)]
pub struct Local {
    listener: UnixListener,
    conns: FxHashMap<ConnId, Conn>,
    next: u64,
    frame_max: usize,
    output_max: usize,
    read_batch: usize,
    /// `local_buffer_total_max`.
    total_max: usize,
    /// Bytes held across all connections (the sum of their `charged`).
    total: usize,
    to_flush: Vec<ConnId>,
    /// A descriptor kept in reserve (`/dev/null`): at the descriptor limit it
    /// is closed to accept one client, tell it why, and close it.
    spare: Option<File>,
    /// After the descriptor limit: when to try accepting again.
    pub retry_at: Option<Instant>,
    /// The listener may have connections waiting.
    pub listener_ready: bool,
    /// Connections that may have bytes to read.
    pub ready: BTreeSet<ConnId>,
    /// Connections whose output was all written since the last
    /// [`Local::take_drained`] (a monitor's next batch waits for it).
    drained: Vec<ConnId>,
}

impl Local {
    /// Register `listener` for reading under `token`.
    pub fn new(
        mut listener: UnixListener,
        registry: &Registry,
        token: Token,
        frame_max: usize,
        output_max: usize,
        read_batch: usize,
        total_max: usize,
    ) -> io::Result<Local> {
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(Local {
            listener,
            conns: FxHashMap::default(),
            next: FIRST_CONN,
            frame_max,
            output_max,
            read_batch: read_batch.max(1),
            total_max,
            total: 0,
            to_flush: Vec::new(),
            spare: File::open("/dev/null").ok(),
            retry_at: None,
            listener_ready: true,
            ready: BTreeSet::new(),
            drained: Vec::new(),
        })
    }

    /// Limits after a reload. The output bound and the read batch apply at
    /// once; `frame_max` to connections accepted from now on (a reader's
    /// buffer is sized by the bound it started with).
    pub fn set_limits(
        &mut self,
        frame_max: usize,
        output_max: usize,
        read_batch: usize,
        total_max: usize,
    ) {
        self.total_max = total_max;
        self.frame_max = frame_max;
        self.output_max = output_max;
        self.read_batch = read_batch.max(1);
    }

    /// The connection a token names, if it is one.
    pub fn conn_of(token: Token) -> Option<ConnId> {
        let t = token.0 as u64;
        (t >= FIRST_CONN).then_some(ConnId(t))
    }

    /// Accept up to one batch of connections, reporting each with the
    /// kernel's credentials of its process.
    pub fn accept(&mut self, registry: &Registry, mut on_open: impl FnMut(ConnId, PeerCred)) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let id = ConnId(self.next);
                    self.next += 1;
                    let token = Token(id.0 as usize);
                    if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                        warn!(error = %e, "cannot register connection");
                        continue;
                    }
                    let cred = peer_cred(&stream);
                    self.conns.insert(
                        id,
                        Conn {
                            stream,
                            reader: FrameReader::new(self.frame_max)
                                .with_values_max(ipc::CLIENT_MSG_VALUES_MAX),
                            out: Output::default(),
                            writable_wanted: false,
                            flush_pending: false,
                            stopped: false,
                            charged: 0,
                        },
                    );
                    // Bytes may already be waiting: read them this turn.
                    self.ready.insert(id);
                    on_open(id, cred);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listener_ready = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_fd_limit(&e) => {
                    if !self.refuse_one() {
                        // No spare descriptor: wait, without spinning, for
                        // some to be closed.
                        warn!(error = %e, "accept: descriptor limit; retrying shortly");
                        self.listener_ready = false;
                        self.retry_at = Some(Instant::now() + ACCEPT_BACKOFF);
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    self.listener_ready = false;
                    return;
                }
            }
        }
        self.listener_ready = true;
    }

    /// At the descriptor limit: close the spare descriptor, accept one
    /// client, tell it `overloaded` and close it, then take the spare back.
    /// False if there was no spare or no client.
    fn refuse_one(&mut self) -> bool {
        if self.spare.take().is_none() {
            return false;
        }
        let refused = match self.listener.accept() {
            Ok((mut stream, _)) => {
                let frame = ipc::encode_frame(&DaemonMsg::Fatal {
                    code: ipc::ErrorCode::Overloaded,
                    message: "rpcd is at its limit of open files; try again later".into(),
                });
                // A new socket's buffer takes one small frame.
                let _ = stream.write(&frame);
                warn!("connection refused: descriptor limit");
                true
            }
            Err(_) => false,
        };
        self.spare = File::open("/dev/null").ok();
        // The spare could not be had back: accepting would fail again.
        refused && self.spare.is_some()
    }

    /// Time to try accepting again after the descriptor limit.
    pub fn retry_due(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|t| now >= t) {
            self.retry_at = None;
            self.listener_ready = true;
        }
    }

    /// Read at most one batch from `id`, handing each whole frame to `on`.
    /// Returns false when the stream ended or failed: the caller closes it.
    /// The connection stays in `ready` if the batch did not drain it.
    pub fn read(&mut self, id: ConnId, mut on: impl FnMut(ConnInput)) -> bool {
        self.ready.remove(&id);
        let Some(conn) = self.conns.get_mut(&id) else {
            return true;
        };
        for _ in 0..self.read_batch {
            if conn.stopped {
                return true;
            }
            let mut probe = ShortRead {
                stream: &mut conn.stream,
                short: false,
            };
            let read = conn.reader.read_from(&mut probe);
            let drained = probe.short;
            match read {
                Ok(0) => return false,
                Ok(_) => {
                    loop {
                        match conn.reader.next_frame::<ClientMsg>() {
                            Ok(None) => break,
                            Ok(Some(msg)) => on(ConnInput::Msg(msg)),
                            Err(e) => {
                                conn.stopped = true;
                                on(ConnInput::BadFrame(e));
                                return true;
                            }
                        }
                    }
                    // What stays is a partial frame: charge it.
                    if !recharge(&mut self.total, self.total_max, conn) {
                        conn.stopped = true;
                        // Its partial frame is dropped with it.
                        conn.reader = FrameReader::new(0);
                        warn!(
                            conn = %id, held = conn.held(), budget = self.total_max,
                            "closing a connection: local_buffer_total_max reached"
                        );
                        on(ConnInput::OverBudget);
                        return true;
                    }
                    if drained {
                        // Less than asked for: the socket had no more. Reading again
                        // would only return `WouldBlock`; the next bytes bring a new
                        // (edge-triggered) event.
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.ready.insert(id);
        true
    }

    /// Queue a frame for `id`, to be written by [`Local::flush`]. A large payload's
    /// buffer goes back to the process's pool once the frame is in the output.
    pub fn queue(&mut self, id: ConnId, msg: DaemonMsg) -> Result<(), SlowReader> {
        let queued = self.queue_with(id, |out, room| out.push_frame(&msg, room));
        match msg {
            DaemonMsg::Invoke { args, .. } => ipc::recycle(args.into_buffer()),
            DaemonMsg::CallOk { data, .. } => ipc::recycle(data),
            _ => {}
        }
        queued
    }

    /// Queue an `invoke` for `id`, to be written by [`Local::flush`]: large arguments are
    /// written from the buffer they are in (the message they arrived in), which goes back to
    /// the process's pool once they are.
    pub fn queue_invoke(&mut self, id: ConnId, invoke: Invoke) -> Result<(), SlowReader> {
        if invoke.credentials.is_some() {
            // A local caller's: serde writes the credentials.
            return self.queue(id, invoke.into());
        }
        if !self.conns.contains_key(&id) {
            ipc::recycle(invoke.args.into_buffer());
            return Ok(());
        }
        let fields = InvokeFields {
            invocation: invoke.invocation,
            function: &invoke.function,
            caller: &invoke.caller,
            peer: &invoke.peer,
            deadline_ms: invoke.deadline_ms,
        };
        let args = invoke.args;
        self.queue_with(id, |out, room| out.push_invoke(&fields, args, room))
    }

    /// Appends a frame to the output of `id` with `push`, given the room the bounds leave
    /// (`connection_output_max` for the connection, `local_buffer_total_max` for all).
    fn queue_with(
        &mut self,
        id: ConnId,
        push: impl FnOnce(&mut Output, usize) -> Result<usize, Unqueued>,
    ) -> Result<(), SlowReader> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        // Encoded in place at the end of the output (no frame of its own to copy), and
        // taken back off if it does not fit the bounds.
        let queued = conn.out.len();
        let room = self
            .output_max
            .saturating_sub(queued)
            .min(self.total_max.saturating_sub(self.total));
        match push(&mut conn.out, room) {
            Ok(_) => {}
            Err(Unqueued::OverRoom(len)) if queued + len <= self.output_max => {
                warn!(
                    conn = %id, held = conn.held(), budget = self.total_max,
                    "closing a connection: local_buffer_total_max reached by its output"
                );
                return Err(SlowReader);
            }
            Err(_) => {
                warn!(conn = %id, "closing a connection that does not read its replies");
                return Err(SlowReader);
            }
        }
        recharge(&mut self.total, usize::MAX, conn);
        // Written at the end of the loop iteration, so that every frame the
        // iteration produced for this app goes out in one write.
        if !conn.flush_pending {
            conn.flush_pending = true;
            self.to_flush.push(id);
        }
        Ok(())
    }

    /// Write what this iteration queued, one write per connection. Returns
    /// the connections whose socket failed.
    pub fn flush(&mut self, registry: &Registry) -> Vec<ConnId> {
        let mut failed = Vec::new();
        // Taken for the loop and put back emptied, keeping its room: no allocation per
        // iteration (writing queues nothing).
        let mut to_flush = std::mem::take(&mut self.to_flush);
        for &id in &to_flush {
            if let Some(c) = self.conns.get_mut(&id) {
                c.flush_pending = false;
            }
            if !self.write(registry, id) {
                failed.push(id);
            }
        }
        to_flush.clear();
        // Whatever was queued meanwhile (nothing today) stays queued.
        to_flush.append(&mut self.to_flush);
        self.to_flush = to_flush;
        failed
    }

    /// The socket of `id` became writable. False if it failed.
    pub fn write(&mut self, registry: &Registry, id: ConnId) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else {
            return true;
        };
        let written = write_some(conn);
        recharge(&mut self.total, usize::MAX, conn);
        if written.is_err() {
            return false;
        }
        if conn.out.is_empty() {
            self.drained.push(id);
        }
        let want = !conn.out.is_empty();
        super::want_writable(
            registry,
            &mut conn.stream,
            Token(id.0 as usize),
            want,
            &mut conn.writable_wanted,
        );
        true
    }

    /// Moves the connections whose output was all written since the last call to `into`
    /// (this keeps its room for the next ones).
    pub fn take_drained(&mut self, into: &mut Vec<ConnId>) {
        into.append(&mut self.drained);
    }

    /// Write what is queued (one best-effort attempt) and close `id`.
    pub fn close(&mut self, registry: &Registry, id: ConnId) {
        self.ready.remove(&id);
        if let Some(mut conn) = self.conns.remove(&id) {
            self.total -= conn.charged;
            let _ = write_some(&mut conn);
            let _ = registry.deregister(&mut conn.stream);
            conn.out.discard();
        }
    }

    /// Write `msg` to `id` (one best-effort attempt, outside the budgets: it
    /// is one small frame) and close it.
    pub fn fail(&mut self, registry: &Registry, id: ConnId, msg: &DaemonMsg) {
        if let Some(conn) = self.conns.get_mut(&id) {
            // A small frame always is one.
            let _ = conn.out.push_frame(msg, usize::MAX);
        }
        self.close(registry, id);
    }

    /// Close `id` without writing anything more.
    pub fn drop_conn(&mut self, registry: &Registry, id: ConnId) {
        self.ready.remove(&id);
        if let Some(mut conn) = self.conns.remove(&id) {
            self.total -= conn.charged;
            let _ = registry.deregister(&mut conn.stream);
            conn.out.discard();
        }
    }

    /// Every open connection.
    pub fn ids(&self) -> Vec<ConnId> {
        self.conns.keys().copied().collect()
    }
}

/// A connection's stream, noting whether a read returned less than it asked for.
struct ShortRead<'a> {
    stream: &'a mut UnixStream,
    short: bool,
}

impl Read for ShortRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

/// `EMFILE` or `ENFILE`: no descriptor for a new connection.
fn is_fd_limit(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(c) if c == nix::libc::EMFILE || c == nix::libc::ENFILE
    )
}

/// Count what `conn` holds now in `total`. False, and nothing changed, if
/// that would take `total` past `max`.
fn recharge(total: &mut usize, max: usize, conn: &mut Conn) -> bool {
    let held = conn.held();
    let others = *total - conn.charged;
    if held > conn.charged && others + held > max {
        return false;
    }
    *total = others + held;
    conn.charged = held;
    true
}

/// Write what is queued until the socket would block: vectored writes, so that the frames
/// queued and a payload queued apart between them leave in one system call when the socket
/// takes them.
fn write_some(conn: &mut Conn) -> io::Result<()> {
    while !conn.out.is_empty() {
        match conn.out.write_to(&mut conn.stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `SO_PEERCRED` of a connection: who is on the other end, by the kernel's word.
fn peer_cred(stream: &UnixStream) -> PeerCred {
    use nix::sys::socket::{getsockopt, sockopt};
    match getsockopt(stream, sockopt::PeerCredentials) {
        Ok(c) => PeerCred {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        },
        Err(e) => {
            warn!(error = %e, "cannot read the peer credentials of a connection");
            PeerCred::default()
        }
    }
}
