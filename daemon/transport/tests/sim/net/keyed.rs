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
use rpcd_transport::secure::wire::{Outer, COOKIE_LEN, INIT_LEN, MAC_LEN, RESP_LEN};
use rpcd_transport::secure::{PeerKey, PrivateKey, Security, SecurityStats};
use rpcd_transport::wire::{AckInfo, Bundle, Datagram, Fragment, Kind};
use rpcd_transport::{Config, Endpoint, Seq};

use super::{content, ms, us, Sim, What, T};

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

/// A forged datagram about to be injected.
struct Forgery {
    from: SocketAddr,
    to: usize,
    bytes: Vec<u8>,
    delay: Duration,
    variant: &'static str,
    allowed: &'static [&'static str],
    may_answer: bool,
}

/// What a replay of `bytes` may do, by its outer type.
fn replay_allowed(bytes: &[u8], stranger: bool) -> (&'static [&'static str], bool) {
    match (outer_type(bytes), stranger) {
        (1, false) => (
            &[
                "handshake_replayed",
                "rate_limited",
                "cookies_sent",
                "bad_mac",
            ],
            true,
        ),
        (1, true) => (
            &["address_not_allowed", "rate_limited", "cookies_sent"],
            false,
        ),
        (2, _) => (&["unknown_session", "bad_mac"], false),
        (3, _) => (&["unknown_session", "auth_failed"], false),
        (4, false) => (&["replayed", "unknown_session", "auth_failed"], false),
        (4, true) => (&["unknown_session"], false),
        _ => (&[], false),
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

    fn forge(&mut self, class: Class, src: usize, to: usize) {
        let f = match class {
            Class::Plain => Some(self.forge_plain(src, to)),
            Class::Junk => Some(self.forge_junk(self.nodes[src].addr, to)),
            Class::Replay => self.forge_replay(to),
            Class::Stranger => Some(self.forge_stranger(to)),
        };
        let Some(f) = f else {
            return;
        };
        let k = self.k();
        k.injected[class.i()] += 1;
        k.in_flight[class.i()] += 1;
        let at = self.now + f.delay;
        self.note(|| {
            format!(
                "forge {} ({}) {} bytes {} -> node {} at {at:?}",
                class.name(),
                f.variant,
                f.bytes.len(),
                f.from,
                f.to
            )
        });
        self.push(
            at,
            What::Arrive {
                to: f.to,
                from: f.from,
                bytes: f.bytes,
                tampered: false,
                benign: false,
                forged: Some(Forged {
                    class,
                    variant: f.variant,
                    allowed: f.allowed,
                    may_answer: f.may_answer,
                }),
            },
        );
    }

    /// A valid plaintext datagram from node `src`'s address.
    fn forge_plain(&mut self, src: usize, to: usize) -> Forgery {
        let (se, re) = (self.nodes[src].epoch, self.nodes[to].epoch);
        let payload_max = self.cfg.payload_max;
        let delay = self.one_way();
        let k = self.k();
        let last = k.last_sent.get(&(src, to)).copied();
        let r = &mut k.rng;
        let payload;
        let (variant, d) = match r.gen_range(0..3) {
            0 => {
                let (id, nonce, len) = last.unwrap_or((1, r.next_u64(), 16));
                let all = content(nonce, len);
                payload = all[..len.min(payload_max)].to_vec();
                let count = len.div_ceil(payload_max).max(1) as u32;
                (
                    "data with current epochs and a sent message's id and bytes",
                    Datagram {
                        sender_epoch: se,
                        receiver_epoch: re,
                        kind: Kind::Data,
                        seq: Seq(r.gen_range(1..=2_000)),
                        send_floor: Seq(1),
                        msg_floor: 0,
                        ack: Some(AckInfo {
                            ack: Seq(r.gen_range(1..=2_000)),
                            sack: r.next_u64(),
                            window: 1024,
                        }),
                        ack_now: true,
                        fragment: Some(Fragment {
                            msg_id: id + r.gen_range(0..=2),
                            index: 0,
                            count,
                            payload: &payload,
                        }),
                        key_id: 0,
                        nonce: 0,
                    },
                )
            }
            1 => (
                "ack of everything",
                Datagram {
                    sender_epoch: se,
                    receiver_epoch: re,
                    kind: Kind::Ack,
                    seq: Seq(0),
                    send_floor: Seq(1 << 40),
                    msg_floor: 1 << 40,
                    ack: Some(AckInfo {
                        ack: Seq(1 << 40),
                        sack: u64::MAX,
                        window: u32::MAX,
                    }),
                    ack_now: false,
                    fragment: None,
                    key_id: 0,
                    nonce: 0,
                },
            ),
            _ => (
                "blind reset (a probe with a random epoch)",
                Datagram {
                    sender_epoch: r.gen_range(1..=u64::MAX),
                    receiver_epoch: if r.gen_bool(0.5) { 0 } else { re },
                    kind: Kind::Probe,
                    seq: Seq(0),
                    send_floor: Seq(1),
                    msg_floor: 0,
                    ack: None,
                    ack_now: true,
                    fragment: None,
                    key_id: 0,
                    nonce: 0,
                },
            ),
        };
        Forgery {
            from: self.nodes[src].addr,
            to,
            bytes: Bundle { datagrams: vec![d] }.to_vec(),
            delay,
            variant,
            allowed: &["not_authenticated"],
            may_answer: false,
        }
    }

    /// Random bytes dressed as an authenticated-mode datagram, from `from`.
    fn forge_junk(&mut self, from: SocketAddr, to: usize) -> Forgery {
        let delay = self.one_way();
        let live = self.k().last_opened[to]
            .as_ref()
            .filter(|c| outer_type(&c.bytes) == 4)
            .map(|c| (c.from, c.bytes[4..16].to_vec()));
        let k = self.k();
        let r = &mut k.rng;
        let mut v = r.gen_range(0..6);
        if v == 4 && live.is_none() {
            v = 3;
        }
        let (ty, len, variant, allowed): (u8, usize, &'static str, &'static [&'static str]) =
            match v {
                0 => (1, INIT_LEN, "initiation-shaped", &["bad_mac"]),
                1 => (2, RESP_LEN, "response-shaped", &["bad_mac"]),
                2 => (
                    3,
                    COOKIE_LEN,
                    "cookie-shaped",
                    &["unknown_session", "auth_failed"],
                ),
                3 => (
                    4,
                    r.gen_range(32..=300),
                    "transport, random index",
                    &["unknown_session", "auth_failed"],
                ),
                4 => (
                    4,
                    r.gen_range(32..=300),
                    "transport, a live session's index and a nearby counter",
                    &["auth_failed", "replayed", "unknown_session"],
                ),
                _ => (
                    r.gen_range(1..=4),
                    0,
                    "bad framing (version or size)",
                    &["malformed"],
                ),
            };
        let mut b = vec![0; len.max(4)];
        r.fill_bytes(&mut b);
        b[..4].copy_from_slice(&[b'R', b'S', 1, ty]);
        let mut from = from;
        if v == 4 {
            let (src, head) = live.expect("checked");
            from = src;
            let mut counter = [0; 8];
            counter.copy_from_slice(&head[4..12]);
            let c = u64::from_be_bytes(counter);
            let c = c.saturating_add_signed(r.gen_range(-64..=64));
            b[4..8].copy_from_slice(&head[..4]);
            b[8..16].copy_from_slice(&c.to_be_bytes());
        }
        if v == 5 {
            if r.gen_bool(0.5) {
                b[2] = r.gen_range(2..=255);
                let n = r.gen_range(4..=200);
                b.resize(n, 0x5a);
            } else {
                // A handshake type at a size that is not its size.
                let n = match ty {
                    1 => INIT_LEN - 1,
                    2 => RESP_LEN + 1,
                    3 => COOKIE_LEN - 1,
                    _ => r.gen_range(4..32),
                };
                b.resize(n, 0xa5);
            }
        }
        Forgery {
            from,
            to,
            bytes: b,
            delay,
            variant,
            allowed,
            may_answer: false,
        }
    }

    /// A datagram some node already accepted, again.
    fn forge_replay(&mut self, to: usize) -> Option<Forgery> {
        let n = self.nodes.len();
        let one_way = self.one_way();
        let k = self.k();
        let v = k.rng.gen_range(0..3);
        let (c, target, delay, variant) = match v {
            0 => {
                let c = k.last_opened[to].clone()?;
                (c, to, one_way, "at once")
            }
            1 => {
                let c = sample(&mut k.rng, &k.pool)?;
                let later = ms(k.rng.gen_range(100..=3_000));
                let t = c.to;
                (c, t, later, "much later")
            }
            _ => {
                let c = sample(&mut k.rng, &k.pool)?;
                let others: Vec<usize> = (0..n)
                    .filter(|&j| j != c.to && Some(j) != self.node_index(c.from))
                    .collect();
                let k = self.k();
                match sample(&mut k.rng, &others) {
                    Some(t) => (c, t, one_way, "to another node"),
                    None => {
                        let t = c.to;
                        (c, t, one_way, "at once")
                    }
                }
            }
        };
        let (allowed, may_answer) = replay_allowed(&c.bytes, false);
        let _ = c.at;
        Some(Forgery {
            from: c.from,
            to: target,
            bytes: c.bytes,
            delay,
            variant,
            allowed,
            may_answer,
        })
    }

    /// An initiation to node `to` from a daemon with its own key.
    fn stranger_initiation(&mut self, to: usize) -> Vec<u8> {
        let target = self.nodes[to].addr;
        let (cfg, now, wall) = (self.cfg, self.instant(self.now), BASE_WALL + self.now);
        let k = self.k();
        let mut seed = [0; 32];
        k.rng.fill_bytes(&mut seed);
        let mut ep = Endpoint::with_security(
            cfg,
            k.rng.gen_range(1..=u64::MAX),
            Security::Keys {
                local: k.stranger.clone(),
                peers: vec![PeerKey {
                    name: "target".into(),
                    public: k.keys[to].public(),
                    addresses: vec![target],
                }],
            },
            seed,
            wall,
        );
        ep.send(now, target, b"kv.put x".to_vec())
            .expect("the stranger may send to its configured peer");
        ep.poll_transmit(now).expect("an initiation").bytes
    }

    /// Something from an address that is no node's.
    fn forge_stranger(&mut self, to: usize) -> Forgery {
        let k = self.k();
        let from = SocketAddr::from((
            [10, 0, 1, k.rng.gen_range(1..=4)],
            k.rng.gen_range(1024..=u16::MAX),
        ));
        match k.rng.gen_range(0..4) {
            0 => {
                // A daemon with its own key that knows the target's public
                // key tries to open a session. Its first initiation to each
                // node is made once per run and sent from every stranger
                // address (the target's work is the same; making a new one
                // each time only costs the simulator X25519 operations).
                let delay = self.one_way();
                let bytes = match self.k().stranger_inits[to].clone() {
                    Some(b) => b,
                    None => {
                        let b = self.stranger_initiation(to);
                        self.k().stranger_inits[to] = Some(b.clone());
                        b
                    }
                };
                Forgery {
                    from,
                    to,
                    bytes,
                    delay,
                    variant: "a handshake with its own key",
                    allowed: &["unknown_key", "rate_limited", "cookies_sent"],
                    may_answer: false,
                }
            }
            1 => {
                let mut f = self.forge_plain(to, to);
                f.from = from;
                f.variant = "plaintext";
                f
            }
            2 => {
                let mut f = self.forge_junk(from, to);
                f.from = from;
                if f.allowed.contains(&"replayed") {
                    f.allowed = &["unknown_session"];
                }
                f.variant = "junk";
                f
            }
            _ => {
                let delay = self.one_way();
                let k = self.k();
                match sample(&mut k.rng, &k.pool) {
                    Some(c) => {
                        let (allowed, may_answer) = replay_allowed(&c.bytes, true);
                        Forgery {
                            from,
                            to: c.to,
                            bytes: c.bytes,
                            delay,
                            variant: "a captured datagram",
                            allowed,
                            may_answer,
                        }
                    }
                    None => {
                        let mut f = self.forge_plain(to, to);
                        f.from = from;
                        f.variant = "plaintext";
                        f
                    }
                }
            }
        }
    }

    /// Hand a datagram to node `to` in a keyed run and check what the
    /// authenticated layer made of it.
    pub(super) fn arrive_keyed(
        &mut self,
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
        tampered: bool,
        benign: bool,
        forged: Option<Forged>,
    ) {
        let now = self.instant(self.now);
        if let Some(f) = &forged {
            self.k().in_flight[f.class.i()] -= 1;
        }
        let Some(ep) = self.nodes[to].ep.as_mut() else {
            return;
        };
        let before = ep.stats();
        ep.handle_datagram(now, from, &bytes);
        let after = ep.stats();
        if let Some(f) = &forged {
            let k = self.k();
            k.handed[f.class.i()] += 1;
            k.ctx = Some(Ctx {
                class: f.class,
                outs: Vec::new(),
                events: Vec::new(),
            });
        }
        self.drain(to);
        let ctx = self.k().ctx.take();
        let grew = grown(&before.security, &after.security);
        let inner_bad = (after.corrupt + after.malformed) - (before.corrupt + before.malformed);
        if inner_bad > 0 {
            self.violation(format!(
                "node {to}: a datagram from {from} got past the authenticated layer and failed the inner parse"
            ));
        }
        if tampered && !benign {
            let k = self.k();
            k.tampered.0 += 1;
            if grew.len() == 1 {
                k.tampered.1 += 1;
            } else {
                let (t, n) = (outer_type(&bytes), bytes.len());
                self.violation(format!(
                    "node {to}: a tampered datagram (type {t}, {n} bytes) from {from} was not dropped for one reason: {grew:?}"
                ));
            }
        }
        match (forged, ctx) {
            (Some(f), Some(ctx)) => {
                let hs = after.security.handshakes - before.security.handshakes;
                self.check_forgery(to, from, &bytes, f, &grew, hs, ctx);
            }
            (None, _) if !tampered && grew.is_empty() => {
                let at = self.now;
                self.k().capture(Captured {
                    from,
                    to,
                    bytes,
                    at,
                });
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_forgery(
        &mut self,
        to: usize,
        from: SocketAddr,
        bytes: &[u8],
        f: Forged,
        grew: &[&'static str],
        handshakes: u64,
        ctx: Ctx,
    ) {
        let what = || {
            format!(
                "forged {} datagram ({}, type {}, {} bytes) from {from} to node {to}",
                f.class.name(),
                f.variant,
                outer_type(bytes),
                bytes.len()
            )
        };
        if !ctx.events.is_empty() {
            let w = what();
            self.violation(format!("{w} caused events: {:?}", ctx.events));
        }
        if handshakes > 0 {
            let w = what();
            self.violation(format!("{w} completed a handshake"));
        }
        match grew {
            [reason] if f.allowed.contains(reason) => {
                *self.k().reasons.entry(reason).or_default() += 1;
            }
            [] if f.may_answer => self.k().answered += 1,
            _ => {
                let w = what();
                self.violation(format!(
                    "{w} raised drop counters {grew:?}; expected exactly one of {:?}",
                    f.allowed
                ));
            }
        }
        // Nothing is sent back, but the answer to a replayed initiation (to
        // its source) or a cookie reply to a stranger: one datagram, smaller
        // than what came.
        let answer_ok = |outs: &[(SocketAddr, usize)]| {
            outs.len() <= 1 && outs.iter().all(|&(a, n)| a == from && n < bytes.len())
        };
        let ok = match ctx.class {
            Class::Plain | Class::Junk => ctx.outs.is_empty(),
            Class::Replay => answer_ok(&ctx.outs) && (f.may_answer || ctx.outs.is_empty()),
            Class::Stranger => {
                answer_ok(&ctx.outs) && ctx.outs.iter().all(|&(_, n)| n == COOKIE_LEN)
            }
        };
        if !ok {
            let w = what();
            self.violation(format!("{w} made node {to} send {:?}", ctx.outs));
        }
        if ctx.class == Class::Stranger {
            let ep = self.nodes[to]
                .ep
                .as_ref()
                .expect("alive while it handled it");
            if ep.peer(from).is_some() || ep.peer_key(from).is_some() {
                let w = what();
                self.violation(format!("{w}: the stranger got a channel or a session"));
            }
        }
    }

    /// Record a datagram node `from` sends to `to` while it handles a
    /// forgery. Returns false outside one.
    pub(super) fn note_forged_output(&mut self, to: SocketAddr, len: usize) -> bool {
        match self.keyed.as_mut().and_then(|k| k.ctx.as_mut()) {
            Some(ctx) => {
                ctx.outs.push((to, len));
                true
            }
            None => false,
        }
    }

    /// Record an event raised while a forgery is handled.
    pub(super) fn note_forged_event(&mut self, i: usize, ev: &rpcd_transport::Event) {
        if let Some(ctx) = self.keyed.as_mut().and_then(|k| k.ctx.as_mut()) {
            let kind = match &ev.kind {
                rpcd_transport::ChannelEvent::Delivered { msg_id, data } => {
                    format!("delivered {msg_id} ({} bytes)", data.len())
                }
                other => format!("{other:?}"),
            };
            ctx.events
                .push(format!("node {i}: {kind} from {}", ev.peer));
        }
    }

    /// End-of-run checks and totals of a keyed run.
    pub(super) fn finish_keyed(&mut self) {
        let Some(mut k) = self.keyed.take() else {
            return;
        };
        let mut security = k.dead_security;
        let mut inner_bad = k.dead_inner_bad;
        let nodes: Vec<SocketAddr> = self.nodes.iter().map(|n| n.addr).collect();
        let mut problems = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(ep) = n.ep.as_ref() else {
                continue;
            };
            let st = ep.stats();
            add_security(&mut security, &st.security);
            inner_bad += st.corrupt + st.malformed;
            for (p, _) in ep.peers() {
                if !nodes.contains(&p) {
                    problems.push(format!("node {i} has a channel for the stranger {p}"));
                }
            }
        }
        if inner_bad > 0 {
            problems.push(format!(
                "{inner_bad} datagrams got past the authenticated layer and failed the inner parse"
            ));
        }
        for c in Class::ALL {
            if k.enabled[c.i()] && k.handed[c.i()] == 0 {
                problems.push(format!(
                    "the seed enables {} forgeries, but none reached an endpoint ({} injected)",
                    c.name(),
                    k.injected[c.i()]
                ));
            }
        }
        let reason = |r: &str| k.reasons.get(r).copied().unwrap_or(0);
        // The counters saw the forgeries: every plaintext one (and more: the
        // network's tampering can produce some) as not authenticated.
        if security.not_authenticated < reason("not_authenticated") {
            problems.push(format!(
                "{} forgeries dropped as not authenticated, but the counter says {}",
                reason("not_authenticated"),
                security.not_authenticated
            ));
        }
        if security.replayed < reason("replayed") {
            problems.push(format!(
                "{} forgeries dropped as replayed, but the counter says {}",
                reason("replayed"),
                security.replayed
            ));
        }
        // A handful of replays may all be initiations sent to another node
        // (dropped as bad mac, rightly): the check needs a few.
        if k.enabled[Class::Replay.i()]
            && k.handed[Class::Replay.i()] >= 4
            && reason("replayed") + reason("unknown_session") + reason("handshake_replayed") == 0
            && k.answered == 0
        {
            problems.push("replays were injected, but none was counted as replayed, unknown session or handshake replayed".into());
        }
        for p in problems {
            self.violation(p);
        }
        self.out.keyed = Some(KeyedOutcome {
            injected: k.injected,
            handed: k.handed,
            answered: k.answered,
            tampered: k.tampered,
            to_strangers: k.to_strangers,
            sent_by_type: k.sent_by_type,
            security,
            forged_replayed: reason("replayed"),
            forged_not_authenticated: reason("not_authenticated"),
            forged_unknown_key: reason("unknown_key"),
            rekeying: k.rekeying,
            cookies: k.cookies,
        });
        k.ctx = None;
        self.keyed = Some(k);
    }
}
