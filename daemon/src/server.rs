//! The event loop: one `mio` poll over the UDP socket, the Unix listener,
//! every local connection and the signal pipe.
//!
//! The loop makes no transport decisions: it drains each ready source until
//! `WouldBlock`, feeds the transport endpoint and the RPC router, flushes what
//! they want sent, and sleeps until the earliest deadline (the endpoint's
//! timers, call deadlines, invocation deadlines).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mio::net::{UdpSocket, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rpcd_client::ipc::{
    self, ClientMsg, DaemonMsg, ErrorCode, FrameError, Outcome, PeerCounters, PeerStats, Stats,
    PROTOCOL_VERSION,
};
use rpcd_transport::{ChannelEvent, Endpoint, FailReason, MsgId, SendError, Transmit};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tracing::{debug, info, warn};

use crate::envelope::{Envelope, RemoteOutcome};
use crate::notify::notify;
use crate::resolver::{self, Resolver};
use crate::settings::{self, Settings};

const UDP: Token = Token(0);
const LISTENER: Token = Token(1);
const SIGNALS: Token = Token(2);
const WAKER: Token = Token(3);
/// How long a peer that was declared unreachable is tried last among a
/// service name's addresses.
const UNREACHABLE_MEMORY: Duration = Duration::from_secs(30);
const FIRST_CONN: usize = 16;
/// Largest datagram read; anything larger is truncated by the kernel and then
/// fails the length check. The buffer is fixed: nothing is sized by a packet.
const DATAGRAM_BUF: usize = 65_536;
const READ_CHUNK: usize = 64 * 1024;

/// Functions every daemon serves.
pub const BUILTINS: [&str; 5] = [
    "rpcd.echo",
    "rpcd.list",
    "rpcd.names",
    "rpcd.ping",
    "rpcd.stats",
];

type CallId = u64;
type InvId = u64;
type Failure = (ErrorCode, String);

/// A running daemon: sockets bound, ready to `run`.
pub struct Daemon {
    settings: Settings,
    poll: Poll,
    udp: UdpSocket,
    local_addr: SocketAddr,
    listener: UnixListener,
    socket_path: PathBuf,
    signals: Signals,
    endpoint: Endpoint,
    started: Instant,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    registry: HashMap<String, Token>,
    calls: HashMap<CallId, Call>,
    calls_by_msg: HashMap<(SocketAddr, MsgId), CallId>,
    calls_by_peer: HashMap<SocketAddr, HashSet<CallId>>,
    next_call_id: CallId,
    invocations: HashMap<InvId, Invocation>,
    inbound: HashMap<(SocketAddr, u64), InvId>,
    next_inv_id: InvId,
    deadlines: BinaryHeap<Reverse<(Instant, Deadline)>>,
    outcomes: BTreeMap<String, u64>,
    peer_outcomes: HashMap<SocketAddr, BTreeMap<String, u64>>,
    backlog: VecDeque<Transmit>,
    udp_writable_wanted: bool,
    counters: Counters,
    shutdown_at: Option<Instant>,
    resolver: Resolver,
    _waker: Arc<Waker>,
    jobs: HashMap<u64, JobFor>,
    next_job: u64,
    peer_down: HashMap<SocketAddr, Instant>,
    opts: RunOptions,
    to_flush: Vec<Token>,
}

/// What a resolver job was for.
#[derive(Debug)]
enum JobFor {
    Call(CallId),
    Names {
        origin: Origin,
        table: Vec<(String, Vec<String>)>,
    },
}

/// How `run` was asked to behave beyond the settings.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The settings file to re-read on SIGHUP (None: defaults + environment).
    pub config_path: Option<PathBuf>,
    /// Command-line overrides, re-applied after every reload.
    pub listen_flag: Option<SocketAddr>,
    /// Socket path override (flag or RPCD_SOCKET), re-applied after a reload.
    pub socket_override: Option<PathBuf>,
    /// Pid file to remove at shutdown.
    pub pid_file: Option<PathBuf>,
}

/// The daemon's sockets, bound but not yet served. Binding first lets the
/// binary report bind errors on the terminal before it daemonizes.
#[derive(Debug)]
pub struct Bound {
    settings: Settings,
    udp: std::net::UdpSocket,
    listener: std::os::unix::net::UnixListener,
    local_addr: SocketAddr,
}

#[derive(Debug, Default)]
struct Counters {
    late_replies: u64,
    late_results: u64,
    bad_envelopes: u64,
    dropped_transmits: u64,
    oversize_datagrams: u64,
}

/// What a call's target needs before the call can go.
#[derive(Debug)]
enum Lookup {
    Ready(Vec<SocketAddr>),
    Resolve(Vec<String>),
}

fn no_address() -> Failure {
    (ErrorCode::PeerUnreachable, "no address left to try".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Call(CallId),
    Invocation(InvId),
}

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    hello: bool,
    functions: HashSet<String>,
    calls: HashSet<CallId>,
    invocations: HashSet<InvId>,
    writable_wanted: bool,
    flush_pending: bool,
    dead: bool,
}

#[derive(Debug)]
struct Call {
    conn: Token,
    client_id: u64,
    target: Target,
    state: CallState,
    deadline: Instant,
    /// Kept while the target is being resolved, and for idempotent calls
    /// with addresses left to fail over to.
    retry: Option<Retry>,
}

