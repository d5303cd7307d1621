//! Targets: what a call names (`host:port` or a service name) turned into
//! addresses now or a lookup, and whether an address is this daemon.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::settings;

/// What a call's target needs before the call can go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Literal addresses, in the order to try them.
    Ready(Vec<SocketAddr>),
    /// `host:port` strings for the resolver.
    Lookup(Vec<String>),
}

/// The resolution of `target` against the naming table `names`. `me` picks the
/// loopback family for `localhost`.
pub fn resolution(
    target: &str,
    names: &BTreeMap<String, Vec<String>>,
    me: SocketAddr,
) -> Result<Resolution, String> {
    if let Ok(a) = target.parse::<SocketAddr>() {
        return Ok(Resolution::Ready(vec![a]));
    }
    if let Some(targets) = names.get(target) {
        let literal: Option<Vec<SocketAddr>> = targets.iter().map(|t| t.parse().ok()).collect();
        return Ok(match literal {
            Some(addrs) => Resolution::Ready(addrs),
            None => Resolution::Lookup(targets.clone()),
        });
    }
    if settings::valid_name(target) {
        return Err(format!(
            "{target:?} is neither host:port nor a service name in this daemon's [names]"
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
        assert_eq!(
            resolution("localhost:9", &names, a("127.0.0.1:1")),
            Ok(Resolution::Ready(vec![a("127.0.0.1:9")]))
        );
        assert_eq!(
            resolution("LOCALHOST:9", &names, a("[::1]:1")),
            Ok(Resolution::Ready(vec![a("[::1]:9")]))
        );
    }

    #[test]
    fn names_and_hosts_classify() {
        let mut names = BTreeMap::new();
        names.insert("kv".to_owned(), vec!["10.0.0.1:1".to_owned()]);
        names.insert("db".to_owned(), vec!["db.example:1".to_owned()]);
        let me = a("127.0.0.1:1");
        assert_eq!(
            resolution("kv", &names, me),
            Ok(Resolution::Ready(vec![a("10.0.0.1:1")]))
        );
        assert_eq!(
            resolution("db", &names, me),
            Ok(Resolution::Lookup(vec!["db.example:1".into()]))
        );
        assert_eq!(
            resolution("h.example:5", &names, me),
            Ok(Resolution::Lookup(vec!["h.example:5".into()]))
        );
        assert!(resolution("nosuch", &names, me).is_err());
        assert!(resolution("h.example:notaport", &names, me).is_err());
    }
}
