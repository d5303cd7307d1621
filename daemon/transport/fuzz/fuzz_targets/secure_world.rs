//! The machinery of the `secure` target, shared through `#[path]` with the
//! example that writes its seeds (`cargo run --example secure_seeds`).
//!
//! Two keyed endpoints, A and B, fixed keys, seeds and clock: a handshake
//! and a few messages each way, then a script (the fuzz input) that throws
//! datagrams at B from A's address, from a stranger elsewhere and from a
//! neighbour at A's IP on another port (peer address checks compare IPs),
//! while the genuine traffic between A and B is delivered, duplicated,
//! reordered, held (time passes) and, a few times, lost.
//!
//! mac1 keeps blind bytes away from everything behind it, but anyone who
//! knows B's public key can compute it; so can the script (`remac`), which
//! takes forged handshake messages on to the rate limits, the cookies and
//! Noise itself.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};
use rpcd_transport::secure::wire::{self as swire, Outer, OuterError};
use rpcd_transport::secure::{PeerKey, PrivateKey, PublicKey, Security};
use rpcd_transport::{ChannelEvent, Config, Endpoint, MsgId};

const fn at(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port))
}

pub const ADDR_A: SocketAddr = at(10, 0, 0, 1, 7001);
pub const ADDR_B: SocketAddr = at(10, 0, 0, 2, 7002);
/// A stranger at an address no peer may use.
pub const STRANGER: SocketAddr = at(10, 0, 0, 9, 7009);
/// A stranger at A's IP, another port: A's initiations replayed from here
/// pass B's address check.
pub const NEIGHBOUR: SocketAddr = at(10, 0, 0, 1, 7999);

/// The sources of hostile datagrams, by the script's selector.
pub fn source(sel: u8) -> SocketAddr {
    [ADDR_A, STRANGER, NEIGHBOUR][usize::from(sel % 3)]
}

/// The script's operations (the opcode is a byte modulo `COUNT`).
pub mod op {
    /// Source selector, then length (u16) and the bytes: a raw datagram to
    /// B. Selector bit 0x80 writes "RS", version 1 and the type
    /// `1 + (sel >> 4) % 4` in front and fits the size to the type; bit
    /// 0x08 gives a handshake message a valid mac1.
    pub const RAW: u8 = 0;
    /// Source selector, index (u8, 0 = the latest), mutation (u8, then its
    /// operands): a captured genuine datagram, replayed or mutated. Bit
    /// 0x40 of the mutation gives a handshake message a valid mac1 after.
    pub const CAPTURED: u8 = 1;
    /// Direction (u8: even = to B): deliver the oldest genuine datagram.
    pub const DELIVER: u8 = 2;
    /// Direction: deliver the oldest, and keep it for a second time.
    pub const DUPLICATE: u8 = 3;
    /// Direction: move the oldest behind the rest.
    pub const REORDER: u8 = 4;
    /// Direction: lose the oldest (a few per run; beyond, deliver it).
    pub const DROP: u8 = 5;
    /// Deliver everything queued, both ways.
    pub const FLUSH: u8 = 6;
    /// Time passes: u16 microseconds times (u8 % 32 + 1).
    pub const WAIT: u8 = 7;
    /// Jump to the next deadline of either endpoint.
    pub const NEXT_TIMER: u8 = 8;
    /// Length (u16 % 3000): A sends B a message.
    pub const SEND_A: u8 = 9;
    /// Length (u8 * 8): B sends A a message.
    pub const SEND_B: u8 = 10;
    /// Source selector, sender index (u32), Noise message (56 bytes): a
    /// response with a valid mac1 to B's latest initiation (its index
    /// seen on the wire), which is all an attacker can forge.
    pub const RESPONSE: u8 = 11;
    pub const COUNT: u8 = 12;
}

