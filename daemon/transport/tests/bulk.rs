//! Bulk through the endpoint's real interface, on a virtual clock and a
//! lossless wire with a fixed one-way delay: a peer at a loopback address
//! gets `payload_max_loopback`-sized fragments (a 16 MiB message in a few
//! hundred datagrams, not thousands), any other peer keeps `payload_max`, a
//! bundle never exceeds the peer's one full fragment (sealed, within the UDP
//! limit), and the window lets a large message cross in a handful of round
//! trips (slow start, not a window cap, decides how many). Plaintext and
//! with keys.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpcd_transport::config::TRANSMIT_SPARE_BYTES_MAX_DEFAULT;
use rpcd_transport::secure::wire::TRANSPORT_OVERHEAD;
use rpcd_transport::secure::{PeerKey, PrivateKey, Security};
use rpcd_transport::wire::{BUNDLE_HEADER_LEN, HEADER_LEN};
use rpcd_transport::{Buffers, ChannelEvent, Config, Endpoint, Outgoing};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Plain,
    Keyed,
}

/// Two endpoints and the datagrams between them, each delivered `delay`
/// after it was sent.
struct Wire {
    now: Instant,
    delay: Duration,
    a: (SocketAddr, Endpoint),
    b: (SocketAddr, Endpoint),
    /// (due, to B?, bytes)
    flying: VecDeque<(Instant, bool, Vec<u8>)>,
    /// Sizes of the UDP datagrams A sent.
    a_sent: Vec<usize>,
    delivered: Vec<Vec<u8>>,
    /// B's UDP socket while B is busy elsewhere (until `b_busy_until`):
    /// arrivals wait in it, charged as Linux charges them, and one that
    /// does not fit in `b_socket_capacity` bytes is dropped (`b_dropped`).
    b_busy_until: Option<Instant>,
    b_socket: VecDeque<Vec<u8>>,
    b_socket_capacity: usize,
    b_dropped: usize,
    /// The most datagrams B's socket held at once.
    b_socket_peak: usize,
    /// The last message [`Wire::bulk`] delivered.
    delivered_last: Option<Vec<u8>>,
}

impl Wire {
    fn new(mode: Mode, c: Config, a: SocketAddr, b: SocketAddr, delay: Duration) -> Wire {
        Wire::with_b_buffers(mode, c, a, b, delay, None)
    }

