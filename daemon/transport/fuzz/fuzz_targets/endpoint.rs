//! The endpoint and its channels on hostile and lossy input, on a virtual clock.
//!
//! The input is a script. Two endpoints, A and B, talk to each other through
//! a network the script controls (deliver, drop, duplicate, reorder, corrupt),
//! while strangers — and a forger using B's address — throw arbitrary bytes
//! at A: raw, raw shaped as a bundle with valid CRCs patched in, or
//! well-formed bundles of datagrams built field by field. Time only moves
//! when the script says so. Every bundle A emits is checked valid and within
//! the size limit.
//!
//! Beyond "never panics, never hangs" (libFuzzer's `-timeout` catches a hang),
//! it checks what the channel promises:
//! - every message A's `send` accepted ends in exactly one `Acked` or `Failed`:
//!   at most one during the script, and at least one once the script ends and the
//!   network heals (everything delivered, held channels released, time run on
//!   until nothing is outstanding, bounded by the retry and keepalive limits);
//! - B delivers each of A's messages at most once, across B's restarts, with
//!   the bytes A sent (only A's genuine datagrams ever reach B);
//! - `Acked` means B delivered it, unless a datagram forged as B that parses (a
//!   valid CRC: nothing authenticates plaintext) reached A; unparseable bytes from B's
//!   address are dropped before any state and never excuse an unfounded ack;
//! - a datagram corrupted in flight to B is counted (`corrupt` or `malformed`) and
//!   changes nothing else: no delivery, no new peer;
//! - after `handle_timeout(now)` and draining `poll_transmit`, no timer is
//!   still due (`poll_timeout() > now`): a due timer would spin the event loop.
#![no_main]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rpcd_transport::wire::{
    AckInfo, Bundle, BundleBuilder, Datagram, Fragment, Kind, BUNDLE_HEADER_LEN, HEADER_LEN,
    PAYLOAD_MAX,
};
use rpcd_transport::{ChannelEvent, Config, Endpoint, MsgId, Seq};

#[path = "crc32c.rs"]
mod crc;

const EPOCH_A: u64 = 0xA0A0_A0A0_0000_0001;
/// Queued datagrams per direction; beyond it the "network" drops them.
const QUEUE_MAX: usize = 4096;
/// Datagrams one drain may produce before we call it a runaway.
const DRAIN_MAX: usize = 100_000;

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 7000))
}

/// One process-wide origin, so a crash reproduces with the same time offsets.
fn origin() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Small limits, so a short script reaches windows, budgets and retry caps.
fn tight() -> Config {
    let mut c = Config {
        payload_max: 64,
        message_max: 4096,
        send_queue_max: 16,
        send_queue_bytes_max: 8192,
        recv_window: 16,
        reassembly_bytes_max: 0,
        reassembly_total_max: 0,
        cwnd_initial: 2,
        cwnd_min: 2,
        cwnd_max: 32,
        rto_initial: Duration::from_millis(20),
        rto_min: Duration::from_millis(2),
        rto_max: Duration::from_millis(200),
        retransmits_max: 4,
        ack_delay: Duration::from_millis(1),
        ack_every: 2,
        keepalive_interval: Duration::from_millis(50),
        peer_timeout: Duration::from_millis(300),
        revalidate_after: Duration::from_millis(100),
        peers_max: 3,
        // The fragments this script sends, not the loopback size, set the budget's floor.
        payload_max_loopback: 0,
        // The idle-eviction and key-related settings keep their defaults.
        ..Config::default()
    };
    c.reassembly_bytes_max = c.reassembly_floor();
    // Two peers' worth for three peers: the shared budget is reached too.
    c.reassembly_total_max = 2 * c.reassembly_bytes_max;
    c
}

/// Reads the script; past its end every read is zero.
struct Script<'a>(&'a [u8]);

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
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) << 16 | u32::from(self.u16())
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) << 32 | u64::from(self.u32())
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The bytes A sends as message `n`: recognisable when B delivers them.
fn body(n: u32, len: usize) -> Vec<u8> {
    let tag = n.to_be_bytes();
    (0..len).map(|i| tag[i % 4] ^ (i as u8)).collect()
}

