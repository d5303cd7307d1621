//! Authenticated endpoints in a deterministic two-node network: sessions
//! under loss, duplication and reordering, rekeying, restarts, and the
//! attacks of FAULTS.md tried with real datagrams (strangers, forgeries,
//! replays, floods), each shown to fail. Seeded; a failure names its seed.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rpcd_transport::secure::{PeerKey, PrivateKey, Security};
use rpcd_transport::{ChannelEvent, Config, Endpoint, Transmit};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, (port % 200) as u8 + 1], port))
}

fn key(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

fn peer(name: &str, k: &PrivateKey, at: Option<SocketAddr>) -> PeerKey {
    PeerKey {
        name: name.into(),
        public: k.public(),
        addresses: at.into_iter().collect(),
    }
}

fn cfg() -> Config {
    Config {
        rekey_after: Duration::from_secs(120),
        ..Config::default()
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

/// Two or more endpoints and the datagrams between them.
struct Net {
    now: Instant,
    nodes: BTreeMap<SocketAddr, Endpoint>,
    /// (arrival, from, to, bytes), unordered; delivered by arrival time.
    wire: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    rng: Rng,
    loss: u64,
    dup: u64,
    /// Everything ever put on the wire.
    log: Vec<Transmit>,
    /// Messages delivered, per receiving node.
    delivered: HashMap<SocketAddr, Vec<(SocketAddr, Vec<u8>)>>,
    events: Vec<(SocketAddr, SocketAddr, ChannelEvent)>,
}

impl Net {
    fn new(seed: u64, loss: u64, dup: u64) -> Self {
        Net {
            now: Instant::now(),
            nodes: BTreeMap::new(),
            wire: Vec::new(),
            rng: Rng(seed | 1),
            loss,
            dup,
            log: Vec::new(),
            delivered: HashMap::new(),
            events: Vec::new(),
        }
    }

    fn add(&mut self, at: SocketAddr, local: &PrivateKey, peers: Vec<PeerKey>, cfg: Config) {
        let mut seed = [0; 32];
        seed[..8].copy_from_slice(&self.rng.next().to_le_bytes());
        let ep = Endpoint::with_security(
            cfg,
            self.rng.next() | 1,
            Security::Keys {
                local: local.clone(),
                peers,
            },
            seed,
            Duration::from_secs(1_800_000_000) + self.now.elapsed(),
        );
        self.nodes.insert(at, ep);
    }

    fn node(&mut self, at: SocketAddr) -> &mut Endpoint {
        self.nodes.get_mut(&at).expect("node exists")
    }

    /// Drain every node's output onto the wire (with loss and duplication).
    fn flush(&mut self) {
        let now = self.now;
        let mut out = Vec::new();
        for (&from, ep) in self.nodes.iter_mut() {
            while let Some(t) = ep.poll_transmit(now) {
                out.push((from, t));
            }
            while let Some(e) = ep.poll_event() {
                match e.kind {
                    ChannelEvent::Delivered { data, .. } => {
                        self.delivered.entry(from).or_default().push((e.peer, data))
                    }
                    other => self.events.push((from, e.peer, other)),
                }
            }
        }
        for (from, t) in out {
            self.log.push(t.clone());
            if self.rng.percent(self.loss) {
                continue;
            }
            let copies = if self.rng.percent(self.dup) { 2 } else { 1 };
            for _ in 0..copies {
                let delay = Duration::from_micros(500 + self.rng.next() % 2000);
                self.wire.push((now + delay, from, t.to, t.bytes.clone()));
            }
        }
    }

    /// Inject bytes as if `from` had sent them to `to`.
    fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.wire.push((self.now, from, to, bytes));
    }

    /// Run until `until` of virtual time has passed.
    fn run(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            self.flush();
            let next_wire = self.wire.iter().map(|w| w.0).min();
            let next_timer = self
                .nodes
                .values_mut()
                .filter_map(|e| e.poll_timeout())
                .min();
            let Some(t) = next_wire.into_iter().chain(next_timer).min() else {
                self.now = end;
                return;
            };
            if t > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(t);
            let now = self.now;
            let mut due = Vec::new();
            self.wire.retain(|w| {
                if w.0 <= now {
                    due.push(w.clone());
                    false
                } else {
                    true
                }
            });
            for (_, from, to, bytes) in due {
                if let Some(ep) = self.nodes.get_mut(&to) {
                    ep.handle_datagram(now, from, &bytes);
                }
            }
            for ep in self.nodes.values_mut() {
                if ep.poll_timeout().is_some_and(|t| t <= now) {
                    ep.handle_timeout(now);
                }
            }
        }
    }

    fn got(&self, at: SocketAddr) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = self
            .delivered
            .get(&at)
            .map(|d| d.iter().map(|(_, m)| m.clone()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn bytes_sent(&self, from_port: SocketAddr, to: SocketAddr) -> usize {
        let _ = from_port;
        self.log
            .iter()
            .filter(|t| t.to == to)
            .map(|t| t.bytes.len())
            .sum()
    }
}

const A: u16 = 7001;
const B: u16 = 7002;

/// A and B configured with each other's keys and addresses.
fn pair(seed: u64, loss: u64, dup: u64, cfg: Config) -> Net {
    let (ka, kb) = (key(1), key(2));
    let mut net = Net::new(seed, loss, dup);
    net.add(addr(A), &ka, vec![peer("b", &kb, Some(addr(B)))], cfg);
    net.add(addr(B), &kb, vec![peer("a", &ka, Some(addr(A)))], cfg);
    net
}

/// `n` distinct messages, in the order `Net::got` reports them (sorted).
fn msgs(n: usize, tag: u8) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..n)
        .map(|i| vec![tag, (i % 256) as u8, (i / 256) as u8])
        .collect();
    v.sort();
    v
}

#[test]
fn sessions_carry_every_message_exactly_once_under_loss_duplication_and_reordering() {
    for seed in 1..=20u64 {
        let mut net = pair(seed, 20, 10, cfg());
        let (a, b) = (addr(A), addr(B));
        let to_b = msgs(200, 1);
        let to_a = msgs(200, 2);
        for (x, y) in to_b.iter().zip(&to_a) {
            let now = net.now;
            net.node(a).send(now, b, x.clone()).expect("send a->b");
            net.node(b).send(now, a, y.clone()).expect("send b->a");
            net.run(Duration::from_millis(2));
        }
        net.run(Duration::from_secs(20));
        assert_eq!(
            net.got(b),
            to_b,
            "seed {seed}: B got every message of A once"
        );
        assert_eq!(
            net.got(a),
            to_a,
            "seed {seed}: A got every message of B once"
        );
        assert!(
            !net.events
                .iter()
                .any(|e| matches!(e.2, ChannelEvent::Failed { .. })),
            "seed {seed}: nothing failed: {:?}",
            net.events
                .iter()
                .find(|e| matches!(e.2, ChannelEvent::Failed { .. }))
        );
        assert_eq!(net.node(a).peer_name(b), Some("b"), "seed {seed}");
        assert_eq!(net.node(b).peer_name(a), Some("a"), "seed {seed}");
        // Nothing went out in plaintext: no datagram holds the inner magic
        // at its start, and none carries a message's bytes in the clear.
        for t in &net.log {
            assert_eq!(&t.bytes[..2], b"RS", "seed {seed}");
        }
        let st = net.node(b).stats().security;
        assert_eq!(
            st.auth_failed + st.bad_mac + st.unknown_key,
            0,
            "seed {seed}: {st:?}"
        );
    }
}

#[test]
fn sessions_rekey_without_failing_anything() {
    let c = Config {
        rekey_after: Duration::from_millis(300),
        reject_after: Duration::from_millis(700),
        ..cfg()
    };
    let mut net = pair(7, 5, 0, c);
    let (a, b) = (addr(A), addr(B));
    let to_b = msgs(500, 3);
    for x in &to_b {
        let now = net.now;
        net.node(a).send(now, b, x.clone()).expect("send");
        net.run(Duration::from_millis(10));
    }
    net.run(Duration::from_secs(10));
    assert_eq!(net.got(b), to_b);
    assert!(!net
        .events
        .iter()
        .any(|e| matches!(e.2, ChannelEvent::Failed { .. })));
    let handshakes = net.node(a).stats().security.handshakes;
    assert!(
        handshakes >= 5,
        "5 s of traffic with 300 ms sessions rekeyed ({handshakes})"
    );
}

#[test]
fn a_stranger_with_its_own_key_gets_silence_and_leaves_no_state() {
    let (ka, kb, ks) = (key(1), key(2), key(9));
    let mut net = Net::new(3, 0, 0);
    let (b, s) = (addr(B), addr(9000));
    net.add(b, &kb, vec![peer("a", &ka, Some(addr(A)))], cfg());
    // The stranger knows B's public key (public keys are public) and
    // trusts it; B does not trust the stranger.
    net.add(s, &ks, vec![peer("b", &kb, Some(b))], cfg());
    let now = net.now;
    net.node(s)
        .send(now, b, b"kv.put x".to_vec())
        .expect("send");
    net.run(Duration::from_secs(10));
    assert!(net.got(b).is_empty(), "nothing delivered to B");
    assert_eq!(net.bytes_sent(b, s), 0, "B sent the stranger nothing");
    assert_eq!(net.node(b).peers().count(), 0, "B keeps no state for it");
    let st = net.node(b).stats().security;
    assert!(st.unknown_key >= 1, "{st:?}");
    assert!(
        net.events.iter().any(|e| e.0 == s
            && matches!(
                e.2,
                ChannelEvent::Failed { .. } | ChannelEvent::PeerUnreachable
            )),
        "the stranger's message failed: {:?}",
        net.events
    );
}

#[test]
fn forged_plaintext_and_forged_sealed_datagrams_change_nothing() {
    let mut net = pair(5, 0, 0, cfg());
    let (a, b) = (addr(A), addr(B));
    let now = net.now;
    net.node(a).send(now, b, b"first".to_vec()).expect("send");
    net.run(Duration::from_secs(1));
    assert_eq!(net.got(b), vec![b"first".to_vec()]);
    // A blind reset in plaintext: a valid "RD" datagram with A's address
    // and a new epoch, and garbage dressed as a transport datagram.
    let mut forged = vec![0u8; 96];
    forged[..2].copy_from_slice(b"RD");
    net.inject(a, b, forged);
    let mut sealed = b"RS\x01\x04".to_vec();
    sealed.extend_from_slice(&[0; 60]);
    net.inject(a, b, sealed.clone());
    // The same with every receiver index B might use: brute force a few.
    for i in 0..1000u32 {
        sealed[4..8].copy_from_slice(&i.to_be_bytes());
        net.inject(a, b, sealed.clone());
    }
    net.run(Duration::from_millis(100));
    let now = net.now;
    net.node(a).send(now, b, b"second".to_vec()).expect("send");
    net.run(Duration::from_secs(1));
    assert_eq!(net.got(b), vec![b"first".to_vec(), b"second".to_vec()]);
    assert!(
        net.events
            .iter()
            .all(|e| matches!(e.2, ChannelEvent::Acked { .. })),
        "no failure, no restart: {:?}",
        net.events
    );
    let st = net.node(b).stats().security;
    assert_eq!(st.not_authenticated, 1, "{st:?}");
    assert!(st.unknown_session + st.auth_failed >= 1000, "{st:?}");
}

#[test]
fn a_replayed_authentic_datagram_is_dropped() {
    let mut net = pair(11, 0, 0, cfg());
    let (a, b) = (addr(A), addr(B));
    let now = net.now;
    net.node(a).send(now, b, b"once".to_vec()).expect("send");
    net.run(Duration::from_secs(1));
    assert_eq!(net.got(b), vec![b"once".to_vec()]);
    let captured: Vec<Vec<u8>> = net
        .log
        .iter()
        .filter(|t| t.to == b)
        .map(|t| t.bytes.clone())
        .collect();
    for bytes in &captured {
        net.inject(a, b, bytes.clone());
    }
    net.run(Duration::from_secs(1));
    assert_eq!(net.got(b), vec![b"once".to_vec()], "delivered once only");
    let st = net.node(b).stats().security;
    assert!(st.replayed >= 1, "{st:?}");
    assert!(
        st.handshake_replayed + st.replayed >= captured.len() as u64 - 1,
        "{st:?}"
    );
}

#[test]
fn a_restarted_peer_gets_a_new_session_and_traffic_resumes() {
    let mut net = pair(13, 0, 0, cfg());
    let (a, b) = (addr(A), addr(B));
    let now = net.now;
    net.node(a).send(now, b, b"before".to_vec()).expect("send");
    net.run(Duration::from_secs(1));
    // B restarts: same key, new epoch, no session.
    let kb = key(2);
    let ka = key(1);
    net.add(b, &kb, vec![peer("a", &ka, Some(a))], cfg());
    let now = net.now;
    net.node(a).send(now, b, b"after".to_vec()).expect("send");
    net.run(Duration::from_secs(10));
    let got = net.got(b);
    assert!(
        got.contains(&b"after".to_vec()),
        "A reached the restarted B: {got:?}"
    );
}

#[test]
fn a_handshake_flood_meets_cookies_and_the_real_peer_still_connects() {
    let (ka, kb, ks) = (key(1), key(2), key(9));
    let mut net = Net::new(17, 0, 0);
    let (a, b) = (addr(A), addr(B));
    net.add(b, &kb, vec![peer("a", &ka, Some(a))], cfg());
    // Capture real initiations from a stranger that knows B's key, then
    // replay them from thousands of spoofed ports at once.
    net.add(addr(9000), &ks, vec![peer("b", &kb, Some(b))], cfg());
    let now = net.now;
    net.node(addr(9000))
        .send(now, b, b"x".to_vec())
        .expect("send");
    net.flush();
    let init = net.wire.pop().expect("an initiation").3;
    net.wire.clear();
    for port in 0..5000u16 {
        let from = SocketAddr::from(([10, 9, (port >> 8) as u8, port as u8], 10_000 + port));
        net.inject(from, b, init.clone());
    }
    net.nodes.remove(&addr(9000));
    net.add(a, &ka, vec![peer("b", &kb, Some(b))], cfg());
    let now = net.now;
    net.node(a).send(now, b, b"real".to_vec()).expect("send");
    net.run(Duration::from_secs(5));
    assert_eq!(net.got(b), vec![b"real".to_vec()]);
    let st = net.node(b).stats().security;
    assert!(
        st.cookies_sent >= 4000,
        "most of the flood got a cookie, not a handshake: {st:?}"
    );
    // No amplification: B never sent a source more than it received.
    let mut out: HashMap<SocketAddr, usize> = HashMap::new();
    for t in net.log.iter().filter(|t| t.to != a && t.to != b) {
        *out.entry(t.to).or_default() += t.bytes.len();
    }
    let worst = out.iter().max_by_key(|(_, n)| **n);
    assert!(
        out.values().all(|&n| n <= init.len()),
        "at most one reply per initiation, smaller: {worst:?}"
    );
    assert!(net.node(b).peers().count() <= 1, "no state for the flood");
}

#[test]
fn removing_a_peer_ends_its_session_and_fails_what_is_outstanding() {
    let mut net = pair(19, 0, 0, cfg());
    let (a, b) = (addr(A), addr(B));
    let now = net.now;
    net.node(a).send(now, b, b"hello".to_vec()).expect("send");
    net.run(Duration::from_secs(1));
    // B goes silent (dropped from the net) so A's next message stays
    // outstanding; then A's operator removes B.
    let bnode = net.nodes.remove(&b).expect("b");
    let now = net.now;
    net.node(a).send(now, b, b"pending".to_vec()).expect("send");
    net.run(Duration::from_millis(50));
    let now = net.now;
    net.node(a).set_peers(now, Vec::new());
    net.run(Duration::from_millis(10));
    assert!(
        net.events
            .iter()
            .any(|e| e.0 == a && matches!(e.2, ChannelEvent::Failed { .. })),
        "{:?}",
        net.events
    );
    assert_eq!(net.node(a).peers().count(), 0);
    let now = net.now;
    assert!(
        net.node(a).send(now, b, b"more".to_vec()).is_err(),
        "no key any more"
    );
    drop(bnode);
}

#[test]
fn probes_from_a_thousand_ports_leave_no_state_with_keys() {
    let mut net = pair(23, 0, 0, cfg());
    let (a, b) = (addr(A), addr(B));
    // Valid plaintext probes (the old handshake) and sealed-looking junk.
    let mut probe = vec![0u8; 96];
    probe[..2].copy_from_slice(b"RD");
    for port in 0..1024u16 {
        let from = SocketAddr::from(([10, 7, 0, 1], 20_000 + port));
        net.inject(from, b, probe.clone());
        net.inject(from, b, b"RS\x01\x01junk".to_vec());
    }
    net.run(Duration::from_millis(10));
    assert_eq!(net.node(b).peers().count(), 0);
    assert!(net.log.is_empty(), "not one datagram answered");
    let now = net.now;
    net.node(a).send(now, b, b"real".to_vec()).expect("send");
    net.run(Duration::from_secs(1));
    assert_eq!(net.got(b), vec![b"real".to_vec()]);
}

fn add_plain(net: &mut Net, at: SocketAddr, cfg: Config) {
    let epoch = net.rng.next() | 1;
    net.nodes.insert(at, Endpoint::new(cfg, epoch));
}

#[test]
fn idle_channels_are_evicted_and_a_new_channel_to_the_same_peer_still_delivers() {
    let mut net = Net::new(29, 0, 0);
    let (a, b) = (addr(A), addr(B));
    let c = Config {
        peers_max: 64,
        ..cfg()
    };
    add_plain(&mut net, a, c);
    add_plain(&mut net, b, c);
    // Plaintext: strangers' probes fill B's table (each is a valid datagram).
    let mut filler = Net::new(31, 0, 0);
    for port in 0..64u16 {
        add_plain(
            &mut filler,
            SocketAddr::from(([10, 7, 0, 1], 20_000 + port)),
            c,
        );
    }
    for (&from, ep) in filler.nodes.iter_mut() {
        let now = net.now;
        ep.send(now, b, b"x".to_vec()).expect("send");
        if let Some(t) = ep.poll_transmit(now) {
            net.inject(from, b, t.bytes);
        }
    }
    net.run(Duration::from_millis(10));
    let now = net.now;
    net.node(a)
        .send(now, b, b"locked out".to_vec())
        .expect("send");
    net.run(Duration::from_millis(200));
    assert!(net.got(b).is_empty(), "the table is full: {:?}", net.got(b));
    assert!(net.node(b).stats().refused_peers > 0);
    // After the idle timeout the quiet strangers are evicted (A was not
    // admitted, so it has nothing there either).
    net.run(Duration::from_secs(2));
    let now = net.now;
    let gone = net
        .node(b)
        .evict_idle(now, Duration::from_secs(1), |_| false);
    assert_eq!(gone.len(), 64, "{gone:?}");
    assert_eq!(net.node(b).peers().count(), 0);
    net.run(Duration::from_secs(30));
    assert_eq!(
        net.got(b),
        vec![b"locked out".to_vec()],
        "A's message got in"
    );
    let now = net.now;
    net.node(b)
        .send(now, a, b"before eviction".to_vec())
        .expect("send");
    net.run(Duration::from_secs(1));
    // B evicts A too and then sends to it: A still holds the old channel,
    // so the new one must not look like its old incarnation's duplicates.
    net.run(Duration::from_secs(2));
    let now = net.now;
    assert_eq!(
        net.node(b)
            .evict_idle(now, Duration::from_secs(1), |_| false),
        vec![a]
    );
    let now = net.now;
    net.node(b)
        .send(now, a, b"after eviction".to_vec())
        .expect("send");
    net.run(Duration::from_secs(30));
    assert_eq!(
        net.got(a),
        vec![b"after eviction".to_vec(), b"before eviction".to_vec()]
    );
}
