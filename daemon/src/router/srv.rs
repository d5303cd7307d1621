//! DNS SRV naming (RFC 2782): what the resolver found for an `srv:` target,
//! the cache that keeps each answer for its TTL (bounded by `[dns]
//! cache_max`), and the order in which a call tries the records' addresses:
//! lowest priority first, a weighted random pick within a priority.
//!
//! Sans-IO like the rest of the router: time is the `now` it is given and
//! randomness the RNG it is handed (seeded from the daemon's incarnation).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_core::RngCore;

/// One SRV record, with the addresses its target resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Relative share among records of one priority.
    pub weight: u16,
    /// The port of the service on the target.
    pub port: u16,
    /// The target host, as DNS gave it.
    pub target: String,
    /// The target's addresses (IPv4 first); empty when it resolved to none.
    pub addrs: Vec<IpAddr>,
}

/// The resolver's answer for one SRV name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvAnswer {
    /// The records, as DNS gave them.
    pub records: Vec<SrvRecord>,
    /// How long the answer may be used: the smallest TTL of the records
    /// and addresses that made it.
    pub ttl: Duration,
}

/// An answer in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The records.
    pub records: Vec<SrvRecord>,
    /// When the answer arrived.
    pub fetched: Instant,
    /// When it stops being used.
    pub expires: Instant,
}

/// SRV answers by name, each used until its TTL runs out.
#[derive(Debug, Default)]
pub struct SrvCache {
    entries: HashMap<String, Cached>,
}

impl SrvCache {
    /// The answer for `name` if it is still fresh at `now`.
    pub fn fresh(&self, name: &str, now: Instant) -> Option<&Cached> {
        self.entries.get(&key(name)).filter(|c| now < c.expires)
    }

    /// The answer for `name`, fresh or not (for display).
    pub fn get(&self, name: &str) -> Option<&Cached> {
        self.entries.get(&key(name))
    }

    /// Keep `answer` for `name` from `now` for its TTL, holding at most
    /// `max` names: expired answers go first, then those expiring soonest.
    pub fn insert(&mut self, name: &str, answer: &SrvAnswer, now: Instant, max: usize) {
        let name = key(name);
        if max == 0 {
            self.entries.clear();
            return;
        }
        self.entries.retain(|_, c| now < c.expires);
        while self.entries.len() >= max && !self.entries.contains_key(&name) {
            let soonest = self
                .entries
                .iter()
                .min_by_key(|(_, c)| c.expires)
                .map(|(n, _)| n.clone());
            match soonest {
                Some(n) => self.entries.remove(&n),
                None => break,
            };
        }
        self.entries.insert(
            name,
            Cached {
                records: answer.records.clone(),
                fetched: now,
                expires: now + answer.ttl,
            },
        );
        debug_assert!(self.entries.len() <= max);
    }

    /// The cached names (as keys: lower case), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.entries.keys().cloned().collect();
        v.sort();
        v
    }
}

