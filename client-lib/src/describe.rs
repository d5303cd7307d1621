//! [`Describe`]: a type's [`Schema`], for the signatures the stub generator registers.
//!
//! Implemented here for the std types that cross the wire (scalars, `String`, `char`,
//! `Vec`/`VecDeque`/sets as lists, `HashMap`/`BTreeMap` as maps, `Option`, tuples up to 6,
//! `Box`/`Arc`, `serde_bytes::ByteBuf` and `&serde_bytes::Bytes` as bytes, `&str` as a
//! string) and derivable for your own structs and
//! enums with `#[derive(rpcd_client::Describe)]`. A type without an implementation still
//! works as an argument: its schema is `opaque` (any value passes `rpcctl call`'s check).
//!
//! The schema must match what serde sends: the derive uses the Rust field and variant
//! names, so a type renamed with `#[serde(rename ...)]` should implement [`Describe`] by
//! hand. A recursive type must not describe itself through its own field (that would
//! never end): describe that field as [`Schema::Opaque`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use crate::ipc::Schema;

/// A type that can say what it looks like on the wire.
pub trait Describe {
    /// Its schema.
    fn schema() -> Schema;
}

macro_rules! scalar {
    ($($t:ty => $s:ident),* $(,)?) => {
        $(impl Describe for $t {
            fn schema() -> Schema {
                Schema::$s
            }
        })*
    };
}

scalar! {
    () => Unit, bool => Bool, char => Char, String => String,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64, usize => U64,
    i8 => I8, i16 => I16, i32 => I32, i64 => I64, isize => I64,
    f32 => F32, f64 => F64,
    serde_bytes::ByteBuf => Bytes,
    str => String, serde_bytes::Bytes => Bytes,
}

/// A borrowed argument (`&str`, `&serde_bytes::Bytes`) travels as its owned type does.
impl<T: Describe + ?Sized> Describe for &T {
    fn schema() -> Schema {
        T::schema()
    }
}

macro_rules! list {
    ($($t:ident),*) => {
        $(impl<T: Describe> Describe for $t<T> {
            fn schema() -> Schema {
                Schema::List { of: Box::new(T::schema()) }
            }
        })*
    };
}

list!(Vec, VecDeque, BTreeSet);

impl<T: Describe, S> Describe for HashSet<T, S> {
    fn schema() -> Schema {
        Schema::List {
            of: Box::new(T::schema()),
        }
    }
}

impl<K: Describe, V: Describe, S> Describe for HashMap<K, V, S> {
    fn schema() -> Schema {
        Schema::Map {
            key: Box::new(K::schema()),
            value: Box::new(V::schema()),
        }
    }
}

impl<K: Describe, V: Describe> Describe for BTreeMap<K, V> {
    fn schema() -> Schema {
        Schema::Map {
            key: Box::new(K::schema()),
            value: Box::new(V::schema()),
        }
    }
}

impl<T: Describe> Describe for Option<T> {
    fn schema() -> Schema {
        Schema::Option {
            of: Box::new(T::schema()),
        }
    }
}

macro_rules! transparent {
    ($($t:ident),*) => {
        $(impl<T: Describe> Describe for $t<T> {
            fn schema() -> Schema {
                T::schema()
            }
        })*
    };
}

transparent!(Box, Arc, Rc);

macro_rules! tuple {
    ($(($($t:ident),+)),*) => {
        $(impl<$($t: Describe),+> Describe for ($($t,)+) {
            fn schema() -> Schema {
                Schema::Tuple { items: vec![$($t::schema()),+] }
            }
        })*
    };
}

tuple!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_types_describe_as_serde_sends_them() {
        assert_eq!(
            <HashMap<String, Vec<u8>>>::schema().to_string(),
            "map<string, list<u8>>"
        );
        assert_eq!(
            <Option<serde_bytes::ByteBuf>>::schema().to_string(),
            "option<bytes>"
        );
        assert_eq!(
            <(u8, Box<i64>, bool)>::schema().to_string(),
            "(u8, i64, bool)"
        );
        assert_eq!(<usize>::schema(), Schema::U64);
        // Borrowed arguments describe as the owned types they are sent as.
        assert_eq!(<&str>::schema(), Schema::String);
        assert_eq!(<&serde_bytes::Bytes>::schema(), Schema::Bytes);
    }
}
