//! Targets: what a call names (`host:port`, `srv:NAME`, a service name or
//! a peer's name) turned into addresses now or a lookup, and whether an
//! address is this daemon.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::settings::{self, PeerSettings};

/// What a call's target needs before the call can go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Literal addresses, in the order to try them.
    Ready(Vec<SocketAddr>),
    /// `host:port` and `srv:NAME` strings for the resolver (or the SRV cache).
    Lookup(Vec<String>),
}

/// The resolution of `target` against the naming table `names` and the
/// trusted `peers` (a service name wins over a peer's name; the settings
/// keep them apart anyway). `me` picks the loopback family for `localhost`.
/// The router does the same in two steps, [`literal`] (whose answers it
/// keeps) then [`named_resolution`].
#[cfg(test)]
pub fn resolution(
    target: &str,
    names: &BTreeMap<String, Vec<String>>,
    peers: &BTreeMap<String, PeerSettings>,
    me: SocketAddr,
) -> Result<Resolution, String> {
    if let Some(a) = literal(target) {
        return Ok(Resolution::Ready(vec![a]));
    }
    named_resolution(target, names, peers, me)
}

/// `target` as a literal `ip:port`, the usual target: what it means does not
/// depend on the settings, so the router may keep it (see `Router::resolution`).
pub fn literal(target: &str) -> Option<SocketAddr> {
    target.parse().ok()
}

