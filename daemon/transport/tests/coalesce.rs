//! Coalescing through the endpoint's real interface, on a virtual clock:
//! what one `poll_transmit` drain finds queued for a peer leaves in as few
//! UDP datagrams (bundles) as fit, a lone message still leaves at once and
//! alone, a bundle never exceeds one full fragment's size, a bundle is
//! accepted whole or dropped and counted once, and (attack-style) a bundle
//! neither amplifies nor, with keys, smuggles unauthenticated datagrams.
//! Each test runs in plaintext and with keys where both apply. Loss,
//! reordering and duplication of bundles with exactly-once delivery are the
//! simulator's (`tests/sim.rs`, `SIM_MODE=plain|keyed`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rpcd_transport::secure::wire::TRANSPORT_OVERHEAD;
use rpcd_transport::secure::{PeerKey, PrivateKey, Security};
use rpcd_transport::wire::{
    Bundle, Datagram, Kind, BUNDLE_COUNT_MAX, BUNDLE_HEADER_LEN, HEADER_LEN,
};
use rpcd_transport::{ChannelEvent, Config, Endpoint, Transmit};

const A: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(10, 0, 0, 1),
    7001,
));
const B: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(10, 0, 0, 2),
    7002,
));
const STRANGER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(10, 0, 0, 9),
    7009,
));

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Plain,
    Keyed,
}

fn cfg() -> Config {
    Config {
        // Enough window, and a pacing burst as large, that neither the window
        // nor the pacer decides a bundle's size here; no redundant copies.
        cwnd_initial: 256,
        pacing_burst: 1024,
        redundant_flight_max: 0,
        ..Config::default()
    }
}

/// Bytes of a bundle (before sealing) of `n` single-fragment messages of
/// `len` bytes.
fn bundle_len(n: usize, len: usize) -> usize {
    BUNDLE_HEADER_LEN + n * (HEADER_LEN + len)
}

/// The most a bundle may hold: one full fragment's datagram.
fn limit(c: &Config) -> usize {
    BUNDLE_HEADER_LEN + HEADER_LEN + c.payload_max
}

struct Pair {
    now: Instant,
    mode: Mode,
    a: Endpoint,
    b: Endpoint,
    /// Messages B delivered (from A).
    delivered: Vec<Vec<u8>>,
    /// Every event other than deliveries, per side.
    events: Vec<(SocketAddr, ChannelEvent)>,
}

impl Pair {
    fn new(mode: Mode, c: Config) -> Self {
        let now = Instant::now();
        let (ka, kb) = (
            PrivateKey::from_bytes([1; 32]),
            PrivateKey::from_bytes([2; 32]),
        );
        let keys =
            |local: &PrivateKey, name: &str, other: &PrivateKey, at: SocketAddr| Security::Keys {
                local: local.clone(),
                peers: vec![PeerKey {
                    name: name.into(),
                    public: other.public(),
                    addresses: vec![at],
                }],
            };
        let (sa, sb) = match mode {
            Mode::Plain => (Security::Plaintext, Security::Plaintext),
            Mode::Keyed => (keys(&ka, "b", &kb, B), keys(&kb, "a", &ka, A)),
        };
        let wall = Duration::from_secs(1_800_000_000);
        let mut p = Pair {
            now,
            mode,
            a: Endpoint::with_security(c, 0xA1, sa, [1; 32], wall),
            b: Endpoint::with_security(c, 0xB2, sb, [2; 32], wall),
            delivered: Vec::new(),
            events: Vec::new(),
        };
        // Learn each other's epoch (and with keys set the session up)
        // first: what follows measures data alone.
        p.a.send(now, B, b"hello".to_vec()).expect("send");
        p.settle();
        assert_eq!(p.take_delivered(), vec![b"hello".to_vec()]);
        p.events.clear();
        p
    }

    /// Drain `a`'s transmits as they are now (one drain: one loop iteration
    /// of a daemon).
    fn drain_a(&mut self) -> Vec<Transmit> {
        let mut out = Vec::new();
        while let Some(t) = self.a.poll_transmit(self.now) {
            out.push(t);
        }
        self.collect();
        out
    }