#[derive(Debug)]
struct Retry {
    function: String,
    args: Vec<u8>,
    idempotent: bool,
    /// Addresses not tried yet, in order.
    candidates: VecDeque<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Local,
    Remote(SocketAddr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// Waiting for the resolver (a service name or a host name).
    Resolving,
    /// The request message is queued or in flight.
    Sending(MsgId),
    /// The request was acknowledged; waiting for the reply.
    Awaiting,
    /// Served by a local app (short-circuit, no UDP).
    Local,
}

#[derive(Debug)]
struct Invocation {
    owner: Token,
    origin: Origin,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Remote { peer: SocketAddr, call_id: u64 },
    Local { call_id: CallId },
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("udp", &self.local_addr)
            .field("socket", &self.socket_path)
            .field("connections", &self.conns.len())
            .field("calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

impl Bound {
    /// Bind the UDP socket and the local socket.
    pub fn bind(settings: Settings) -> anyhow::Result<Bound> {
        let udp = std::net::UdpSocket::bind(settings.listen)
            .with_context(|| format!("binding UDP {}", settings.listen))?;
        set_buffers(&udp, &settings);
        udp.set_nonblocking(true)?;
        let local_addr = udp.local_addr()?;
        let listener = bind_unix(&settings.socket)?;
        listener.set_nonblocking(true)?;
        Ok(Bound {
            settings,
            udp,
            listener,
            local_addr,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serve until SIGTERM/SIGINT, then shut down gracefully. Call after
    /// any fork: this starts the poll instance and the resolver thread.
    pub fn run(self, opts: RunOptions) -> anyhow::Result<()> {
        let Bound {
            settings,
            udp,
            listener,
            local_addr,
        } = self;
        let poll = Poll::new().context("creating the poll instance")?;
        let mut udp = UdpSocket::from_std(udp);
        poll.registry()
            .register(&mut udp, UDP, Interest::READABLE)?;
        let mut listener = UnixListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut signals =
            Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let resolver = Resolver::start(waker.clone()).context("starting the resolver thread")?;
        let epoch = random_epoch()?;
        let endpoint = Endpoint::new(settings.transport, epoch);
        let socket_path = settings.socket.clone();
        info!(udp = %local_addr, socket = %socket_path.display(), epoch = format_args!("{epoch:016x}"), "rpcd listening");
        let daemon = Daemon {
            settings,
            poll,
            udp,
            local_addr,
            listener,
            socket_path,
            signals,
            endpoint,
            started: Instant::now(),
            conns: HashMap::new(),
            next_token: FIRST_CONN,
            registry: HashMap::new(),
            calls: HashMap::new(),
            calls_by_msg: HashMap::new(),
            calls_by_peer: HashMap::new(),
            next_call_id: 1,
            invocations: HashMap::new(),
            inbound: HashMap::new(),
            next_inv_id: 1,
            deadlines: BinaryHeap::new(),
            outcomes: BTreeMap::new(),
            peer_outcomes: HashMap::new(),
            backlog: VecDeque::new(),
            udp_writable_wanted: false,
            counters: Counters::default(),
            shutdown_at: None,
            resolver,
            _waker: waker,
            jobs: HashMap::new(),
            next_job: 1,
            peer_down: HashMap::new(),
            opts,
            to_flush: Vec::new(),
        };
        notify("READY=1");
        daemon.run()
    }
}

impl Daemon {
    /// Serve until SIGTERM/SIGINT, then shut down gracefully.
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut dgram = vec![0u8; DATAGRAM_BUF];
        loop {
            let now = Instant::now();
            let timeout = self.next_wakeup().map(|t| {
                // epoll has millisecond resolution: round up so a timer is
                // never polled early and spun on.
                let d = t.saturating_duration_since(now);
                let ms = d.as_micros().div_ceil(1000);
                Duration::from_millis(ms as u64)
            });
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("polling");
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    UDP => {
                        if ev.is_readable() {
                            self.read_udp(now, &mut dgram);
                        }
                        if ev.is_writable() {
                            self.flush_udp(now);
                        }
                    }
                    LISTENER => self.accept(),
                    SIGNALS => self.on_signals(now),
                    WAKER => self.on_resolved(now),
                    token => {
                        if ev.is_readable() || ev.is_read_closed() {
                            self.read_conn(now, token);
                        }
                        if ev.is_writable() {
                            self.flush_conn(token);
                        }
                    }
                }
            }
            self.endpoint.handle_timeout(now);
            self.expire(now);
            self.pump(now);
            self.reap_conns(now);
            self.flush_pending();
            if let Some(at) = self.shutdown_at {
                let quiet = self.calls.is_empty() && self.invocations.is_empty();
                if quiet || now >= at {
                    self.finish_shutdown(now);
                    return Ok(());
                }
            }
        }
    }

    // ------------------------------------------------------------------ I/O

    fn read_udp(&mut self, now: Instant, buf: &mut [u8]) {
        loop {
            match self.udp.recv_from(buf) {
                Ok((n, from)) => {
                    if n >= buf.len() {
                        // Possibly truncated by the kernel: never trust it.
                        self.counters.oversize_datagrams += 1;
                        continue;
                    }
                    self.endpoint.handle_datagram(now, from, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors (port unreachable) surface here; the
                    // transport's timers handle the peer being gone.
                    debug!(error = %e, "udp receive error");
                    continue;
                }
            }
        }
    }

    fn flush_udp(&mut self, _now: Instant) {
        while let Some(t) = self.backlog.front() {
            match self.udp.send_to(&t.bytes, t.to) {
                Ok(_) => {
                    self.backlog.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Unroutable or refused: as good as lost on the network.
                    debug!(error = %e, to = %t.to, "udp send error");
                    self.backlog.pop_front();
                }
            }
        }
        let want = !self.backlog.is_empty();
        want_writable(
            self.poll.registry(),
            &mut self.udp,
            UDP,
            want,
            &mut self.udp_writable_wanted,
        );
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= self.settings.limits.connections_max {
                        let frame = ipc::encode_frame(&DaemonMsg::Fatal {
                            code: ErrorCode::Overloaded,
                            message: format!(
                                "too many connections (limit {})",
                                self.settings.limits.connections_max
                            ),
                        });
                        let _ = stream.write(&frame);
                        warn!("connection refused: connections_max reached");
                        continue;
                    }
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, token, Interest::READABLE)
                    {
                        warn!(error = %e, "cannot register connection");
                        continue;
                    }
                    self.conns.insert(
                        token,
                        Conn {
                            stream,
                            inbuf: Vec::new(),
                            out: Vec::new(),
                            out_pos: 0,
                            hello: false,
                            functions: HashSet::new(),
                            calls: HashSet::new(),
                            invocations: HashSet::new(),
                            writable_wanted: false,
                            flush_pending: false,
                            dead: false,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    break;
                }
            }
        }
    }

    fn read_conn(&mut self, now: Instant, token: Token) {
        let frame_max = self.settings.limits.frame_max;
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            if conn.dead {
                return;
            }
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    conn.dead = true;
                    return;
                }
                Ok(n) => {
                    conn.inbuf.extend_from_slice(&chunk[..n]);
                    // Parse every whole frame now, so the buffer never holds
                    // more than one frame plus one read.
                    loop {
                        let Some(conn) = self.conns.get_mut(&token) else {
                            return;
                        };
                        if conn.dead {
                            return;
                        }
                        match ipc::decode_frame::<ClientMsg>(&conn.inbuf, frame_max) {
                            Ok(None) => break,
                            Ok(Some((msg, used))) => {
                                conn.inbuf.drain(..used);
                                self.on_client_msg(now, token, msg);
                            }
                            Err(e) => {
                                self.protocol_violation(token, &e);
                                return;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    conn.dead = true;
                    return;
                }
            }
        }
    }

    fn protocol_violation(&mut self, token: Token, e: &FrameError) {
        self.fatal(token, e.code(), e.to_string());
    }

    /// Tell the app what it did wrong, then close its connection only.
    fn fatal(&mut self, token: Token, code: ErrorCode, message: String) {
        debug!(conn = token.0, %message, "closing connection after protocol violation");
        let frame = ipc::encode_frame(&DaemonMsg::Fatal { code, message });
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.out.extend_from_slice(&frame);
            // One best-effort write of what is queued; the connection is
            // closed whatever the app reads.
            let _ = write_some(conn);
            conn.dead = true;
        }
    }

