//! Keyed runs: every node speaks authenticated mode (Noise IK sessions, one
//! ChaCha20-Poly1305 seal per datagram), and the simulated network also
//! injects forgeries.
//!
//! The mode is drawn with the seed's class (`class.rs`), independently of
//! its fault class; `SIM_MODE=plain|keyed` forces one mode for every seed
//! (diagnosis only: is a failure keyed-specific?).
//!
//! A keyed seed sends a quarter of its message budget: with its handshakes
//! (X25519, retried under loss and partitions, and rekeys) and one AEAD per
//! datagram each way, a keyed message costs about ten plaintext ones in
//! this build.
//!
//! Node `i` has the fixed private key `[i + 1; 32]` and lists every other
//! node, with its address, as a peer. A restart keeps the key and takes a
//! new endpoint (new epoch, new seed) whose wall clock is `BASE_WALL` plus
//! the virtual time since the run's origin, so its handshake timestamps are
//! newer than its previous incarnation's.
//!
//! Plaintext-only checks. The simulator holds no session key, so in keyed
//! runs it cannot read the inner datagrams; these checks of `net.rs` work on
//! plaintext wire bytes and are skipped in keyed runs:
//! - every emitted datagram parses as a plaintext datagram (keyed instead:
//!   every emitted datagram parses as an authenticated-mode "RS" datagram);
//! - the receiver epoch that a message's Data datagrams named never changes,
//!   and the incarnation delivering the message is that one
//!   (`MsgRec::addressed`; no keyed substitute: which message a sealed
//!   datagram carries, and to which epoch, is invisible);
//! - no Data datagram is emitted once every message has its outcome (keyed
//!   instead, and in both modes: the channels' retransmission counters do
//!   not grow after that point);
//! - tampered datagrams handed to endpoints = their corrupt + malformed
//!   counters (keyed instead, datagram by datagram: every tampered datagram
//!   is dropped by the authenticated layer for exactly one counted reason,
//!   unless only the bytes no check covers were touched, and nothing that
//!   fails the inner parse ever gets past the AEAD);
//! - the count of Data datagrams in the summary.
//!
//! Every event-based check (at most once, never after a definite failure,
//! acked implies delivered once, contents, lost nothing, recovery rounds,
//! idle at the end) runs unchanged in both modes.
//!
//! Forgeries (keyed runs only, drawn from their own RNG stream so the network's
//! faults keep theirs), at a per-seed rate per routed datagram, and at least
//! one of each class the seed enables (checked at the end):
//! - `plain`: valid "RD" datagrams from a node's address: data with both
//!   nodes' current epochs and the id and content of a message really sent,
//!   an ack of everything, a blind reset (a probe with a random epoch);
//! - `junk`: random bytes with "RS", version 1 and a type, at that type's
//!   size; transport-shaped junk with the receiver index and a counter near
//!   a live session's; bad framing;
//! - `replay`: datagrams the receiver already accepted (opened, or an
//!   initiation answered), sent again from the same address: at once, much
//!   later (up to seconds, across restarts and rekeys), or to another node.
//!   Only accepted ones are replayed: a datagram the network lost, sent
//!   later, is an authentic late delivery, which the network model bounds
//!   (the ledger's "no delivery later than failure + max one-way" relies on
//!   that bound);
//! - `stranger`: from addresses that are no node's: real initiations by a
//!   daemon with its own key that knows the target's public key, plaintext
//!   probes, junk, replays of captured datagrams.
//!
//! Each forgery is checked as it is handled: no event at all, no handshake
//! completed, exactly one drop counter of `Endpoint::stats().security`
//! grows and it is one the forgery may cause (an initiation replay may
//! instead be answered again, with one smaller datagram to its source),
//! nothing sent back except that answer or a cookie reply to a stranger,
//! and no channel for a stranger's address (`Endpoint::peers()`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rpcd_transport::secure::wire::{Outer, INIT_LEN, MAC_LEN, RESP_LEN};
use rpcd_transport::secure::{PeerKey, PrivateKey, Security, SecurityStats};
use rpcd_transport::{Config, Endpoint};

use super::{ms, us, Sim, T};

