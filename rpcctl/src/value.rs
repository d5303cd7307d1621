//! JSON on the command line, MessagePack on the wire.
//!
//! Arguments go out as one MessagePack array holding every argument, in order: the
//! convention of the stub generator, whose client stubs send a tuple of the arguments (which
//! rmp-serde encodes as an array). JSON integers stay MessagePack integers, strings stay
//! strings, objects become maps with string keys.
//!
//! Replies come back as any MessagePack value and are shown as JSON. MessagePack has more
//! than JSON, so some values are mapped (docs/cli.md lists the same rules):
//! - `bin` becomes a string of standard, padded base64;
//! - an extension becomes `{"$ext": {"type": T, "data": "<base64>"}}`;
//! - a map key that is not a string becomes its compact JSON text (`1` → `"1"`);
//! - a string that is not UTF-8 is shown with U+FFFD for the bad bytes;
//! - a float that is NaN or infinite becomes `null`;
//! - an empty reply (zero bytes, no value at all) becomes `null`.

use std::io::{Cursor, Read};
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use serde_json::{Map, Number, Value};

use crate::exit::{BadReply, Usage};

/// Largest `--args-file` read, in bytes. Far above the daemon's message cap (16 MiB of
/// MessagePack), so it only stops a runaway input such as `/dev/zero`.
pub const ARGS_FILE_MAX: u64 = 256 * 1024 * 1024;

/// Parses command-line argument number `position` (counted from 1) as one JSON value.
pub fn parse_arg(text: &str, position: usize) -> Result<Value, Usage> {
    serde_json::from_str(text)
        .map_err(|err| Usage(format!("argument {position} is not valid JSON: {err}")))
}

/// Parses every command-line argument, reporting the first that is not JSON.
pub fn parse_args(args: &[String]) -> Result<Vec<Value>, Usage> {
    args.iter()
        .enumerate()
        .map(|(i, text)| parse_arg(text, i + 1))
        .collect()
}

/// Reads the arguments from `path` (`-`: standard input), which must hold one JSON array.
pub fn read_args_file(path: &Path) -> Result<Vec<Value>, Usage> {
    let shown = if path == Path::new("-") {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    };
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(ARGS_FILE_MAX + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(ARGS_FILE_MAX + 1).read_to_end(&mut bytes))
    };
    read.map_err(|err| Usage(format!("cannot read args file {shown}: {err}")))?;
    if bytes.len() as u64 > ARGS_FILE_MAX {
        return Err(Usage(format!(
            "args file {shown} is larger than {ARGS_FILE_MAX} bytes"
        )));
    }
    args_from_json(&bytes, &shown)
}

/// Parses the text of an args file: one JSON array of the arguments.
pub fn args_from_json(bytes: &[u8], shown: &str) -> Result<Vec<Value>, Usage> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Array(args)) => Ok(args),
        Ok(other) => Err(Usage(format!(
            "args file {shown} must hold a JSON array of the arguments, not {}",
            kind(&other)
        ))),
        Err(err) => Err(Usage(format!("args file {shown} is not valid JSON: {err}"))),
    }
}

/// Encodes the arguments as the MessagePack array a call carries.
pub fn encode_args(args: &[Value]) -> anyhow::Result<Vec<u8>> {
    rmp_serde::to_vec(args).context("cannot encode the arguments as MessagePack")
}

/// Decodes a reply: exactly one MessagePack value (or nothing at all), shown as JSON.
pub fn decode_reply(bytes: &[u8]) -> Result<Value, BadReply> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let mut cursor = Cursor::new(bytes);
    let value = rmpv::decode::read_value(&mut cursor).map_err(|err| {
        BadReply(format!(
            "the reply ({} bytes) is not valid MessagePack: {err}",
            bytes.len()
        ))
    })?;
    let used = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    if used != bytes.len() {
        return Err(BadReply(format!(
            "the reply holds {} bytes after its MessagePack value",
            bytes.len().saturating_sub(used)
        )));
    }
    Ok(to_json(value))
}

/// Renders `value` as pretty JSON, or as one compact line when `compact`.
pub fn render(value: &Value, compact: bool) -> String {
    let mut text = if compact {
        value.to_string()
    } else {
        // Serialising a `Value` to a string cannot fail: its map keys are strings.
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    };
    text.push('\n');
    text
}