/// DNS names are case-insensitive.
fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// The addresses of `records` in the order a call tries them (RFC 2782):
/// priorities ascending; within one priority, repeatedly a record picked at
/// random with probability proportional to its weight (zero-weight records
/// are placed first in the running sum, so they are picked only when the
/// draw is 0, i.e. rarely while others have weight). A record's addresses
/// stay together, in their order.
pub fn order(records: &[SrvRecord], rng: &mut impl RngCore) -> Vec<SocketAddr> {
    let mut by_priority: BTreeMap<u16, Vec<&SrvRecord>> = BTreeMap::new();
    for r in records {
        by_priority.entry(r.priority).or_default().push(r);
    }
    let mut out = Vec::new();
    for (_, mut left) in by_priority {
        // Stable: zero weights first, the rest as DNS gave them.
        left.sort_by_key(|r| r.weight != 0);
        while !left.is_empty() {
            let sum: u64 = left.iter().map(|r| u64::from(r.weight)).sum();
            let draw = rng.next_u64() % (sum + 1);
            let mut running = 0;
            let pick = left
                .iter()
                .position(|r| {
                    running += u64::from(r.weight);
                    running >= draw
                })
                .expect("the running sum reaches the total, and draw <= total");
            let r = left.remove(pick);
            out.extend(r.addrs.iter().map(|ip| SocketAddr::new(*ip, r.port)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn rec(priority: u16, weight: u16, last_octet: u8) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 7000 + u16::from(last_octet),
            target: format!("h{last_octet}.test."),
            addrs: vec![IpAddr::from([10, 0, 0, last_octet])],
        }
    }

    fn octets(addrs: &[SocketAddr]) -> Vec<u8> {
        addrs
            .iter()
            .map(|a| match a.ip() {
                IpAddr::V4(v4) => v4.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect()
    }

    fn rng(seed: u8) -> ChaCha20Rng {
        ChaCha20Rng::from_seed([seed; 32])
    }

    /// With one record per priority the order is exact: lowest first,
    /// whatever the order DNS gave and whatever the weights.
    #[test]
    fn lower_priority_first_exactly() {
        let records = [rec(20, 1, 3), rec(0, 0, 1), rec(10, 65535, 2)];
        for seed in 0..20 {
            let got = order(&records, &mut rng(seed));
            assert_eq!(octets(&got), [1, 2, 3], "seed {seed}");
            assert_eq!(got[0], "10.0.0.1:7001".parse().expect("address"));
        }
    }

    /// Within a priority, the first pick follows the weights (loosely: 4000
    /// draws of 3:1), and every record appears exactly once.
    #[test]
    fn weights_share_the_first_pick() {
        let records = [rec(1, 30, 1), rec(1, 10, 2), rec(0, 5, 9)];
        let mut r = rng(7);
        let mut first = [0u32; 2];
        for _ in 0..4000 {
            let got = octets(&order(&records, &mut r));
            assert_eq!(got[0], 9, "priority 0 always first");
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(sorted, [1, 2, 9]);
            first[usize::from(got[1] == 2)] += 1;
        }
        // Expected 3000 : 1000.
        assert!((2800..3200).contains(&first[0]), "{first:?}");
    }

    /// RFC 2782: a zero-weight record is picked first only when the draw
    /// is 0 (1 in sum+1); among only zero weights, order is still complete.
    #[test]
    fn zero_weight_is_rarely_first_but_never_lost() {
        let records = [rec(0, 0, 1), rec(0, 9, 2)];
        let mut r = rng(3);
        let mut zero_first = 0;
        for _ in 0..5000 {
            let got = octets(&order(&records, &mut r));
            assert_eq!(got.len(), 2);
            if got[0] == 1 {
                zero_first += 1;
            }
        }
        // Expected 5000 / 10 = 500.
        assert!((380..620).contains(&zero_first), "{zero_first}");
        let zeros = [rec(0, 0, 1), rec(0, 0, 2), rec(0, 0, 3)];
        let got = octets(&order(&zeros, &mut r));
        assert_eq!(got, [1, 2, 3], "all zero: draw is 0, first in list");
    }

    /// The same seed gives the same order: a run is reproducible.
    #[test]
    fn the_order_is_reproducible_from_the_seed() {
        let records: Vec<SrvRecord> = (1..=8).map(|i| rec(0, 10, i)).collect();
        let a: Vec<_> = (0..10).map(|_| order(&records, &mut rng(5))).collect();
        let b: Vec<_> = (0..10).map(|_| order(&records, &mut rng(5))).collect();
        assert_eq!(a, b);
        let mut r = rng(5);
        let first = order(&records, &mut r);
        let varied = (0..20).any(|_| order(&records, &mut r) != first);
        assert!(varied, "equal weights shuffle");
    }

    /// An answer is used for its TTL on the virtual clock, then not.
    #[test]
    fn answers_expire_after_their_ttl() {
        let t0 = Instant::now();
        let mut c = SrvCache::default();
        let answer = SrvAnswer {
            records: vec![rec(0, 0, 1)],
            ttl: Duration::from_secs(30),
        };
        c.insert("_kv._udp.Test.", &answer, t0, 8);
        let hit = c.fresh("_KV._udp.test.", t0 + Duration::from_secs(29));
        assert_eq!(hit.map(|h| h.fetched), Some(t0));
        assert!(c
            .fresh("_kv._udp.test.", t0 + Duration::from_secs(30))
            .is_none());
        assert!(c.get("_kv._udp.test.").is_some(), "kept for display");
        let zero = SrvAnswer {
            ttl: Duration::ZERO,
            ..answer
        };
        c.insert("_z._udp.test.", &zero, t0, 8);
        assert!(c.fresh("_z._udp.test.", t0).is_none(), "TTL 0: not reused");
    }

    /// The cache holds at most `max` names: expired ones go first, then the
    /// one expiring soonest; 0 keeps nothing.
    #[test]
    fn the_cache_is_bounded() {
        let t0 = Instant::now();
        let mut c = SrvCache::default();
        let ttl = |s| SrvAnswer {
            records: vec![rec(0, 0, 1)],
            ttl: Duration::from_secs(s),
        };
        c.insert("_a._udp.t.", &ttl(10), t0, 2);
        c.insert("_b._udp.t.", &ttl(50), t0, 2);
        c.insert("_c._udp.t.", &ttl(40), t0, 2);
        assert_eq!(c.names(), ["_b._udp.t.", "_c._udp.t."]);
        // Refreshing a held name evicts nothing.
        c.insert("_c._udp.t.", &ttl(40), t0, 2);
        assert_eq!(c.names().len(), 2);
        // Later, _c has expired: it goes, _b stays.
        let later = t0 + Duration::from_secs(45);
        c.insert("_d._udp.t.", &ttl(40), later, 2);
        assert_eq!(c.names(), ["_b._udp.t.", "_d._udp.t."]);
        c.insert("_e._udp.t.", &ttl(40), later, 0);
        assert!(c.names().is_empty());
    }
}
