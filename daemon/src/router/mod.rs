//! The RPC layer as a sans-IO state machine: the [`Router`].
//!
//! It owns the transport [`Endpoint`], the connected apps, the function
//! registry, outgoing calls, incoming invocations and their deadlines. It
//! touches no socket, reads no clock and starts no thread: the shell feeds it
//! inputs (`handle_*`, each with `now`) and drains its outputs
//! (`poll_transmit`, `poll_output`) and sleeps until `poll_timeout`.
//!
//! Data flows one way through it:
//!
//! ```text
//! datagram → Endpoint → network (envelope) → calls (reply) | invocations (request, cancel)
//!          → Output::Frame | Output::Invoke → shell → app
//! app msg  → client → apps | registry | calls → Endpoint::send → poll_transmit → shell → UDP
//! ```
//!
//! Replies and refusals leave only through [`Router::poll_output`]. `calls`
//! and `invocations` do not know each other: a call served by this daemon's
//! own apps (the short-circuit) is mediated here, by [`Router::serve_local`]
//! and [`Router::answer`].

mod apps;
mod builtins;
mod call_log;
mod calls;
mod client;
mod deadlines;
mod expiry;
mod invocations;
mod lookups;
mod monitor;
mod network;
mod policy;
mod recent;
mod registry;
mod shutdown;
pub mod srv;
mod stats;
mod targets;
mod trace;
mod types;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_grace;
#[cfg(test)]
mod tests_monitor;
#[cfg(test)]
mod tests_srv;

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpcd_client::ipc::{ClientMsg, DaemonMsg, ErrorCode, FrameError};
use rpcd_transport::secure::PublicKey;
use rpcd_transport::{Buffers, Endpoint, Transmit};
use rustc_hash::FxHashMap;
use tracing::{debug, info, warn};

use crate::envelope::{Envelope, RemoteOutcome};
use crate::payload::Payload;
use crate::settings::Settings;

use apps::Apps;
use calls::Calls;
use deadlines::DeadlineHeap;
use expiry::still_armed;
use invocations::Invocations;
use lookups::Lookups;
use recent::Recent;
use types::SentReply;

pub use lookups::LOOKUPS_PENDING_MAX;
pub use registry::{BUILTINS, FUNCTION_NAME_MAX};
pub use targets::is_local;
pub use types::{
    CallId, ConnId, Failure, InvId, Invoke, LookupAnswer, LookupId, LookupRequest, Origin, Output,
    PeerCred, RemoteCallId, Resolved,
};

/// How long a peer that was declared unreachable is tried last among a
/// service name's addresses.
pub const UNREACHABLE_MEMORY: Duration = Duration::from_secs(30);

/// Longest a finished shutdown keeps running to get its last replies and
/// acknowledgements acknowledged by the peers.
pub const SHUTDOWN_LINGER_MAX: Duration = Duration::from_secs(2);

/// Entries of each of the router's small caches of per-call work (see
/// `recent`): the targets and the callers a daemon sees at once are few.
const RECENT_MAX: usize = 8;

/// The RPC router. See the module documentation for the call order.
#[derive(Debug)]
pub struct Router {
    settings: Settings,
    /// The UDP address the shell bound.
    me: SocketAddr,
    /// This host's interface addresses (for a wildcard `me`).
    host_ips: Vec<IpAddr>,
    endpoint: Endpoint,
    started: Instant,
    apps: Apps,
    registry: registry::Registry,
    calls: Calls,
    invocations: Invocations,
    deadlines: DeadlineHeap<Deadline>,
    lookups: Lookups,
    /// Peers recently declared unreachable, and when: addresses this daemon's own calls
    /// went to, so a fast hash.
    peer_down: FxHashMap<SocketAddr, Instant>,
    /// Replies sent and not yet acknowledged or failed, by peer: a peer
    /// that restarts must not get the replies meant for its old
    /// incarnation (see `network::on_transport_event`).
    /// One flat set: a reply costs one insert and one removal.
    replies: HashSet<SentReply>,
    /// Call targets recently found to be literal addresses, by their text.
    literal_targets: Recent<String, SocketAddr>,
    /// Remote callers' addresses as text, for `invoke` (`caller`).
    caller_texts: Recent<SocketAddr, String>,
    counters: Counters,
    /// `access_denied` refusals by reason (see `policy`).
    denials: policy::Denials,
    outputs: VecDeque<Output>,
    shutdown: Shutdown,
    /// When idle peers were last looked for (see `sweep_idle_peers`).
    last_sweep: Option<Instant>,
    /// Connections that monitor the calls (see `monitor`).
    monitors: monitor::Monitors,
    /// Calls served here that a trace or a monitor watches (see `trace`).
    served: trace::Served,
}

