//! The functions every daemon serves itself, as pure functions; the router
//! supplies what they report.

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `rpcd.ping`: `"pong"`.
    Ping,
    /// `rpcd.echo`: the arguments, unchanged.
    Echo,
    /// `rpcd.list`: every function served here.
    List,
    /// `rpcd.stats`: the daemon's counters.
    Stats,
    /// `rpcd.names`: the naming table, resolved now.
    Names,
}

impl Builtin {
    /// The built-in called `function`, if it is one.
    pub fn parse(function: &str) -> Option<Builtin> {
        Some(match function {
            "rpcd.ping" => Builtin::Ping,
            "rpcd.echo" => Builtin::Echo,
            "rpcd.list" => Builtin::List,
            "rpcd.stats" => Builtin::Stats,
            "rpcd.names" => Builtin::Names,
            _ => return None,
        })
    }
}

/// `rpcd.ping`'s result.
pub fn ping() -> Vec<u8> {
    encode(&"pong")
}

/// Serialise a built-in's result to MessagePack (maps with field names).
pub fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("built-in results always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::BUILTINS;

    #[test]
    fn every_listed_builtin_parses_and_nothing_else() {
        for name in BUILTINS {
            assert!(Builtin::parse(name).is_some(), "{name}");
        }
        assert_eq!(Builtin::parse("rpcd.nosuch"), None);
        assert_eq!(Builtin::parse("kv.get"), None);
    }

    #[test]
    fn ping_is_pong_in_messagepack() {
        let s: String = rmp_serde::from_slice(&ping()).expect("a string");
        assert_eq!(s, "pong");
    }
}