struct World {
    now: Instant,
    a: Endpoint,
    b: Endpoint,
    epoch_b: u64,
    to_a: VecDeque<Vec<u8>>,
    to_b: VecDeque<Vec<u8>>,
    /// A's accepted messages to B not yet Acked/Failed: msg id -> body.
    outstanding: HashMap<MsgId, Vec<u8>>,
    /// Every id A's send ever returned for B (ids are never reused).
    issued: HashSet<MsgId>,
    /// A's messages B delivered, over all of B's incarnations.
    delivered: HashSet<MsgId>,
    /// Whether a datagram forged with B's address that parses reached A:
    /// forged acks can make A believe what B never received (nothing
    /// authenticates v1). Bytes that fail to parse never set it.
    forged_as_b: bool,
    sends: u32,
}

impl World {
    fn new(cfg: Config) -> Self {
        World {
            now: origin(),
            a: Endpoint::new(cfg, EPOCH_A),
            b: Endpoint::new(cfg, 0xB0B0_0000_0000_0001),
            epoch_b: 0xB0B0_0000_0000_0001,
            to_a: VecDeque::new(),
            to_b: VecDeque::new(),
            outstanding: HashMap::new(),
            issued: HashSet::new(),
            delivered: HashSet::new(),
            forged_as_b: false,
            sends: 0,
        }
    }