    /// [`Wire::new`], B taking its buffers from `b_buffers` from the start.
    fn with_b_buffers(
        mode: Mode,
        c: Config,
        a: SocketAddr,
        b: SocketAddr,
        delay: Duration,
        b_buffers: Option<Arc<dyn Buffers>>,
    ) -> Wire {
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
            Mode::Keyed => (keys(&ka, "b", &kb, b), keys(&kb, "a", &ka, a)),
        };
        let wall = Duration::from_secs(1_800_000_000);
        let mut w = Wire {
            now: Instant::now(),
            delay,
            a: (a, Endpoint::with_security(c, 0xA1, sa, [1; 32], wall)),
            b: (b, Endpoint::with_security(c, 0xB2, sb, [2; 32], wall)),
            flying: VecDeque::new(),
            a_sent: Vec::new(),
            delivered: Vec::new(),
            b_busy_until: None,
            b_socket: VecDeque::new(),
            b_socket_capacity: usize::MAX,
            b_dropped: 0,
            b_socket_peak: 0,
            delivered_last: None,
        };
        w.b.1.set_buffers(b_buffers);
        // Learn each other's epoch (with keys: set the session up) first.
        let now = w.now;
        w.a.1.send(now, b, b"hello".to_vec()).expect("send");
        w.run(Duration::from_secs(10));
        assert_eq!(std::mem::take(&mut w.delivered), vec![b"hello".to_vec()]);
        w.a_sent.clear();
        w
    }

    /// Move datagrams and fire timers until a message has been delivered
    /// and both sides are quiet, or `limit` of virtual time has passed.
    /// Returns the virtual time taken.
    fn run(&mut self, limit: Duration) -> Duration {
        let start = self.now;
        loop {
            while let Some(t) = self.a.1.poll_transmit(self.now) {
                assert_eq!(t.to, self.b.0);
                self.a_sent.push(t.bytes.len());
                self.flying
                    .push_back((self.now + self.delay, true, t.bytes));
            }
            while let Some(t) = self.b.1.poll_transmit(self.now) {
                assert_eq!(t.to, self.a.0);
                self.flying
                    .push_back((self.now + self.delay, false, t.bytes));
            }
            while let Some(e) = self.b.1.poll_event() {
                if let ChannelEvent::Delivered { data, .. } = e.kind {
                    self.delivered.push(data);
                }
            }
            while self.a.1.poll_event().is_some() {}
            let quiet = self.flying.is_empty() && self.a.1.is_idle() && self.b.1.is_idle();
            if quiet && !self.delivered.is_empty() {
                return self.now - start;
            }
            let next = [
                self.flying.front().map(|f| f.0),
                self.a.1.poll_timeout(),
                self.b.1.poll_timeout(),
                self.b_busy_until,
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|&t| t <= start + limit) else {
                return self.now - start;
            };
            self.now = self.now.max(next);
            if self.b_busy_until.is_some_and(|t| t <= self.now) {
                self.b_busy_until = None;
                while let Some(bytes) = self.b_socket.pop_front() {
                    self.b.1.handle_datagram(self.now, self.a.0, &bytes);
                }
            }
            while self.flying.front().is_some_and(|f| f.0 <= self.now) {
                let (_, to_b, bytes) = self.flying.pop_front().expect("just seen");
                if to_b && self.b_busy_until.is_some() {
                    let held: usize = self.b_socket.iter().map(|d| kernel_charge(d.len())).sum();
                    if held + kernel_charge(bytes.len()) <= self.b_socket_capacity {
                        self.b_socket.push_back(bytes);
                        self.b_socket_peak = self.b_socket_peak.max(self.b_socket.len());
                    } else {
                        self.b_dropped += 1;
                    }
                } else if to_b {
                    self.b.1.handle_datagram(self.now, self.a.0, &bytes);
                } else {
                    self.a.1.handle_datagram(self.now, self.b.0, &bytes);
                }
            }
            self.a.1.handle_timeout(self.now);
            self.b.1.handle_timeout(self.now);
        }
    }

    /// Send one message of `len` bytes from A to B and run until it is
    /// delivered; checks it arrived intact and returns the time it took.
    fn bulk(&mut self, len: usize) -> Duration {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let now = self.now;
        self.a.1.send(now, self.b.0, data.clone()).expect("send");
        let took = self.run(Duration::from_secs(60));
        assert_eq!(self.delivered.len(), 1, "delivered once");
        assert!(self.delivered[0] == data, "delivered intact");
        self.delivered_last = self.delivered.pop();
        took
    }
}

/// What Linux charged a loopback UDP socket's receive buffer per datagram
/// of `len` bytes above 16 KiB (measured: 60,128 bytes took 61,230, 65,000
/// took 66,052).
fn kernel_charge(len: usize) -> usize {
    len + 1_102
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("an address")
}

/// Datagrams A sent that carried fragments (larger than any ack or probe).
fn data_datagrams(sizes: &[usize]) -> usize {
    sizes.iter().filter(|&&n| n > 1000).count()
}

fn overhead(mode: Mode) -> usize {
    match mode {
        Mode::Plain => 0,
        Mode::Keyed => TRANSPORT_OVERHEAD,
    }
}

#[test]
fn a_loopback_peer_gets_large_datagrams() {
    let c = Config::default();
    let len = 16 * 1024 * 1024 - 4096;
    for mode in [Mode::Plain, Mode::Keyed] {
        for (a, b) in [
            ("127.0.0.1:7001", "127.0.0.1:7002"),
            ("[::1]:7001", "[::1]:7002"),
        ] {
            let mut w = Wire::new(mode, c, addr(a), addr(b), Duration::from_micros(50));
            w.bulk(len);
            let fragments = len.div_ceil(c.payload_max_loopback);
            assert_eq!(fragments, 280);
            let largest = w.a_sent.iter().copied().max().unwrap_or(0);
            assert_eq!(
                largest,
                BUNDLE_HEADER_LEN + HEADER_LEN + c.payload_max_loopback + overhead(mode),
                "{mode:?} {a}: one full fragment per UDP datagram"
            );
            assert!(largest <= 65_507, "within the UDP limit");
            let data = data_datagrams(&w.a_sent);
            assert!(
                (fragments..fragments + 8).contains(&data),
                "{mode:?} {a}: {data} data datagrams for {fragments} fragments"
            );
        }
    }
}