/// Converts a MessagePack value to JSON by the rules in the module doc.
pub fn to_json(value: rmpv::Value) -> Value {
    use rmpv::Value as M;
    match value {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Value::Number(u.into()),
            (None, Some(s)) => Value::Number(s.into()),
            // rmpv integers are always u64 or i64.
            (None, None) => Value::Null,
        },
        M::F32(f) => float(f64::from(f)),
        M::F64(f) => float(f),
        M::String(s) => Value::String(text(s)),
        M::Binary(bytes) => Value::String(base64(&bytes)),
        M::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        M::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (key, value) in entries {
                let key = match key {
                    M::String(s) => text(s),
                    other => to_json(other).to_string(),
                };
                map.insert(key, to_json(value));
            }
            Value::Object(map)
        }
        M::Ext(kind, data) => {
            let mut inner = Map::new();
            inner.insert("type".into(), Value::Number(kind.into()));
            inner.insert("data".into(), Value::String(base64(&data)));
            let mut outer = Map::new();
            outer.insert("$ext".into(), Value::Object(inner));
            Value::Object(outer)
        }
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn text(s: rmpv::Utf8String) -> String {
    match s.as_str() {
        Some(valid) => valid.to_owned(),
        None => String::from_utf8_lossy(s.as_bytes()).into_owned(),
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_become_one_messagepack_array() {
        let args = parse_args(&[r#""k""#.into(), r#"{"a":[1,2]}"#.into()]).unwrap();
        let bytes = encode_args(&args).unwrap();
        #[rustfmt::skip]
        let expected = [
            0x92,                         // array of 2
            0xa1, b'k',                   // "k"
            0x81, 0xa1, b'a',             // {"a":
            0x92, 0x01, 0x02,             //  [1, 2]}
        ];
        assert_eq!(bytes, expected);
        assert_eq!(encode_args(&[]).unwrap(), [0x90]);
    }

    #[test]
    fn integers_stay_integers_and_floats_floats() {
        let args = parse_args(&["-1".into(), "18446744073709551615".into(), "1.5".into()]).unwrap();
        let bytes = encode_args(&args).unwrap();
        let back: (i64, u64, f64) = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, (-1, u64::MAX, 1.5));
        assert_eq!(bytes[1], 0xff, "-1 is a negative fixint");
    }

    #[test]
    fn round_trip_through_messagepack_is_identity_for_json() {
        let value = json!({"s": "x", "n": [0, -5, 300, 1e100, true, null], "o": {"": {}}});
        let bytes = rmp_serde::to_vec(&value).unwrap();
        assert_eq!(decode_reply(&bytes).unwrap(), value);
    }

    #[test]
    fn bad_json_names_the_argument_and_position() {
        let err = parse_args(&["1".into(), "{\"a\":\n  ?}".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "argument 2 is not valid JSON: expected value at line 2 column 3"
        );
        // A bare word is the usual mistake: a string needs its quotes.
        let err = parse_arg("hello", 1).unwrap_err();
        assert!(err.0.starts_with("argument 1 is not valid JSON: "), "{err}");
    }

    #[test]
    fn args_file_must_hold_an_array() {
        assert_eq!(
            args_from_json(br#"["k", {"a": 1}]"#, "f").unwrap(),
            vec![json!("k"), json!({"a": 1})]
        );
        let err = args_from_json(br#"{"a": 1}"#, "f").unwrap_err();
        assert_eq!(
            err.to_string(),
            "args file f must hold a JSON array of the arguments, not an object"
        );
        let err = args_from_json(b"[1,\n2,,]", "f").unwrap_err();
        assert!(err.0.ends_with("at line 2 column 3"), "{err}");
    }

    #[test]
    fn messagepack_only_values_have_a_json_form() {
        use rmpv::Value as M;
        let value = M::Map(vec![
            (M::from(1), M::Binary(vec![0, 1, 2, 255])),
            (M::from("e"), M::Ext(5, vec![1])),
            (M::from("nan"), M::F64(f64::NAN)),
            (M::from("f"), M::F32(0.5)),
        ]);
        assert_eq!(
            to_json(value),
            json!({"1": "AAEC/w==", "e": {"$ext": {"type": 5, "data": "AQ=="}},
                   "nan": null, "f": 0.5})
        );
        assert_eq!(decode_reply(&[]).unwrap(), Value::Null);
    }

    #[test]
    fn a_reply_that_is_not_messagepack_is_an_error() {
        assert!(decode_reply(&[0xa5, b'a']).is_err(), "truncated string");
        let err = decode_reply(&[0x01, 0x02]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the reply holds 1 bytes after its MessagePack value"
        );
        assert!(decode_reply(&[0x92, 0x01]).is_err(), "truncated array");
    }
}