/// Messages each way during the setup.
const SETUP_MSGS: u32 = 2;
/// Messages each side may send during the script.
const SCRIPT_SENDS_MAX: u32 = 6;
/// Genuine datagrams the script may lose.
const DROPS_MAX: u32 = 4;
/// Script operations per run.
const OPS_MAX: usize = 256;
/// Captured datagrams kept for replays.
const CAPTURE_MAX: usize = 256;
/// Virtual time the script may spend: well below `peer_timeout` (5 s), so
/// holding genuine traffic never legitimately fails a message.
const SCRIPT_SPAN: Duration = Duration::from_secs(2);
/// Virtual time the healed network gets to finish every message.
const HEAL_SPAN: Duration = Duration::from_secs(60);
/// Datagrams one drain may produce before we call it a runaway.
const DRAIN_MAX: usize = 100_000;
/// Forged responses (valid mac1, the right index, Noise that fails) a
/// handshake in flight survives: the transport rebuilds the consumed Noise
/// state this many times (`secure::sessions::FORGED_RESPONSES_MAX`), then
/// waits for its next retry. Beyond it the check below is excused.
const FORGED_RESPONSES_SURVIVED: u32 = 4;

/// One process-wide origin, so a crash reproduces with the same offsets.
fn origin() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Short sessions (one rekey fits in the script's time), small fragments,
/// and handshake limits low enough that a few replays reach the cookie
/// and rate-limit paths.
pub fn config() -> Config {
    let c = Config {
        payload_max: 256,
        message_max: 64 * 1024,
        rekey_after: Duration::from_millis(1500),
        reject_after: Duration::from_secs(3),
        handshake_load_max: 4,
        handshake_rate_per_source: 4,
        ..Config::default()
    };
    assert_eq!(c.validate(), Ok(()));
    c
}

/// Reads the script; past its end every read is zero.
pub struct Script<'a>(pub &'a [u8]);

impl Script<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) << 8 | u16::from(self.u8())
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn be64(b: &[u8], i: usize) -> u64 {
    u64::from(be32(b, i)) << 32 | u64::from(be32(b, i + 4))
}

/// `Outer::parse` against the layout in `secure/wire.rs`'s table, written
/// out here with literal offsets: the same verdict (error included), and
/// every field of an `Ok` is the bytes at its documented place.
pub fn check_outer(b: &[u8]) {
    let got = Outer::parse(b);
    let want: Result<u8, OuterError> = if b.len() < 4 || b[..2] != *b"RS" {
        Err(OuterError::BadMagic)
    } else if b[2] != 1 {
        Err(OuterError::UnsupportedVersion(b[2]))
    } else {
        match (b[3], b.len()) {
            (1, 152) | (2, 100) | (3, 64) => Ok(b[3]),
            (4, n) if n >= 32 => Ok(4),
            (1..=4, n) => Err(OuterError::BadLength(n)),
            (t, _) => Err(OuterError::UnknownType(t)),
        }
    };
    match (got, want) {
        (Err(e), Err(w)) => assert_eq!(e, w, "Outer::parse: wrong error"),
        (
            Ok(Outer::Init {
                sender,
                noise,
                mac1_covered,
                mac1,
                mac2_covered,
                mac2,
            }),
            Ok(1),
        ) => {
            assert_eq!(b.len(), swire::INIT_LEN);
            assert_eq!(sender, be32(b, 4));
            assert_eq!(noise, &b[8..120]);
            assert_eq!(noise.len(), swire::NOISE_INIT_LEN);
            assert_eq!(mac1_covered, &b[..120]);
            assert_eq!(&mac1[..], &b[120..136]);
            assert_eq!(mac2_covered, &b[..136]);
            assert_eq!(&mac2[..], &b[136..152]);
        }
        (
            Ok(Outer::Resp {
                sender,
                receiver,
                noise,
                mac1_covered,
                mac1,
            }),
            Ok(2),
        ) => {
            assert_eq!(b.len(), swire::RESP_LEN);
            assert_eq!((sender, receiver), (be32(b, 4), be32(b, 8)));
            assert_eq!(noise, &b[12..68]);
            assert_eq!(noise.len(), swire::NOISE_RESP_LEN);
            assert_eq!(mac1_covered, &b[..68]);
            assert_eq!(&mac1[..], &b[68..84]);
        }
        (
            Ok(Outer::Cookie {
                receiver,
                nonce,
                sealed,
            }),
            Ok(3),
        ) => {
            assert_eq!(b.len(), swire::COOKIE_LEN);
            assert_eq!(receiver, be32(b, 4));
            assert_eq!(&nonce[..], &b[8..32]);
            assert_eq!(sealed, &b[32..64]);
            assert_eq!(sealed.len(), swire::MAC_LEN + swire::TAG_LEN);
        }
        (
            Ok(Outer::Transport {
                receiver,
                counter,
                header,
                sealed,
            }),
            Ok(4),
        ) => {
            assert!(b.len() >= swire::TRANSPORT_OVERHEAD);
            assert_eq!((receiver, counter), (be32(b, 4), be64(b, 8)));
            assert_eq!(header, &b[..16]);
            assert_eq!(header.len(), swire::TRANSPORT_HEADER_LEN);
            assert_eq!(sealed, &b[16..]);
            assert!(sealed.len() >= swire::TAG_LEN);
        }
        (got, want) => panic!(
            "Outer::parse of {} bytes gave {got:?}; the layout says {want:?}",
            b.len()
        ),
    }
}

