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

use super::crypto::{self, Rng};
use super::keys::{PeerKey, PrivateKey, PublicKey};
use super::wire::{self, Outer, TAG_LEN};
use crate::config::Config;
use crate::peer_map::PeerMap;

mod handshake;
mod peer;

use peer::{retry_delay, PeerSession};

/// Inner datagrams (bundles) held per peer while its session is being set up; older
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
    /// By address; the map remembers the address it hashed last, as a run of
    /// seals and opens is for one peer.
    sessions: PeerMap<PeerSession>,
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
            sessions: PeerMap::default(),
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
            .map(|(a, _)| a)
            .collect();
        for a in &gone {
            self.sessions.remove(a);
        }
        self.timestamps
            .retain(|k, _| self.peers.iter().any(|p| p.public == *k));
        gone
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
        // The parser keeps a tag's room; a shorter datagram opens to nothing.
        let (ciphertext, tag) = sealed.split_at(sealed.len().checked_sub(TAG_LEN)?);
        let tag: &[u8; TAG_LEN] = tag.try_into().ok()?;
        let mut plain = ciphertext.to_vec();
        if kp.keys.recv.open(counter, header, &mut plain, tag).is_err() {
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

    /// Seal a bundle (the inner datagram) for `to`, or hold it until a
    /// session is up.
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
            .get_or_insert_with(to, || PeerSession::new(peer));
        let usable = s.current.as_ref().is_some_and(|k| {
            now.saturating_duration_since(k.born) < cfg.reject_after
                && k.send_counter < cfg.reject_after_datagrams
        });
        // Only a datagram the peer answers starts the silence that suggests
        // it lost the session: an acknowledgement alone elicits nothing.
        let elicits = !crate::wire::bundle::is_ack_only(inner);
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

    /// Schedules `a`'s next deadline, unless a timer due sooner is scheduled already: that
    /// one finds nothing to do when it fires and schedules the next then. Each datagram
    /// sealed after a reply moves the silence deadline later (`unanswered_since` starts
    /// again): keeping the earlier timer spares a heap entry per datagram for one wake-up
    /// per `stale_after`.
    fn reschedule(&mut self, a: SocketAddr) {
        let cfg = self.cfg;
        if let Some(s) = self.sessions.get_mut(&a) {
            let t = s.deadline(&cfg);
            let keep = match (s.scheduled, t) {
                (Some(due), Some(t)) => due <= t,
                (due, t) => due == t,
            };
            if !keep {
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
                .filter_map(|(a, s)| s.scheduled.map(|t| Reverse((t, a))))
                .collect();
        }
    }
}
