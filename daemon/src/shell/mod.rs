//! The shell: everything that touches the OS, and no RPC decision.
//!
//! One `mio` loop over the UDP socket, the Unix listener, the connections,
//! the signal pipe and the resolver's waker. Each wakeup it marks what is
//! ready, takes at most one batch from each ready source (so a UDP flood
//! cannot starve the local sockets, nor one app the others), feeds the
//! [`Router`], writes what the router produced, and sleeps until the router's
//! next deadline — or not at all while a source still has input waiting.
//! A graceful stop is the same loop running until the router says it has
//! finished; nothing sleeps inside it.

pub mod activation;
mod local;
pub mod logging;
mod metrics;
mod metrics_process;
pub mod notify;
mod reload;
pub mod resolver;
mod signals;
mod socket_file;
mod udp;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use mio::net::{UdpSocket, UnixListener};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use tracing::{info, warn};

use rpcd_client::ipc::{DaemonMsg, ErrorCode};

use crate::router::{Incarnation, LookupAnswer, Output, Router};
use crate::settings::Settings;
use activation::Inherited;
use local::{ConnInput, Local};
use notify::Watchdog;
use resolver::Resolver;
use signals::Signals;
use udp::{Received, Sent, Udp};

const UDP: Token = Token(0);
const LISTENER: Token = Token(1);
const SIGNALS: Token = Token(2);
const WAKER: Token = Token(3);

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
    /// The local socket came from socket activation: its file is not ours.
    inherited: bool,
    /// `metrics.listen`, bound.
    metrics: Option<std::net::TcpListener>,
}