/// The resolution of a `target` that is not a literal address (see
/// [`resolution`]).
pub fn named_resolution(
    target: &str,
    names: &BTreeMap<String, Vec<String>>,
    peers: &BTreeMap<String, PeerSettings>,
    me: SocketAddr,
) -> Result<Resolution, String> {
    if let Some(srv) = settings::srv_target(target) {
        srv?;
        return Ok(Resolution::Lookup(vec![target.to_owned()]));
    }
    if let Some(entries) = names.get(target) {
        let mut targets = Vec::with_capacity(entries.len());
        for e in entries {
            targets.extend(expand(e, peers)?);
        }
        let literal: Option<Vec<SocketAddr>> = targets.iter().map(|t| t.parse().ok()).collect();
        return Ok(match literal {
            Some(addrs) => Resolution::Ready(addrs),
            None => Resolution::Lookup(targets),
        });
    }
    if let Some(peer) = peers.get(target) {
        return peer_addresses(target, peer).map(Resolution::Ready);
    }
    if settings::valid_name(target) {
        return Err(format!(
            "{target:?} is neither host:port nor a name in this daemon's [names] or [peers]"
        ));
    }
    let (host, port) =
        settings::split_host_port(target).map_err(|e| format!("target {target:?}: {e}"))?;
    if host.eq_ignore_ascii_case("localhost") {
        // The loopback of the family this daemon listens on: `localhost`
        // means this host, and a resolver may answer ::1 first.
        let ip = if me.is_ipv6() {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        return Ok(Resolution::Ready(vec![SocketAddr::new(ip, port)]));
    }
    Ok(Resolution::Lookup(vec![target.to_owned()]))
}

/// One entry of a `[names]` list as `host:port` strings: itself, or the
/// addresses of the peer it names.
pub fn expand(entry: &str, peers: &BTreeMap<String, PeerSettings>) -> Result<Vec<String>, String> {
    match peers.get(entry) {
        Some(peer) => Ok(peer_addresses(entry, peer)?
            .iter()
            .map(SocketAddr::to_string)
            .collect()),
        None => Ok(vec![entry.to_owned()]),
    }
}

/// A peer's addresses, in order; a peer with none is no target.
fn peer_addresses(name: &str, peer: &PeerSettings) -> Result<Vec<SocketAddr>, String> {
    if peer.addresses.is_empty() {
        return Err(format!("peer {name} has no addresses configured"));
    }
    Ok(peer.addresses.clone())
}

/// True when a datagram sent to `addr` would reach this daemon, listening
/// on `me`, on a host whose interfaces have `host_ips`: every spelling of
/// our own address (`0.0.0.0:P`, `[::ffff:127.0.0.1]:P`, any loopback or
/// interface address when bound to the wildcard) counts.
pub fn is_local(addr: SocketAddr, me: SocketAddr, host_ips: &[IpAddr]) -> bool {
    if addr.port() != me.port() {
        return false;
    }
    let ip = addr.ip().to_canonical();
    let my_ip = me.ip().to_canonical();
    if ip == my_ip {
        return true;
    }
    let same_family = ip.is_ipv4() == my_ip.is_ipv4();
    // Sending to the unspecified address reaches this host's loopback
    // (Linux treats a zero destination as "this host").
    if ip.is_unspecified() {
        return same_family && (my_ip.is_unspecified() || my_ip.is_loopback());
    }
    if my_ip.is_unspecified() {
        // A wildcard socket of the family (an IPv6 wildcard also takes
        // IPv4 unless v6only; the canonical form already folded mapped
        // addresses).
        let family_ok = same_family || my_ip.is_ipv6();
        return family_ok && (ip.is_loopback() || host_ips.iter().any(|h| h.to_canonical() == ip));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcd_transport::secure::PrivateKey;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn every_spelling_of_our_own_address_is_local() {
        let me = a("127.0.0.1:7400");
        for s in ["127.0.0.1:7400", "0.0.0.0:7400", "[::ffff:127.0.0.1]:7400"] {
            assert!(is_local(a(s), me, &[]), "{s}");
        }
        for s in [
            "127.0.0.1:7401",
            "127.0.0.2:7400",
            "[::1]:7400",
            "10.0.0.1:7400",
        ] {
            assert!(!is_local(a(s), me, &[]), "{s}");
        }
    }

    #[test]
    fn a_wildcard_daemon_is_every_address_of_its_host() {
        let me = a("0.0.0.0:7400");
        let host = [IpAddr::from([10, 1, 2, 3])];
        for s in [
            "127.0.0.1:7400",
            "127.0.0.5:7400",
            "0.0.0.0:7400",
            "10.1.2.3:7400",
        ] {
            assert!(is_local(a(s), me, &host), "{s}");
        }
        assert!(!is_local(a("10.1.2.4:7400"), me, &host));
        assert!(!is_local(a("[::1]:7400"), me, &host));
        let me6 = a("[::]:7400");
        assert!(is_local(a("[::1]:7400"), me6, &host));
        assert!(is_local(a("127.0.0.1:7400"), me6, &host));
        assert!(is_local(a("[::]:7400"), me6, &host));
    }

    #[test]
    fn localhost_is_the_loopback_of_our_family() {
        let names = BTreeMap::new();
        let peers = BTreeMap::new();
        assert_eq!(
            resolution("localhost:9", &names, &peers, a("127.0.0.1:1")),
            Ok(Resolution::Ready(vec![a("127.0.0.1:9")]))
        );
        assert_eq!(
            resolution("LOCALHOST:9", &names, &peers, a("[::1]:1")),
            Ok(Resolution::Ready(vec![a("[::1]:9")]))
        );
    }

    #[test]
    fn names_and_hosts_classify() {
        let mut names = BTreeMap::new();
        names.insert("kv".to_owned(), vec!["10.0.0.1:1".to_owned()]);
        names.insert("db".to_owned(), vec!["db.example:1".to_owned()]);
        let peers = BTreeMap::new();
        let me = a("127.0.0.1:1");
        assert_eq!(
            resolution("kv", &names, &peers, me),
            Ok(Resolution::Ready(vec![a("10.0.0.1:1")]))
        );
        assert_eq!(
            resolution("db", &names, &peers, me),
            Ok(Resolution::Lookup(vec!["db.example:1".into()]))
        );
        assert_eq!(
            resolution("h.example:5", &names, &peers, me),
            Ok(Resolution::Lookup(vec!["h.example:5".into()]))
        );
        assert!(resolution("nosuch", &names, &peers, me).is_err());
        assert_eq!(
            resolution("srv:_kv._udp.example.", &names, &peers, me),
            Ok(Resolution::Lookup(vec!["srv:_kv._udp.example.".into()]))
        );
        let e = resolution("srv:kv.example", &names, &peers, me).unwrap_err();
        assert!(e.contains("_service._proto.domain"), "{e}");
        assert!(resolution("h.example:notaport", &names, &peers, me).is_err());
    }

    fn peer(key: u8, addresses: &[&str]) -> PeerSettings {
        PeerSettings {
            public_key: PrivateKey::from_bytes([key; 32]).public(),
            addresses: addresses.iter().map(|s| a(s)).collect(),
        }
    }

    /// A peer's name is a target: its addresses, in order.
    #[test]
    fn a_peer_name_resolves_to_its_addresses_in_order() {
        let mut peers = BTreeMap::new();
        peers.insert(
            "east".to_owned(),
            peer(1, &["10.0.0.9:7400", "[fd00::9]:7400"]),
        );
        peers.insert("roaming".to_owned(), peer(2, &[]));
        let names = BTreeMap::new();
        let me = a("127.0.0.1:1");
        assert_eq!(
            resolution("east", &names, &peers, me),
            Ok(Resolution::Ready(vec![
                a("10.0.0.9:7400"),
                a("[fd00::9]:7400")
            ]))
        );
        assert_eq!(
            resolution("roaming", &names, &peers, me),
            Err("peer roaming has no addresses configured".to_owned())
        );
        let e = resolution("west", &names, &peers, me).unwrap_err();
        assert!(e.contains("[peers]"), "{e}");
    }

    /// A service name wins over a peer of the same name, and a service's
    /// list may name peers among its host:port targets.
    #[test]
    fn names_take_precedence_and_may_list_peers() {
        let mut peers = BTreeMap::new();
        peers.insert(
            "east".to_owned(),
            peer(1, &["10.0.0.9:7400", "10.0.0.10:7400"]),
        );
        peers.insert("kv".to_owned(), peer(2, &["10.0.0.99:1"]));
        peers.insert("roaming".to_owned(), peer(3, &[]));
        let mut names = BTreeMap::new();
        names.insert("kv".to_owned(), vec!["10.0.0.1:1".to_owned()]);
        names.insert(
            "both".to_owned(),
            vec!["east".to_owned(), "10.0.0.1:1".to_owned()],
        );
        names.insert(
            "mixed".to_owned(),
            vec!["db.example:1".to_owned(), "east".to_owned()],
        );
        names.insert("lost".to_owned(), vec!["roaming".to_owned()]);
        let me = a("127.0.0.1:1");
        assert_eq!(
            resolution("kv", &names, &peers, me),
            Ok(Resolution::Ready(vec![a("10.0.0.1:1")]))
        );
        assert_eq!(
            resolution("both", &names, &peers, me),
            Ok(Resolution::Ready(vec![
                a("10.0.0.9:7400"),
                a("10.0.0.10:7400"),
                a("10.0.0.1:1")
            ]))
        );
        assert_eq!(
            resolution("mixed", &names, &peers, me),
            Ok(Resolution::Lookup(vec![
                "db.example:1".into(),
                "10.0.0.9:7400".into(),
                "10.0.0.10:7400".into()
            ]))
        );
        assert_eq!(
            resolution("lost", &names, &peers, me),
            Err("peer roaming has no addresses configured".to_owned())
        );
    }
}
