//! The sessions of one endpoint: Noise IK handshakes (with retries, cookies
//! and rate limits), the keypairs they yield, sealing and opening datagrams.
//!
//! Per peer address there are up to three keypairs, as in WireGuard:
//! `current` (used to send), `previous` (still opened after a rekey, for
//! datagrams in flight) and `next` (a responder's keypair, used to send only
//! once the initiator has proven it holds it by sending on it). Input that
//! does not authenticate is dropped and counted: no reply, no state. The
//! only answers to unauthenticated input are a response (to a valid
//! initiation from a configured peer) and a cookie reply (under load), and
//! both are smaller than the initiation that caused them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, Nonce};
use chacha20poly1305::ChaCha20Poly1305;

use super::crypto::{self, Initiator, Rng, SessionKeys, INIT_PAYLOAD_LEN};
use super::keys::{PeerKey, PrivateKey, PublicKey};
use super::replay::ReplayWindow;
use super::wire::{self, Outer, MAC_LEN, TAG_LEN, TRANSPORT_HEADER_LEN};
use crate::config::Config;

/// Inner datagrams held per peer while its session is being set up; older
/// ones are dropped first (the channel retransmits what matters).
pub const QUEUED_MAX: usize = 64;
/// Forged responses (right index, valid mac1, bad Noise) after which an
/// initiation stops rebuilding its state and waits for its next retry.
pub const FORGED_RESPONSES_MAX: u32 = 4;
/// How long a cookie (ours or a responder's) stays valid.
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(120);
/// Source addresses whose handshake counts are remembered per second;
/// beyond it, new sources are rate-limited until the second rolls over.
pub const SOURCES_MAX: usize = 4096;

/// Where an inner datagram's kind is, and the kind of an acknowledgement
/// alone (see `wire::Kind`).
const INNER_KIND_AT: usize = 3;
const INNER_KIND_ACK: u8 = 2;

/// Counters of the authenticated layer: every drop has a reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecurityStats {
    /// Plaintext or unrecognised datagrams while keys are on.
    pub not_authenticated: u64,
    /// Authenticated-mode datagrams with bad framing.
    pub malformed: u64,
    /// Handshake messages whose mac1 did not match (not meant for us).
    pub bad_mac: u64,
    /// Initiations that failed Noise (corrupt, or for another key).
    pub handshake_failed: u64,
    /// Authenticated initiations from a key that is not a configured peer.
    pub unknown_key: u64,
    /// Initiations from a configured peer at an address it may not use.
    pub address_not_allowed: u64,
    /// Initiations older than one already accepted from the same peer.
    pub handshake_replayed: u64,
    /// Initiations over the per-source rate.
    pub rate_limited: u64,
    /// Cookie replies sent (under load, instead of doing the handshake).
    pub cookies_sent: u64,
    /// Responses, cookies or data for no session we have.
    pub unknown_session: u64,
    /// Data that failed to decrypt (forged or corrupt).
    pub auth_failed: u64,
    /// Data whose counter was already seen or is too old (replays).
    pub replayed: u64,
    /// Handshakes completed (either side).
    pub handshakes: u64,
    /// Handshakes given up after `peer_timeout` without a response.
    pub handshake_timeouts: u64,
    /// Datagrams dropped from a full pre-session queue.
    pub queue_dropped: u64,
}

/// What an input datagram turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// An authentic inner datagram for the channel (empty: a keepalive).
    Inner(Vec<u8>),
    /// Consumed by the handshake (answers, if any, are in the out queue).
    Consumed,
}

/// Why `seal` could not hand a datagram back at once.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sealed {
    /// Ready for the wire.
    Ready(Vec<u8>),
    /// Held until the session is up.
    Queued,
}

struct Keypair {
    keys: SessionKeys,
    local: u32,
    remote: u32,
    send_counter: u64,
    replay: ReplayWindow,
    born: Instant,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("send_counter", &self.send_counter)
            .finish()
    }
}