mod forge;
mod inspect;

/// The wall clock of the run's origin, for handshake timestamps.
pub(super) const BASE_WALL: Duration = Duration::from_secs(1_800_000_000);
/// Accepted datagrams kept for later replays (a reservoir sample).
const POOL_MAX: usize = 64;

/// A class of forgery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Plain,
    Junk,
    Replay,
    Stranger,
}

impl Class {
    pub(super) const ALL: [Class; 4] = [Class::Plain, Class::Junk, Class::Replay, Class::Stranger];

    pub(super) fn name(self) -> &'static str {
        match self {
            Class::Plain => "plain",
            Class::Junk => "junk",
            Class::Replay => "replay",
            Class::Stranger => "stranger",
        }
    }

    fn i(self) -> usize {
        self as usize
    }
}

/// What the network knows about a forged datagram it injects.
#[derive(Debug, Clone)]
pub(super) struct Forged {
    class: Class,
    variant: &'static str,
    /// The drop counters it may raise (exactly one of them must grow).
    allowed: &'static [&'static str],
    /// An initiation replay may be answered again instead of dropped.
    may_answer: bool,
}

/// A datagram a node accepted.
#[derive(Debug, Clone)]
struct Captured {
    from: SocketAddr,
    to: usize,
    bytes: Vec<u8>,
    at: T,
}

/// What a node did while it handled one forged datagram.
#[derive(Debug)]
pub(super) struct Ctx {
    class: Class,
    /// (to, bytes) of every datagram it sent.
    outs: Vec<(SocketAddr, usize)>,
    events: Vec<String>,
}

/// The keyed run's state.
pub(super) struct Keyed {
    rng: ChaCha8Rng,
    keys: Vec<PrivateKey>,
    stranger: PrivateKey,
    forge_p: f64,
    enabled: [bool; 4],
    injected: [u64; 4],
    in_flight: [u64; 4],
    handed: [u64; 4],
    answered: u64,
    pool: Vec<Captured>,
    pool_seen: u64,
    last_opened: Vec<Option<Captured>>,
    /// The last message each (sender, receiver) pair sent: (id, nonce, len).
    last_sent: HashMap<(usize, usize), (u64, u64, usize)>,
    pub(super) ctx: Option<Ctx>,
    dead_security: SecurityStats,
    dead_inner_bad: u64,
    /// Tampered datagrams handed to endpoints whose tampering every check
    /// covers, and how many of them the authenticated layer dropped.
    tampered: (u64, u64),
    /// Drops of forgeries by counter, for the summary.
    reasons: HashMap<&'static str, u64>,
    pub(super) rekeying: bool,
    pub(super) cookies: bool,
    /// Datagrams nodes sent to strangers.
    pub(super) to_strangers: u64,
    /// Datagrams the nodes sent, by type: initiation, response, cookie,
    /// transport.
    pub(super) sent_by_type: [u64; 4],
    /// The stranger's initiation to each node, once made.
    stranger_inits: Vec<Option<Vec<u8>>>,
}

impl std::fmt::Debug for Keyed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyed")
            .field("forge_p", &self.forge_p)
            .field("enabled", &self.enabled)
            .field("rekeying", &self.rekeying)
            .field("cookies", &self.cookies)
            .finish()
    }
}

/// What a keyed run adds to its outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyedOutcome {
    /// Forgeries injected, by class (plain, junk, replay, stranger).
    pub injected: [u64; 4],
    /// Of those, handed to a live endpoint.
    pub handed: [u64; 4],
    /// Initiation replays answered again (not counted as drops).
    pub answered: u64,
    /// Tampered datagrams (covered bytes touched) handed, and dropped.
    pub tampered: (u64, u64),
    /// Datagrams the nodes sent to strangers (cookie replies).
    pub to_strangers: u64,
    /// Datagrams the nodes sent, by type (initiation, response, cookie,
    /// transport).
    pub sent_by_type: [u64; 4],
    /// The authenticated layer's counters, every incarnation of every node.
    pub security: SecurityStats,
    /// Forgeries dropped as `replayed`, `not_authenticated`, `unknown_key`.
    pub forged_replayed: u64,
    pub forged_not_authenticated: u64,
    pub forged_unknown_key: u64,
    pub rekeying: bool,
    pub cookies: bool,
}

