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
    /// `rpcd.describe`: what the functions served here declared.
    Describe,
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
            "rpcd.describe" => Builtin::Describe,
            _ => return None,
        })
    }
}

/// `rpcd.ping`'s result.
pub fn ping() -> Vec<u8> {
    encode(&"pong")
}

/// What `rpcd.describe` was asked: its arguments are empty (or an empty array) for every
/// function, or an array of one string, the function to describe.
pub fn describe_args(args: &[u8]) -> Result<Option<String>, String> {
    if args.is_empty() {
        return Ok(None);
    }
    let mut names: Vec<String> = rmp_serde::from_slice(&args[..args.len().min(4096)])
        .map_err(|e| format!("rpcd.describe takes [] or [function]: {e}"))?;
    match names.len() {
        0 => Ok(None),
        1 => Ok(names.pop()),
        n => Err(format!(
            "rpcd.describe takes [] or [function], not {n} arguments"
        )),
    }
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
    fn describe_takes_nothing_or_one_name() {
        assert_eq!(describe_args(&[]), Ok(None));
        assert_eq!(describe_args(&[0x90]), Ok(None));
        let one = rmp_serde::to_vec(&["kv.get"]).expect("encode");
        assert_eq!(describe_args(&one), Ok(Some("kv.get".into())));
        let two = rmp_serde::to_vec(&["a", "b"]).expect("encode");
        assert!(describe_args(&two).is_err());
        assert!(describe_args(&[0x05]).is_err());
    }

    #[test]
    fn ping_is_pong_in_messagepack() {
        let s: String = rmp_serde::from_slice(&ping()).expect("a string");
        assert_eq!(s, "pong");
    }
}