#[test]
fn a_remote_peer_keeps_payload_max() {
    let c = Config::default();
    let len = 2 * 1024 * 1024;
    for mode in [Mode::Plain, Mode::Keyed] {
        let mut w = Wire::new(
            mode,
            c,
            addr("10.0.0.1:7001"),
            addr("10.0.0.2:7002"),
            Duration::from_micros(50),
        );
        w.bulk(len);
        let fragments = len.div_ceil(c.payload_max);
        let largest = w.a_sent.iter().copied().max().unwrap_or(0);
        assert_eq!(
            largest,
            BUNDLE_HEADER_LEN + HEADER_LEN + c.payload_max + overhead(mode)
        );
        // Every full fragment in a UDP datagram of its own (the last, short one may share).
        assert!(data_datagrams(&w.a_sent) >= fragments - 1, "{mode:?}");
    }
}

#[test]
fn payload_max_loopback_zero_keeps_payload_max_on_loopback() {
    let c = Config {
        payload_max_loopback: 0,
        ..Config::default()
    };
    let mut w = Wire::new(
        Mode::Plain,
        c,
        addr("127.0.0.1:7001"),
        addr("127.0.0.1:7002"),
        Duration::from_micros(50),
    );
    w.bulk(1024 * 1024);
    let largest = w.a_sent.iter().copied().max().unwrap_or(0);
    assert_eq!(largest, BUNDLE_HEADER_LEN + HEADER_LEN + c.payload_max);
}

/// With a round trip of 2 ms, a 16 MiB message in 60 KB fragments takes
/// slow start's handful of round trips (10, 20, 40, 80, 160 datagrams): the
/// receive window and the reassembly budget, counted in the peer's own
/// fragment size, never cap the flight below what slow start reaches.
#[test]
fn a_large_message_crosses_a_loopback_path_in_a_few_round_trips() {
    let c = Config::default();
    let delay = Duration::from_millis(1);
    let mut w = Wire::new(
        Mode::Plain,
        c,
        addr("127.0.0.1:7001"),
        addr("127.0.0.1:7002"),
        delay,
    );
    let took = w.bulk(16 * 1024 * 1024 - 4096);
    let rtts = took.as_secs_f64() / (2.0 * delay.as_secs_f64());
    assert!(rtts <= 8.0, "{rtts:.1} round trips");
}

/// The receive window keeps a flight within the receiver's socket: with
/// the window grown by one 16 MiB message, the next one's first flight
/// (which slow start has made larger than the socket holds) lands in B's
/// socket while B is busy for 20 ms. With `socket_recv_buffer` at what the
/// kernel reads back for the daemon's default `udp_recv_buffer` (8 MiB),
/// B's advertised window keeps that flight, probes included, inside the
/// socket and nothing is lost; without it the socket overflows.
#[test]
fn the_window_keeps_a_flight_within_the_receivers_socket() {
    let socket = 8 * 1024 * 1024;
    let len = 16 * 1024 * 1024 - 4096;
    let mut dropped = Vec::new();
    for bound in [socket, 0] {
        let c = Config {
            socket_recv_buffer: bound,
            ..Config::default()
        };
        let mut w = Wire::new(
            Mode::Plain,
            c,
            addr("127.0.0.1:7001"),
            addr("127.0.0.1:7002"),
            Duration::from_micros(500),
        );
        w.bulk(len);
        w.b_socket_capacity = socket;
        w.b_busy_until = Some(w.now + Duration::from_millis(20));
        w.bulk(len);
        if bound != 0 {
            let window = c.for_peer(w.b.0).socket_window() as usize;
            assert!(
                w.b_socket_peak > window / 2,
                "the flight filled the socket ({} datagrams)",
                w.b_socket_peak
            );
        }
        dropped.push(w.b_dropped);
    }
    assert_eq!(dropped[0], 0, "bounded by the socket: nothing lost");
    assert!(dropped[1] > 0, "unbounded: the socket overflows");
}