const REASONS: [&str; 12] = [
    "not_authenticated",
    "malformed",
    "bad_mac",
    "handshake_failed",
    "unknown_key",
    "address_not_allowed",
    "handshake_replayed",
    "rate_limited",
    "cookies_sent",
    "unknown_session",
    "auth_failed",
    "replayed",
];

fn drops(s: &SecurityStats) -> [u64; 12] {
    [
        s.not_authenticated,
        s.malformed,
        s.bad_mac,
        s.handshake_failed,
        s.unknown_key,
        s.address_not_allowed,
        s.handshake_replayed,
        s.rate_limited,
        s.cookies_sent,
        s.unknown_session,
        s.auth_failed,
        s.replayed,
    ]
}

/// The drop counters that grew from `a` to `b`.
fn grown(a: &SecurityStats, b: &SecurityStats) -> Vec<&'static str> {
    let (a, b) = (drops(a), drops(b));
    (0..REASONS.len())
        .filter(|&i| b[i] != a[i])
        .map(|i| REASONS[i])
        .collect()
}

pub(super) fn add_security(a: &mut SecurityStats, b: &SecurityStats) {
    a.not_authenticated += b.not_authenticated;
    a.malformed += b.malformed;
    a.bad_mac += b.bad_mac;
    a.handshake_failed += b.handshake_failed;
    a.unknown_key += b.unknown_key;
    a.address_not_allowed += b.address_not_allowed;
    a.handshake_replayed += b.handshake_replayed;
    a.rate_limited += b.rate_limited;
    a.cookies_sent += b.cookies_sent;
    a.unknown_session += b.unknown_session;
    a.auth_failed += b.auth_failed;
    a.replayed += b.replayed;
    a.handshakes += b.handshakes;
    a.handshake_timeouts += b.handshake_timeouts;
    a.queue_dropped += b.queue_dropped;
}

/// The outer type byte of an authenticated-mode datagram (0: none).
fn outer_type(b: &[u8]) -> u8 {
    match Outer::parse(b) {
        Ok(Outer::Init { .. }) => 1,
        Ok(Outer::Resp { .. }) => 2,
        Ok(Outer::Cookie { .. }) => 3,
        Ok(Outer::Transport { .. }) => 4,
        Err(_) => 0,
    }
}

/// Whether `tampered` differs from `orig` only in bytes that no check of
/// the receiver covers: the mac2 of a handshake message (checked only under
/// load for an initiation, never for a response). Such a copy is as
/// authentic as the original.
pub(super) fn only_unchecked_bytes(orig: &[u8], tampered: &[u8]) -> bool {
    let covered = match outer_type(orig) {
        1 => INIT_LEN - MAC_LEN,
        2 => RESP_LEN - MAC_LEN,
        _ => orig.len(),
    };
    orig.len() == tampered.len() && orig[..covered] == tampered[..covered]
}

fn sample<T: Clone>(rng: &mut ChaCha8Rng, v: &[T]) -> Option<T> {
    (!v.is_empty()).then(|| v[rng.gen_range(0..v.len())].clone())
}

/// The node's fixed key.
fn node_key(i: usize) -> PrivateKey {
    PrivateKey::from_bytes([i as u8 + 1; 32])
}