    fn send_frame(&mut self, token: Token, msg: &DaemonMsg) {
        let max = self.settings.limits.connection_output_max;
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.dead {
            return;
        }
        let frame = ipc::encode_frame(msg);
        if conn.out.len() - conn.out_pos + frame.len() > max {
            warn!(
                conn = token.0,
                "closing a connection that does not read its replies"
            );
            conn.dead = true;
            return;
        }
        conn.out.extend_from_slice(&frame);
        // Written at the end of the loop iteration, so that every frame the
        // iteration produced for this app goes out in one write.
        if !conn.flush_pending {
            conn.flush_pending = true;
            self.to_flush.push(token);
        }
    }

    /// Write what this iteration queued, one write per connection.
    fn flush_pending(&mut self) {
        for token in std::mem::take(&mut self.to_flush) {
            if let Some(c) = self.conns.get_mut(&token) {
                c.flush_pending = false;
            }
            self.flush_conn(token);
        }
    }

    fn flush_conn(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if write_some(conn).is_err() {
            conn.dead = true;
            return;
        }
        let want = conn.out_pos < conn.out.len();
        want_writable(
            self.poll.registry(),
            &mut conn.stream,
            token,
            want,
            &mut conn.writable_wanted,
        );
    }

    /// Close connections marked dead and clean up after them.
    fn reap_conns(&mut self, now: Instant) {
        let dead: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.dead)
            .map(|(&t, _)| t)
            .collect();
        for token in dead {
            self.close_conn(now, token);
        }
    }