impl Bound {
    /// Bind the UDP socket, and the local socket unless socket activation
    /// passed one (`inherited`, from [`activation::take_listener`]), whose
    /// file rpcd then leaves as the service manager made it.
    pub fn bind(mut settings: Settings, inherited: Option<Inherited>) -> anyhow::Result<Bound> {
        let udp = std::net::UdpSocket::bind(settings.listen)
            .with_context(|| format!("binding UDP {}", settings.listen))?;
        set_buffers(&udp, &mut settings);
        udp.set_nonblocking(true)?;
        let local_addr = udp.local_addr()?;
        let (listener, inherited) = match inherited {
            Some(i) => {
                info!(
                    path = %i.path.as_deref().map_or("(unnamed)".into(), |p| p.display().to_string()),
                    name = i.name.as_deref().unwrap_or(""),
                    "serving the socket passed by socket activation"
                );
                (i.listener, true)
            }
            None => (
                socket_file::bind_unix(&settings.socket, settings.access.socket_group)?,
                false,
            ),
        };
        listener.set_nonblocking(true)?;
        let metrics = match settings.metrics.listen {
            Some(addr) => Some(
                metrics::bind(addr).with_context(|| format!("binding metrics.listen {addr}"))?,
            ),
            None => None,
        };
        Ok(Bound {
            settings,
            udp,
            listener,
            local_addr,
            inherited,
            metrics,
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
            inherited,
            metrics,
        } = self;
        let poll = Poll::new().context("creating the poll instance")?;
        let limits = settings.limits;
        let udp = Udp::new(
            UdpSocket::from_std(udp),
            poll.registry(),
            UDP,
            limits.udp_receive_batch,
            limits.transmit_backlog_max,
        )?;
        let local = Local::new(
            UnixListener::from_std(listener),
            poll.registry(),
            LISTENER,
            limits.frame_max,
            limits.connection_output_max,
            limits.connection_read_batch,
            limits.local_buffer_total_max,
        )?;
        // The process's pool of large buffers: the frame readers, the encoders, the
        // envelopes and the outputs take from it and give back to it.
        rpcd_client::ipc::buffer_pool().set_max(limits.local_buffer_pool_max);
        let signals =
            Signals::new(poll.registry(), SIGNALS).context("installing signal handlers")?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let resolver = Resolver::start(waker.clone(), &settings.dns)
            .context("starting the resolver thread")?;
        let metrics = match metrics {
            Some(listener) => {
                info!(addr = %listener.local_addr()?, "serving GET /metrics");
                let timeout = settings.metrics.request_timeout;
                Some(
                    metrics::start(listener, waker.clone(), timeout)
                        .context("starting the metrics thread")?,
                )
            }
            None => None,
        };
        let incarnation = incarnation()?;
        let socket_path = settings.socket.clone();
        info!(udp = %local_addr, socket = %socket_path.display(), inherited, epoch = format_args!("{:016x}", incarnation.epoch), "rpcd listening");
        let mut router = Router::new(
            settings,
            local_addr,
            host_ips(),
            incarnation,
            Instant::now(),
        );
        router.set_transport_buffers(Some(Arc::new(PooledBuffers)));
        log_security(&router);
        let shell = Shell {
            poll,
            udp,
            local,
            signals,
            resolver,
            metrics,
            _waker: waker,
            router,
            opts,
            socket_path,
            inherited,
            watchdog: Watchdog::from_env(Instant::now()),
            ready_scratch: Vec::new(),
        };
        if let Some(w) = &shell.watchdog {
            info!(
                every_ms = w.every().as_millis() as u64,
                "systemd watchdog enabled"
            );
        }
        notify::ready(&shell.status_line("serving"));
        shell.run()
    }
}

/// The running loop and what it owns.
#[derive(Debug)]
struct Shell {
    poll: Poll,
    udp: Udp,
    local: Local,
    signals: Signals,
    resolver: Resolver,
    /// Snapshot requests from the metrics thread (it wakes the loop).
    metrics: Option<Receiver<metrics::SnapshotReply>>,
    _waker: Arc<Waker>,
    router: Router,
    opts: RunOptions,
    socket_path: PathBuf,
    /// The socket came from socket activation: its file is left in place.
    inherited: bool,
    watchdog: Option<Watchdog>,
    /// The ready connections of one turn, a buffer kept across turns.
    ready_scratch: Vec<crate::router::ConnId>,
}

impl Shell {
    fn run(mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if let Some(w) = &mut self.watchdog {
                w.tick(now);
            }
            self.local.retry_due(now);
            self.router.handle_timeout(now);
            self.drive(now);
            self.flush();
            if self.router.is_finished() {
                self.finish();
                return Ok(());
            }
            let busy = self.udp.ready || self.local.listener_ready || !self.local.ready.is_empty();
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                let watchdog = self.watchdog.as_ref().map(Watchdog::next_at);
                let next = [self.router.poll_timeout(), self.local.retry_at, watchdog]
                    .into_iter()
                    .flatten()
                    .min();
                next.map(|t| {
                    // epoll has millisecond resolution: round up so a timer
                    // is never polled early and spun on.
                    let d = t.saturating_duration_since(now);
                    Duration::from_millis(d.as_micros().div_ceil(1000) as u64)
                })
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e).context("polling");
            }
            for ev in events.iter() {
                match ev.token() {
                    UDP => {
                        if ev.is_readable() {
                            self.udp.ready = true;
                        }
                        if ev.is_writable() {
                            self.udp.flush(self.poll.registry());
                            self.recycle_sent();
                        }
                    }
                    LISTENER => self.local.listener_ready = true,
                    SIGNALS => self.on_signals(),
                    WAKER => {
                        self.on_resolved();
                        self.answer_scrapes();
                    }
                    token => {
                        let Some(id) = Local::conn_of(token) else {
                            continue;
                        };
                        if ev.is_readable() || ev.is_read_closed() {
                            self.local.ready.insert(id);
                        }
                        if ev.is_writable() && !self.local.write(self.poll.registry(), id) {
                            self.conn_failed(Instant::now(), id);
                        }
                    }
                }
            }
            self.serve_ready(Instant::now());
        }
    }

    /// One batch from each ready source.
    fn serve_ready(&mut self, now: Instant) {
        if self.udp.ready {
            let router = &mut self.router;
            self.udp.receive(|r| match r {
                Received::Datagram(from, bytes) => router.handle_datagram(now, from, bytes),
                Received::Oversize => router.handle_oversize_datagram(),
            });
        }
        if self.local.listener_ready {
            let router = &mut self.router;
            self.local.accept(self.poll.registry(), |id, cred| {
                router.handle_conn_opened(id, cred)
            });
        }
        let mut ready = std::mem::take(&mut self.ready_scratch);
        ready.clear();
        ready.extend(self.local.ready.iter().copied());
        for &id in &ready {
            let router = &mut self.router;
            let mut over_budget = false;
            let open = self.local.read(id, |input| match input {
                ConnInput::Msg(msg) => router.handle_client_msg(now, id, msg),
                ConnInput::BadFrame(e) => router.handle_bad_frame(now, id, &e),
                ConnInput::OverBudget => over_budget = true,
            });
            if over_budget {
                let fatal = DaemonMsg::Fatal {
                    code: ErrorCode::Overloaded,
                    message: "the daemon's buffers for local connections are full \
                              (limits.local_buffer_total_max)"
                        .into(),
                };
                self.local.fail(self.poll.registry(), id, &fatal);
                self.router.handle_conn_closed(now, id);
                continue;
            }
            if !open {
                self.conn_failed(now, id);
            }
        }
        self.ready_scratch = ready;
    }

    /// Move what the router produced to the sockets and the resolver, until
    /// it produces nothing more.
    fn drive(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.router.poll_transmit(now) {
                progressed = true;
                if self.udp.send(t) == Sent::Dropped {
                    self.router.handle_transmit_dropped();
                }
                self.recycle_sent();
            }
            while let Some(out) = self.router.poll_output() {
                progressed = true;
                match out {
                    Output::Frame(id, msg) => {
                        if self.local.queue(id, msg).is_err() {
                            self.local.drop_conn(self.poll.registry(), id);
                            self.router.handle_conn_closed(now, id);
                        }
                    }
                    Output::Invoke(id, invoke) => {
                        if self.local.queue_invoke(id, invoke).is_err() {
                            self.local.drop_conn(self.poll.registry(), id);
                            self.router.handle_conn_closed(now, id);
                        }
                    }
                    Output::Close(id) => self.local.close(self.poll.registry(), id),
                    Output::Lookup(req) => {
                        let id = req.id;
                        let n = req.targets.len();
                        if !self.resolver.submit(req) {
                            let results = vec![Err("the resolver is not running".to_owned()); n];
                            self.router.handle_lookup(now, LookupAnswer { id, results });
                        }
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// The buffers of the datagrams the kernel took go back to the transport,
    /// which writes its next bundles into them.
    fn recycle_sent(&mut self) {
        for bytes in self.udp.take_sent() {
            self.router.recycle_transmit(bytes);
        }
    }

    /// Write what this iteration queued.
    fn flush(&mut self) {
        // A connection failing while written makes the router answer for
        // it (e.g. `server_app_gone` to its callers): write those too before
        // sleeping. Each round closes at least one connection or hands a
        // monitor the next batch of its bounded queue, so this ends.
        loop {
            self.udp.flush(self.poll.registry());
            self.recycle_sent();
            let failed = self.local.flush(self.poll.registry());
            let mut more = false;
            for id in self.local.take_drained() {
                more |= self.router.handle_conn_drained(id);
            }
            if failed.is_empty() && !more {
                return;
            }
            let now = Instant::now();
            for id in failed {
                self.conn_failed(now, id);
            }
            self.drive(now);
        }
    }

    /// A connection ended or its socket failed.
    fn conn_failed(&mut self, now: Instant, id: crate::router::ConnId) {
        self.local.drop_conn(self.poll.registry(), id);
        self.router.handle_conn_closed(now, id);
    }

    /// Answer the metrics thread's snapshot requests (each reply channel has
    /// room for its one answer: this never blocks).
    fn answer_scrapes(&mut self) {
        let Some(requests) = &self.metrics else {
            return;
        };
        let now = Instant::now();
        while let Ok(reply) = requests.try_recv() {
            let _ = reply.try_send(self.router.stats(now));
        }
    }

    fn on_resolved(&mut self) {
        let now = Instant::now();
        while let Some(answer) = self.resolver.poll() {
            self.router.handle_lookup(now, answer);
        }
    }

    /// The router finished its shutdown: last writes, then remove our files.
    fn finish(&mut self) {
        for id in self.local.ids() {
            self.local.close(self.poll.registry(), id);
        }
        // An inherited socket's file belongs to the .socket unit, which keeps
        // listening (and starts rpcd again on the next connection).
        if !self.inherited {
            let _ = std::fs::remove_file(&self.socket_path);
        }
        if let Some(p) = &self.opts.pid_file {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Ask for writable events on `source` exactly while it has output waiting
/// (`wanted` remembers what is registered, so unchanged interest costs nothing).
fn want_writable(
    registry: &Registry,
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

/// Size the UDP socket's buffers, and tell the transport what the receive
/// buffer holds (the kernel's figure, read back), so that the window it
/// advertises keeps a peer's flight inside it. The kernel caps `SO_RCVBUF`
/// at `net.core.rmem_max` (`SO_SNDBUF` at `wmem_max`); a daemon with
/// `CAP_NET_ADMIN` passes the cap with `SO_RCVBUFFORCE` (`SO_SNDBUFFORCE`),
/// as QUIC stacks do, and any other gets the capped size and a warning.
fn set_buffers(sock: &std::net::UdpSocket, s: &mut Settings) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    // Linux reports (and charges) twice the size asked, for its bookkeeping.
    let recv = s.limits.udp_recv_buffer;
    if let Err(e) = setsockopt(sock, sockopt::RcvBuf, &recv) {
        warn!(error = %e, "cannot set the UDP receive buffer");
    }
    if getsockopt(sock, sockopt::RcvBuf).unwrap_or(0) < recv.saturating_mul(2) {
        // EPERM without CAP_NET_ADMIN: the capped size stays.
        let _ = setsockopt(sock, sockopt::RcvBufForce, &recv);
    }
    let held = getsockopt(sock, sockopt::RcvBuf).unwrap_or(0);
    if held < recv.saturating_mul(2) {
        warn!(
            udp_recv_buffer = recv,
            granted = held / 2,
            "the UDP receive buffer is smaller than limits.udp_recv_buffer (raise \
             net.core.rmem_max, or run with CAP_NET_ADMIN): the window for large \
             datagrams shrinks to fit it"
        );
    }
    s.transport.socket_recv_buffer = held;
    let send = s.limits.udp_send_buffer;
    if let Err(e) = setsockopt(sock, sockopt::SndBuf, &send) {
        warn!(error = %e, "cannot set the UDP send buffer");
    }
    if getsockopt(sock, sockopt::SndBuf).unwrap_or(0) < send.saturating_mul(2) {
        let _ = setsockopt(sock, sockopt::SndBufForce, &send);
    }
}

/// The process's pool of large buffers as the transport takes and gives them: a sent
/// message's buffer goes back to it once acknowledged, and a large message arriving in
/// fragments is reassembled into one of its buffers (the one an earlier message was
/// delivered in, given back once decoded), so neither is fresh memory.
#[derive(Debug)]
struct PooledBuffers;

impl rpcd_transport::Buffers for PooledBuffers {
    fn take(&self, min: usize, max: usize) -> Option<Vec<u8>> {
        rpcd_client::ipc::buffer_pool().take_within(min, max)
    }

    fn give(&self, buf: Vec<u8>) {
        rpcd_client::ipc::recycle(buf);
    }
}

/// This host's interface addresses, so a call to any of them on our port
/// is recognised as a call to ourselves when we listen on a wildcard.
fn host_ips() -> Vec<IpAddr> {
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs
            .filter_map(|a| a.address)
            .filter_map(|s| {
                if let Some(v4) = s.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot list this host's addresses");
            Vec::new()
        }
    }
}

/// The OS's randomness and wall clock for this run of the daemon.
fn incarnation() -> anyhow::Result<Incarnation> {
    let mut epoch = [0u8; 8];
    getrandom::getrandom(&mut epoch).context("reading OS randomness for the epoch")?;
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).context("reading OS randomness for the transport's seed")?;
    let wall_clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    Ok(Incarnation {
        epoch: u64::from_ne_bytes(epoch).max(1),
        seed,
        wall_clock,
    })
}

/// Say once at start how peers are authenticated, and what that exposes.
fn log_security(router: &Router) {
    let s = router.settings();
    match (router.public_key(), &s.security.key) {
        (Some(public), key) => info!(
            public_key = %public,
            fingerprint = %public.fingerprint(),
            key_file = %key.as_ref().map_or_else(String::new, |k| k.path.display().to_string()),
            peers = s.peers.len(),
            "authenticated transport: only the configured peers are answered"
        ),
        (None, _) => {
            if router.local_addr().ip().to_canonical().is_loopback() {
                warn!(
                    udp = %router.local_addr(),
                    "plaintext transport on loopback: any local user can call this daemon over \
                     loopback UDP (set security.private_key_file to authenticate peers)"
                );
            } else {
                warn!(
                    udp = %router.local_addr(),
                    "plaintext transport (daemon.plaintext = true): anyone who can reach this \
                     address can call any function"
                );
            }
            if !s.peers.is_empty() {
                warn!(
                    peers = s.peers.len(),
                    "[peers] are configured but no private key is: they are not authenticated"
                );
            }
        }
    }
}