    fn collect(&mut self) {
        while let Some(e) = self.a.poll_event() {
            self.events.push((A, e.kind));
        }
        while let Some(e) = self.b.poll_event() {
            match e.kind {
                ChannelEvent::Delivered { data, .. } => self.delivered.push(data),
                other => self.events.push((B, other)),
            }
        }
    }

    fn take_delivered(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.delivered)
    }

    /// Exchange everything, on a lossless wire, and run the timers until
    /// both sides are quiet (virtual time, 10 s at most).
    fn settle(&mut self) {
        let end = self.now + Duration::from_secs(10);
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit(self.now) {
                moved = true;
                self.b.handle_datagram(self.now, A, &t.bytes);
            }
            while let Some(t) = self.b.poll_transmit(self.now) {
                moved = true;
                self.a.handle_datagram(self.now, B, &t.bytes);
            }
            self.collect();
            if moved {
                continue;
            }
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end && !(self.a.is_idle() && self.b.is_idle()) => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                }
                _ => return,
            }
        }
    }

    /// The bundle inside a transmit (opened by the test for plaintext;
    /// with keys, only its size is visible).
    fn bundle_bytes(&self, t: &Transmit) -> usize {
        match self.mode {
            Mode::Plain => {
                let b = Bundle::parse(&t.bytes).expect("a valid bundle on the wire");
                assert!(!b.datagrams.is_empty());
                t.bytes.len()
            }
            Mode::Keyed => t.bytes.len() - TRANSPORT_OVERHEAD,
        }
    }
}

