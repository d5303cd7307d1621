//! The simulated network between the routers: every datagram is lost,
//! duplicated, delayed (and so reordered) or cut by a partition, each choice
//! drawn from the seed.
//!
//! A datagram's fate is keyed by the seed, its link and its place in that
//! link's sequence, not by a global stream of random numbers: the routers
//! iterate hash maps whose order changes from run to run, and that must not
//! change which datagram of a link is lost.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The first node's UDP port; node `i` listens on `BASE_PORT + i`.
pub const BASE_PORT: u16 = 7600;

/// The address of node `i`.
pub fn node_addr(i: usize) -> SocketAddr {
    let port = BASE_PORT + u16::try_from(i).expect("a handful of nodes");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An address where no daemon ever answers (a dead entry of a name).
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], BASE_PORT - 1))
}

/// The node at `addr`, if it is one.
pub fn node_of(addr: SocketAddr, nodes: usize) -> Option<usize> {
    let i = usize::from(addr.port().checked_sub(BASE_PORT)?);
    (i < nodes && addr.ip() == node_addr(i).ip()).then_some(i)
}

/// splitmix64: one well-mixed number from any number.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded stream of random numbers (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream keyed by the seed and `parts`, independent of any other.
    pub fn keyed(seed: u64, parts: &[u64]) -> Rng {
        let key = parts.iter().fold(mix(seed), |k, &p| mix(k ^ p));
        Rng(key)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// A link cut for a while: `from` → `to`, and back unless one-way.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    pub a: usize,
    pub b: usize,
    pub one_way: bool,
    pub from: Instant,
    pub until: Instant,
}

impl Cut {
    fn blocks(&self, from: usize, to: usize, now: Instant) -> bool {
        let link =
            (from == self.a && to == self.b) || (!self.one_way && from == self.b && to == self.a);
        link && self.from <= now && now < self.until
    }
}

/// The datagram faults of one seed.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Percent of datagrams lost.
    pub loss: u64,
    /// Percent of datagrams delivered twice.
    pub duplicate: u64,
    /// One-way delay: at least this...
    pub delay_min: Duration,
    /// ...plus up to this, drawn per datagram (copies overtake each other).
    pub jitter: Duration,
    pub cuts: Vec<Cut>,
}

/// What the network did, for the seed's report.
#[derive(Debug, Default, Clone, Copy)]
pub struct NetCounts {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub cut: u64,
    /// Reached a node that was down, or an address with no node.
    pub unheard: u64,
    pub delivered: u64,
}

/// Datagrams in flight, in delivery order.
#[derive(Debug)]
pub struct Net {
    seed: u64,
    pub faults: Faults,
    /// (delivery time, order of scheduling) → (from, to, bytes).
    in_flight: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    scheduled: u64,
    /// Datagrams sent so far per (from, to) port pair.
    link_seq: BTreeMap<(u16, u16), u64>,
    pub counts: NetCounts,
}

impl Net {
    pub fn new(seed: u64, faults: Faults) -> Net {
        Net {
            seed,
            faults,
            in_flight: BTreeMap::new(),
            scheduled: 0,
            link_seq: BTreeMap::new(),
            counts: NetCounts::default(),
        }
    }

    /// A router sent `bytes` from `from` to `to` at `now`.
    pub fn send(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: Vec<u8>,
        nodes: usize,
    ) {
        self.counts.sent += 1;
        let seq = self.link_seq.entry((from.port(), to.port())).or_default();
        *seq += 1;
        let mut rng = Rng::keyed(
            self.seed,
            &[u64::from(from.port()), u64::from(to.port()), *seq],
        );
        let f = &self.faults;
        let (delay_min, jitter_ms) = (f.delay_min, f.jitter.as_millis() as u64);
        let delay =
            |rng: &mut Rng| delay_min + Duration::from_micros(rng.below(jitter_ms * 1000 + 1));
        if let (Some(a), Some(b)) = (node_of(from, nodes), node_of(to, nodes)) {
            if f.cuts.iter().any(|c| c.blocks(a, b, now)) {
                self.counts.cut += 1;
                return;
            }
        }
        if rng.percent(f.loss) {
            self.counts.lost += 1;
            return;
        }
        if rng.percent(f.duplicate) {
            self.counts.duplicated += 1;
            let at = now + delay(&mut rng);
            self.schedule(at, from, to, bytes.clone());
        }
        let at = now + delay(&mut rng);
        self.schedule(at, from, to, bytes);
    }

    fn schedule(&mut self, at: Instant, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.scheduled += 1;
        self.in_flight
            .insert((at, self.scheduled), (from, to, bytes));
    }

    /// When the next datagram arrives.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|&(at, _)| at)
    }

    /// The next datagram due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        let (&key, _) = self.in_flight.iter().next()?;
        if key.0 > now {
            return None;
        }
        self.in_flight.remove(&key)
    }
}