/// mac1 of a handshake message to the daemon with `public`, per
/// `secure/crypto.rs`: BLAKE2s keyed with BLAKE2s-256("rpcd mac1" ||
/// public), 16 bytes out, over everything before it.
fn mac1(public: &PublicKey, covered: &[u8]) -> [u8; 16] {
    let key: [u8; 32] = Blake2s256::new()
        .chain_update(b"rpcd mac1")
        .chain_update(public.0)
        .finalize()
        .into();
    let mut m = <Blake2sMac<U16> as KeyInit>::new_from_slice(&key).expect("a 32-byte key");
    Mac::update(&mut m, covered);
    m.finalize().into_bytes().into()
}

/// Give an initiation or a response a valid mac1 for `public`.
pub fn remac(d: &mut [u8], public: &PublicKey) {
    let at = match (d.get(..4), d.len()) {
        (Some([b'R', b'S', 1, 1]), 152) => 120,
        (Some([b'R', b'S', 1, 2]), 100) => 68,
        _ => return,
    };
    let m = mac1(public, &d[..at]);
    d[at..at + 16].copy_from_slice(&m);
}

/// An initiation to B from a key B does not trust (made once per process:
/// its Diffie-Hellman work does not depend on B's state).
fn untrusted_initiation(b: &PublicKey) -> Vec<u8> {
    static INIT: OnceLock<Vec<u8>> = OnceLock::new();
    INIT.get_or_init(|| {
        let mut m = Endpoint::with_security(
            config(),
            0x3333,
            Security::Keys {
                local: PrivateKey::from_bytes([3; 32]),
                peers: vec![PeerKey {
                    name: "b".into(),
                    public: *b,
                    addresses: vec![ADDR_B],
                }],
            },
            [0x33; 32],
            Duration::from_secs(1_800_000_000),
        );
        m.send(origin(), ADDR_B, b"let me in".to_vec())
            .expect("B is configured");
        let t = m.poll_transmit(origin()).expect("an initiation");
        assert_eq!(t.bytes.len(), swire::INIT_LEN);
        t.bytes
    })
    .clone()
}

/// `bytes` with an authenticated-mode prefix of type `ty` (1..=4) and the
/// size that type needs (a transport datagram: at least its overhead).
pub fn shaped(bytes: &[u8], ty: u8) -> Vec<u8> {
    let len = match ty {
        1 => swire::INIT_LEN,
        2 => swire::RESP_LEN,
        3 => swire::COOKIE_LEN,
        _ => bytes.len().max(swire::TRANSPORT_OVERHEAD),
    };
    let mut b = bytes.to_vec();
    b.resize(len, 0);
    b[..4].copy_from_slice(&[b'R', b'S', 1, ty]);
    b
}

/// The whole input as one datagram: as it is, and shaped as each type.
pub fn check_outer_all(data: &[u8]) {
    check_outer(data);
    for ty in 1..=4 {
        check_outer(&shaped(data, ty));
    }
}

/// One side's messages.
#[derive(Default)]
struct Side {
    /// Bodies of the messages `send` accepted, by id.
    sent: HashMap<MsgId, Vec<u8>>,
    bodies: HashSet<Vec<u8>>,
    /// Accepted and without an outcome yet.
    open: HashSet<MsgId>,
    /// Bodies the other side delivered.
    delivered: HashSet<Vec<u8>>,
}

