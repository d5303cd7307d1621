//! What a registered function declares about itself (`docs/ipc-protocol.md` §5.1): its
//! attributes (`idempotent`, a default deadline) and its signature — argument names and
//! types, the reply type, the doc comment — in a small schema of MessagePack values.
//!
//! An app sends a [`Signature`] inside `register` as one `bin` value (its MessagePack
//! encoding, [`Signature::encode`]); the daemon reads it with [`Signature::decode`], which
//! bounds its size, its values and its nesting, and serves it back through the built-in
//! `rpcd.describe` as [`FunctionInfo`] entries.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Deserializer, Serialize};

use super::{check_values, NESTING_MAX};

/// Largest encoded signature the daemon accepts, in bytes.
pub const SIGNATURE_BYTES_MAX: usize = 16 * 1024;

/// Most MessagePack values an encoded signature may hold.
pub const SIGNATURE_VALUES_MAX: usize = 2048;

/// The type of one value on the wire, as the stub generator describes it. Encoded as a map
/// whose `kind` names the variant; the other keys are the variant's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schema {
    /// `()`: MessagePack `nil`.
    #[default]
    Unit,
    /// `true` or `false`.
    Bool,
    /// An unsigned integer of 8 bits.
    U8,
    /// An unsigned integer of 16 bits.
    U16,
    /// An unsigned integer of 32 bits.
    U32,
    /// An unsigned integer of 64 bits (`usize` too).
    U64,
    /// A signed integer of 8 bits.
    I8,
    /// A signed integer of 16 bits.
    I16,
    /// A signed integer of 32 bits.
    I32,
    /// A signed integer of 64 bits (`isize` too).
    I64,
    /// A 32-bit float.
    F32,
    /// A 64-bit float.
    F64,
    /// One Unicode scalar value, sent as a one-character string.
    Char,
    /// UTF-8 text: MessagePack `str`.
    String,
    /// Raw bytes: MessagePack `bin` (`serde_bytes::ByteBuf`).
    Bytes,
    /// A sequence of values of one type: MessagePack array.
    List {
        /// The element type.
        of: Box<Schema>,
    },
    /// Keys to values: MessagePack map.
    Map {
        /// The key type.
        key: Box<Schema>,
        /// The value type.
        value: Box<Schema>,
    },
    /// A value or `nil`.
    Option {
        /// The type when present.
        of: Box<Schema>,
    },
    /// A fixed sequence of values of given types: MessagePack array.
    Tuple {
        /// The element types, in order.
        items: Vec<Schema>,
    },
    /// A record: a MessagePack map from field names to values.
    Struct {
        /// The type's name.
        name: String,
        /// Its fields, in order.
        fields: Vec<Field>,
    },
    /// One of named variants: a unit variant is its name as a `str`, a variant with data a
    /// map of one entry, its name to the data.
    Enum {
        /// The type's name.
        name: String,
        /// Its variants, in order.
        variants: Vec<Variant>,
    },
    /// A type the generator could not describe (it does not implement `Describe`): any value
    /// is accepted for it.
    Opaque {
        /// The type as written in the source.
        name: String,
    },
    /// A `kind` this reader does not know (from a newer writer): treated as opaque.
    #[serde(other)]
    Unknown,
}

/// A named, typed field of a struct, or an argument of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// The name.
    pub name: String,
    /// The type.
    #[serde(rename = "type")]
    pub ty: Schema,
}

/// One variant of an enum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// The name.
    pub name: String,
    /// The data it carries; absent for a unit variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Schema>,
}

/// A function's signature: what it takes, what it returns, what its doc says.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Signature {
    /// The arguments, in order: they travel as one MessagePack array.
    pub args: Vec<Field>,
    /// The reply type.
    pub returns: Schema,
    /// Whether the function may fail with an application error (`Result<T, E>` in Rust).
    #[serde(default)]
    pub fallible: bool,
    /// The method's doc comment, lines joined with `\n`, without the comment markers.
    #[serde(default)]
    pub doc: String,
}

/// Why an encoded signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Larger than [`SIGNATURE_BYTES_MAX`].
    #[error("a signature is at most {SIGNATURE_BYTES_MAX} bytes, this one {0}")]
    TooLarge(usize),
    /// Not the MessagePack encoding of a signature (or too many values, or too deep).
    #[error("not a signature: {0}")]
    Invalid(String),
}

impl Signature {
    /// The MessagePack encoding sent in `register` (maps with field names).
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("a signature always serialises")
    }

    /// Reads an encoded signature, bounded: at most [`SIGNATURE_BYTES_MAX`] bytes,
    /// [`SIGNATURE_VALUES_MAX`] values and [`NESTING_MAX`] levels, nothing after it.
    pub fn decode(bytes: &[u8]) -> Result<Signature, SignatureError> {
        if bytes.len() > SIGNATURE_BYTES_MAX {
            return Err(SignatureError::TooLarge(bytes.len()));
        }
        check_values(bytes, SIGNATURE_VALUES_MAX)
            .map_err(|e| SignatureError::Invalid(e.to_string()))?;
        let mut de = rmp_serde::Deserializer::new(Cursor::new(bytes));
        de.set_max_depth(NESTING_MAX + 1);
        let sig =
            Signature::deserialize(&mut de).map_err(|e| SignatureError::Invalid(e.to_string()))?;
        if usize::try_from(de.position()).ok() != Some(bytes.len()) {
            return Err(SignatureError::Invalid(
                "bytes after the signature".to_owned(),
            ));
        }
        Ok(sig)
    }
}

