//! The endpoint: one local epoch, one channel per peer address.
//!
//! Every UDP datagram is a bundle (`wire::bundle`): the channel datagrams
//! queued for one peer when `poll_transmit` is drained leave together, as
//! many as fit in `HEADER_LEN + payload_max` bytes (the peer's payload_max,
//! see `Config::for_peer`: the size of one full
//! fragment's datagram, so bundling never needs a larger path MTU), and with
//! keys a bundle is sealed once. Nothing waits for company: a lone datagram
//! leaves at once, alone. On receipt a bundle is validated whole, then each
//! datagram is handed to the channel as if it had come alone.
//!
//! It parses every bundle once (counting what fails to parse, once per UDP
//! datagram), routes its datagrams to their peer's channel, and keeps a heap of the channels' deadlines so the
//! next timer is found in O(log peers), never by scanning every channel.
//! Call order: feed inputs (`handle_datagram`, `send`, `handle_timeout`), then
//! drain `poll_transmit` and `poll_event`, then sleep until `poll_timeout`.
//!
//! An input only marks its peer's channel as changed; the channel's events,
//! its place in the transmit queue and its timer are settled once, when the
//! owner next polls (any `poll_*` or `handle_timeout`), however many inputs
//! reached the channel meanwhile. A loop turn that carries many calls to one
//! peer then settles that peer once, not once per call.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::channel::{self, Buffers, Channel, MessageTrace, MsgId, Snapshot};
use crate::outgoing::Outgoing;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::config::Config;
use crate::peer_map::PeerMap;
use crate::secure::sessions::{Opened, Sessions};
use crate::secure::{PeerKey, PublicKey, Security, SecurityStats};
use crate::wire::{Bundle, DecodeError};

mod buffers;
mod inspect;
mod settle;
mod transmit;

/// A datagram to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub to: SocketAddr,
    /// The encoded datagram.
    pub bytes: Vec<u8>,
}

/// An event from a peer's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The peer it concerns.
    pub peer: SocketAddr,
    /// What happened.
    pub kind: channel::Event,
}

/// Why [`Endpoint::send`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SendError {
    /// Refused by the peer's channel.
    #[error(transparent)]
    Channel(#[from] channel::SendError),
    /// A new peer would exceed `Config::peers_max`.
    #[error("too many peers (limit {0})")]
    TooManyPeers(usize),
    /// With keys, the address belongs to no configured peer: there is no
    /// public key to open a session with.
    #[error("no configured peer has the address {0}: add it to [peers] with its public key")]
    NoKey(SocketAddr),
}

/// Endpoint-wide counters (per-peer ones live in each channel).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams that failed to parse for a reason other than the checksum.
    pub malformed: u64,
    /// Datagrams whose CRC32C did not match.
    pub corrupt: u64,
    /// Valid datagrams from new peers beyond `peers_max`.
    pub refused_peers: u64,
    /// Channels dropped with all their state after a quiet spell (see
    /// [`Endpoint::evict_idle`]).
    pub evicted_peers: u64,
    /// With keys: the authenticated layer's counters (zero in plaintext).
    pub security: SecurityStats,
    /// Bundles (UDP datagrams, sealed or not) built from the channels'
    /// datagrams; handshake messages are not counted.
    pub bundles_sent: u64,
    /// Channel datagrams those bundles carried: `/ bundles_sent` is the
    /// coalescing ratio.
    pub bundled_sent: u64,
    /// Bundles received that parsed (and, with keys, authenticated).
    pub bundles_received: u64,
    /// Channel datagrams those bundles carried.
    pub bundled_received: u64,
}

/// The transport endpoint of one daemon.
#[derive(Debug)]
pub struct Endpoint {
    cfg: Config,
    epoch: u64,
    channels: PeerMap<Slot>,
    /// (deadline, peer); entries are checked against the channel's current
    /// deadline when popped, so stale ones cost nothing but their pop.
    timers: BinaryHeap<Reverse<(Instant, SocketAddr)>>,
    /// Channels that may have datagrams or events to give.
    ready: VecDeque<SocketAddr>,
    /// Channels changed by an input since the last settling (each once, with
    /// `Slot::changed` set): see [`Endpoint::settle`].
    changed: Vec<SocketAddr>,
    events: VecDeque<Event>,
    stats: EndpointStats,
    /// Reassembly bytes charged across every channel (see
    /// `Config::reassembly_total_max`).
    reassembly_total: usize,
    /// With keys: the sessions every datagram goes through.
    sessions: Option<Sessions>,
    /// Evictions so far. A channel created after one takes a fresh epoch
    /// derived from it: the evicted peer may still hold the old channel's
    /// state, and a new channel speaking the old epoch with counters from 1
    /// would look to it like duplicates.
    generation: u64,
    /// Seeded by the owner: the channels' challenge seeds.
    rng: ChaCha20Rng,
    /// A datagram taken from the channel of the peer at the front of
    /// `ready` that did not fit in the bundle just built: it starts the
    /// next one.
    carry: Option<(SocketAddr, Vec<u8>)>,
    /// Given to every channel (see [`Channel::set_buffers`]).
    buffers: Option<Arc<dyn Buffers>>,
    /// Buffers of sent bundles given back by the owner ([`Endpoint::recycle`]),
    /// for the next bundles.
    spare: buffers::SpareBundles,
}