pub struct World {
    pub now: Instant,
    pub a: Endpoint,
    pub b: Endpoint,
    b_public: PublicKey,
    /// Genuine datagrams in flight.
    pub to_a: VecDeque<Vec<u8>>,
    pub to_b: VecDeque<Vec<u8>>,
    /// Genuine datagrams put on the wire, either way, with their sender.
    pub captured: Vec<(SocketAddr, Vec<u8>)>,
    side_a: Side,
    side_b: Side,
    /// Per stranger address: bytes it sent B, bytes B sent it.
    from_stranger: HashMap<SocketAddr, usize>,
    to_stranger: HashMap<SocketAddr, usize>,
    sends_a: u32,
    sends_b: u32,
    drops: u32,
    /// B's handshake in flight to A: the index of its latest initiation,
    /// and B's handshake timeouts when it went out.
    pending_b: Option<(u32, u64)>,
    /// Forged responses B's handshake in flight has met.
    forged_b: u32,
    /// A's genuine responses.
    responses_a: HashSet<Vec<u8>>,
}

/// A's message `n`: unique, and never one of B's (bit 31 of the tag).
fn body(tag: u32, len: usize) -> Vec<u8> {
    let mut b = tag.to_be_bytes().to_vec();
    b.extend((0..len).map(|i| (i as u8) ^ (tag as u8)));
    b
}

impl World {
    /// A and B with a session and `SETUP_MSGS` messages delivered each way.
    pub fn new() -> Self {
        let cfg = config();
        // Computing a public key is an X25519 operation: once per process.
        static KEYS: OnceLock<(PrivateKey, PrivateKey)> = OnceLock::new();
        let (ka, kb) = KEYS
            .get_or_init(|| {
                (
                    PrivateKey::from_bytes([1; 32]),
                    PrivateKey::from_bytes([2; 32]),
                )
            })
            .clone();
        let peer = |name: &str, k: &PrivateKey, at: SocketAddr| PeerKey {
            name: name.into(),
            public: k.public(),
            addresses: vec![at],
        };
        let wall = Duration::from_secs(1_800_000_000);
        let b_public = kb.public();
        let a = Endpoint::with_security(
            cfg,
            0xA0A0_0000_0000_0001,
            Security::Keys {
                local: ka.clone(),
                peers: vec![peer("b", &kb, ADDR_B)],
            },
            [0xA1; 32],
            wall,
        );
        let b = Endpoint::with_security(
            cfg,
            0xB0B0_0000_0000_0001,
            Security::Keys {
                local: kb,
                peers: vec![peer("a", &ka, ADDR_A)],
            },
            [0xB2; 32],
            wall,
        );
        let mut w = World {
            now: origin(),
            a,
            b,
            b_public,
            to_a: VecDeque::new(),
            to_b: VecDeque::new(),
            captured: Vec::new(),
            side_a: Side::default(),
            side_b: Side::default(),
            from_stranger: HashMap::new(),
            to_stranger: HashMap::new(),
            sends_a: 0,
            sends_b: 0,
            drops: 0,
            pending_b: None,
            forged_b: 0,
            responses_a: HashSet::new(),
        };
        // A first: one handshake (both at once would make two).
        for i in 0..SETUP_MSGS {
            w.send_a(100 + 300 * i as usize);
        }
        w.heal(Duration::from_secs(5));
        for _ in 0..SETUP_MSGS {
            w.send_b(10);
        }
        w.heal(Duration::from_secs(5));
        assert!(
            w.side_a.open.is_empty() && w.side_b.open.is_empty(),
            "the setup did not complete"
        );
        let init = w.captured[0].1.clone();
        let mut again = init.clone();
        remac(&mut again, &b_public);
        assert!(
            init.len() == swire::INIT_LEN && again == init,
            "the harness computes mac1 as A does"
        );
        w.capture(STRANGER, &untrusted_initiation(&b_public));
        w
    }

    pub fn send_a(&mut self, len: usize) {
        self.sends_a += 1;
        let bytes = body(self.sends_a, len);
        if let Ok(id) = self.a.send(self.now, ADDR_B, bytes.clone()) {
            self.side_a.open.insert(id);
            self.side_a.bodies.insert(bytes.clone());
            assert!(self.side_a.sent.insert(id, bytes).is_none(), "id reused");
        }
        self.drain();
    }