    /// Collect what both endpoints want to send and what they report.
    fn drain(&mut self) {
        for _ in 0..DRAIN_MAX {
            let Some(t) = self.a.poll_transmit(self.now) else {
                break;
            };
            assert!(t.bytes.len() >= BUNDLE_HEADER_LEN + HEADER_LEN);
            let b = Bundle::parse(&t.bytes).expect("A emits valid bundles");
            let limit = BUNDLE_HEADER_LEN + HEADER_LEN + self.a.config().payload_max;
            assert!(t.bytes.len() <= limit, "a bundle over the size limit");
            assert!(!b.datagrams.is_empty());
            if t.to == addr(2) && self.to_b.len() < QUEUE_MAX {
                self.to_b.push_back(t.bytes);
            }
        }
        assert!(
            self.a.poll_transmit(self.now).is_none(),
            "A's poll_transmit never ends"
        );
        for _ in 0..DRAIN_MAX {
            let Some(t) = self.b.poll_transmit(self.now) else {
                break;
            };
            if t.to == addr(1) && self.to_a.len() < QUEUE_MAX {
                self.to_a.push_back(t.bytes);
            }
        }
        assert!(
            self.b.poll_transmit(self.now).is_none(),
            "B's poll_transmit never ends"
        );
        while let Some(e) = self.a.poll_event() {
            if e.peer != addr(2) {
                continue;
            }
            match e.kind {
                ChannelEvent::Acked { msg_id } => {
                    assert!(
                        self.outstanding.remove(&msg_id).is_some(),
                        "Acked twice or unknown: {msg_id}"
                    );
                    assert!(
                        self.forged_as_b || self.delivered.contains(&msg_id),
                        "Acked but never delivered: {msg_id}"
                    );
                }
                ChannelEvent::Failed { msg_id, .. } => {
                    assert!(
                        self.outstanding.remove(&msg_id).is_some(),
                        "Failed twice or unknown: {msg_id}"
                    );
                }
                _ => {}
            }
        }
        while let Some(e) = self.b.poll_event() {
            if e.peer != addr(1) {
                continue;
            }
            if let ChannelEvent::Delivered { msg_id, data } = e.kind {
                assert!(
                    self.issued.contains(&msg_id),
                    "B delivered a message A never sent: {msg_id}"
                );
                assert!(
                    self.delivered.insert(msg_id),
                    "B delivered A's message {msg_id} twice"
                );
                if let Some(expected) = self.outstanding.get(&msg_id) {
                    assert_eq!(&data, expected, "B delivered other bytes for {msg_id}");
                }
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
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

    /// The script is over: heal the network and run time on until every message A
    /// accepted has its one outcome. Every message ends within the retry and
    /// keepalive bounds, so a few thousand rounds is ample; more is a hang.
    fn finish(&mut self) {
        self.a.release(addr(2));
        for _ in 0..10_000 {
            if self.outstanding.is_empty() {
                return;
            }
            while let Some(bytes) = self.to_b.pop_front() {
                self.b.handle_datagram(self.now, addr(1), &bytes);
            }
            while let Some(bytes) = self.to_a.pop_front() {
                self.a.handle_datagram(self.now, addr(2), &bytes);
            }
            self.drain();
            if self.to_a.is_empty() && self.to_b.is_empty() {
                let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(t) => {
                        let by = t.saturating_duration_since(self.now);
                        self.advance(by);
                    }
                    None => break,
                }
            }
        }
        assert!(
            self.outstanding.is_empty(),
            "no outcome for {} message(s) after the network healed: {:?}",
            self.outstanding.len(),
            self.outstanding.keys().collect::<Vec<_>>()
        );
    }

    /// A datagram built field by field from the script, always well-formed.
    fn forged(&self, s: &mut Script<'_>) -> Vec<u8> {
        let sel = s.u8();
        let sender_epoch = match sel & 3 {
            0 => self.epoch_b,
            1 => 0xB0B0_0000_0000_0002,
            2 => 1,
            _ => s.u64().max(1),
        };
        let receiver_epoch = match (sel >> 2) & 3 {
            0 => EPOCH_A,
            1 => 0,
            2 => EPOCH_A + 1,
            _ => s.u64(),
        };
        let kind = [Kind::Data, Kind::Ack, Kind::Probe][usize::from((sel >> 4) % 3)];
        let small = |x: u64| if sel & 0x40 != 0 { x % 64 } else { x };
        let ack = (s.u8() & 1 == 1).then(|| AckInfo {
            ack: Seq(small(s.u64())),
            sack: s.u64(),
            window: s.u32(),
        });
        let send_floor = Seq(small(s.u64()));
        let msg_floor = small(s.u64());
        let ack_now = sel & 0x80 != 0;
        let payload_len = usize::from(s.u16()) % 200;
        let payload = s.bytes(payload_len).to_vec();
        let (seq, fragment_fields) = if kind == Kind::Data {
            let seq = small(s.u64()).max(1);
            let count = (s.u32() % 80).max(1);
            let index = s.u32() % count;
            let msg_id = small(s.u64());
            (Seq(seq), Some((msg_id, index, count)))
        } else {
            (Seq(0), None)
        };
        let d = Datagram {
            sender_epoch,
            receiver_epoch,
            kind,
            seq,
            send_floor,
            msg_floor,
            ack,
            ack_now,
            fragment: fragment_fields.map(|(msg_id, index, count)| Fragment {
                msg_id,
                index,
                count,
                payload: &payload[..payload.len().min(PAYLOAD_MAX)],
            }),
            nonce: 0,
            key_id: 0,
        };
        d.to_vec()
    }
}

fuzz_target!(|data: &[u8]| {
    crc::check_vector();
    let mut s = Script(data);
    let cfg = if s.u8() & 1 == 0 {
        tight()
    } else {
        Config::default()
    };
    assert_eq!(cfg.validate(), Ok(()));
    let mut w = World::new(cfg);
    let mut ops = 0;
    while !s.is_empty() && ops < 2000 {
        ops += 1;
        match s.u8() % 16 {
            // A sends B a message.
            0 | 1 => {
                let len = usize::from(s.u16()) % 3000;
                w.sends += 1;
                let bytes = body(w.sends, len);
                if let Ok(id) = w.a.send(w.now, addr(2), bytes.clone()) {
                    assert!(w.issued.insert(id), "send returned id {id} twice");
                    w.outstanding.insert(id, bytes);
                }
            }
            // B sends A a message (replies, piggy-backed acks).
            2 => {
                let len = usize::from(s.u8()) * 8;
                let _ = w.b.send(w.now, addr(1), vec![0xBB; len]);
            }
            // Deliver, drop or duplicate the head of a direction.
            3..=5 => {
                let to_b = s.u8() & 1 == 0;
                let how = s.u8() % 8;
                let q = if to_b { &mut w.to_b } else { &mut w.to_a };
                let Some(bytes) = q.pop_front() else { continue };
                let deliver = match how {
                    0 => false, // lost
                    1 => {
                        q.push_back(bytes.clone()); // reordered behind the rest
                        false
                    }
                    2 => {
                        q.push_front(bytes.clone()); // duplicated: now and next
                        true
                    }
                    _ => true,
                };
                if deliver {
                    if to_b {
                        w.b.handle_datagram(w.now, addr(1), &bytes);
                    } else {
                        w.a.handle_datagram(w.now, addr(2), &bytes);
                    }
                }
            }
            // Deliver everything queued, both ways.
            6 => {
                while let Some(bytes) = w.to_b.pop_front() {
                    w.b.handle_datagram(w.now, addr(1), &bytes);
                }
                while let Some(bytes) = w.to_a.pop_front() {
                    w.a.handle_datagram(w.now, addr(2), &bytes);
                }
            }
            // Corrupt a bundle in flight to B: one byte changed, which the
            // bundle's count and its datagrams' CRC32Cs detect, so B counts it
            // once and nothing else happens.
            7 => {
                let pos = usize::from(s.u16());
                let flip = s.u8().max(1);
                if let Some(mut bytes) = w.to_b.pop_front() {
                    let i = pos % bytes.len();
                    bytes[i] ^= flip;
                    let before = w.b.stats();
                    let peers: Vec<_> = w.b.peers().collect();
                    w.b.handle_datagram(w.now, addr(1), &bytes);
                    let after = w.b.stats();
                    assert_eq!(
                        after.corrupt + after.malformed,
                        before.corrupt + before.malformed + 1,
                        "a corrupted datagram was not counted (byte {i} ^ {flip:#x})"
                    );
                    assert!(
                        w.b.poll_event().is_none(),
                        "a corrupted datagram produced an event"
                    );
                    let now: Vec<_> = w.b.peers().collect();
                    assert_eq!(peers, now, "a corrupted datagram changed B's channels");
                }
            }
            // Raw bytes to A, from a stranger or forged as B; maybe resealed.
            8 | 9 => {
                let who = s.u8();
                let len = usize::from(s.u16()) % 1500;
                let mut bytes = s.bytes(len).to_vec();
                if who & 0x80 != 0 {
                    crc::reseal_bundle(&mut bytes);
                }
                let from = addr(2 + who % 4);
                w.forged_as_b |= from == addr(2) && Bundle::parse(&bytes).is_ok();
                w.a.handle_datagram(w.now, from, &bytes);
            }
            // A well-formed bundle of 1 to 4 datagrams to A, from a stranger
            // or forged as B.
            10 | 11 => {
                let who = s.u8();
                let mut b = BundleBuilder::new(usize::MAX);
                for _ in 0..=(who >> 5) % 4 {
                    b.push(&w.forged(&mut s));
                }
                let bytes = b.finish();
                let from = addr(2 + who % 4);
                w.forged_as_b |= from == addr(2);
                w.a.handle_datagram(w.now, from, &bytes);
            }
            // Time passes.
            12 => {
                let us = u64::from(s.u16()) * u64::from(s.u8() % 16 + 1);
                w.advance(Duration::from_micros(us));
            }
            // Jump to the next deadline of either endpoint.
            13 => {
                let next = [w.a.poll_timeout(), w.b.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                if let Some(t) = next {
                    let by = t.saturating_duration_since(w.now);
                    w.advance(by);
                }
            }
            // A cancels one of its outstanding messages; or holds/releases.
            14 => match s.u8() % 3 {
                0 => {
                    if let Some(&id) = w.outstanding.keys().min() {
                        w.a.cancel(addr(2), id);
                    }
                }
                1 => w.a.hold(w.now, addr(2)),
                _ => w.a.release(addr(2)),
            },
            // B restarts with a new epoch: A must fail, never re-deliver.
            _ => {
                w.epoch_b += 1;
                w.b = Endpoint::new(cfg, w.epoch_b);
                w.to_b.clear();
            }
        }
        w.drain();
    }
    w.finish();
});
