//! A map keyed by a peer's address, hashed with the standard library's keyed
//! SipHash (a random key per map: peers choose their addresses, so a
//! predictable hash would let one stranger fill a bucket) but fed the
//! address in one or two integer writes instead of field by field, and
//! hashing an address only when it is not the one hashed last.
//!
//! `SocketAddr`'s own `Hash` feeds the hasher its variant, the address bytes
//! with their length and the port as separate writes, and SipHash pays its
//! buffering for each; every message the daemon passes on looks its peer up
//! a few times, so that was several per cent of the daemon's instructions.
//! Those lookups come in runs for one peer (a message's send, its hold, the
//! settling, the bundle built for it: a dozen per call), and with one peer,
//! the common case, all of them are for the same address: the map keeps the
//! last address it hashed with its hash and looks that up without SipHash.
//! The hash is the same either way, so the table and what a stranger can do
//! to it are unchanged.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;

use hashbrown::hash_table::{Entry, HashTable};

/// Feeds `addr` to `h` in one integer write (IPv4) or two (IPv6): the IP,
/// the port and (IPv6) the scope, so that equal addresses hash equal. For
/// the `Hash` of any key holding a peer's address in a map with a keyed
/// hash: `SocketAddr`'s own `Hash` makes four or more writes, and SipHash
/// pays its buffering for each.
pub fn hash_addr<H: Hasher>(addr: &SocketAddr, h: &mut H) {
    match addr {
        SocketAddr::V4(a) => {
            h.write_u64((u64::from(a.ip().to_bits()) << 16) | u64::from(a.port()));
        }
        SocketAddr::V6(a) => {
            h.write_u128(a.ip().to_bits());
            h.write_u64((u64::from(a.scope_id()) << 16) | u64::from(a.port()));
        }
    }
}

/// `addr`'s hash under `state`: what the table is keyed by.
fn keyed(state: &RandomState, addr: &SocketAddr) -> u64 {
    let mut h = state.build_hasher();
    hash_addr(addr, &mut h);
    h.finish()
}

/// A `HashMap<SocketAddr, V>` with the cheaper hashing above.
#[derive(Debug)]
pub(crate) struct PeerMap<V> {
    table: HashTable<(SocketAddr, V)>,
    state: RandomState,
    /// The address hashed last and its hash under `state`.
    last: Cell<Option<(SocketAddr, u64)>>,
}

impl<V> Default for PeerMap<V> {
    fn default() -> Self {
        PeerMap {
            table: HashTable::new(),
            state: RandomState::new(),
            last: Cell::new(None),
        }
    }
}

impl<V> PeerMap<V> {
    /// `peer`'s hash: remembered for the address hashed last, else computed
    /// (and remembered).
    fn hash(&self, peer: &SocketAddr) -> u64 {
        if let Some((a, h)) = self.last.get() {
            if a == *peer {
                return h;
            }
        }
        let h = keyed(&self.state, peer);
        self.last.set(Some((*peer, h)));
        h
    }

    pub(crate) fn get(&self, peer: &SocketAddr) -> Option<&V> {
        let h = self.hash(peer);
        self.table.find(h, |(a, _)| a == peer).map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, peer: &SocketAddr) -> Option<&mut V> {
        let h = self.hash(peer);
        self.table.find_mut(h, |(a, _)| a == peer).map(|(_, v)| v)
    }

    pub(crate) fn contains_key(&self, peer: &SocketAddr) -> bool {
        self.get(peer).is_some()
    }

    pub(crate) fn remove(&mut self, peer: &SocketAddr) -> Option<V> {
        let h = self.hash(peer);
        let entry = self.table.find_entry(h, |(a, _)| a == peer).ok()?;
        let ((_, v), _) = entry.remove();
        Some(v)
    }

    /// The value for `peer`, made by `make` if there is none.
    pub(crate) fn get_or_insert_with(
        &mut self,
        peer: SocketAddr,
        make: impl FnOnce() -> V,
    ) -> &mut V {
        let h = self.hash(&peer);
        let state = &self.state;
        // Growing rehashes every entry: with the same keyed hash.
        let rehash = |(a, _): &(SocketAddr, V)| keyed(state, a);
        let entry = match self.table.entry(h, |(a, _)| *a == peer, rehash) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert((peer, make())).into_mut(),
        };
        &mut entry.1
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.table.iter().map(|(_, v)| v)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.table.iter_mut().map(|(_, v)| v)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (SocketAddr, &V)> {
        self.table.iter().map(|(a, v)| (*a, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;
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
        let h = |a: SocketAddr| keyed(&s, &a);
        // Equal keys hash equal; changing any hashed part changes the hash
        // (for these values: a 64-bit collision would be a 2^-64 accident).
        assert_eq!(h(v4(1, 7000)), h(v4(1, 7000)));
        assert_ne!(h(v4(1, 7000)), h(v4(2, 7000)));
        assert_ne!(h(v4(1, 7000)), h(v4(1, 7001)));
        assert_ne!(h(v6(1, 7000, 0)), h(v6(1, 7000, 1)));
        assert_ne!(h(v6(1, 7000, 0)), h(v6(1, 7001, 0)));
        // Another map's key hashes the same address differently.
        let other = RandomState::new();
        assert_ne!(keyed(&s, &v4(1, 7000)), keyed(&other, &v4(1, 7000)));
    }
}