    pub fn send_b(&mut self, len: usize) {
        self.sends_b += 1;
        let bytes = body(self.sends_b | 1 << 31, len);
        if let Ok(id) = self.b.send(self.now, ADDR_A, bytes.clone()) {
            self.side_b.open.insert(id);
            self.side_b.bodies.insert(bytes.clone());
            assert!(self.side_b.sent.insert(id, bytes).is_none(), "id reused");
        }
        self.drain();
    }

    fn capture(&mut self, from: SocketAddr, bytes: &[u8]) {
        if self.captured.len() < CAPTURE_MAX {
            self.captured.push((from, bytes.to_vec()));
        }
    }

    /// Collect what both endpoints send and report, checking it.
    fn drain(&mut self) {
        for _ in 0..DRAIN_MAX {
            let Some(t) = self.a.poll_transmit(self.now) else {
                break;
            };
            assert_eq!(t.to, ADDR_B, "A sent to an address it never used");
            if t.bytes.len() == swire::RESP_LEN && t.bytes[..4] == [b'R', b'S', 1, 2] {
                self.responses_a.insert(t.bytes.clone());
            }
            self.capture(ADDR_A, &t.bytes);
            self.to_b.push_back(t.bytes);
        }
        assert!(self.a.poll_transmit(self.now).is_none(), "A never stops");
        for _ in 0..DRAIN_MAX {
            let Some(t) = self.b.poll_transmit(self.now) else {
                break;
            };
            if t.to == ADDR_A {
                if t.bytes.len() == swire::INIT_LEN && t.bytes[..4] == [b'R', b'S', 1, 1] {
                    let timeouts = self.b.stats().security.handshake_timeouts;
                    self.pending_b = Some((be32(&t.bytes, 4), timeouts));
                    self.forged_b = 0;
                }
                self.capture(ADDR_B, &t.bytes);
                self.to_a.push_back(t.bytes);
            } else {
                assert!(
                    t.to == STRANGER || t.to == NEIGHBOUR,
                    "B sent to {}, which never spoke",
                    t.to
                );
                *self.to_stranger.entry(t.to).or_default() += t.bytes.len();
            }
        }
        assert!(self.b.poll_transmit(self.now).is_none(), "B never stops");
        while let Some(e) = self.a.poll_event() {
            assert_eq!(e.peer, ADDR_B, "A reported on a peer it never used");
            events("A", e.kind, &mut self.side_a, &mut self.side_b);
        }
        while let Some(e) = self.b.poll_event() {
            assert_eq!(
                e.peer, ADDR_A,
                "B reported on {} (a stranger): {:?}",
                e.peer, e.kind
            );
            events("B", e.kind, &mut self.side_b, &mut self.side_a);
        }
        for (s, &got) in &self.to_stranger {
            let sent = self.from_stranger.get(s).copied().unwrap_or(0);
            assert!(
                got <= sent,
                "amplification: B sent {s} {got} bytes for {sent} received"
            );
        }
    }

    fn advance_to(&mut self, t: Instant) {
        self.now = self.now.max(t);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.drain();
        for (name, e) in [("A", &mut self.a), ("B", &mut self.b)] {
            if let Some(t) = e.poll_timeout() {
                assert!(
                    t > self.now,
                    "{name}: a timer is still due after handle_timeout"
                );
            }
        }
    }