impl Keyed {
    /// Draw the keyed run's parameters (and its config changes) from its own
    /// stream, seeded from `seed`.
    pub(super) fn new(seed: u64, nodes: usize, cfg: &mut Config) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b65_7965_645f_7369);
        // Half the keyed seeds rekey during the run (the default is minutes).
        let rekeying = rng.gen_bool(0.5);
        if rekeying {
            cfg.rekey_after = ms(rng.gen_range(200..=3_000));
            cfg.reject_after = cfg.rekey_after + ms(rng.gen_range(1_000..=3_000));
        }
        // A quarter are "under load" from the first handshakes: initiators
        // need a cookie (an extra round trip) once a few came in a second.
        let cookies = rng.gen_bool(0.25);
        if cookies {
            cfg.handshake_load_max = rng.gen_range(2..=10);
        }
        let mut enabled = [false; 4];
        for e in &mut enabled {
            *e = rng.gen_bool(0.75);
        }
        if !enabled.iter().any(|&e| e) {
            enabled[rng.gen_range(0..4)] = true;
        }
        Keyed {
            forge_p: rng.gen_range(0.001..=0.03),
            enabled,
            rng,
            keys: (0..nodes).map(node_key).collect(),
            stranger: PrivateKey::from_bytes([0xee; 32]),
            injected: [0; 4],
            in_flight: [0; 4],
            handed: [0; 4],
            answered: 0,
            pool: Vec::new(),
            pool_seen: 0,
            last_opened: vec![None; nodes],
            last_sent: HashMap::new(),
            ctx: None,
            dead_security: SecurityStats::default(),
            dead_inner_bad: 0,
            tampered: (0, 0),
            reasons: HashMap::new(),
            rekeying,
            cookies,
            to_strangers: 0,
            sent_by_type: [0; 4],
            stranger_inits: vec![None; nodes],
        }
    }

    /// Classes this seed injects.
    pub(super) fn enabled_names(&self) -> Vec<&'static str> {
        Class::ALL
            .iter()
            .filter(|c| self.enabled[c.i()])
            .map(|c| c.name())
            .collect()
    }

    /// A fresh endpoint for node `i` (boot or restart).
    pub(super) fn endpoint(
        &mut self,
        cfg: Config,
        epoch: u64,
        i: usize,
        addrs: &[SocketAddr],
        now: T,
    ) -> Endpoint {
        let peers = (0..addrs.len())
            .filter(|&j| j != i)
            .map(|j| PeerKey {
                name: format!("node{j}"),
                public: self.keys[j].public(),
                addresses: vec![addrs[j]],
            })
            .collect();
        let mut seed = [0; 32];
        self.rng.fill_bytes(&mut seed);
        Endpoint::with_security(
            cfg,
            epoch,
            Security::Keys {
                local: self.keys[i].clone(),
                peers,
            },
            seed,
            BASE_WALL + now,
        )
    }

    pub(super) fn note_sent(&mut self, from: usize, to: usize, id: u64, nonce: u64, len: usize) {
        self.last_sent.insert((from, to), (id, nonce, len));
    }

    pub(super) fn absorb(&mut self, ep: &Endpoint) {
        let st = ep.stats();
        add_security(&mut self.dead_security, &st.security);
        self.dead_inner_bad += st.corrupt + st.malformed;
    }

    fn capture(&mut self, c: Captured) {
        self.pool_seen += 1;
        if self.pool.len() < POOL_MAX {
            self.pool.push(c.clone());
        } else {
            let j = self.rng.gen_range(0..self.pool_seen);
            if (j as usize) < POOL_MAX {
                self.pool[j as usize] = c.clone();
            }
        }
        let to = c.to;
        self.last_opened[to] = Some(c);
    }
}

impl Sim {
    fn k(&mut self) -> &mut Keyed {
        self.keyed.as_mut().expect("a keyed run")
    }

    /// A delay within the network's one-way bounds.
    fn one_way(&mut self) -> Duration {
        let max = self.faults.max_one_way().as_micros() as u64;
        us(self.k().rng.gen_range(0..=max))
    }

    /// Called for each datagram routed from node `src` to node `to`: inject
    /// forgeries at the seed's rate, and one of each enabled class until
    /// one has reached an endpoint.
    pub(super) fn maybe_forge(&mut self, src: usize, to: usize) {
        for class in Class::ALL {
            let k = self.k();
            if k.enabled[class.i()] && k.handed[class.i()] == 0 && k.in_flight[class.i()] == 0 {
                self.forge(class, src, to);
            }
        }
        let k = self.k();
        if k.rng.gen_bool(k.forge_p) {
            let on: Vec<Class> = Class::ALL
                .into_iter()
                .filter(|c| k.enabled[c.i()])
                .collect();
            let class = on[k.rng.gen_range(0..on.len())];
            self.forge(class, src, to);
        }
    }
}