/// The daemon's pool as the transport sees it, for the test: buffers kept, and counts.
#[derive(Debug, Default)]
struct Shelf {
    kept: Mutex<Vec<Vec<u8>>>,
    taken: Mutex<usize>,
    given: Mutex<usize>,
}

impl Buffers for Shelf {
    fn take(&self, min: usize, max: usize) -> Option<Vec<u8>> {
        let mut kept = self.kept.lock().expect("lock");
        let i = kept
            .iter()
            .position(|b| (min..=max).contains(&b.capacity()))?;
        *self.taken.lock().expect("lock") += 1;
        Some(kept.swap_remove(i))
    }

    fn give(&self, buf: Vec<u8>) {
        *self.given.lock().expect("lock") += 1;
        self.kept.lock().expect("lock").push(buf);
    }
}

/// With buffers set on both endpoints (B's before its channel exists, A's on its channel
/// already open), 16 MiB messages go around without fresh buffers: A gives each sent
/// message's buffer back once it is acknowledged, and B reassembles the second message
/// into the buffer the first was delivered in, once the owner has given it back.
#[test]
fn large_message_buffers_go_around_through_the_owners_buffers() {
    let (a_shelf, b_shelf) = (Arc::new(Shelf::default()), Arc::new(Shelf::default()));
    let c = Config::default();
    let b_buffers: Arc<dyn Buffers> = b_shelf.clone();
    let mut w = Wire::with_b_buffers(
        Mode::Plain,
        c,
        addr("127.0.0.1:4000"),
        addr("127.0.0.1:5000"),
        Duration::from_micros(50),
        Some(b_buffers),
    );
    w.a.1.set_buffers(Some(a_shelf.clone()));
    let len = 16 * 1024 * 1024 - 4096;
    w.bulk(len);
    assert_eq!(
        *a_shelf.given.lock().expect("lock"),
        1,
        "A: the acknowledged message"
    );
    // The owner is done with the delivered message (the daemon: once it is decoded).
    let first = w.delivered_last.take().expect("kept by bulk()");
    let first_at = first.as_ptr();
    b_shelf.give(first);
    w.bulk(len);
    assert_eq!(
        *b_shelf.taken.lock().expect("lock"),
        1,
        "B: one buffer taken"
    );
    let second = w.delivered_last.take().expect("kept by bulk()");
    assert_eq!(
        second.as_ptr(),
        first_at,
        "reassembled into the first one's buffer"
    );
    assert_eq!(*a_shelf.given.lock().expect("lock"), 2);
}

/// A bundle's buffer the owner gives back once sent takes the next bundle (no new memory
/// per datagram); one past the endpoint's bound (the default) is not kept.
#[test]
fn a_sent_bundles_buffer_takes_the_next_bundle() {
    let mut w = Wire::new(
        Mode::Plain,
        Config::default(),
        addr("127.0.0.1:4000"),
        addr("127.0.0.1:5000"),
        Duration::from_micros(50),
    );
    let (now, b) = (w.now, w.b.0);
    w.a.1.send(now, b, vec![7; 4 * 60_000]).expect("send");
    let first = w.a.1.poll_transmit(now).expect("a bundle");
    // A capacity no bundle of its own would have, to tell it from an allocation
    // that happens to land at the same address.
    let mut given = first.bytes;
    given.reserve_exact(100_003 - given.len());
    let (at, cap) = (given.as_ptr(), given.capacity());
    w.a.1.recycle(given);
    let second = w.a.1.poll_transmit(now).expect("another bundle");
    assert_eq!(
        (second.bytes.as_ptr(), second.bytes.capacity()),
        (at, cap),
        "written into the given-back buffer"
    );
    let huge = Vec::with_capacity(TRANSMIT_SPARE_BYTES_MAX_DEFAULT + 1);
    let huge_at = (huge.as_ptr(), huge.capacity());
    w.a.1.recycle(huge);
    let third = w.a.1.poll_transmit(now).expect("a third bundle");
    // By capacity too: the huge buffer, freed, may be where the allocator puts the next.
    assert_ne!(
        (third.bytes.as_ptr(), third.bytes.capacity()),
        huge_at,
        "past the bound: not kept"
    );
}