#[derive(Debug)]
struct Slot {
    channel: Channel,
    scheduled: Option<Instant>,
    in_ready: bool,
    /// In `Endpoint::changed`.
    changed: bool,
    /// When the peer was last heard from or sent to.
    active: Instant,
    /// UDP datagrams (bundles) sent to and accepted from the peer: what
    /// [`Endpoint::peer`] reports as `datagrams_sent`/`datagrams_received`.
    bundles_sent: u64,
    bundles_received: u64,
}

impl Slot {
    /// The channel's snapshot, with the datagram counts in UDP datagrams.
    fn snapshot(&self) -> Snapshot {
        let mut snap = self.channel.snapshot();
        snap.stats.datagrams_sent = self.bundles_sent;
        snap.stats.datagrams_received = self.bundles_received;
        snap
    }
}

/// SplitMix64's finaliser: a channel epoch from the endpoint's epoch and
/// the eviction generation (never zero).
fn mix(epoch: u64, generation: u64) -> u64 {
    if generation == 0 {
        return epoch;
    }
    let mut z = epoch ^ generation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).max(1)
}

impl Endpoint {
    /// An endpoint with the given epoch (random and non-zero, chosen by the
    /// caller: the core reads no OS randomness). `cfg` must be valid.
    pub fn new(cfg: Config, epoch: u64) -> Self {
        Self::with_security(cfg, epoch, Security::Plaintext, [0; 32], Duration::ZERO)
    }

    /// An endpoint protected by `security`. `seed` feeds every random choice
    /// the endpoint makes (ephemeral keys, session indices, cookies): the
    /// owner draws it from the OS. `wall_clock` is the time since the Unix
    /// epoch at construction: handshake timestamps grow from it, so that a
    /// restarted daemon's handshakes are newer than its last run's.
    pub fn with_security(
        cfg: Config,
        epoch: u64,
        security: Security,
        seed: [u8; 32],
        wall_clock: Duration,
    ) -> Self {
        debug_assert!(cfg.validate().is_ok());
        let mut rng = ChaCha20Rng::from_seed(seed);
        let sessions = match security {
            Security::Plaintext => None,
            Security::Keys { local, peers } => {
                let mut sessions_seed = [0; 32];
                rng.fill_bytes(&mut sessions_seed);
                Some(Sessions::new(cfg, local, peers, sessions_seed, wall_clock))
            }
        };
        Endpoint {
            cfg,
            epoch: epoch.max(1),
            channels: PeerMap::default(),
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            changed: Vec::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
            reassembly_total: 0,
            sessions,
            generation: 0,
            rng,
            carry: None,
            buffers: None,
            spare: buffers::SpareBundles::default(),
        }
    }

    /// Drop every channel that has been quiet for `idle` (nothing heard,
    /// nothing sent), has nothing outstanding to the peer (no message, no
    /// hold), and that `keep` does not claim, with all its memory (partial
    /// messages, duplicate state, the session). Returns the peers dropped.
    /// The owner calls it now and then; it keeps the peer table for peers
    /// in use, whatever strangers did.
    pub fn evict_idle(
        &mut self,
        now: Instant,
        idle: Duration,
        keep: impl Fn(SocketAddr) -> bool,
    ) -> Vec<SocketAddr> {
        self.settle();
        let gone: Vec<SocketAddr> = self
            .channels
            .iter()
            .filter(|(a, s)| {
                now.saturating_duration_since(s.active) >= idle
                    && s.channel.evictable()
                    && !self.ready.contains(a)
                    && !keep(*a)
            })
            .map(|(a, _)| a)
            .collect();
        for a in &gone {
            if let Some(slot) = self.channels.remove(a) {
                self.reassembly_total -= slot.channel.reassembly_bytes();
            }
            if let Some(s) = self.sessions.as_mut() {
                s.forget(*a);
            }
            self.stats.evicted_peers += 1;
            self.generation += 1;
        }
        gone
    }

