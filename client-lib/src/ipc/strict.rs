//! Strict readers for the fields of the app→daemon messages.
//!
//! serde's defaults are generous: a `Vec<u8>` read through `serde_bytes` also takes a
//! MessagePack `str` or an array of small integers, and a `String` also takes a `bin` that
//! holds UTF-8. `docs/ipc-protocol.md` §3 says `bytes` is `bin` and `string` is `str`, and
//! the daemon holds apps to that: an app that sends anything else has a bug, and accepting
//! it would make the text and the behaviour disagree. The daemon→app messages are read
//! with serde's defaults; only the fields of [`ClientMsg`](super::ClientMsg) use these.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

use super::{ErrorCode, Payload};

/// A `bytes` field: MessagePack `bin` only.
pub fn bytes<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<u8>, D::Error> {
    struct Bin;
    impl Visitor<'_> for Bin {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bin (MessagePack binary)")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
    de.deserialize_byte_buf(Bin)
}

/// A `bytes` field read as a [`Payload`]: MessagePack `bin` only.
pub fn payload<'de, D: Deserializer<'de>>(de: D) -> Result<Payload, D::Error> {
    bytes(de).map(Payload::from)
}

/// A `string` field: MessagePack `str` only.
pub fn string<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    struct Str;
    impl Visitor<'_> for Str {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("str (MessagePack string)")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
    }
    de.deserialize_string(Str)
}

/// The code of a `refused` outcome: a `str`. A string that is not one of the codes of §7
/// reads as [`ErrorCode::AppError`], which is how the daemon reports every code it does not
/// pass on (`docs/ipc-protocol.md` §6): an app refusing with a code from a later version, or
/// a misspelt one, fails only that call, not its connection.
pub fn refused_code<'de, D: Deserializer<'de>>(de: D) -> Result<ErrorCode, D::Error> {
    string(de).map(|s| s.parse().unwrap_or(ErrorCode::AppError))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Both {
        #[serde(deserialize_with = "bytes")]
        b: Vec<u8>,
        #[serde(deserialize_with = "string")]
        s: String,
        #[serde(deserialize_with = "refused_code")]
        c: ErrorCode,
    }

    fn decode(b: serde_json::Value, s: serde_json::Value, c: &str) -> Result<Both, String> {
        // Build the MessagePack by hand: `b` as bin when given as a JSON string prefixed
        // "bin:", else as the JSON value.
        let mut out = vec![0x83];
        rmp::encode::write_str(&mut out, "b").unwrap();
        match b.as_str().and_then(|t| t.strip_prefix("bin:")) {
            Some(raw) => rmp::encode::write_bin(&mut out, raw.as_bytes()).unwrap(),
            None => out.extend(rmp_serde::to_vec(&b).unwrap()),
        }
        rmp::encode::write_str(&mut out, "s").unwrap();
        match s.as_str().and_then(|t| t.strip_prefix("bin:")) {
            Some(raw) => rmp::encode::write_bin(&mut out, raw.as_bytes()).unwrap(),
            None => out.extend(rmp_serde::to_vec(&s).unwrap()),
        }
        rmp::encode::write_str(&mut out, "c").unwrap();
        rmp::encode::write_str(&mut out, c).unwrap();
        rmp_serde::from_slice(&out).map_err(|e| e.to_string())
    }

    #[test]
    fn bin_and_str_are_read() {
        let ok = decode("bin:ab".into(), "x".into(), "overloaded").unwrap();
        assert_eq!(
            (ok.b, ok.s, ok.c),
            (b"ab".to_vec(), "x".into(), ErrorCode::Overloaded)
        );
    }

    #[test]
    fn a_str_or_an_array_is_no_bytes() {
        assert!(decode("ab".into(), "x".into(), "overloaded").is_err());
        assert!(decode(serde_json::json!([1, 2]), "x".into(), "overloaded").is_err());
    }

    #[test]
    fn a_bin_is_no_string() {
        assert!(decode("bin:ab".into(), "bin:x".into(), "overloaded").is_err());
    }

    #[test]
    fn an_unknown_refused_code_reads_as_app_error() {
        let got = decode("bin:".into(), "x".into(), "too_busy_v9").unwrap();
        assert_eq!(got.c, ErrorCode::AppError);
    }
}
