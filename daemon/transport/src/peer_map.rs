//! A map keyed by a peer's address, hashed with the standard library's keyed
//! SipHash (a random key per map: peers choose their addresses, so a
//! predictable hash would let one stranger fill a bucket) but fed the
//! address in one or two integer writes instead of field by field.
//!
//! `SocketAddr`'s own `Hash` feeds the hasher its variant, the address bytes
//! with their length and the port as separate writes, and SipHash pays its
//! buffering for each; every message the daemon passes on looks its peer up
//! a few times, so that was several per cent of the daemon's instructions.

use std::collections::hash_map::{self, HashMap};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

/// The address as the map hashes it. Equality is `SocketAddr`'s; the hash
/// covers the IP, the port and (IPv6) the scope, so equal keys hash equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key(SocketAddr);

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self.0 {
            SocketAddr::V4(a) => {
                h.write_u64((u64::from(a.ip().to_bits()) << 16) | u64::from(a.port()));
            }
            SocketAddr::V6(a) => {
                h.write_u128(a.ip().to_bits());
                h.write_u64((u64::from(a.scope_id()) << 16) | u64::from(a.port()));
            }
        }
    }
}

/// A `HashMap<SocketAddr, V>` with the cheaper hashing above.
#[derive(Debug)]
pub(crate) struct PeerMap<V> {
    map: HashMap<Key, V>,
}

impl<V> Default for PeerMap<V> {
    fn default() -> Self {
        PeerMap {
            map: HashMap::new(),
        }
    }
}

impl<V> PeerMap<V> {
    pub(crate) fn get(&self, peer: &SocketAddr) -> Option<&V> {
        self.map.get(&Key(*peer))
    }

    pub(crate) fn get_mut(&mut self, peer: &SocketAddr) -> Option<&mut V> {
        self.map.get_mut(&Key(*peer))
    }

    pub(crate) fn contains_key(&self, peer: &SocketAddr) -> bool {
        self.map.contains_key(&Key(*peer))
    }

    pub(crate) fn remove(&mut self, peer: &SocketAddr) -> Option<V> {
        self.map.remove(&Key(*peer))
    }

    /// The value for `peer`, made by `make` if there is none.
    pub(crate) fn get_or_insert_with(
        &mut self,
        peer: SocketAddr,
        make: impl FnOnce() -> V,
    ) -> &mut V {
        match self.map.entry(Key(peer)) {
            hash_map::Entry::Occupied(e) => e.into_mut(),
            hash_map::Entry::Vacant(e) => e.insert(make()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values()
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.map.values_mut()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (SocketAddr, &V)> {
        self.map.iter().map(|(k, v)| (k.0, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

    fn v4(a: u8, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, a), port))
    }

    fn v6(a: u16, port: u16, scope: u32) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, a),
            port,
            0,
            scope,
        ))
    }

    #[test]
    fn addresses_that_differ_in_any_part_are_different_keys() {
        let addrs = [
            v4(1, 7000),
            v4(2, 7000),
            v4(1, 7001),
            v6(1, 7000, 0),
            v6(2, 7000, 0),
            v6(1, 7001, 0),
            v6(1, 7000, 3),
            // The IPv4-mapped IPv6 form of v4(1, 7000) is another address.
            SocketAddr::V6(SocketAddrV6::new(
                Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped(),
                7000,
                0,
                0,
            )),
        ];
        let mut m = PeerMap::default();
        for (i, a) in addrs.iter().enumerate() {
            *m.get_or_insert_with(*a, || 0) += i + 1;
        }
        assert_eq!(m.len(), addrs.len());
        for (i, a) in addrs.iter().enumerate() {
            assert_eq!(m.get(a), Some(&(i + 1)), "{a}");
            assert!(m.contains_key(a));
        }
        // The same address again finds its entry, does not add one.
        *m.get_or_insert_with(addrs[3], || 100) += 10;
        assert_eq!(m.get(&addrs[3]), Some(&14));
        assert_eq!(m.len(), addrs.len());
        assert_eq!(m.remove(&addrs[0]), Some(1));
        assert_eq!(m.get(&addrs[0]), None);
        assert_eq!(m.remove(&addrs[0]), None);
        let mut seen: Vec<SocketAddr> = m.iter().map(|(a, _)| a).collect();
        seen.sort();
        let mut want = addrs[1..].to_vec();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn the_hash_covers_ip_port_and_scope_and_is_keyed() {
        let s = RandomState::new();
        let h = |a: SocketAddr| s.hash_one(Key(a));
        // Equal keys hash equal; changing any hashed part changes the hash
        // (for these values: a 64-bit collision would be a 2^-64 accident).
        assert_eq!(h(v4(1, 7000)), h(v4(1, 7000)));
        assert_ne!(h(v4(1, 7000)), h(v4(2, 7000)));
        assert_ne!(h(v4(1, 7000)), h(v4(1, 7001)));
        assert_ne!(h(v6(1, 7000, 0)), h(v6(1, 7000, 1)));
        assert_ne!(h(v6(1, 7000, 0)), h(v6(1, 7001, 0)));
        // Another map's key hashes the same address differently.
        let other = RandomState::new();
        assert_ne!(
            s.hash_one(Key(v4(1, 7000))),
            other.hash_one(Key(v4(1, 7000)))
        );
    }
}