/// What the shell draws from the OS for one run of the daemon: the router
/// reads no clock but `now` and no randomness of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incarnation {
    /// The transport epoch (random, non-zero).
    pub epoch: u64,
    /// Seed of every random choice of the transport (ephemeral keys,
    /// session indices, cookies).
    pub seed: [u8; 32],
    /// Time since the Unix epoch at start: the transport's handshake
    /// timestamps grow from it.
    pub wall_clock: Duration,
}

/// What a deadline in the heap belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Call(CallId),
    Invocation(InvId),
}

#[derive(Debug, Default)]
struct Counters {
    late_replies: u64,
    late_results: u64,
    bad_envelopes: u64,
    dropped_transmits: u64,
    oversize_datagrams: u64,
}

/// The graceful-shutdown state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    Running,
    /// No new work; pending calls and invocations run until done or `until`.
    Draining {
        until: Instant,
    },
    /// Everything answered; waiting until the peers acknowledged the last
    /// replies (the endpoint is idle) or `until`.
    Lingering {
        until: Instant,
    },
    Finished,
}

impl Router {
    /// A router for the daemon bound at `me`, its transport protected as
    /// the settings say (`[security]`, `[peers]`). `host_ips` are the host's
    /// interface addresses, for recognising calls to this daemon under
    /// another spelling of a wildcard address.
    pub fn new(
        settings: Settings,
        me: SocketAddr,
        host_ips: Vec<IpAddr>,
        incarnation: Incarnation,
        now: Instant,
    ) -> Router {
        let endpoint = Endpoint::with_security(
            settings.transport,
            incarnation.epoch,
            settings.transport_security(),
            incarnation.seed,
            incarnation.wall_clock,
        );
        Router {
            endpoint,
            settings,
            me,
            host_ips,
            started: now,
            apps: Apps::default(),
            registry: registry::Registry::default(),
            calls: Calls::default(),
            invocations: Invocations::default(),
            deadlines: DeadlineHeap::default(),
            lookups: Lookups::new(incarnation.seed),
            peer_down: FxHashMap::default(),
            replies: HashSet::new(),
            literal_targets: Recent::new(RECENT_MAX),
            caller_texts: Recent::new(RECENT_MAX),
            counters: Counters::default(),
            denials: policy::Denials::default(),
            outputs: VecDeque::new(),
            shutdown: Shutdown::Running,
            last_sweep: None,
            monitors: monitor::Monitors::default(),
            served: trace::Served::default(),
        }
    }

    // ------------------------------------------------------------- inputs