/// `transmit_spare_bytes_max` is the bound on the sent bundles' buffers an endpoint keeps:
/// at 0 a buffer given back is not written into again; at 250,000 bytes two of some
/// 100 KB are kept and a third is dropped, and the next bundles take the kept ones (the
/// last given back first), then new memory.
#[test]
fn the_spare_bundles_bound_is_the_configured_one() {
    // A buffer of a capacity no bundle of its own would have, to tell it from an
    // allocation that happens to land at the same address.
    let given = |cap: usize| {
        let bytes = Vec::<u8>::with_capacity(cap);
        let at = (bytes.as_ptr(), bytes.capacity());
        (bytes, at)
    };
    let sending = |spare_max: usize| {
        let c = Config {
            transmit_spare_bytes_max: spare_max,
            ..Config::default()
        };
        let mut w = Wire::new(
            Mode::Plain,
            c,
            addr("127.0.0.1:4000"),
            addr("127.0.0.1:5000"),
            Duration::from_micros(50),
        );
        let (now, b) = (w.now, w.b.0);
        w.a.1.send(now, b, vec![7; 4 * 60_000]).expect("send");
        w
    };
    let next = |w: &mut Wire| {
        let t = w.a.1.poll_transmit(w.now).expect("a bundle");
        (t.bytes.as_ptr(), t.bytes.capacity())
    };

    let mut none = sending(0);
    let (bytes, at) = given(100_003);
    none.a.1.recycle(bytes);
    assert_ne!(next(&mut none), at, "0 keeps none");

    let mut some = sending(250_000);
    let (first, first_at) = given(100_003);
    let (second, second_at) = given(100_005);
    let (third, third_at) = given(100_007);
    for bytes in [first, second, third] {
        some.a.1.recycle(bytes);
    }
    assert_eq!(
        next(&mut some),
        second_at,
        "kept: the last within the bound"
    );
    assert_eq!(next(&mut some), first_at, "kept: the first");
    let fresh = next(&mut some);
    assert_ne!(fresh, third_at, "past the bound: not kept");
    assert_ne!(fresh, first_at);
}

/// A message handed over in three parts (a head, a large body the sender owns, a tail)
/// arrives as their concatenation, plaintext and keyed, also when the datagrams whose
/// fragments straddle two parts (the first and the last of the flight) are lost and sent
/// again; and so when the body's bytes start past other bytes of its buffer.
#[test]
fn a_message_in_three_parts_arrives_as_their_concatenation() {
    for (mode, skip) in [(Mode::Plain, 0), (Mode::Keyed, 0), (Mode::Plain, 4099)] {
        let mut w = Wire::new(
            mode,
            Config::default(),
            addr("127.0.0.1:7101"),
            addr("127.0.0.1:7102"),
            Duration::from_millis(1),
        );
        let head: Vec<u8> = (0..37u8).collect();
        let body: Vec<u8> = (0..3 * 1024 * 1024 + 5).map(|i| (i % 253) as u8).collect();
        let tail: Vec<u8> = (200..211u8).collect();
        let whole = [head.as_slice(), &body, &tail].concat();
        let now = w.now;
        let payload = Outgoing::Split {
            head,
            body: [vec![0xee; skip], body].concat(),
            body_start: skip,
            tail,
        };
        assert_eq!(payload.len(), whole.len());
        w.a.1.send(now, w.b.0, payload).expect("send");
        let mut flight = Vec::new();
        while let Some(t) = w.a.1.poll_transmit(now) {
            flight.push(t.bytes);
        }
        assert!(flight.len() >= 3, "{mode:?}: a flight of {}", flight.len());
        let last = flight.len() - 1;
        for (i, bytes) in flight.into_iter().enumerate() {
            if i != 0 && i != last {
                w.flying.push_back((now + w.delay, true, bytes));
            }
        }
        w.run(Duration::from_secs(60));
        assert_eq!(w.delivered.len(), 1, "{mode:?}: delivered once");
        assert!(w.delivered[0] == whole, "{mode:?}: delivered intact");
        let stats = w.a.1.peer(w.b.0).expect("a channel to B").stats;
        assert!(
            stats.retransmissions >= 2,
            "{mode:?}: the lost straddling datagrams were sent again"
        );
    }
}