/// What a function declares at registration: the optional keys of `register`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Declaration {
    /// `Some(true)`: calls to it may run twice and may fail over; `Some(false)`: at most
    /// once; `None`: not declared (the call's own flag decides).
    pub idempotent: Option<bool>,
    /// The default time budget of a call to it, in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Its signature.
    pub signature: Option<Signature>,
}

impl Declaration {
    /// True when it declares nothing (a plain `register`).
    pub fn is_empty(&self) -> bool {
        self.idempotent.is_none() && self.deadline_ms.is_none() && self.signature.is_none()
    }
}

/// One entry of `rpcd.describe`'s reply: a function served by the daemon and what it
/// declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionInfo {
    /// The function's name.
    pub function: String,
    /// True for the daemon's own `rpcd.` functions.
    #[serde(default)]
    pub builtin: bool,
    /// As declared at registration; absent when not declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// As declared at registration; absent when not declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// As declared at registration; absent when registered without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

impl fmt::Display for Schema {
    /// The type as `rpcctl describe` prints it: `string`, `list<u8>`, `map<string, i64>`,
    /// `option<bytes>`, `(u8, bool)`, a struct's or enum's name, `?` for unknown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scalar = match self {
            Schema::Unit => "()",
            Schema::Bool => "bool",
            Schema::U8 => "u8",
            Schema::U16 => "u16",
            Schema::U32 => "u32",
            Schema::U64 => "u64",
            Schema::I8 => "i8",
            Schema::I16 => "i16",
            Schema::I32 => "i32",
            Schema::I64 => "i64",
            Schema::F32 => "f32",
            Schema::F64 => "f64",
            Schema::Char => "char",
            Schema::String => "string",
            Schema::Bytes => "bytes",
            Schema::Unknown => "?",
            Schema::List { of } => return write!(f, "list<{of}>"),
            Schema::Map { key, value } => return write!(f, "map<{key}, {value}>"),
            Schema::Option { of } => return write!(f, "option<{of}>"),
            Schema::Tuple { items } => {
                f.write_str("(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                return f.write_str(")");
            }
            Schema::Struct { name, .. } | Schema::Enum { name, .. } | Schema::Opaque { name } => {
                name
            }
        };
        f.write_str(scalar)
    }
}

/// Reads an optional `bin` strictly (see `strict`): the `signature` key of `register`.
pub(crate) fn optional_bin<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Vec<u8>>, D::Error> {
    struct Bin(Vec<u8>);
    impl<'de> Deserialize<'de> for Bin {
        fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Bin, D::Error> {
            super::strict::bytes(de).map(Bin)
        }
    }
    Ok(Option::<Bin>::deserialize(de)?.map(|b| b.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv_get() -> Signature {
        Signature {
            args: vec![Field {
                name: "key".into(),
                ty: Schema::String,
            }],
            returns: Schema::Option {
                of: Box::new(Schema::String),
            },
            fallible: false,
            doc: "The value of `key`, if any.".into(),
        }
    }

    #[test]
    fn a_signature_round_trips_and_its_encoding_is_documented() {
        let sig = kv_get();
        let bytes = sig.encode();
        assert_eq!(Signature::decode(&bytes), Ok(sig));
        // The shape docs/ipc-protocol.md §5.1 shows, as JSON-like MessagePack.
        let value: serde_json::Value = rmp_serde::from_slice(&bytes).expect("msgpack");
        assert_eq!(
            value,
            serde_json::json!({
                "args": [{"name": "key", "type": {"kind": "string"}}],
                "returns": {"kind": "option", "of": {"kind": "string"}},
                "fallible": false,
                "doc": "The value of `key`, if any."
            })
        );
    }

    #[test]
    fn bad_signatures_are_refused_not_trusted() {
        assert!(matches!(
            Signature::decode(&[0xc0]),
            Err(SignatureError::Invalid(_))
        ));
        let mut bytes = kv_get().encode();
        bytes.push(0xc0);
        assert!(Signature::decode(&bytes).is_err(), "trailing bytes");
        let big = vec![0u8; SIGNATURE_BYTES_MAX + 1];
        assert_eq!(
            Signature::decode(&big),
            Err(SignatureError::TooLarge(SIGNATURE_BYTES_MAX + 1))
        );
        // A list of lists 40 deep is beyond NESTING_MAX.
        let mut ty = Schema::U8;
        for _ in 0..40 {
            ty = Schema::List { of: Box::new(ty) };
        }
        let deep = Signature {
            returns: ty,
            ..Signature::default()
        };
        assert!(Signature::decode(&deep.encode()).is_err(), "too deep");
    }

    #[test]
    fn an_unknown_kind_reads_as_unknown() {
        let sig = serde_json::json!({"args": [], "returns": {"kind": "decimal128"}});
        let bytes = rmp_serde::to_vec_named(&sig).expect("encode");
        let sig = Signature::decode(&bytes).expect("tolerant");
        assert_eq!(sig.returns, Schema::Unknown);
        assert_eq!(sig.returns.to_string(), "?");
    }
}
