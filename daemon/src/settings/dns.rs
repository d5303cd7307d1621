//! `[dns]`: how `srv:` targets (DNS SRV names, RFC 2782) are looked up, and
//! the syntax of such a target.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// The prefix that makes a target a DNS SRV name: `srv:_kv._udp.example.org`.
pub const SRV_PREFIX: &str = "srv:";
/// DNS servers `[dns] servers` may list.
pub const DNS_SERVERS_MAX: usize = 8;
/// Most attempts per server `[dns] attempts` may ask for.
pub const DNS_ATTEMPTS_MAX: usize = 10;

/// `[dns]`: the resolver of SRV names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Servers to ask (UDP); empty: the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// How long one query waits for an answer.
    pub timeout: Duration,
    /// Tries per query before it fails.
    pub attempts: usize,
    /// SRV names whose answers are kept (each for its TTL); 0 keeps none.
    pub cache_max: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            servers: Vec::new(),
            timeout: Duration::from_millis(2000),
            attempts: 2,
            cache_max: 1024,
        }
    }
}

/// `[dns]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDns {
    servers: Option<Vec<SocketAddr>>,
    timeout_ms: Option<u64>,
    attempts: Option<usize>,
    cache_max: Option<usize>,
}

impl FileDns {
    pub(super) fn overlay(self, s: &mut DnsSettings) {
        if let Some(v) = self.servers {
            s.servers = v;
        }
        if let Some(v) = self.timeout_ms {
            s.timeout = Duration::from_millis(v);
        }
        if let Some(v) = self.attempts {
            s.attempts = v;
        }
        if let Some(v) = self.cache_max {
            s.cache_max = v;
        }
    }
}

impl DnsSettings {
    /// The problem with these values, as (key, problem).
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.servers.len() > DNS_SERVERS_MAX {
            return Err(("dns.servers", format!("at most {DNS_SERVERS_MAX} servers")));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return Err(("dns.timeout_ms", "must be 1 to 60000".into()));
        }
        if self.attempts == 0 || self.attempts > DNS_ATTEMPTS_MAX {
            return Err(("dns.attempts", format!("must be 1 to {DNS_ATTEMPTS_MAX}")));
        }
        Ok(())
    }
}

/// The SRV name of an `srv:` target: `None` when `target` is no SRV target
/// (`srv:7400` is the host `srv`, port 7400), `Some(Err)` when it is one
/// but malformed. The name is `_service._proto.domain` (RFC 2782), each
/// label 1-63 of `A-Z a-z 0-9 _ -`, at most 253 characters, and may end in
/// a dot (fully qualified: no search domains).
pub fn srv_target(target: &str) -> Option<Result<&str, String>> {
    let name = target.strip_prefix(SRV_PREFIX)?;
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(check_srv_name(name).map(|()| name))
}

fn check_srv_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{SRV_PREFIX}{name}: {why} (an SRV name is _service._proto.domain, e.g. \
             srv:_kv._udp.example.org)"
        ))
    };
    let body = name.strip_suffix('.').unwrap_or(name);
    if body.is_empty() {
        return bad("empty name");
    }
    if body.len() > 253 {
        return bad("longer than 253 characters");
    }
    let labels: Vec<&str> = body.split('.').collect();
    if labels.len() < 3 {
        return bad("needs a service, a protocol and a domain");
    }
    for l in &labels {
        let ok = !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !ok {
            return bad(&format!("label {l:?} is not 1-63 of A-Z a-z 0-9 _ -"));
        }
    }
    if !labels[..2]
        .iter()
        .all(|l| l.len() > 1 && l.starts_with('_'))
    {
        return bad("service and protocol labels start with _");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_targets_parse_and_malformed_ones_say_why() {
        assert_eq!(
            srv_target("srv:_kv._udp.example.org"),
            Some(Ok("_kv._udp.example.org"))
        );
        assert_eq!(srv_target("srv:_kv._udp.test."), Some(Ok("_kv._udp.test.")));
        assert_eq!(srv_target("srv:7400"), None, "host srv, port 7400");
        assert_eq!(srv_target("10.0.0.1:7400"), None);
        for bad in [
            "srv:",
            "srv:.",
            "srv:kv.example.org",
            "srv:_kv.example",
            "srv:_kv._udp",
            "srv:_._udp.example",
            "srv:_kv._udp..example",
            "srv:_kv._udp.exa mple",
            "srv:_kv._udp.example:7400",
        ] {
            let e = srv_target(bad).expect("an srv target").unwrap_err();
            assert!(e.contains("_service._proto.domain"), "{bad}: {e}");
        }
        let long = format!("srv:_kv._udp.{}", "a.".repeat(130));
        assert!(srv_target(&long).expect("srv").is_err());
    }

    /// `[dns]` and `srv:` entries of `[names]` from a file, and what
    /// validation refuses, naming the key.
    #[test]
    fn dns_settings_load_and_bad_ones_name_their_key() {
        use crate::settings::Settings;
        let mut s = Settings::default();
        s.apply_toml(
            "[dns]\nservers = [\"127.0.0.1:5353\"]\ntimeout_ms = 300\nattempts = 1\n\
             cache_max = 0\n[names]\nkv = \"srv:_kv._udp.example.\"\n",
        )
        .expect("valid file");
        assert_eq!(s.dns.servers, ["127.0.0.1:5353".parse().expect("addr")]);
        assert_eq!(s.dns.timeout, Duration::from_millis(300));
        assert_eq!((s.dns.attempts, s.dns.cache_max), (1, 0));
        s.validate("test").expect("valid");
        let refused = |f: &dyn Fn(&mut Settings)| {
            let mut bad = s.clone();
            f(&mut bad);
            bad.validate("test").expect_err("refused").to_string()
        };
        let e = refused(&|b| {
            b.names
                .insert("db".into(), vec!["srv:db.example.org".into()]);
        });
        assert!(
            e.contains("names.db") && e.contains("_service._proto"),
            "{e}"
        );
        let e = refused(&|b| b.dns.attempts = 0);
        assert!(e.contains("dns.attempts"), "{e}");
        let e = refused(&|b| b.dns.timeout = Duration::ZERO);
        assert!(e.contains("dns.timeout_ms"), "{e}");
        let e = refused(&|b| b.dns.servers = vec!["127.0.0.1:53".parse().expect("a"); 9]);
        assert!(e.contains("dns.servers"), "{e}");
    }
}