    /// This daemon's public key, with keys.
    pub fn public_key(&self) -> Option<PublicKey> {
        self.sessions.as_ref().map(Sessions::public)
    }

    /// The configured name of the peer at `addr`, once a session with it is
    /// authenticated. `None` in plaintext mode (nothing is authenticated).
    pub fn peer_name(&self, addr: SocketAddr) -> Option<&str> {
        self.peer_key(addr).map(|p| p.name.as_str())
    }

    /// The configured peer authenticated at `addr` (with keys).
    pub fn peer_key(&self, addr: SocketAddr) -> Option<&PeerKey> {
        self.sessions.as_ref()?.peer_at(addr)
    }

    /// How old the session in use with `addr` is (with keys).
    pub fn session_age(&self, now: Instant, addr: SocketAddr) -> Option<Duration> {
        self.sessions.as_ref()?.session_age(now, addr)
    }

    /// Replace the trusted peers (a configuration reload). Sessions of
    /// removed peers end; their channels fail what is outstanding.
    pub fn set_peers(&mut self, now: Instant, peers: Vec<PeerKey>) {
        if self.sessions.is_none() {
            return;
        }
        self.settle();
        let Some(sessions) = self.sessions.as_mut() else {
            return;
        };
        for addr in sessions.set_peers(peers) {
            if self.carry.as_ref().is_some_and(|(p, _)| *p == addr) {
                self.carry = None;
            }
            if let Some(mut slot) = self.channels.remove(&addr) {
                slot.channel.end(now);
                while let Some(kind) = slot.channel.poll_event() {
                    self.events.push_back(Event { peer: addr, kind });
                }
                self.reassembly_total -= slot.channel.reassembly_bytes();
                // The peer may keep its channel: a new one to it (if it is
                // added back) must not look like the old one's duplicates.
                self.generation += 1;
            }
        }
    }

    /// This endpoint's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Feed a received UDP datagram (a bundle). Invalid ones are dropped
    /// and counted, once each, whatever is wrong in them and however many
    /// channel datagrams they hold.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let inner;
        if self.sessions.is_some() {
            // A channel that failed a message since the last settling must
            // drop the datagrams a handshake holds for it (see `settle`)
            // before this datagram can complete that handshake and release
            // them.
            self.settle();
        }
        let bytes = match self.sessions.as_mut() {
            None => bytes,
            Some(sessions) => {
                let opened = sessions.open(now, from, bytes, self.epoch);
                match opened {
                    Some(Opened::Inner(plain)) if !plain.is_empty() => {
                        inner = plain;
                        &inner[..]
                    }
                    // A keepalive, a handshake message, or dropped.
                    _ => return,
                }
            }
        };
        let bundle = match Bundle::parse(bytes) {
            Ok(b) => b,
            Err(DecodeError::BadChecksum) => {
                self.stats.corrupt += 1;
                return;
            }
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        if !self.channels.contains_key(&from) && self.channels.len() >= self.cfg.peers_max {
            self.stats.refused_peers += 1;
            return;
        }
        self.stats.bundles_received += 1;
        self.stats.bundled_received += bundle.datagrams.len() as u64;
        let room = self
            .cfg
            .reassembly_total_max
            .saturating_sub(self.reassembly_total);
        let slot = self.slot(from, now);
        slot.active = now;
        let before = slot.channel.reassembly_bytes();
        let heard = slot.channel.snapshot().stats.datagrams_received;
        slot.channel.set_shared_reassembly_room(room);
        for d in &bundle.datagrams {
            slot.channel.handle_datagram(now, d);
        }
        if slot.channel.snapshot().stats.datagrams_received != heard {
            slot.bundles_received += 1;
        }
        let after = slot.channel.reassembly_bytes();
        let mark = !std::mem::replace(&mut slot.changed, true);
        self.reassembly_total = self.reassembly_total - before + after;
        debug_assert!(self.reassembly_total <= self.cfg.reassembly_total_max);
        if mark {
            self.changed.push(from);
        }
    }

    /// Bytes charged for partly reassembled messages, all peers together.
    pub fn reassembly_bytes(&self) -> usize {
        self.reassembly_total
    }