fn msg(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

#[test]
fn many_small_messages_to_one_peer_leave_in_few_datagrams() {
    for mode in [Mode::Plain, Mode::Keyed] {
        let c = cfg();
        let mut p = Pair::new(mode, c);
        let before = p.a.stats();
        // 40 messages of 100 bytes: 196-byte datagrams, 6 to a bundle.
        let (n, len) = (40, 100);
        let per = (limit(&c) - BUNDLE_HEADER_LEN) / (HEADER_LEN + len);
        assert_eq!(per, 6);
        let sent: Vec<Vec<u8>> = (0..n).map(|i| msg(i, len)).collect();
        for m in &sent {
            p.a.send(p.now, B, m.clone()).expect("send");
        }
        let out = p.drain_a();
        assert_eq!(out.len(), n.div_ceil(per), "{mode:?}: UDP datagrams");
        for (i, t) in out.iter().enumerate() {
            assert_eq!(t.to, B);
            let k = if i + 1 < out.len() { per } else { n % per };
            assert_eq!(p.bundle_bytes(t), bundle_len(k, len), "{mode:?} #{i}");
        }
        let after = p.a.stats();
        assert_eq!(after.bundles_sent - before.bundles_sent, out.len() as u64);
        assert_eq!(after.bundled_sent - before.bundled_sent, n as u64);
        for t in &out {
            p.b.handle_datagram(p.now, A, &t.bytes);
        }
        p.collect();
        assert_eq!(p.take_delivered(), sent, "{mode:?}: each once, in order");
        let b = p.b.stats();
        assert_eq!((b.malformed, b.corrupt), (0, 0));
        assert_eq!(b.bundled_received - before.bundled_received, n as u64);
        // The per-peer counters count UDP datagrams.
        let snap = p.a.peer(B).expect("channel");
        assert_eq!(snap.stats.datagrams_sent, after.bundles_sent);
        p.settle();
        assert!(p
            .events
            .iter()
            .all(|(_, e)| matches!(e, ChannelEvent::Acked { .. })));
        assert_eq!(p.events.len(), n, "every message acknowledged once");
    }
}

#[test]
fn a_lone_message_leaves_at_once_in_one_datagram() {
    for mode in [Mode::Plain, Mode::Keyed] {
        let mut p = Pair::new(mode, cfg());
        p.a.send(p.now, B, b"alone".to_vec()).expect("send");
        // Same instant, no timer run: it is out on the first drain.
        let out = p.drain_a();
        assert_eq!(out.len(), 1, "{mode:?}");
        assert_eq!(p.bundle_bytes(&out[0]), bundle_len(1, 5), "{mode:?}");
        if mode == Mode::Plain {
            assert_eq!(out[0].bytes[3], 1, "a count of one");
        }
        p.b.handle_datagram(p.now, A, &out[0].bytes);
        p.collect();
        assert_eq!(p.take_delivered(), vec![b"alone".to_vec()], "{mode:?}");
    }
}

#[test]
fn a_bundle_at_the_size_limit_splits() {
    for mode in [Mode::Plain, Mode::Keyed] {
        let c = cfg();
        // Two messages that fill a bundle to the byte.
        let fill = (limit(&c) - BUNDLE_HEADER_LEN) / 2 - HEADER_LEN;
        assert_eq!(bundle_len(2, fill), limit(&c));
        let mut p = Pair::new(mode, c);
        for i in 0..2 {
            p.a.send(p.now, B, msg(i, fill)).expect("send");
        }
        let out = p.drain_a();
        assert_eq!(out.len(), 1, "{mode:?}: two that fit share one");
        assert_eq!(p.bundle_bytes(&out[0]), limit(&c));
        // One byte more each: they no longer fit together.
        for i in 0..2 {
            p.a.send(p.now, B, msg(i, fill + 1)).expect("send");
        }
        let out2 = p.drain_a();
        assert_eq!(out2.len(), 2, "{mode:?}: one byte over splits");
        // A full fragment's datagram is exactly the limit, alone; a message
        // of several fragments is several full bundles.
        p.a.send(p.now, B, msg(9, 3 * c.payload_max)).expect("send");
        let out3 = p.drain_a();
        assert_eq!(out3.len(), 3, "{mode:?}");
        for t in out.iter().chain(&out2).chain(&out3) {
            assert!(p.bundle_bytes(t) <= limit(&c), "{mode:?}: over the limit");
        }
        for t in out.iter().chain(&out2).chain(&out3) {
            p.b.handle_datagram(p.now, A, &t.bytes);
        }
        p.collect();
        let expected = vec![
            msg(0, fill),
            msg(1, fill),
            msg(0, fill + 1),
            msg(1, fill + 1),
            msg(9, 3 * c.payload_max),
        ];
        assert_eq!(p.take_delivered(), expected, "{mode:?}");
    }
}

#[test]
fn a_bundle_never_holds_more_than_its_count_byte() {
    // With a huge payload size, 300 one-byte messages queued at once still
    // make bundles of at most 255 datagrams.
    let c = Config {
        payload_max: 60_000,
        cwnd_initial: 1024,
        pacing_burst: 1024,
        ..cfg()
    };
    let mut p = Pair::new(Mode::Plain, c);
    for i in 0..300 {
        p.a.send(p.now, B, msg(i, 1)).expect("send");
    }
    let out = p.drain_a();
    assert_eq!(out.len(), 2);
    let counts: Vec<usize> = out
        .iter()
        .map(|t| Bundle::parse(&t.bytes).expect("bundle").datagrams.len())
        .collect();
    assert_eq!(counts, vec![BUNDLE_COUNT_MAX, 300 - BUNDLE_COUNT_MAX]);
}

/// Plaintext: one bad datagram inside rejects the bundle, counted once,
/// with no effect at all; the genuine bundle afterwards is accepted whole.
#[test]
fn a_malformed_inner_datagram_rejects_the_whole_bundle() {
    let mut p = Pair::new(Mode::Plain, cfg());
    for i in 0..3 {
        p.a.send(p.now, B, msg(i, 20)).expect("send");
    }
    let out = p.drain_a();
    assert_eq!(out.len(), 1);
    let good = out[0].bytes.clone();
    let third = bundle_len(2, 20);
    let before = p.b.stats();
    let channel = p.b.peer(A);
    // Corrupt the last datagram's payload: its CRC fails.
    let mut b = good.clone();
    b[third + HEADER_LEN + 3] ^= 0x10;
    p.b.handle_datagram(p.now, A, &b);
    // A count that disagrees (truncated at a boundary).
    p.b.handle_datagram(p.now, A, &good[..third]);
    // The last datagram from an older wire version.
    let mut b = good.clone();
    b[third + 2] = 1;
    p.b.handle_datagram(p.now, A, &b);
    p.collect();
    let s = p.b.stats();
    assert_eq!((s.corrupt, s.malformed), (1, 2));
    assert_eq!(
        (s.bundles_received, s.bundled_received),
        (before.bundles_received, before.bundled_received)
    );
    assert_eq!(p.b.peer(A), channel, "a rejected bundle changes nothing");
    assert!(p.take_delivered().is_empty() && p.events.is_empty());
    p.b.handle_datagram(p.now, A, &good);
    p.collect();
    assert_eq!(p.take_delivered().len(), 3);
    let s = p.b.stats();
    assert_eq!(
        (s.bundles_received, s.bundled_received),
        (before.bundles_received + 1, before.bundled_received + 3)
    );
}

/// Plaintext: a stranger's bundle of probes gets no more bytes back than
/// it sent, in no more datagrams.
#[test]
fn a_bundle_of_probes_is_not_amplified() {
    let c = cfg();
    let mut b = Endpoint::new(c, 0xB2);
    let now = Instant::now();
    let per = (limit(&c) - BUNDLE_HEADER_LEN) / HEADER_LEN;
    let probes: Vec<Vec<u8>> = (0..per as u64)
        .map(|i| {
            Datagram {
                sender_epoch: 0x5000 + i,
                receiver_epoch: 0,
                kind: Kind::Probe,
                seq: rpcd_transport::Seq(0),
                send_floor: rpcd_transport::Seq(1),
                msg_floor: 0,
                ack: None,
                ack_now: true,
                fragment: None,
                nonce: 0x1234 + i,
                key_id: 0,
            }
            .to_vec()
        })
        .collect();
    let parsed: Vec<Datagram<'_>> = probes
        .iter()
        .map(|p| Datagram::parse(p).expect("probe"))
        .collect();
    let bundle = Bundle { datagrams: parsed }.to_vec();
    assert!(bundle.len() <= limit(&c));
    let mut back = (0, 0);
    for _ in 0..10 {
        b.handle_datagram(now, STRANGER, &bundle);
        while let Some(t) = b.poll_transmit(now) {
            assert_eq!(t.to, STRANGER);
            back = (back.0 + 1, back.1 + t.bytes.len());
        }
    }
    assert!(back.0 <= 10, "{} datagrams for 10", back.0);
    assert!(
        back.1 <= 10 * bundle.len(),
        "{} bytes for {}",
        back.1,
        10 * bundle.len()
    );
}

/// Keyed: a bundle is one AEAD; datagrams added to a sealed bundle, a
/// plaintext bundle from the peer's address, or a sealed bundle spliced
/// with plaintext, all fail authentication and reach no channel.
#[test]
fn keyed_bundles_cannot_smuggle_unauthenticated_datagrams() {
    let mut p = Pair::new(Mode::Keyed, cfg());
    for i in 0..3 {
        p.a.send(p.now, B, msg(i, 20)).expect("send");
    }
    let out = p.drain_a();
    assert_eq!(out.len(), 1, "three messages, one sealed bundle");
    let sealed = out[0].bytes.clone();
    assert_eq!(sealed.len(), TRANSPORT_OVERHEAD + bundle_len(3, 20));
    // A well-formed plaintext bundle, as A would send without keys.
    let mut plain_ep = Endpoint::new(cfg(), 0xA1);
    plain_ep.send(p.now, B, b"smuggled".to_vec()).expect("send");
    let plain = plain_ep.poll_transmit(p.now).expect("transmit").bytes;
    let before = p.b.stats();
    // (1) Plaintext from A's address.
    p.b.handle_datagram(p.now, A, &plain);
    // (2) The sealed bundle with a plaintext datagram appended.
    let mut spliced = sealed.clone();
    spliced.extend_from_slice(&plain[BUNDLE_HEADER_LEN..]);
    p.b.handle_datagram(p.now, A, &spliced);
    // (3) The sealed bundle with its last sealed bytes swapped for plaintext.
    let mut swapped = sealed[..sealed.len() - 40].to_vec();
    swapped.extend_from_slice(&plain[plain.len() - 40..]);
    p.b.handle_datagram(p.now, A, &swapped);
    p.collect();
    let after = p.b.stats();
    assert_eq!(
        after.security.not_authenticated - before.security.not_authenticated,
        1
    );
    assert_eq!(after.security.auth_failed - before.security.auth_failed, 2);
    assert_eq!(after.bundles_received, before.bundles_received);
    assert!(p.take_delivered().is_empty(), "nothing reached a channel");
    // The genuine bundle still opens, once.
    p.b.handle_datagram(p.now, A, &sealed);
    p.b.handle_datagram(p.now, A, &sealed);
    p.collect();
    assert_eq!(p.take_delivered().len(), 3);
    let s = p.b.stats();
    assert_eq!(s.security.replayed - after.security.replayed, 1);
    assert_eq!(s.bundled_received - after.bundled_received, 3);
}

#[test]
fn a_redundant_copy_of_a_repair_goes_in_a_udp_datagram_of_its_own() {
    // A light load (application-limited, thin flight) repairs a lost whole
    // message twice, back to back. The copies must travel in different UDP
    // datagrams: in one bundle, one loss would take both.
    for mode in [Mode::Plain, Mode::Keyed] {
        let c = Config {
            redundant_flight_max: 16,
            forward_copies: false,
            ..cfg()
        };
        let mut p = Pair::new(mode, c);
        let lost = p.drain_a();
        assert!(lost.is_empty(), "{mode:?}: nothing queued yet");
        p.a.send(p.now, B, msg(0, 100)).expect("send");
        let dropped = p.drain_a();
        assert_eq!(dropped.len(), 1, "{mode:?}: the first message alone");
        // Three later messages, one per iteration, reach B and are acknowledged:
        // the first is lost by counter (three later ones acknowledged).
        for i in 1..=3 {
            p.now += Duration::from_millis(1);
            p.a.send(p.now, B, msg(i, 100)).expect("send");
            for t in p.drain_a() {
                p.b.handle_datagram(p.now, A, &t.bytes);
            }
        }
        p.now += Duration::from_millis(1);
        p.b.handle_timeout(p.now);
        while let Some(t) = p.b.poll_transmit(p.now) {
            p.a.handle_datagram(p.now, B, &t.bytes);
        }
        let before = p.a.stats();
        let repair = p.drain_a();
        let after = p.a.stats();
        assert_eq!(
            after.bundles_sent - before.bundles_sent,
            repair.len() as u64,
            "{mode:?}"
        );
        assert!(
            repair.len() >= 2,
            "{mode:?}: the repair and its copy share one UDP datagram ({} sent)",
            repair.len()
        );
        // Every UDP datagram B receives now delivers the lost message at most once;
        // dropping the first of them still delivers it.
        for t in &repair[1..] {
            p.b.handle_datagram(p.now, A, &t.bytes);
        }
        p.collect();
        let got = p.take_delivered();
        assert!(
            got.contains(&msg(0, 100)),
            "{mode:?}: the copy alone repaired the loss"
        );
    }
}

#[test]
fn a_forward_copy_travels_in_the_next_messages_udp_datagram() {
    // A light load: message 0 goes alone; a millisecond later message 1
    // goes, and a copy of message 0 (unacknowledged) rides in the same UDP
    // datagram. When the first UDP datagram is lost, the second alone
    // delivers both messages, with no retransmission.
    for mode in [Mode::Plain, Mode::Keyed] {
        let c = Config {
            redundant_flight_max: 16,
            forward_copies: true,
            ..cfg()
        };
        let mut p = Pair::new(mode, c);
        assert!(p.drain_a().is_empty(), "{mode:?}: nothing queued yet");
        p.a.send(p.now, B, msg(0, 100)).expect("send");
        let dropped = p.drain_a();
        assert_eq!(dropped.len(), 1, "{mode:?}: the first message alone");
        p.now += Duration::from_millis(1);
        p.a.send(p.now, B, msg(1, 100)).expect("send");
        let next = p.drain_a();
        assert_eq!(next.len(), 1, "{mode:?}: one UDP datagram");
        let before = p.b.stats().bundled_received;
        p.b.handle_datagram(p.now, A, &next[0].bytes);
        p.collect();
        let mut got = p.take_delivered();
        got.sort();
        assert_eq!(got, [msg(0, 100), msg(1, 100)], "{mode:?}");
        assert_eq!(p.b.stats().bundled_received - before, 2, "{mode:?}");
    }
}
