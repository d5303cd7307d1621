//! Where a call goes: a daemon's `host:port`, or a service name the daemon resolves from its
//! configuration. The client never resolves anything itself; it passes the target's text to
//! the daemon, which owns naming (config names, then the system resolver for host names).

use std::fmt;
use std::net::SocketAddr;

/// The target of a call.
///
/// Built from text with [`Target::new`] (or `From<&str>`), which only classifies it; the
/// daemon validates and resolves it at call time, answering `bad_request` for text that is
/// neither an address nor a configured name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// A daemon's UDP address: `host:port`, where `host` is an IP address (IPv6 in
    /// brackets) or a host name for the system resolver.
    Addr {
        /// The host part as written (brackets kept for IPv6).
        host: String,
        /// The UDP port.
        port: u16,
    },
    /// A service name from the daemon's configuration (one or more daemons behind it).
    Name(String),
}

impl Target {
    /// Classifies `text`: `host:port` when it ends in `:` and a port number after a
    /// non-empty host (an IPv6 host must be bracketed), otherwise a service name.
    pub fn new(text: &str) -> Target {
        if let Some((host, port)) = text.rsplit_once(':') {
            let bare_ipv6 = host.contains(':') && !(host.starts_with('[') && host.ends_with(']'));
            if let Ok(port) = port.parse::<u16>() {
                if !host.is_empty() && !bare_ipv6 {
                    return Target::Addr {
                        host: host.to_owned(),
                        port,
                    };
                }
            }
        }
        Target::Name(text.to_owned())
    }

    /// A service name, whatever its text looks like.
    pub fn name(name: impl Into<String>) -> Target {
        Target::Name(name.into())
    }

    /// True for a service name.
    pub fn is_name(&self) -> bool {
        matches!(self, Target::Name(_))
    }

    /// The text sent to the daemon.
    pub fn to_wire(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr { host, port } => write!(f, "{host}:{port}"),
            Target::Name(name) => f.write_str(name),
        }
    }
}

impl From<&str> for Target {
    fn from(text: &str) -> Target {
        Target::new(text)
    }
}

impl From<String> for Target {
    fn from(text: String) -> Target {
        Target::new(&text)
    }
}

impl From<&String> for Target {
    fn from(text: &String) -> Target {
        Target::new(text)
    }
}

impl From<&Target> for Target {
    fn from(target: &Target) -> Target {
        target.clone()
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Target {
        Target::Addr {
            host: match addr {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            },
            port: addr.port(),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Target, Self::Err> {
        Ok(Target::new(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names_are_told_apart() {
        assert_eq!(
            Target::new("127.0.0.1:7400"),
            Target::Addr {
                host: "127.0.0.1".into(),
                port: 7400
            }
        );
        assert_eq!(
            Target::new("db.example:7400"),
            Target::Addr {
                host: "db.example".into(),
                port: 7400
            }
        );
        assert_eq!(
            Target::new("[::1]:9"),
            Target::Addr {
                host: "[::1]".into(),
                port: 9
            }
        );
        for name in [
            "kv",
            "kv-primary",
            "::1",
            ":7400",
            "host:99999",
            "not a target",
        ] {
            assert_eq!(Target::new(name), Target::Name(name.into()), "{name}");
        }
    }

    #[test]
    fn wire_text_is_the_input_text() {
        for text in ["127.0.0.1:7400", "[::1]:9", "kv", "a.b:1"] {
            assert_eq!(Target::new(text).to_wire(), text);
        }
        let addr: SocketAddr = "[::1]:7400".parse().unwrap();
        assert_eq!(Target::from(addr).to_wire(), "[::1]:7400");
        let addr: SocketAddr = "10.0.0.1:1".parse().unwrap();
        assert_eq!(Target::from(addr).to_wire(), "10.0.0.1:1");
    }
}