    /// Queue a message to `peer`.
    pub fn send(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        data: impl Into<Outgoing>,
    ) -> Result<MsgId, SendError> {
        let unreachable = self.sessions.as_ref().is_some_and(|s| !s.can_reach(peer));
        // One lookup on the path every message takes.
        let slot = match self.channels.get_mut(&peer) {
            Some(_) if unreachable => return Err(SendError::NoKey(peer)),
            Some(slot) => slot,
            None => {
                if self.channels.len() >= self.cfg.peers_max {
                    return Err(SendError::TooManyPeers(self.cfg.peers_max));
                }
                if unreachable {
                    return Err(SendError::NoKey(peer));
                }
                self.slot(peer, now)
            }
        };
        slot.active = now;
        let r = slot.channel.send(now, data);
        let mark = !std::mem::replace(&mut slot.changed, true);
        if mark {
            self.changed.push(peer);
        }
        Ok(r?)
    }

    /// Stop (re)transmitting a message; see [`Channel::cancel`].
    pub fn cancel(&mut self, peer: SocketAddr, msg_id: MsgId) -> bool {
        let Some(slot) = self.channels.get_mut(&peer) else {
            return false;
        };
        let r = slot.channel.cancel(msg_id);
        Self::mark(&mut self.changed, slot, peer);
        r
    }

    /// Follow a message sent to `peer`; see [`Channel::trace_message`].
    pub fn trace_message(&mut self, peer: SocketAddr, msg_id: MsgId) -> bool {
        self.channels
            .get_mut(&peer)
            .is_some_and(|slot| slot.channel.trace_message(msg_id))
    }

    /// What was counted for a followed message; see
    /// [`Channel::take_message_trace`].
    pub fn take_message_trace(&mut self, peer: SocketAddr, msg_id: MsgId) -> Option<MessageTrace> {
        self.channels
            .get_mut(&peer)
            .and_then(|slot| slot.channel.take_message_trace(msg_id))
    }

    /// Check `peer`'s liveness while waiting for something from it; see
    /// [`Channel::hold`].
    pub fn hold(&mut self, now: Instant, peer: SocketAddr) {
        if let Some(slot) = self.channels.get_mut(&peer) {
            slot.channel.hold(now);
            Self::mark(&mut self.changed, slot, peer);
        }
    }

    /// End one `hold`.
    pub fn release(&mut self, peer: SocketAddr) {
        if let Some(slot) = self.channels.get_mut(&peer) {
            slot.channel.release();
            Self::mark(&mut self.changed, slot, peer);
        }
    }

    /// Run every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        // The heap must hold every channel's current deadline.
        self.settle();
        if let Some(sessions) = self.sessions.as_mut() {
            sessions.handle_timeout(now, self.epoch);
        }
        // Take the due entries first: a channel that re-arms at or before
        // `now` is run again on the next call, not in a loop here.
        let mut due = Vec::new();
        while let Some(&Reverse((t, peer))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            due.push((t, peer));
        }
        for (t, peer) in due {
            let Some(slot) = self.channels.get_mut(&peer) else {
                continue;
            };
            if slot.scheduled != Some(t) {
                continue; // superseded
            }
            slot.scheduled = None;
            let before = slot.channel.reassembly_bytes();
            slot.channel.handle_timeout(now);
            let after = slot.channel.reassembly_bytes();
            self.reassembly_total = self.reassembly_total - before + after;
            Self::mark(&mut self.changed, slot, peer);
        }
    }

    /// The next event. Call after `poll_transmit` returned `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        // Events already queued go first whatever is settled now: an input
        // settled at once would have queued its events behind them too.
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        self.settle();
        self.events.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.settle();
        let secure = self.sessions.as_mut().and_then(Sessions::poll_timeout);
        // Drop superseded entries so the head is a live deadline.
        while let Some(&Reverse((t, peer))) = self.timers.peek() {
            match self.channels.get(&peer) {
                Some(slot) if slot.scheduled == Some(t) => {
                    return Some(secure.map_or(t, |s| s.min(t)));
                }
                _ => {
                    self.timers.pop();
                }
            }
        }
        secure
    }

    /// True when every channel is idle (see [`Channel::is_idle`]).
    pub fn is_idle(&self) -> bool {
        self.events.is_empty() && self.channels.values().all(|s| s.channel.is_idle())
    }

    fn slot(&mut self, peer: SocketAddr, now: Instant) -> &mut Slot {
        let (cfg, epoch) = (self.cfg, mix(self.epoch, self.generation));
        let rng = &mut self.rng;
        let buffers = &self.buffers;
        self.channels.get_or_insert_with(peer, || Slot {
            // The seed of the channel's epoch challenges: unpredictable to
            // anyone without the owner's seed.
            channel: {
                let mut channel = Channel::new(cfg.for_peer(peer), epoch, rng.next_u64());
                channel.set_buffers(buffers.clone());
                channel
            },
            scheduled: None,
            in_ready: false,
            changed: false,
            active: now,
            bundles_sent: 0,
            bundles_received: 0,
        })
    }
}