fn nonce(counter: u64) -> Nonce<ChaCha20Poly1305> {
    let mut n = Nonce::<ChaCha20Poly1305>::default();
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

impl Keypair {
    fn new(keys: SessionKeys, local: u32, remote: u32, now: Instant) -> Self {
        Keypair {
            keys,
            local,
            remote,
            send_counter: 0,
            replay: ReplayWindow::new(),
            born: now,
        }
    }

    fn seal(&mut self, inner: &[u8]) -> Vec<u8> {
        let counter = self.send_counter;
        self.send_counter += 1;
        let header = wire::transport_header(self.remote, counter);
        let mut out = Vec::with_capacity(TRANSPORT_HEADER_LEN + inner.len() + TAG_LEN);
        out.extend_from_slice(&header);
        out.extend_from_slice(inner);
        let tag = self
            .keys
            .send
            .encrypt_in_place_detached(&nonce(counter), &header, &mut out[TRANSPORT_HEADER_LEN..])
            .expect("a datagram is far below ChaCha20-Poly1305's message limit");
        out.extend_from_slice(&tag);
        out
    }
}

/// An initiation in flight.
#[derive(Debug)]
struct Pending {
    /// `None` after forged responses used up `FORGED_RESPONSES_MAX`
    /// rebuilds: the next retry starts afresh.
    initiator: Option<Initiator>,
    /// What made the initiator, to rebuild it after a forged response
    /// consumed it (snow's handshake state cannot be copied).
    seed: [u8; 32],
    payload: [u8; INIT_PAYLOAD_LEN],
    rebuilds: u32,
    index: u32,
    /// When the latest attempt went out, and which attempt it was.
    sent_at: Instant,
    attempt: u32,
    started: Instant,
    /// The mac1 of the latest attempt (a cookie reply is bound to it).
    mac1: [u8; MAC_LEN],
    cookie_taken: bool,
}

/// Everything about one peer address.
#[derive(Debug)]
struct PeerSession {
    /// The configured peer's key (authenticated, or chosen by us).
    peer: PublicKey,
    current: Option<Keypair>,
    previous: Option<Keypair>,
    next: Option<Keypair>,
    pending: Option<Pending>,
    /// A cookie from the responder, with when it came.
    cookie: Option<([u8; MAC_LEN], Instant)>,
    queued: VecDeque<Vec<u8>>,
    /// The mac1 of the last initiation we answered, and our response: a
    /// duplicate of it gets the same response again.
    answered: Option<([u8; MAC_LEN], Vec<u8>)>,
    /// When an authentic datagram last came.
    last_heard: Option<Instant>,
    /// The first send since then: a peer silent since long after we spoke
    /// may have restarted and lost the session, so we start a new one.
    unanswered_since: Option<Instant>,
    /// The round trip of our last completed initiation.
    handshake_rtt: Option<Duration>,
    scheduled: Option<Instant>,
}

impl PeerSession {
    fn new(peer: PublicKey) -> Self {
        PeerSession {
            peer,
            current: None,
            previous: None,
            next: None,
            pending: None,
            cookie: None,
            queued: VecDeque::new(),
            answered: None,
            last_heard: None,
            unanswered_since: None,
            handshake_rtt: None,
            scheduled: None,
        }
    }

    /// How long the peer may stay silent after we sent it something it
    /// answers before we suspect it restarted and lost the session: four
    /// handshake round trips (the initial RTO until one is measured), at
    /// least two initial RTOs, at most a quarter of the peer timeout. A
    /// wrong suspicion costs one handshake; the old session keeps working.
    fn stale_after(&self, cfg: &Config) -> Duration {
        let rtt = self.handshake_rtt.unwrap_or(cfg.rto_initial);
        rtt.saturating_mul(4)
            .max(cfg.rto_initial.saturating_mul(2))
            .min(cfg.peer_timeout / 4)
    }

    /// The peer has been silent too long after we spoke (see `stale_after`).
    fn stale(&self, cfg: &Config, now: Instant) -> bool {
        self.unanswered_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.stale_after(cfg))
    }

    fn keypairs_mut(&mut self) -> impl Iterator<Item = &mut Option<Keypair>> {
        [&mut self.current, &mut self.previous, &mut self.next].into_iter()
    }

    /// The next moment something is due: a handshake retry, a suspected
    /// restart of the peer, or a keypair's expiry.
    fn deadline(&self, cfg: &Config) -> Option<Instant> {
        let retry = match &self.pending {
            Some(p) => Some(p.sent_at + retry_delay(cfg, p.attempt)),
            None => self
                .unanswered_since
                .filter(|_| self.current.is_some())
                .map(|t| t + self.stale_after(cfg)),
        };
        let expiry = [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
            .map(|k| k.born + cfg.reject_after)
            .min();
        retry.into_iter().chain(expiry).min()
    }
}

fn retry_delay(cfg: &Config, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    cfg.rto_initial.saturating_mul(factor).min(cfg.rto_max)
}

/// Constant-time equality of MACs.
fn same(a: &[u8; MAC_LEN], b: &[u8; MAC_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn addr_bytes(a: SocketAddr) -> Vec<u8> {
    let mut b = match a.ip().to_canonical() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    b.extend_from_slice(&a.port().to_be_bytes());
    b
}

/// Handshake counts of the current second: daemon-wide (the load) and per
/// source IP (the rate limit).
#[derive(Debug)]
struct Limiter {
    second: Option<Instant>,
    total: u32,
    per_source: HashMap<IpAddr, u32>,
}

impl Limiter {
    fn roll(&mut self, now: Instant) {
        if self
            .second
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1))
        {
            self.second = Some(now);
            self.total = 0;
            self.per_source.clear();
        }
    }
}

/// The authenticated layer of an endpoint.
#[derive(Debug)]
pub(crate) struct Sessions {
    cfg: Config,
    local: PrivateKey,
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    peers: Vec<PeerKey>,
    rng: Rng,
    /// Wall-clock time at the first input, and that input's instant: the
    /// handshake timestamps grow from them.
    wall_clock: Duration,
    born: Option<Instant>,
    sessions: HashMap<SocketAddr, PeerSession>,
    /// The greatest handshake timestamp accepted from each peer, and the
    /// mac1 of that initiation.
    timestamps: HashMap<PublicKey, u64>,
    cookie_secret: ([u8; 32], Option<Instant>),
    limiter: Limiter,
    timers: BinaryHeap<Reverse<(Instant, SocketAddr)>>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Addresses whose session was just set up (the endpoint creates or
    /// wakes their channel).
    stats: SecurityStats,
}

impl Sessions {
    pub(crate) fn new(
        cfg: Config,
        local: PrivateKey,
        peers: Vec<PeerKey>,
        seed: [u8; 32],
        wall_clock: Duration,
    ) -> Self {
        let public = local.public();
        let mut rng = Rng::from_seed(seed);
        Sessions {
            cfg,
            mac1_key: crypto::mac1_key(&public),
            cookie_key: crypto::cookie_key(&public),
            local,
            peers,
            cookie_secret: (rng.bytes(), None),
            rng,
            wall_clock,
            born: None,
            sessions: HashMap::new(),
            timestamps: HashMap::new(),
            limiter: Limiter {
                second: None,
                total: 0,
                per_source: HashMap::new(),
            },
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            stats: SecurityStats::default(),
        }
    }

    pub(crate) fn public(&self) -> PublicKey {
        self.local.public()
    }

    pub(crate) fn stats(&self) -> SecurityStats {
        self.stats
    }

    /// A datagram for the wire produced by the handshake.
    pub(crate) fn poll_out(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }

    /// The configured peer (by key) authenticated at `addr`, if any.
    pub(crate) fn peer_at(&self, addr: SocketAddr) -> Option<&PeerKey> {
        let s = self.sessions.get(&addr)?;
        if s.current.is_none() && s.next.is_none() && s.previous.is_none() {
            return None;
        }
        self.peers.iter().find(|p| p.public == s.peer)
    }

    /// The age of the session in use with `addr`.
    pub(crate) fn session_age(&self, now: Instant, addr: SocketAddr) -> Option<Duration> {
        let s = self.sessions.get(&addr)?;
        let k = s.current.as_ref().or(s.next.as_ref())?;
        Some(now.saturating_duration_since(k.born))
    }

    /// The configured peer to open a session with at `addr`.
    fn configured_at(&self, addr: SocketAddr) -> Option<PublicKey> {
        if let Some(s) = self.sessions.get(&addr) {
            return Some(s.peer);
        }
        self.peers
            .iter()
            .find(|p| p.addresses.contains(&addr))
            .map(|p| p.public)
    }

    /// Whether a message to `addr` can be sent (now or after a handshake).
    pub(crate) fn can_reach(&self, addr: SocketAddr) -> bool {
        self.configured_at(addr).is_some()
    }

    /// Drop the datagrams held for `addr`'s handshake (counted).
    pub(crate) fn drop_queued(&mut self, addr: SocketAddr) {
        if let Some(s) = self.sessions.get_mut(&addr) {
            self.stats.queue_dropped += s.queued.len() as u64;
            s.queued.clear();
        }
    }

    /// Forget `addr` entirely (its channel was evicted): the next datagram
    /// either way needs a new handshake.
    pub(crate) fn forget(&mut self, addr: SocketAddr) {
        self.sessions.remove(&addr);
    }

    /// Replace the trusted peers. Returns the addresses whose sessions
    /// ended because their peer is gone.
    pub(crate) fn set_peers(&mut self, peers: Vec<PeerKey>) -> Vec<SocketAddr> {
        self.peers = peers;
        let gone: Vec<SocketAddr> = self
            .sessions
            .iter()
            .filter(|(_, s)| !self.peers.iter().any(|p| p.public == s.peer))
            .map(|(a, _)| *a)
            .collect();
        for a in &gone {
            self.sessions.remove(a);
        }
        self.timestamps
            .retain(|k, _| self.peers.iter().any(|p| p.public == *k));
        gone
    }

    fn timestamp(&mut self, now: Instant) -> u64 {
        let born = *self.born.get_or_insert(now);
        let t = self.wall_clock + now.saturating_duration_since(born);
        u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Our cookie for `addr` (the secret rotates every `COOKIE_LIFETIME`).
    fn cookie_for(&mut self, now: Instant, addr: SocketAddr) -> [u8; MAC_LEN] {
        let fresh = self
            .cookie_secret
            .1
            .is_some_and(|t| now.saturating_duration_since(t) < COOKIE_LIFETIME);
        if !fresh {
            self.cookie_secret = (self.rng.bytes(), Some(now));
        }
        crypto::mac(&self.cookie_secret.0, &[&addr_bytes(addr)])
    }

    /// Open a received datagram. `epoch` is ours, for handshake payloads.
    pub(crate) fn open(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        epoch: u64,
    ) -> Option<Opened> {
        let outer = match Outer::parse(bytes) {
            Ok(o) => o,
            Err(wire::OuterError::BadMagic) => {
                self.stats.not_authenticated += 1;
                return None;
            }
            Err(_) => {
                self.stats.malformed += 1;
                return None;
            }
        };
        match outer {
            Outer::Init {
                sender,
                noise,
                mac1_covered,
                mac1,
                mac2_covered,
                mac2,
            } => {
                self.on_init(
                    now,
                    from,
                    sender,
                    noise,
                    (mac1_covered, mac1),
                    (mac2_covered, mac2),
                    epoch,
                );
                Some(Opened::Consumed)
            }
            Outer::Resp {
                sender,
                receiver,
                noise,
                mac1_covered,
                mac1,
            } => {
                self.on_resp(now, from, sender, receiver, noise, mac1_covered, mac1);
                Some(Opened::Consumed)
            }
            Outer::Cookie {
                receiver,
                nonce,
                sealed,
            } => {
                self.on_cookie(now, from, receiver, nonce, sealed, epoch);
                Some(Opened::Consumed)
            }
            Outer::Transport {
                receiver,
                counter,
                header,
                sealed,
            } => self
                .on_transport(now, from, receiver, counter, header, sealed)
                .map(Opened::Inner),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_init(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: u32,
        noise: &[u8],
        (mac1_covered, mac1): (&[u8], &[u8; MAC_LEN]),
        (mac2_covered, mac2): (&[u8], &[u8; MAC_LEN]),
        epoch: u64,
    ) {
        // The cheap check first: only someone who knows our public key can
        // make us do any Diffie-Hellman work.
        if !same(&crypto::mac(&self.mac1_key, &[mac1_covered]), mac1) {
            self.stats.bad_mac += 1;
            return;
        }
        // A duplicate of the initiation we last answered from this address
        // gets the same response (the first was lost), not a new session.
        if let Some((m, resp)) = self.sessions.get(&from).and_then(|s| s.answered.as_ref()) {
            if same(m, mac1) {
                self.out.push_back((from, resp.clone()));
                return;
            }
        }
        self.limiter.roll(now);
        if self.limiter.total >= self.cfg.handshake_load_max {
            // Under load: only initiators that proved their address (by
            // echoing our cookie in mac2) get any work done.
            let cookie = self.cookie_for(now, from);
            if !same(&crypto::mac(&cookie, &[mac2_covered]), mac2) {
                let nonce: [u8; 24] = self.rng.bytes();
                let sealed = crypto::seal_cookie(&self.cookie_key, &nonce, &cookie, mac1);
                self.out
                    .push_back((from, wire::cookie_reply(sender, &nonce, &sealed)));
                self.stats.cookies_sent += 1;
                return;
            }
        }
        let per_source = self.limiter.per_source.len();
        let count = match self.limiter.per_source.get_mut(&from.ip()) {
            Some(c) => c,
            None if per_source >= SOURCES_MAX => {
                self.stats.rate_limited += 1;
                return;
            }
            None => self.limiter.per_source.entry(from.ip()).or_insert(0),
        };
        if *count >= self.cfg.handshake_rate_per_source {
            self.stats.rate_limited += 1;
            return;
        }
        *count += 1;
        self.limiter.total += 1;
        let Ok(init) = crypto::read_initiation(&mut self.rng, &self.local, noise) else {
            self.stats.handshake_failed += 1;
            return;
        };
        let Some(peer) = self.peers.iter().find(|p| p.public == init.remote) else {
            self.stats.unknown_key += 1;
            return;
        };
        if !peer.addresses.is_empty()
            && !peer
                .addresses
                .iter()
                .any(|a| a.ip().to_canonical() == from.ip().to_canonical())
        {
            self.stats.address_not_allowed += 1;
            return;
        }
        let mut ts = [0; 8];
        ts.copy_from_slice(&init.payload[8..16]);
        let ts = u64::from_be_bytes(ts);
        if self.timestamps.get(&init.remote).is_some_and(|&t| ts <= t) {
            self.stats.handshake_replayed += 1;
            return;
        }
        if !self.sessions.contains_key(&from) && self.sessions.len() >= self.cfg.peers_max {
            // Every entry belongs to an authenticated, configured peer; the
            // owner evicts idle ones.
            self.stats.rate_limited += 1;
            return;
        }
        let remote = init.remote;
        let Ok((msg, keys)) = init.respond(&epoch.to_be_bytes()) else {
            self.stats.handshake_failed += 1;
            return;
        };
        self.timestamps.insert(remote, ts);
        let local_index = self.rng.u32();
        let mut resp = wire::resp_body(local_index, sender, &msg);
        let m1 = crypto::mac(&crypto::mac1_key(&remote), &[&resp]);
        resp.extend_from_slice(&m1);
        resp.extend_from_slice(&[0; MAC_LEN]);
        let s = self
            .sessions
            .entry(from)
            .or_insert_with(|| PeerSession::new(remote));
        if s.peer != remote {
            // Another configured peer now answers at this address.
            *s = PeerSession::new(remote);
        }
        s.next = Some(Keypair::new(keys, local_index, sender, now));
        s.answered = Some((*mac1, resp.clone()));
        self.out.push_back((from, resp));
        self.reschedule(from);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_resp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender: u32,
        receiver: u32,
        noise: &[u8],
        mac1_covered: &[u8],
        mac1: &[u8; MAC_LEN],
    ) {
        if !same(&crypto::mac(&self.mac1_key, &[mac1_covered]), mac1) {
            self.stats.bad_mac += 1;
            return;
        }
        let Some(s) = self.sessions.get_mut(&from) else {
            self.stats.unknown_session += 1;
            return;
        };
        if s.pending.as_ref().is_none_or(|p| p.index != receiver) {
            self.stats.unknown_session += 1;
            return;
        }
        let Some(pending) = s.pending.as_mut() else {
            return;
        };
        let Some(initiator) = pending.initiator.take() else {
            self.stats.unknown_session += 1;
            return;
        };
        let index = pending.index;
        let Ok((_epoch, keys)) = initiator.finish(noise) else {
            // Not the responder's (forged or corrupt): rebuild the
            // initiator the forgery consumed and keep waiting for the real
            // response (a few times; then the next retry starts afresh).
            self.stats.handshake_failed += 1;
            if pending.rebuilds < FORGED_RESPONSES_MAX {
                pending.rebuilds += 1;
                pending.initiator =
                    crypto::initiate(pending.seed, &self.local, &s.peer, &pending.payload)
                        .ok()
                        .map(|(i, _)| i);
            }
            return;
        };
        s.handshake_rtt = Some(now.saturating_duration_since(pending.sent_at));
        s.pending = None;
        s.previous = s.current.take();
        s.current = Some(Keypair::new(keys, index, sender, now));
        s.last_heard = Some(now);
        s.unanswered_since = None;
        self.stats.handshakes += 1;
        // Flush what waited; with nothing waiting, a keepalive lets the
        // responder confirm the session.
        let queued: Vec<Vec<u8>> = s.queued.drain(..).collect();
        let kp = s.current.as_mut().expect("just set");
        if queued.is_empty() {
            let d = kp.seal(&[]);
            self.out.push_back((from, d));
        }
        for q in queued {
            let d = kp.seal(&q);
            self.out.push_back((from, d));
        }
        self.reschedule(from);
    }

    fn on_cookie(
        &mut self,
        now: Instant,
        from: SocketAddr,
        receiver: u32,
        nonce: &[u8; 24],
        sealed: &[u8],
        epoch: u64,
    ) {
        let Some(s) = self.sessions.get_mut(&from) else {
            self.stats.unknown_session += 1;
            return;
        };
        let Some(p) = s
            .pending
            .as_mut()
            .filter(|p| p.index == receiver && !p.cookie_taken)
        else {
            self.stats.unknown_session += 1;
            return;
        };
        let key = crypto::cookie_key(&s.peer);
        let Some(cookie) = crypto::open_cookie(&key, nonce, sealed, &p.mac1) else {
            self.stats.auth_failed += 1;
            return;
        };
        p.cookie_taken = true;
        s.cookie = Some((cookie, now));
        // Retry at once with the cookie in mac2.
        let attempt = p.attempt;
        let started = p.started;
        self.initiate(now, from, attempt + 1, started, epoch);
    }

    fn on_transport(
        &mut self,
        now: Instant,
        from: SocketAddr,
        receiver: u32,
        counter: u64,
        header: &[u8],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        let reject_after = self.cfg.reject_after;
        let Some(s) = self.sessions.get_mut(&from) else {
            self.stats.unknown_session += 1;
            return None;
        };
        let slot = s
            .keypairs_mut()
            .position(|k| k.as_ref().is_some_and(|k| k.local == receiver));
        let Some(slot) = slot else {
            self.stats.unknown_session += 1;
            return None;
        };
        let kp = s.keypairs_mut().nth(slot).and_then(|k| k.as_mut())?;
        if now.saturating_duration_since(kp.born) >= reject_after {
            self.stats.unknown_session += 1;
            return None;
        }
        if !kp.replay.check(counter) {
            self.stats.replayed += 1;
            return None;
        }
        let tag_at = sealed.len() - TAG_LEN;
        let mut plain = sealed[..tag_at].to_vec();
        let tag = chacha20poly1305::Tag::from_slice(&sealed[tag_at..]);
        if kp
            .keys
            .recv
            .decrypt_in_place_detached(&nonce(counter), header, &mut plain, tag)
            .is_err()
        {
            self.stats.auth_failed += 1;
            return None;
        }
        kp.replay.accept(counter);
        s.last_heard = Some(now);
        s.unanswered_since = None;
        if slot == 2 {
            // The initiator proved it holds the responder's keypair.
            s.previous = s.current.take();
            s.current = s.next.take();
            self.stats.handshakes += 1;
            let queued: Vec<Vec<u8>> = s.queued.drain(..).collect();
            if let Some(kp) = s.current.as_mut() {
                for q in queued {
                    let d = kp.seal(&q);
                    self.out.push_back((from, d));
                }
            }
            self.reschedule(from);
        }
        Some(plain)
    }

    /// Seal an inner datagram for `to`, or hold it until a session is up.
    /// `None`: no configured peer at `to` (the caller checked `can_reach`).
    pub(crate) fn seal(
        &mut self,
        now: Instant,
        to: SocketAddr,
        inner: &[u8],
        epoch: u64,
    ) -> Option<Sealed> {
        let peer = self.configured_at(to)?;
        let cfg = self.cfg;
        let s = self
            .sessions
            .entry(to)
            .or_insert_with(|| PeerSession::new(peer));
        let usable = s.current.as_ref().is_some_and(|k| {
            now.saturating_duration_since(k.born) < cfg.reject_after
                && k.send_counter < cfg.reject_after_datagrams
        });
        // Only a datagram the peer answers starts the silence that suggests
        // it lost the session: an acknowledgement alone elicits nothing.
        let elicits = inner.get(INNER_KIND_AT) != Some(&INNER_KIND_ACK);
        if s.unanswered_since.is_none() && elicits {
            s.unanswered_since = Some(now);
        }
        let stale = s.stale(&cfg, now);
        let wants_rekey = s.current.as_ref().is_some_and(|k| {
            now.saturating_duration_since(k.born) >= cfg.rekey_after
                || k.send_counter >= cfg.rekey_after_datagrams
        });
        let start = s.pending.is_none() && (!usable || wants_rekey || stale);
        let sealed = if usable {
            let kp = s.current.as_mut().expect("usable");
            Sealed::Ready(kp.seal(inner))
        } else {
            if s.queued.len() >= QUEUED_MAX {
                s.queued.pop_front();
                self.stats.queue_dropped += 1;
            }
            s.queued.push_back(inner.to_vec());
            Sealed::Queued
        };
        if start {
            // A peer silent since long after we spoke may have restarted
            // and lost the session: a new handshake costs little.
            if let Some(s) = self.sessions.get_mut(&to) {
                s.unanswered_since = None;
            }
            self.initiate(now, to, 1, now, epoch);
        } else {
            self.reschedule(to);
        }
        Some(sealed)
    }

    fn initiate(
        &mut self,
        now: Instant,
        to: SocketAddr,
        attempt: u32,
        started: Instant,
        epoch: u64,
    ) {
        let ts = self.timestamp(now);
        let Some(s) = self.sessions.get(&to) else {
            return;
        };
        let peer = s.peer;
        let cookie = s
            .cookie
            .filter(|(_, t)| now.saturating_duration_since(*t) < COOKIE_LIFETIME)
            .map(|(c, _)| c);
        let mut payload = [0; INIT_PAYLOAD_LEN];
        payload[..8].copy_from_slice(&epoch.to_be_bytes());
        payload[8..].copy_from_slice(&ts.to_be_bytes());
        let seed = self.rng.bytes();
        let Ok((initiator, noise)) = crypto::initiate(seed, &self.local, &peer, &payload) else {
            return;
        };
        let index = self.rng.u32();
        let mut msg = wire::init_body(index, &noise);
        let mac1 = crypto::mac(&crypto::mac1_key(&peer), &[&msg]);
        msg.extend_from_slice(&mac1);
        let mac2 = cookie.map_or([0; MAC_LEN], |c| crypto::mac(&c, &[&msg]));
        msg.extend_from_slice(&mac2);
        let s = self.sessions.get_mut(&to).expect("checked above");
        s.pending = Some(Pending {
            initiator: Some(initiator),
            seed,
            payload,
            rebuilds: 0,
            index,
            sent_at: now,
            attempt,
            started,
            mac1,
            cookie_taken: false,
        });
        self.out.push_back((to, msg));
        self.reschedule(to);
    }

    /// When `handle_timeout` is next due.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(&Reverse((t, a))) = self.timers.peek() {
            match self.sessions.get(&a) {
                Some(s) if s.scheduled == Some(t) => return Some(t),
                _ => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    /// Retry handshakes and drop expired keypairs.
    pub(crate) fn handle_timeout(&mut self, now: Instant, epoch: u64) {
        let mut due = Vec::new();
        while let Some(&Reverse((t, a))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            due.push((t, a));
        }
        let cfg = self.cfg;
        for (t, a) in due {
            let Some(s) = self.sessions.get_mut(&a) else {
                continue;
            };
            if s.scheduled != Some(t) {
                continue;
            }
            s.scheduled = None;
            for k in s.keypairs_mut() {
                if k.as_ref()
                    .is_some_and(|k| now.saturating_duration_since(k.born) >= cfg.reject_after)
                {
                    *k = None;
                }
            }
            let retry = s.pending.as_ref().and_then(|p| {
                (now >= p.sent_at + retry_delay(&cfg, p.attempt)).then_some((p.attempt, p.started))
            });
            if s.pending.is_none() && s.current.is_some() && s.stale(&cfg, now) {
                // Silent since we spoke: it may have restarted.
                s.unanswered_since = None;
                self.initiate(now, a, 1, now, epoch);
            } else if let Some((attempt, started)) = retry {
                if now.saturating_duration_since(started) >= cfg.peer_timeout {
                    s.pending = None;
                    self.stats.handshake_timeouts += 1;
                    self.stats.queue_dropped += s.queued.len() as u64;
                    s.queued.clear();
                } else {
                    self.initiate(now, a, attempt + 1, started, epoch);
                }
            }
            self.reschedule(a);
        }
    }

    fn reschedule(&mut self, a: SocketAddr) {
        let cfg = self.cfg;
        if let Some(s) = self.sessions.get_mut(&a) {
            let t = s.deadline(&cfg);
            if t != s.scheduled {
                s.scheduled = t;
                if let Some(t) = t {
                    self.timers.push(Reverse((t, a)));
                }
            }
        }
        if self.timers.len() > 4 * self.sessions.len() + 64 {
            self.timers = self
                .sessions
                .iter()
                .filter_map(|(&a, s)| s.scheduled.map(|t| Reverse((t, a))))
                .collect();
        }
    }
}