    fn next_timer(&mut self) -> Option<Instant> {
        [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Any datagram to B, genuine or not. While B has a handshake in
    /// flight to A, the first copy of A's genuine response to it completes
    /// it, whatever came before.
    fn feed_b(&mut self, from: SocketAddr, bytes: &[u8]) {
        let before = self.b.stats().security;
        self.b.handle_datagram(self.now, from, bytes);
        let Some((index, timeouts)) = self.pending_b else {
            return;
        };
        let after = self.b.stats().security;
        let for_pending = from == ADDR_A
            && bytes.len() == swire::RESP_LEN
            && bytes[..4] == [b'R', b'S', 1, 2]
            && be32(bytes, 8) == index;
        let genuine = for_pending && self.responses_a.contains(bytes);
        let forged = for_pending && !genuine && {
            let mut m = bytes.to_vec();
            remac(&mut m, &self.b_public);
            m == bytes
        };
        if after.handshake_timeouts != timeouts || after.handshakes > before.handshakes {
            self.pending_b = None; // given up, or done
        } else if forged {
            self.forged_b += 1;
            if self.forged_b > FORGED_RESPONSES_SURVIVED {
                self.pending_b = None; // beyond the documented bound
            }
        } else {
            assert!(
                !genuine,
                "A's genuine response to B's initiation {index:#x} did not complete it"
            );
        }
    }

    fn deliver(&mut self, to_b: bool, bytes: &[u8]) {
        if to_b {
            self.feed_b(ADDR_A, bytes);
        } else {
            self.a.handle_datagram(self.now, ADDR_B, bytes);
        }
        self.drain();
    }

    fn flush(&mut self) {
        while !self.to_a.is_empty() || !self.to_b.is_empty() {
            let to_b: Vec<_> = self.to_b.drain(..).collect();
            for d in to_b {
                self.feed_b(ADDR_A, &d);
            }
            let to_a: Vec<_> = self.to_a.drain(..).collect();
            for d in to_a {
                self.a.handle_datagram(self.now, ADDR_B, &d);
            }
            self.drain();
        }
    }

    /// A clean network: deliver everything at once and run time on until
    /// every message has its outcome or `span` has passed.
    fn heal(&mut self, span: Duration) {
        let deadline = self.now + span;
        for _ in 0..100_000 {
            self.flush();
            if self.side_a.open.is_empty() && self.side_b.open.is_empty() {
                return;
            }
            match self.next_timer() {
                Some(t) if t <= deadline => self.advance_to(t),
                _ => return,
            }
        }
        panic!("no progress on a clean network");
    }

    /// A hostile datagram to B.
    pub fn inject(&mut self, from: SocketAddr, bytes: &[u8]) {
        check_outer(bytes);
        let stranger = from != ADDR_A;
        let before = self.to_stranger.get(&from).copied().unwrap_or(0);
        if stranger {
            *self.from_stranger.entry(from).or_default() += bytes.len();
        }
        self.feed_b(from, bytes);
        self.drain();
        if stranger {
            let after = self.to_stranger.get(&from).copied().unwrap_or(0);
            assert!(
                after - before <= bytes.len(),
                "B answered {} bytes from {from} with {}",
                bytes.len(),
                after - before
            );
        }
        for (p, _) in self.b.peers() {
            assert_eq!(p, ADDR_A, "B keeps a channel for a stranger");
        }
        for (p, _) in self.a.peers() {
            assert_eq!(p, ADDR_B, "A keeps a channel for a stranger");
        }
    }

    fn mutated(&self, s: &mut Script<'_>) -> Option<Vec<u8>> {
        let n = self.captured.len();
        let i = usize::from(s.u8());
        let mut d = self
            .captured
            .get(n.checked_sub(1 + i % n.max(1))?)?
            .1
            .clone();
        let how = s.u8();
        match how % 6 {
            0 => {} // replayed as it is
            1 => {
                let pos = usize::from(s.u16()) % d.len().max(1);
                let x = s.u8().max(1);
                if let Some(b) = d.get_mut(pos) {
                    *b ^= x;
                }
            }
            2 => {
                let len = usize::from(s.u16()) % (d.len() + 1);
                d.truncate(len);
            }
            3 => {
                // A new counter (or receiver index) for a transport datagram.
                let (at, n) = if how & 0x80 != 0 { (8, 8) } else { (4, 4) };
                let v = s.bytes(n).to_vec();
                if d.len() >= at + v.len() {
                    d[at..at + v.len()].copy_from_slice(&v);
                }
            }
            4 => {
                let len = usize::from(s.u8());
                d.extend_from_slice(s.bytes(len));
            }
            _ => {
                for _ in 0..s.u8() % 8 + 1 {
                    let pos = usize::from(s.u16()) % d.len().max(1);
                    let x = s.u8().max(1);
                    if let Some(b) = d.get_mut(pos) {
                        *b ^= x;
                    }
                }
            }
        }
        if how & 0x40 != 0 {
            remac(&mut d, &self.b_public);
        }
        Some(d)
    }

    /// Run a script, then heal the network and check every message arrived.
    pub fn run(&mut self, data: &[u8]) {
        let mut s = Script(data);
        let end = self.now + SCRIPT_SPAN;
        let mut ops = 0;
        while !s.is_empty() && ops < OPS_MAX {
            ops += 1;
            let code = s.u8() % op::COUNT;
            match code {
                op::RAW => {
                    let sel = s.u8();
                    let len = usize::from(s.u16()) % 1600;
                    let mut d = s.bytes(len).to_vec();
                    if sel & 0x80 != 0 {
                        d = shaped(&d, 1 + (sel >> 4) % 4);
                    }
                    if sel & 0x08 != 0 {
                        remac(&mut d, &self.b_public);
                    }
                    self.inject(source(sel), &d);
                }
                op::CAPTURED => {
                    let sel = s.u8();
                    if let Some(d) = self.mutated(&mut s) {
                        self.inject(source(sel), &d);
                    }
                }
                op::DELIVER | op::DUPLICATE | op::REORDER | op::DROP => {
                    let to_b = s.u8() % 2 == 0;
                    let q = if to_b { &mut self.to_b } else { &mut self.to_a };
                    let Some(d) = q.pop_front() else { continue };
                    match code {
                        op::DUPLICATE => q.push_front(d.clone()),
                        op::REORDER => {
                            q.push_back(d);
                            continue;
                        }
                        op::DROP if self.drops < DROPS_MAX => {
                            self.drops += 1;
                            continue;
                        }
                        _ => {}
                    }
                    self.deliver(to_b, &d);
                }
                op::FLUSH => self.flush(),
                op::WAIT => {
                    let us = u64::from(s.u16()) * u64::from(s.u8() % 32 + 1);
                    let t = (self.now + Duration::from_micros(us)).min(end);
                    self.advance_to(t);
                }
                op::NEXT_TIMER => {
                    if let Some(t) = self.next_timer().filter(|&t| t <= end) {
                        self.advance_to(t);
                    }
                }
                op::SEND_A => {
                    let len = usize::from(s.u16()) % 3000;
                    if self.sends_a < SETUP_MSGS + SCRIPT_SENDS_MAX {
                        self.send_a(len);
                    }
                }
                op::SEND_B => {
                    let len = usize::from(s.u8()) * 8;
                    if self.sends_b < SETUP_MSGS + SCRIPT_SENDS_MAX {
                        self.send_b(len);
                    }
                }
                op::RESPONSE => {
                    let sel = s.u8();
                    let sender = s.bytes(4).to_vec();
                    let receiver = self.pending_b.map_or(0, |p| p.0).to_be_bytes();
                    let mut d = vec![b'R', b'S', 1, 2];
                    d.extend_from_slice(&sender);
                    d.resize(8, 0);
                    d.extend_from_slice(&receiver);
                    d.extend_from_slice(s.bytes(swire::NOISE_RESP_LEN));
                    d.resize(swire::RESP_LEN, 0);
                    remac(&mut d, &self.b_public);
                    self.inject(source(sel), &d);
                }
                _ => unreachable!("opcodes are taken modulo op::COUNT"),
            }
        }
        self.heal(HEAL_SPAN);
        for (name, side) in [("A", &self.side_a), ("B", &self.side_b)] {
            assert!(
                side.open.is_empty(),
                "{name}: no outcome for {} message(s) after the network healed",
                side.open.len()
            );
            let missing = side.bodies.difference(&side.delivered).count();
            assert_eq!(missing, 0, "{name}: {missing} message(s) never delivered");
        }
    }
}

/// What `me` reports about the other side; `mine` is my messages, `theirs`
/// the other side's.
fn events(me: &str, e: ChannelEvent, mine: &mut Side, theirs: &mut Side) {
    match e {
        ChannelEvent::Delivered { msg_id, data } => {
            assert!(
                theirs.bodies.contains(&data),
                "{me} delivered {msg_id} ({} bytes), which its peer never sent",
                data.len()
            );
            assert!(
                theirs.delivered.insert(data),
                "{me} delivered {msg_id} twice"
            );
        }
        ChannelEvent::Acked { msg_id } => {
            assert!(mine.open.remove(&msg_id), "{me}: {msg_id} acked twice");
            assert!(
                mine.delivered.contains(&mine.sent[&msg_id]),
                "{me}: {msg_id} acked but never delivered"
            );
        }
        other => panic!(
            "{me}: {other:?} though the peer never restarted and nothing genuine was lost for long"
        ),
    }
}