    /// A datagram arrived from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if self.endpoint.peer_count() >= self.settings.transport.peers_max {
            self.sweep_idle_peers(now);
        }
        self.endpoint.handle_datagram(now, from, bytes);
        self.drain_events(now);
    }

    /// A datagram was too large for the receive buffer and may have been
    /// truncated by the kernel: it is not trusted, only counted.
    pub fn handle_oversize_datagram(&mut self) {
        self.counters.oversize_datagrams += 1;
    }

    /// The shell dropped a datagram because its send backlog was full; the
    /// transport retransmits it as if lost.
    pub fn handle_transmit_dropped(&mut self) {
        self.counters.dropped_transmits += 1;
    }

    /// An app connected. Beyond `connections_max` it is told and closed.
    pub fn handle_conn_opened(&mut self, conn: ConnId, cred: PeerCred) {
        let max = self.settings.limits.connections_max;
        if self.apps.len() >= max {
            warn!(
                conn = %conn, pid = cred.pid, uid = cred.uid, gid = cred.gid,
                "connection refused: connections_max reached"
            );
            self.outputs.push_back(Output::Frame(
                conn,
                DaemonMsg::Fatal {
                    code: ErrorCode::Overloaded,
                    message: format!("too many connections (limit {max})"),
                },
            ));
            self.outputs.push_back(Output::Close(conn));
            return;
        }
        self.apps.open(conn, cred);
    }

    /// A whole frame arrived from an app.
    pub fn handle_client_msg(&mut self, now: Instant, conn: ConnId, msg: ClientMsg) {
        if self.apps.get(conn).is_none() {
            return;
        }
        self.on_client_msg(now, conn, msg);
        self.drain_events(now);
    }

    /// An app sent bytes that are not a frame: tell it what, then close it.
    pub fn handle_bad_frame(&mut self, now: Instant, conn: ConnId, error: &FrameError) {
        self.fatal(now, conn, error.code(), error.to_string());
    }

    /// An app's connection ended (end of stream, a socket error, or the
    /// shell closed a slow reader).
    pub fn handle_conn_closed(&mut self, now: Instant, conn: ConnId) {
        self.app_gone(now, conn);
        self.drain_events(now);
    }

    /// The resolver answered a [`LookupRequest`].
    pub fn handle_lookup(&mut self, now: Instant, answer: LookupAnswer) {
        self.on_lookup(now, answer);
        self.drain_events(now);
    }

    /// Time passed: run every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.drain_events(now);
        self.sweep_idle_peers(now);
        self.expire(now);
        self.registry.expire(now);
        self.advance_shutdown(now);
        self.drain_events(now);
    }

    /// Stop taking new work; answer what is pending within the grace period
    /// (`shutdown_grace`), then finish once the peers have acknowledged the
    /// last replies. The shell keeps running until [`Router::is_finished`].
    pub fn begin_shutdown(&mut self, now: Instant) {
        if self.shutdown != Shutdown::Running {
            return;
        }
        info!("shutting down: no new calls, answering pending ones");
        // The next handle_timeout advances it: finishing here, before the
        // shell has read what this wakeup brought, could exit with a reply
        // to a request read in the same turn never sent.
        self.shutdown = Shutdown::Draining {
            until: now + self.settings.limits.shutdown_grace,
        };
    }

    /// The buffer of a datagram the shell has sent, for the transport's next
    /// bundle (see `Endpoint::recycle`).
    pub fn recycle_transmit(&mut self, bytes: Vec<u8>) {
        self.endpoint.recycle(bytes);
    }

    /// The transport takes its reassembly buffers from `buffers` and gives
    /// sent messages' buffers back to it (the shell: the process's pool).
    pub fn set_transport_buffers(&mut self, buffers: Option<Arc<dyn Buffers>>) {
        self.endpoint.set_buffers(buffers);
    }

    /// New settings (already validated). The listen address, the socket,
    /// the transport settings and the private key apply at restart only;
    /// the trusted peers at once (sessions of removed peers end).
    pub fn reload(&mut self, now: Instant, mut new: Settings) {
        if new.listen != self.settings.listen || new.socket != self.settings.socket {
            warn!("listen and socket changes take effect at restart");
        }
        if new.transport != self.settings.transport {
            warn!("transport settings take effect at restart");
        }
        let dns = |s: &Settings| (s.dns.servers.clone(), s.dns.timeout, s.dns.attempts);
        if dns(&new) != dns(&self.settings) {
            warn!("dns servers, timeout_ms and attempts take effect at restart");
        }
        let key = |s: &Settings| s.security.key.as_ref().map(|k| k.key.public());
        if key(&new) != key(&self.settings) {
            warn!("a new private key (or none) takes effect at restart");
        }
        new.listen = self.settings.listen;
        new.socket = self.settings.socket.clone();
        new.transport = self.settings.transport;
        new.security = self.settings.security.clone();
        self.endpoint.set_peers(now, new.peer_keys());
        // The channels of removed peers failed what they held: their calls
        // end now, before any new call can be sent to a new channel at the
        // same address (a peer's calls share one hold, see `calls`).
        self.drain_events(now);
        info!(
            names = new.names.len(),
            peers = new.peers.len(),
            "settings reloaded"
        );
        self.settings = new;
    }

    // ------------------------------------------------------------ outputs

    /// The next datagram to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        loop {
            if let Some(t) = self.endpoint.poll_transmit(now) {
                return Some(t);
            }
            if !self.drain_events(now) {
                return None;
            }
        }
    }

    /// The next frame, close or lookup for the shell.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`Router::handle_timeout`] next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut t = self.endpoint.poll_timeout();
        let d = self
            .deadlines
            .next(still_armed(&self.calls, &self.invocations));
        t = earliest(t, d);
        match self.shutdown {
            Shutdown::Draining { until } | Shutdown::Lingering { until } => {
                earliest(t, Some(until))
            }
            Shutdown::Finished => None,
            Shutdown::Running => t,
        }
    }

    /// True once a shutdown has answered everything and flushed its last
    /// replies: the shell may exit.
    pub fn is_finished(&self) -> bool {
        self.shutdown == Shutdown::Finished
    }

    /// True once a shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown != Shutdown::Running
    }

    /// The transport epoch of this incarnation.
    pub fn epoch(&self) -> u64 {
        self.endpoint.epoch()
    }

    /// This daemon's public key; None in plaintext.
    pub fn public_key(&self) -> Option<PublicKey> {
        self.endpoint.public_key()
    }

    /// The UDP address this router answers for.
    pub fn local_addr(&self) -> SocketAddr {
        self.me
    }

    /// Current settings (after reloads).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    // ---------------------------------------------------- mediation

    /// Serve a call to this daemon's own address with no UDP.
    fn serve_local(
        &mut self,
        now: Instant,
        call: CallId,
        function: &str,
        args: Payload,
        deadline: Instant,
    ) {
        let origin = Origin::Local { call };
        let traced = self.call_traced(call);
        self.served_received(now, origin, function, args.len(), traced);
        self.serve(now, origin, function, args, deadline);
    }

    /// A local call ended (answered, expired or abandoned): withdraw the
    /// invocation serving it, if it still runs.
    fn local_call_ended(&mut self, call: CallId) {
        self.withdraw_origin(Origin::Local { call });
    }

    /// Deliver a result to whoever asked: a peer daemon or a local call.
    fn answer(&mut self, now: Instant, origin: Origin, result: Result<Vec<u8>, Failure>) {
        let size = result.as_ref().map(Vec::len).map_err(|f| f.code.as_str());
        let serving = self.served_ended(Some(now), origin, size);
        match origin {
            Origin::Local { call } => {
                self.watch_serving(call, serving);
                self.finish_call(now, call, result)
            }
            Origin::Remote { peer, call } => {
                let outcome = match result {
                    Ok(b) => RemoteOutcome::Ok(b),
                    Err(f) => RemoteOutcome::Err {
                        code: f.code,
                        message: f.message,
                    },
                };
                let mut env = Envelope::Reply {
                    call_id: call.0,
                    outcome,
                    trace: serving,
                };
                // A large result goes to the transport as it is, not copied.
                let payload = env.take_outgoing();
                match self.endpoint.send(now, peer, payload) {
                    Ok(msg) => {
                        self.replies.insert(SentReply { peer, msg });
                    }
                    // The caller's deadline will fire; nothing else can tell it.
                    Err(e) => warn!(%peer, error = %e, "cannot send a reply"),
                }
                if let Envelope::Reply { outcome, .. } = &env {
                    let code = match outcome {
                        RemoteOutcome::Ok(_) => "ok",
                        RemoteOutcome::Err { code, .. } => code.as_str(),
                    };
                    debug!(call = %self.origin_tag(origin), %peer, outcome = code, "reply sent");
                }
            }
        }
    }

    // ---------------------------------------------------- helpers

    /// Queue a frame for an app.
    fn frame(&mut self, conn: ConnId, msg: DaemonMsg) {
        self.outputs.push_back(Output::Frame(conn, msg));
    }

    /// Tell the app what it did wrong, then close its connection only.
    fn fatal(&mut self, now: Instant, conn: ConnId, code: ErrorCode, message: String) {
        if self.apps.get(conn).is_none() {
            return;
        }
        debug!(conn = %conn, %message, "closing connection after protocol violation");
        self.frame(conn, DaemonMsg::Fatal { code, message });
        self.outputs.push_back(Output::Close(conn));
        self.app_gone(now, conn);
    }

    /// Forget an app: its names, its invocations (their callers get
    /// `server_app_gone`) and its calls (cancelled at the serving side).
    fn app_gone(&mut self, now: Instant, conn: ConnId) {
        self.monitors.remove(conn);
        let Some(app) = self.apps.close(conn) else {
            return;
        };
        let (grace, cap) = (
            self.settings.limits.name_grace,
            self.settings.limits.functions_max,
        );
        for f in &app.functions {
            self.registry.release(f, app.cred.uid, now, grace, cap);
        }
        for inv in app.invocations {
            if let Some(i) = self.take_invocation(inv) {
                self.answer(
                    now,
                    i.origin,
                    Err(Failure::new(
                        ErrorCode::ServerAppGone,
                        "the serving app disconnected",
                    )),
                );
            }
        }
        for call in app.calls {
            self.abandon_call(now, call);
        }
    }

    /// Handle every transport event; true if there was any.
    fn drain_events(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(ev) = self.endpoint.poll_event() {
            any = true;
            self.on_transport_event(now, ev.peer, ev.kind);
        }
        any
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
