//! The shell: everything that touches the OS, and no RPC decision.
//!
//! One `mio` loop over the UDP socket, the Unix listener, the connections,
//! the signal pipe and the resolver's waker. Each wakeup it marks what is
//! ready, takes at most one batch from each ready source (so a UDP flood
//! cannot starve the local sockets, nor one app the others), feeds the
//! [`Router`], writes what the router produced, and sleeps until the router's
//! next deadline — or not at all while a source still has input waiting.
//! A graceful stop is the same loop running until the router says it has
//! finished; nothing sleeps inside it. This module binds the sockets and builds the
//! loop from the settings; the loop's turns are in `event_loop`.

pub mod activation;
mod event_loop;
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

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use mio::net::{UdpSocket, UnixListener};
use mio::{Interest, Poll, Registry, Token, Waker};
use tracing::{info, warn};

use crate::router::{Incarnation, Router};
use crate::settings::Settings;
use activation::Inherited;
use local::Local;
use notify::Watchdog;
use resolver::Resolver;
use signals::Signals;
use udp::Udp;

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
        // Like the socket's buffers, a bound on memory the operator sets in [limits].
        settings.transport.transmit_spare_bytes_max = settings.limits.udp_spare_buffers_max;
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
            drained_scratch: Vec::new(),
            busy_until: None,
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
    /// The connections whose output was written, kept between iterations.
    drained_scratch: Vec<crate::router::ConnId>,
    /// Until when the loop polls without sleeping (`daemon.busy_poll_us` after the last
    /// input); `None`: it sleeps in `epoll_wait`.
    busy_until: Option<Instant>,
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