    fn close_conn(&mut self, now: Instant, token: Token) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        for f in &conn.functions {
            self.registry.remove(f);
        }
        // Its callers get "server app gone" at once.
        for inv in conn.invocations {
            if let Some(i) = self.take_invocation(inv) {
                self.answer(
                    now,
                    i.origin,
                    Err((
                        ErrorCode::ServerAppGone,
                        "the serving app disconnected".into(),
                    )),
                );
            }
        }
        // Its own calls are cancelled; late replies will find nothing.
        for call_id in conn.calls {
            self.cancel_call(call_id);
        }
        self.pump(now);
    }

    // ------------------------------------------------------------- signals

    fn on_signals(&mut self, now: Instant) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            if (sig == SIGTERM || sig == SIGINT) && self.shutdown_at.is_none() {
                info!(
                    signal = sig,
                    "shutting down: no new calls, answering pending ones"
                );
                notify("STOPPING=1");
                self.shutdown_at = Some(now + self.settings.limits.shutdown_grace);
            } else if sig == SIGHUP {
                self.reload();
            }
        }
    }

    /// SIGHUP: re-read the settings; on any error keep the old ones.
    fn reload(&mut self) {
        notify("RELOADING=1");
        let loaded = Settings::load(self.opts.config_path.as_deref(), std::env::vars());
        match loaded {
            Err(e) => warn!(error = %e, "reload failed; the previous settings stay in force"),
            Ok((mut new, _)) => {
                if let Some(l) = self.opts.listen_flag {
                    new.listen = l;
                }
                if let Some(s) = &self.opts.socket_override {
                    new.socket = s.clone();
                }
                if let Err(e) = new.validate("reload") {
                    warn!(error = %e, "reload failed; the previous settings stay in force");
                } else {
                    if new.listen != self.settings.listen || new.socket != self.settings.socket {
                        warn!("listen and socket changes take effect at restart");
                    }
                    if new.transport != self.settings.transport {
                        warn!("transport settings take effect at restart");
                    }
                    new.listen = self.settings.listen;
                    new.socket = self.settings.socket.clone();
                    new.transport = self.settings.transport;
                    info!(names = new.names.len(), "settings reloaded");
                    self.settings = new;
                }
            }
        }
        notify("READY=1");
    }

    fn finish_shutdown(&mut self, now: Instant) {
        let calls: Vec<CallId> = self.calls.keys().copied().collect();
        for id in calls {
            self.finish_call(
                id,
                Err((
                    ErrorCode::ShuttingDown,
                    "the daemon is shutting down".into(),
                )),
            );
        }
        let invs: Vec<InvId> = self.invocations.keys().copied().collect();
        for id in invs {
            if let Some(i) = self.take_invocation(id) {
                self.answer(
                    now,
                    i.origin,
                    Err((
                        ErrorCode::ShuttingDown,
                        "the serving daemon is shutting down".into(),
                    )),
                );
            }
        }
        // Flush acknowledgements and the last replies, briefly.
        let until = now + Duration::from_millis(50);
        loop {
            let now = Instant::now();
            self.endpoint.handle_timeout(now);
            self.pump(now);
            if now >= until || self.backlog.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for t in tokens {
            self.flush_conn(t);
        }
        let _ = std::fs::remove_file(&self.socket_path);
        if let Some(p) = &self.opts.pid_file {
            let _ = std::fs::remove_file(p);
        }
        info!("rpcd stopped");
    }

    // ---------------------------------------------------------------- pump

    /// Move everything the endpoint has to the network and to the router,
    /// until neither has more.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.endpoint.poll_transmit(now) {
                progressed = true;
                if !self.backlog.is_empty() {
                    self.queue_transmit(t);
                    continue;
                }
                match self.udp.send_to(&t.bytes, t.to) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.queue_transmit(t),
                    Err(e) => debug!(error = %e, to = %t.to, "udp send error"),
                }
            }
            while let Some(ev) = self.endpoint.poll_event() {
                progressed = true;
                self.on_transport_event(now, ev.peer, ev.kind);
            }
            if !progressed {
                break;
            }
        }
        if !self.backlog.is_empty() {
            self.flush_udp(now);
        }
    }

    fn queue_transmit(&mut self, t: Transmit) {
        if self.backlog.len() >= self.settings.limits.transmit_backlog_max {
            // As if lost on the network: the transport retransmits.
            self.counters.dropped_transmits += 1;
        } else {
            self.backlog.push_back(t);
        }
    }

    /// Arm a call's or an invocation's deadline. Entries of calls that end
    /// early stay in the heap until popped; when they outnumber the live ones
    /// the heap is rebuilt, so its size stays proportional to the work in
    /// progress whatever the deadlines (amortised O(log n) per push).
    fn push_deadline(&mut self, at: Instant, d: Deadline) {
        self.deadlines.push(Reverse((at, d)));
        let live = self.calls.len() + self.invocations.len();
        if self.deadlines.len() > 2 * live + 1024 {
            let mut heap = BinaryHeap::with_capacity(live);
            heap.extend(
                self.calls
                    .iter()
                    .map(|(&id, c)| Reverse((c.deadline, Deadline::Call(id)))),
            );
            heap.extend(
                self.invocations
                    .iter()
                    .map(|(&id, i)| Reverse((i.deadline, Deadline::Invocation(id)))),
            );
            self.deadlines = heap;
        }
    }

    fn next_wakeup(&mut self) -> Option<Instant> {
        let mut t = self.endpoint.poll_timeout();
        while let Some(Reverse((at, d))) = self.deadlines.peek().copied() {
            let live = match d {
                Deadline::Call(id) => self.calls.get(&id).is_some_and(|c| c.deadline == at),
                Deadline::Invocation(id) => {
                    self.invocations.get(&id).is_some_and(|i| i.deadline == at)
                }
            };
            if live {
                t = Some(t.map_or(at, |t| t.min(at)));
                break;
            }
            self.deadlines.pop();
        }
        if let Some(s) = self.shutdown_at {
            t = Some(t.map_or(s, |t| t.min(s)));
        }
        t
    }

    fn expire(&mut self, now: Instant) {
        while let Some(Reverse((at, d))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            match d {
                Deadline::Call(id) => {
                    if self.calls.get(&id).is_some_and(|c| c.deadline == at) {
                        self.finish_call(
                            id,
                            Err((
                                ErrorCode::DeadlineExceeded,
                                "the call's deadline passed before a reply arrived".into(),
                            )),
                        );
                    }
                }
                Deadline::Invocation(id) => {
                    if self.invocations.get(&id).is_some_and(|i| i.deadline == at) {
                        // The caller has given up by now; a late result from
                        // the app is dropped and counted.
                        self.take_invocation(id);
                    }
                }
            }
        }
    }

    // ------------------------------------------------------- local protocol

    fn on_client_msg(&mut self, now: Instant, token: Token, msg: ClientMsg) {
        let hello = self.conns.get(&token).is_some_and(|c| c.hello);
        if !hello {
            match msg {
                ClientMsg::Hello { id, version, name } => {
                    if version != PROTOCOL_VERSION {
                        self.fatal(
                            token,
                            ErrorCode::VersionMismatch,
                            format!("protocol version {version} is not supported; this daemon speaks {PROTOCOL_VERSION}"),
                        );
                        return;
                    }
                    debug!(conn = token.0, %name, "app connected");
                    if let Some(c) = self.conns.get_mut(&token) {
                        c.hello = true;
                    }
                    let reply = DaemonMsg::HelloOk {
                        id,
                        version: PROTOCOL_VERSION,
                        daemon: format!("rpcd {}", env!("CARGO_PKG_VERSION")),
                        listen: self.local_addr.to_string(),
                        epoch: self.endpoint.epoch(),
                    };
                    self.send_frame(token, &reply);
                }
                _ => self.fatal(
                    token,
                    ErrorCode::ProtocolError,
                    "the first frame must be hello".into(),
                ),
            }
            return;
        }
        match msg {
            ClientMsg::Hello { .. } => {
                self.fatal(token, ErrorCode::ProtocolError, "hello sent twice".into())
            }
            ClientMsg::Register { id, function } => {
                let reply = match self.register(token, &function) {
                    Ok(()) => DaemonMsg::Done { id },
                    Err((code, message)) => DaemonMsg::Failed { id, code, message },
                };
                self.send_frame(token, &reply);
            }
            ClientMsg::Unregister { id, function } => {
                let reply = if self.registry.get(&function) == Some(&token) {
                    self.registry.remove(&function);
                    if let Some(c) = self.conns.get_mut(&token) {
                        c.functions.remove(&function);
                    }
                    DaemonMsg::Done { id }
                } else {
                    DaemonMsg::Failed {
                        id,
                        code: ErrorCode::NotOwner,
                        message: format!("{function} is not registered by this connection"),
                    }
                };
                self.send_frame(token, &reply);
            }
            ClientMsg::Call {
                id,
                target,
                function,
                args,
                deadline_ms,
                idempotent,
            } => self.start_call(
                now,
                token,
                id,
                &target,
                function,
                args,
                deadline_ms,
                idempotent,
            ),
            ClientMsg::Result {
                invocation,
                outcome,
            } => self.on_result(now, token, invocation, outcome),
            ClientMsg::List { id } => {
                let functions = self.function_list();
                self.send_frame(token, &DaemonMsg::List { id, functions });
            }
            ClientMsg::Stats { id } => {
                let stats = self.stats(now);
                self.send_frame(token, &DaemonMsg::Stats { id, stats });
            }
            ClientMsg::Ping { id } => self.send_frame(token, &DaemonMsg::Pong { id }),
        }
    }

    fn register(&mut self, token: Token, function: &str) -> Result<(), Failure> {
        if function.is_empty() || function.len() > 256 || function.chars().any(char::is_control) {
            return Err((
                ErrorCode::BadRequest,
                "a function name is 1 to 256 printable characters".into(),
            ));
        }
        if function.starts_with("rpcd.") {
            return Err((
                ErrorCode::NameTaken,
                format!("{function}: the rpcd. prefix is reserved for built-in functions"),
            ));
        }
        match self.registry.get(function) {
            Some(&owner) if owner == token => return Ok(()),
            Some(_) => {
                return Err((
                    ErrorCode::NameTaken,
                    format!("{function} is registered by another live connection"),
                ))
            }
            None => {}
        }
        if self.registry.len() >= self.settings.limits.functions_max {
            return Err((
                ErrorCode::Overloaded,
                format!(
                    "too many registered functions (limit {})",
                    self.settings.limits.functions_max
                ),
            ));
        }
        self.registry.insert(function.to_owned(), token);
        if let Some(c) = self.conns.get_mut(&token) {
            c.functions.insert(function.to_owned());
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn start_call(
        &mut self,
        now: Instant,
        token: Token,
        client_id: u64,
        target: &str,
        function: String,
        args: Vec<u8>,
        deadline_ms: Option<u64>,
        idempotent: bool,
    ) {
        let refuse = |code: ErrorCode, message: String| DaemonMsg::Failed {
            id: client_id,
            code,
            message,
        };
        if self.shutdown_at.is_some() {
            let m = refuse(
                ErrorCode::ShuttingDown,
                "the daemon is shutting down".into(),
            );
            self.send_frame(token, &m);
            return;
        }
        let limits = self.settings.limits;
        let in_flight = self.conns.get(&token).map_or(0, |c| c.calls.len());
        if in_flight >= limits.calls_per_connection_max {
            let m = refuse(
                ErrorCode::Overloaded,
                format!(
                    "too many calls in flight on this connection (limit {})",
                    limits.calls_per_connection_max
                ),
            );
            self.send_frame(token, &m);
            return;
        }
        let payload_max = self.settings.payload_max();
        if args.len() + function.len() > payload_max {
            let m = refuse(
                ErrorCode::MessageTooLarge,
                format!(
                    "arguments of {} bytes exceed the maximum of {payload_max}",
                    args.len()
                ),
            );
            self.send_frame(token, &m);
            return;
        }
        let wait = deadline_ms
            .map(Duration::from_millis)
            .unwrap_or(limits.deadline_default)
            .min(limits.deadline_max);
        let deadline = now + wait;
        let lookup = match self.classify(target) {
            Ok(l) => l,
            Err(message) => {
                let m = refuse(ErrorCode::BadRequest, message);
                self.send_frame(token, &m);
                return;
            }
        };
        let call_id = self.next_call_id;
        self.next_call_id += 1;
        self.calls.insert(
            call_id,
            Call {
                conn: token,
                client_id,
                target: Target::Local,
                state: CallState::Resolving,
                deadline,
                retry: Some(Retry {
                    function,
                    args,
                    idempotent,
                    candidates: VecDeque::new(),
                }),
            },
        );
        if let Some(c) = self.conns.get_mut(&token) {
            c.calls.insert(call_id);
        }
        self.push_deadline(deadline, Deadline::Call(call_id));
        match lookup {
            Lookup::Ready(addrs) => self.proceed(now, call_id, addrs),
            Lookup::Resolve(targets) => {
                let key = self.next_job;
                self.next_job += 1;
                if self.resolver.submit(resolver::Job { key, targets }) {
                    self.jobs.insert(key, JobFor::Call(call_id));
                } else {
                    self.finish_call(
                        call_id,
                        Err((
                            ErrorCode::Overloaded,
                            "too many name lookups pending".into(),
                        )),
                    );
                }
            }
        }
    }

    /// What a target needs before a call can go: addresses now, or a lookup.
    fn classify(&self, target: &str) -> Result<Lookup, String> {
        if let Ok(a) = target.parse::<SocketAddr>() {
            return Ok(Lookup::Ready(vec![a]));
        }
        if let Some(targets) = self.settings.names.get(target) {
            let literal: Option<Vec<SocketAddr>> = targets.iter().map(|t| t.parse().ok()).collect();
            return Ok(match literal {
                Some(addrs) => Lookup::Ready(addrs),
                None => Lookup::Resolve(targets.clone()),
            });
        }
        if settings::valid_name(target) {
            return Err(format!(
                "{target:?} is neither host:port nor a service name in this daemon's [names]"
            ));
        }
        let (host, port) =
            settings::split_host_port(target).map_err(|e| format!("target {target:?}: {e}"))?;
        if host == "localhost" {
            return Ok(Lookup::Ready(vec![SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
            )]));
        }
        Ok(Lookup::Resolve(vec![target.to_owned()]))
    }

    /// Addresses are known: order them (peers recently unreachable last) and
    /// send to the first.
    fn proceed(&mut self, now: Instant, call_id: CallId, mut addrs: Vec<SocketAddr>) {
        let down = |a: &SocketAddr| {
            self.peer_down
                .get(a)
                .is_some_and(|t| now.saturating_duration_since(*t) < UNREACHABLE_MEMORY)
        };
        addrs.sort_by_key(down);
        if let Some(r) = self.calls.get_mut(&call_id).and_then(|c| c.retry.as_mut()) {
            r.candidates = addrs.into();
        }
        self.try_next(now, call_id, None);
    }

    /// Send the call to its next candidate address; with none left, finish
    /// it with `last` (or `peer_unreachable`).
    fn try_next(&mut self, now: Instant, call_id: CallId, last: Option<Failure>) {
        let limits = self.settings.limits;
        let mut last = last;
        loop {
            let next = self
                .calls
                .get_mut(&call_id)
                .and_then(|c| c.retry.as_mut())
                .and_then(|r| r.candidates.pop_front());
            let Some(addr) = next else {
                self.finish_call(call_id, Err(last.unwrap_or_else(no_address)));
                return;
            };
            let local = self.is_local(addr);
            let Some(call) = self.calls.get_mut(&call_id) else {
                return;
            };
            let Some(retry) = call.retry.as_mut() else {
                return;
            };
            let deadline = call.deadline;
            let keep = retry.idempotent && !retry.candidates.is_empty();
            if local {
                let Some(r) = call.retry.take() else { return };
                call.target = Target::Local;
                call.state = CallState::Local;
                self.dispatch(
                    now,
                    Origin::Local { call_id },
                    &r.function,
                    r.args,
                    deadline,
                );
                return;
            }
            let peer_calls = self.calls_by_peer.get(&addr).map_or(0, HashSet::len);
            if peer_calls >= limits.calls_per_peer_max {
                last = Some((
                    ErrorCode::Overloaded,
                    format!(
                        "too many calls in flight to {addr} (limit {})",
                        limits.calls_per_peer_max
                    ),
                ));
                if !keep {
                    call.retry = None;
                }
                continue;
            }
            let (function, args) = if keep {
                (retry.function.clone(), retry.args.clone())
            } else {
                let Some(r) = call.retry.take() else { return };
                (r.function, r.args)
            };
            let env = Envelope::Request {
                call_id,
                function,
                args,
                deadline_ms: deadline.saturating_duration_since(now).as_millis() as u64,
                idempotent: keep,
            };
            match self.endpoint.send(now, addr, env.encode()) {
                Ok(msg_id) => {
                    self.endpoint.hold(now, addr);
                    if let Some(c) = self.calls.get_mut(&call_id) {
                        c.target = Target::Remote(addr);
                        c.state = CallState::Sending(msg_id);
                    }
                    self.calls_by_msg.insert((addr, msg_id), call_id);
                    self.calls_by_peer.entry(addr).or_default().insert(call_id);
                    return;
                }
                Err(e) => {
                    let code = match e {
                        SendError::Channel(rpcd_transport::ChannelSendError::TooLarge {
                            ..
                        }) => ErrorCode::MessageTooLarge,
                        _ => ErrorCode::Overloaded,
                    };
                    last = Some((code, e.to_string()));
                }
            }
        }
    }

    /// A call's peer proved unreachable: an idempotent call with addresses
    /// left fails over to the next; any other call ends here.
    fn unreachable(&mut self, now: Instant, call_id: CallId, failure: Failure) {
        let can_fail_over = self.calls.get(&call_id).is_some_and(|c| {
            now < c.deadline
                && c.retry
                    .as_ref()
                    .is_some_and(|r| r.idempotent && !r.candidates.is_empty())
        });
        if !can_fail_over {
            self.finish_call(call_id, Err(failure));
            return;
        }
        if let Some(mut call) = self.calls.remove(&call_id) {
            self.detach_peer(call_id, &call);
            if let (Target::Remote(peer), CallState::Sending(msg)) = (call.target, call.state) {
                self.endpoint.cancel(peer, msg);
            }
            call.state = CallState::Resolving;
            call.target = Target::Local;
            self.calls.insert(call_id, call);
            debug!(call_id, "failing over to the next address");
            self.try_next(now, call_id, Some(failure));
        }
    }

    /// Answers from the resolver thread.
    fn on_resolved(&mut self, now: Instant) {
        while let Some(answer) = self.resolver.poll() {
            match self.jobs.remove(&answer.key) {
                Some(JobFor::Call(call_id)) => {
                    let resolving = self
                        .calls
                        .get(&call_id)
                        .is_some_and(|c| c.state == CallState::Resolving);
                    if !resolving {
                        continue;
                    }
                    let (addrs, errors): (Vec<_>, Vec<_>) =
                        answer.results.into_iter().partition(Result::is_ok);
                    let addrs: Vec<SocketAddr> = addrs.into_iter().flatten().collect();
                    if addrs.is_empty() {
                        let errors: Vec<String> =
                            errors.into_iter().filter_map(Result::err).collect();
                        self.finish_call(
                            call_id,
                            Err((
                                ErrorCode::PeerUnreachable,
                                format!("no address resolved: {}", errors.join("; ")),
                            )),
                        );
                    } else {
                        self.proceed(now, call_id, addrs);
                    }
                }
                Some(JobFor::Names { origin, table }) => {
                    let mut results = answer.results.into_iter();
                    let entries: Vec<ipc::NameEntry> = table
                        .into_iter()
                        .map(|(name, targets)| {
                            let mut e = ipc::NameEntry {
                                name,
                                targets: targets.clone(),
                                ..Default::default()
                            };
                            for _ in &targets {
                                match results.next() {
                                    Some(Ok(a)) => e.resolved.push(a.to_string()),
                                    Some(Err(err)) => e.errors.push(err),
                                    None => {}
                                }
                            }
                            e
                        })
                        .collect();
                    self.answer(now, origin, Ok(encode(&entries)));
                }
                None => {}
            }
        }
        self.pump(now);
    }

    fn is_local(&self, addr: SocketAddr) -> bool {
        if addr.port() != self.local_addr.port() {
            return false;
        }
        let me = self.local_addr.ip();
        addr.ip() == me || (me.is_unspecified() && addr.ip().is_loopback())
    }

    /// Run `function` for `origin`: a built-in at once, a registered function
    /// through its app, else "unknown function".
    fn dispatch(
        &mut self,
        now: Instant,
        origin: Origin,
        function: &str,
        args: Vec<u8>,
        deadline: Instant,
    ) {
        if function == "rpcd.names" {
            self.names(now, origin);
            return;
        }
        if let Some(result) = self.builtin(now, function, &args) {
            self.answer(now, origin, Ok(result));
            return;
        }
        let Some(&owner) = self.registry.get(function) else {
            self.answer(
                now,
                origin,
                Err((
                    ErrorCode::UnknownFunction,
                    format!(
                        "no function {function} is registered on {}",
                        self.local_addr
                    ),
                )),
            );
            return;
        };
        let pending = self.conns.get(&owner).map_or(0, |c| c.invocations.len());
        if pending >= self.settings.limits.invocations_per_app_max {
            self.answer(
                now,
                origin,
                Err((
                    ErrorCode::Overloaded,
                    format!(
                        "the app serving {function} has {pending} invocations pending (limit {})",
                        self.settings.limits.invocations_per_app_max
                    ),
                )),
            );
            return;
        }
        let inv = self.next_inv_id;
        self.next_inv_id += 1;
        let caller = match origin {
            Origin::Remote { peer, .. } => peer.to_string(),
            Origin::Local { .. } => "local".to_owned(),
        };
        self.invocations.insert(
            inv,
            Invocation {
                owner,
                origin,
                deadline,
            },
        );
        if let Origin::Remote { peer, call_id } = origin {
            self.inbound.insert((peer, call_id), inv);
        }
        if let Some(c) = self.conns.get_mut(&owner) {
            c.invocations.insert(inv);
        }
        self.push_deadline(deadline, Deadline::Invocation(inv));
        let msg = DaemonMsg::Invoke {
            invocation: inv,
            function: function.to_owned(),
            args,
            caller,
            deadline_ms: deadline.saturating_duration_since(now).as_millis() as u64,
        };
        self.send_frame(owner, &msg);
    }

    fn on_result(&mut self, now: Instant, token: Token, inv: InvId, outcome: Outcome) {
        let owned = self.invocations.get(&inv).is_some_and(|i| i.owner == token);
        if !owned {
            // Late (deadline passed, caller gone) or not this app's.
            self.counters.late_results += 1;
            return;
        }
        let Some(i) = self.take_invocation(inv) else {
            return;
        };
        let result = match outcome {
            Outcome::Ok(bytes) => {
                let max = self.settings.payload_max();
                if bytes.len() > max {
                    Err((
                        ErrorCode::MessageTooLarge,
                        format!(
                            "the result of {} bytes exceeds the maximum of {max}",
                            bytes.len()
                        ),
                    ))
                } else {
                    Ok(bytes)
                }
            }
            Outcome::Error(message) => Err((ErrorCode::AppError, message)),
            Outcome::Refused { code, message } => match code {
                ErrorCode::Overloaded | ErrorCode::BadRequest | ErrorCode::ServerAppGone => {
                    Err((code, message))
                }
                other => Err((
                    ErrorCode::AppError,
                    format!("refused with {}: {message}", other.as_str()),
                )),
            },
        };
        self.answer(now, i.origin, result);
    }

    /// Remove an invocation from the table and every index.
    fn take_invocation(&mut self, inv: InvId) -> Option<Invocation> {
        let i = self.invocations.remove(&inv)?;
        if let Some(c) = self.conns.get_mut(&i.owner) {
            c.invocations.remove(&inv);
        }
        if let Origin::Remote { peer, call_id } = i.origin {
            self.inbound.remove(&(peer, call_id));
        }
        Some(i)
    }

    /// Deliver a result to whoever asked: a peer daemon or a local call.
    fn answer(&mut self, now: Instant, origin: Origin, result: Result<Vec<u8>, Failure>) {
        match origin {
            Origin::Local { call_id } => self.finish_call(call_id, result),
            Origin::Remote { peer, call_id } => {
                let outcome = match result {
                    Ok(b) => RemoteOutcome::Ok(b),
                    Err((code, message)) => RemoteOutcome::Err { code, message },
                };
                let env = Envelope::Reply { call_id, outcome };
                if let Err(e) = self.endpoint.send(now, peer, env.encode()) {
                    // The caller's deadline will fire; nothing else can tell it.
                    warn!(%peer, error = %e, "cannot send a reply");
                }
            }
        }
    }

    /// End a call with its one outcome and tell the app.
    fn finish_call(&mut self, call_id: CallId, result: Result<Vec<u8>, Failure>) {
        let Some(call) = self.calls.remove(&call_id) else {
            return;
        };
        self.unlink_call(call_id, &call);
        if let (Target::Remote(peer), Err((ErrorCode::DeadlineExceeded, _))) =
            (call.target, &result)
        {
            // Stop retransmitting the request, and let the server drop it.
            if let CallState::Sending(msg) = call.state {
                self.endpoint.cancel(peer, msg);
            } else {
                let _ =
                    self.endpoint
                        .send(Instant::now(), peer, Envelope::Cancel { call_id }.encode());
            }
        }
        let code = match &result {
            Ok(_) => "ok".to_owned(),
            Err((c, _)) => c.as_str().to_owned(),
        };
        *self.outcomes.entry(code.clone()).or_default() += 1;
        if let Target::Remote(peer) = call.target {
            *self
                .peer_outcomes
                .entry(peer)
                .or_default()
                .entry(code)
                .or_default() += 1;
        }
        let msg = match result {
            Ok(data) => DaemonMsg::CallOk {
                id: call.client_id,
                data,
            },
            Err((code, message)) => DaemonMsg::Failed {
                id: call.client_id,
                code,
                message,
            },
        };
        self.send_frame(call.conn, &msg);
    }

    /// The calling app went away: forget the call without an outcome.
    fn cancel_call(&mut self, call_id: CallId) {
        let Some(call) = self.calls.remove(&call_id) else {
            return;
        };
        self.unlink_call(call_id, &call);
        if let Target::Remote(peer) = call.target {
            match call.state {
                CallState::Sending(msg) => {
                    self.endpoint.cancel(peer, msg);
                }
                _ => {
                    let _ = self.endpoint.send(
                        Instant::now(),
                        peer,
                        Envelope::Cancel { call_id }.encode(),
                    );
                }
            }
        }
    }

    fn unlink_call(&mut self, call_id: CallId, call: &Call) {
        if let Some(c) = self.conns.get_mut(&call.conn) {
            c.calls.remove(&call_id);
        }
        self.detach_peer(call_id, call);
    }

    /// Undo what sending to a peer set up: the hold, the indexes.
    fn detach_peer(&mut self, call_id: CallId, call: &Call) {
        if let Target::Remote(peer) = call.target {
            self.endpoint.release(peer);
            if let CallState::Sending(msg) = call.state {
                self.calls_by_msg.remove(&(peer, msg));
            }
            if let Some(set) = self.calls_by_peer.get_mut(&peer) {
                set.remove(&call_id);
                if set.is_empty() {
                    self.calls_by_peer.remove(&peer);
                }
            }
        }
    }

    // ------------------------------------------------------ transport events

    fn on_transport_event(&mut self, now: Instant, peer: SocketAddr, ev: ChannelEvent) {
        match ev {
            ChannelEvent::Delivered { data, .. } => match Envelope::decode(&{
                self.peer_down.remove(&peer);
                data
            }) {
                Ok(env) => self.on_envelope(now, peer, env),
                Err(e) => {
                    self.counters.bad_envelopes += 1;
                    debug!(%peer, error = %e, "dropping a message that is not an RPC envelope");
                }
            },
            ChannelEvent::Acked { msg_id } => {
                self.peer_down.remove(&peer);
                if let Some(call_id) = self.calls_by_msg.remove(&(peer, msg_id)) {
                    if let Some(c) = self.calls.get_mut(&call_id) {
                        c.state = CallState::Awaiting;
                    }
                }
            }
            ChannelEvent::Failed { msg_id, reason, .. } => {
                if let Some(&call_id) = self.calls_by_msg.get(&(peer, msg_id)) {
                    match reason {
                        FailReason::PeerUnreachable => {
                            self.peer_down.insert(peer, now);
                            self.unreachable(
                                now,
                                call_id,
                                (
                                    ErrorCode::PeerUnreachable,
                                    format!("{peer} did not acknowledge the request"),
                                ),
                            );
                        }
                        FailReason::PeerRestarted => self.finish_call(
                            call_id,
                            Err((
                                ErrorCode::PeerRestarted,
                                format!("{peer} restarted; the call may or may not have run"),
                            )),
                        ),
                        FailReason::Cancelled => {}
                    }
                }
            }
            ChannelEvent::PeerRestarted => {
                info!(%peer, "peer restarted (new epoch)");
                self.fail_awaiting_calls(
                    peer,
                    ErrorCode::PeerRestarted,
                    format!("{peer} restarted; the call may or may not have run"),
                );
                // Work for the old incarnation's callers: its results have
                // nowhere to go.
                let stale: Vec<(u64, InvId)> = self
                    .inbound
                    .iter()
                    .filter(|((p, _), _)| *p == peer)
                    .map(|((_, c), &i)| (*c, i))
                    .collect();
                for (_, inv) in stale {
                    self.take_invocation(inv);
                }
            }
            ChannelEvent::PeerUnreachable => {
                info!(%peer, "peer unreachable");
                self.peer_down.insert(peer, now);
                for id in self.calls_to(peer) {
                    self.unreachable(
                        now,
                        id,
                        (
                            ErrorCode::PeerUnreachable,
                            format!("{peer} stopped answering"),
                        ),
                    );
                }
            }
        }
    }

    /// The calls currently sent to `peer` (a snapshot: the caller may end them).
    fn calls_to(&self, peer: SocketAddr) -> Vec<CallId> {
        self.calls_by_peer
            .get(&peer)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Fail the calls to `peer` whose request was acknowledged (the channel
    /// reports the others itself).
    fn fail_awaiting_calls(&mut self, peer: SocketAddr, code: ErrorCode, message: String) {
        for id in self.calls_to(peer) {
            let awaiting = self
                .calls
                .get(&id)
                .is_some_and(|c| c.state == CallState::Awaiting);
            if awaiting {
                self.finish_call(id, Err((code, message.clone())));
            }
        }
    }

    fn on_envelope(&mut self, now: Instant, peer: SocketAddr, env: Envelope) {
        match env {
            Envelope::Request {
                call_id,
                function,
                args,
                deadline_ms,
                ..
            } => {
                if self.shutdown_at.is_some() {
                    self.answer(
                        now,
                        Origin::Remote { peer, call_id },
                        Err((
                            ErrorCode::ShuttingDown,
                            "the serving daemon is shutting down".into(),
                        )),
                    );
                    return;
                }
                let wait =
                    Duration::from_millis(deadline_ms).min(self.settings.limits.deadline_max);
                self.dispatch(
                    now,
                    Origin::Remote { peer, call_id },
                    &function,
                    args,
                    now + wait,
                );
            }
            Envelope::Reply { call_id, outcome } => {
                let ours = self
                    .calls
                    .get(&call_id)
                    .is_some_and(|c| c.target == Target::Remote(peer));
                if !ours {
                    self.counters.late_replies += 1;
                    return;
                }
                let result = match outcome {
                    RemoteOutcome::Ok(b) => Ok(b),
                    RemoteOutcome::Err { code, message } => Err((code, message)),
                };
                self.finish_call(call_id, result);
            }
            Envelope::Cancel { call_id } => {
                if let Some(&inv) = self.inbound.get(&(peer, call_id)) {
                    self.take_invocation(inv);
                }
            }
        }
    }

    // ------------------------------------------------------------ builtins

    fn builtin(&mut self, now: Instant, function: &str, args: &[u8]) -> Option<Vec<u8>> {
        match function {
            "rpcd.ping" => Some(encode(&"pong")),
            "rpcd.echo" => Some(args.to_vec()),
            "rpcd.list" => Some(encode(&self.function_list())),
            "rpcd.stats" => Some(encode(&self.stats(now))),
            _ => None,
        }
    }

    /// `rpcd.names`: the naming table, resolved now (on the resolver thread).
    fn names(&mut self, now: Instant, origin: Origin) {
        let table: Vec<(String, Vec<String>)> = self
            .settings
            .names
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        if table.is_empty() {
            self.answer(now, origin, Ok(encode(&Vec::<ipc::NameEntry>::new())));
            return;
        }
        let key = self.next_job;
        self.next_job += 1;
        let targets = table.iter().flat_map(|(_, t)| t.iter().cloned()).collect();
        if self.resolver.submit(resolver::Job { key, targets }) {
            self.jobs.insert(key, JobFor::Names { origin, table });
        } else {
            self.answer(
                now,
                origin,
                Err((
                    ErrorCode::Overloaded,
                    "too many name lookups pending".into(),
                )),
            );
        }
    }

    fn function_list(&self) -> Vec<String> {
        let mut v: Vec<String> = BUILTINS.iter().map(|s| (*s).to_owned()).collect();
        v.extend(self.registry.keys().cloned());
        v.sort();
        v
    }

    fn stats(&self, now: Instant) -> Stats {
        let ep = self.endpoint.stats();
        let mut totals = PeerCounters::default();
        let mut peers = Vec::new();
        for (addr, snap) in self.endpoint.peers() {
            let s = snap.stats;
            let counters = PeerCounters {
                datagrams_sent: s.datagrams_sent,
                datagrams_received: s.datagrams_received,
                retransmissions: s.retransmissions,
                duplicates: s.duplicates,
                stale_epoch: s.stale_epoch,
                out_of_window: s.out_of_window,
                messages_sent: s.messages_sent,
                messages_delivered: s.messages_delivered,
                messages_failed: s.messages_failed,
            };
            add_counters(&mut totals, &counters);
            peers.push(PeerStats {
                addr: addr.to_string(),
                epoch: snap.peer_epoch,
                counters,
                srtt_us: snap.srtt.map(|d| d.as_micros() as u64),
                rto_us: snap.rto.as_micros() as u64,
                in_flight: snap.in_flight as u64,
                cwnd: snap.cwnd,
                calls_in_flight: self.calls_by_peer.get(&addr).map_or(0, |s| s.len() as u64),
                calls: self.peer_outcomes.get(&addr).cloned().unwrap_or_default(),
            });
        }
        peers.sort_by(|a, b| a.addr.cmp(&b.addr));
        Stats {
            epoch: self.endpoint.epoch(),
            listen: self.local_addr.to_string(),
            uptime_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            connections: self.conns.len() as u64,
            functions: self.registry.len() as u64,
            malformed: ep.malformed
                + self.counters.oversize_datagrams
                + self.counters.bad_envelopes,
            corrupt: ep.corrupt,
            refused_peers: ep.refused_peers,
            late_replies: self.counters.late_replies,
            late_results: self.counters.late_results,
            dropped_transmits: self.counters.dropped_transmits,
            totals,
            calls: self.outcomes.clone(),
            peers,
        }
    }
}

/// Serialise a built-in's result to MessagePack (maps with field names).
fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("built-in results always serialise")
}

fn add_counters(t: &mut PeerCounters, c: &PeerCounters) {
    t.datagrams_sent += c.datagrams_sent;
    t.datagrams_received += c.datagrams_received;
    t.retransmissions += c.retransmissions;
    t.duplicates += c.duplicates;
    t.stale_epoch += c.stale_epoch;
    t.out_of_window += c.out_of_window;
    t.messages_sent += c.messages_sent;
    t.messages_delivered += c.messages_delivered;
    t.messages_failed += c.messages_failed;
}

/// Ask for writable events on `source` exactly while it has output waiting
/// (`wanted` remembers what is registered, so unchanged interest costs nothing).
fn want_writable(
    registry: &mio::Registry,
    source: &mut impl mio::event::Source,
    token: Token,
    want: bool,
    wanted: &mut bool,
) {
    if want == *wanted {
        return;
    }
    let interest = if want {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    if registry.reregister(source, token, interest).is_ok() {
        *wanted = want;
    }
}

/// Write what is queued until the socket would block.
fn write_some(conn: &mut Conn) -> io::Result<()> {
    while conn.out_pos < conn.out.len() {
        match conn.stream.write(&conn.out[conn.out_pos..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => conn.out_pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if conn.out_pos == conn.out.len() {
        conn.out.clear();
        conn.out_pos = 0;
    } else if conn.out_pos > 1024 * 1024 {
        conn.out.drain(..conn.out_pos);
        conn.out_pos = 0;
    }
    Ok(())
}

fn set_buffers(sock: &std::net::UdpSocket, s: &Settings) {
    use nix::sys::socket::{setsockopt, sockopt};
    if let Err(e) = setsockopt(sock, sockopt::RcvBuf, &s.limits.udp_recv_buffer) {
        warn!(error = %e, "cannot set the UDP receive buffer");
    }
    if let Err(e) = setsockopt(sock, sockopt::SndBuf, &s.limits.udp_send_buffer) {
        warn!(error = %e, "cannot set the UDP send buffer");
    }
}

/// Bind the local socket, replacing a stale file but never a live daemon's.
fn bind_unix(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the socket directory {}", dir.display()))?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => bail!(
                "another rpcd is serving {} (connect succeeded); stop it first or choose another --socket",
                path.display()
            ),
            Err(_) => {
                info!(path = %path.display(), "replacing a stale socket file");
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale socket {}", path.display()))?;
            }
        }
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("binding the socket {}", path.display()))?;
    Ok(listener)
}

fn random_epoch() -> anyhow::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).context("reading OS randomness for the epoch")?;
    Ok(u64::from_ne_bytes(b).max(1))
}
