//! Helpers for the code `#[service]` generates. Not a stable API: the macro and this module
//! change together.

use std::fmt::Display;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ipc::{ErrorCode, Outcome};

pub use serde;

/// A type that can cross the wire as an RPC argument or reply.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an RPC argument or reply",
    label = "must implement serde's `Serialize` and `DeserializeOwned`",
    note = "derive them: `#[derive(serde::Serialize, serde::Deserialize)]`"
)]
pub trait WireType: Serialize + DeserializeOwned {}

impl<T: Serialize + DeserializeOwned> WireType for T {}

/// Compile-time check that `T` is a [`WireType`]; the macro emits one per argument, spanned
/// at its type.
pub fn assert_wire_type<T: WireType>() {}

/// Compile-time check of an argument that borrows from the invocation's bytes (`&str`,
/// `&serde_bytes::Bytes`): it must decode from them without a copy and encode as the
/// owned type would.
pub fn assert_borrowed_arg<'de, T: Serialize + Deserialize<'de>>() {}

/// Decodes the argument tuple of `function`, borrowing from `args` where the tuple's types
/// borrow; a failure is refused as `bad_request`.
pub fn decode_args<'de, T: Deserialize<'de>>(
    function: &str,
    args: &'de [u8],
) -> Result<T, Outcome> {
    rmp_serde::from_slice(args).map_err(|err| Outcome::Refused {
        code: ErrorCode::BadRequest,
        message: format!("{function}: cannot decode the arguments: {err}"),
    })
}

/// Encodes a handler's reply.
pub fn reply<R: Serialize + ?Sized>(value: &R) -> Outcome {
    match rmp_serde::to_vec_named(value) {
        Ok(bytes) => Outcome::Ok(bytes),
        Err(err) => Outcome::Error(format!("cannot encode the reply: {err}")),
    }
}

/// Encodes a handler's `Result`: `Ok` as the reply, `Err` as an application error.
pub fn reply_result<R: Serialize, E: Display>(result: Result<R, E>) -> Outcome {
    match result {
        Ok(value) => reply(&value),
        Err(err) => Outcome::Error(err.to_string()),
    }
}

/// Keeps its input when `rpcd_client` has its `tokio` feature (the async stubs
/// `#[service]` emits), drops it otherwise: a proc-macro cannot see features itself.
#[cfg(feature = "tokio")]
#[doc(hidden)]
#[macro_export]
macro_rules! __rpcd_if_tokio {
    ($($tokens:tt)*) => { $($tokens)* };
}

/// Keeps its input when `rpcd_client` has its `tokio` feature; here it has not.
#[cfg(not(feature = "tokio"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __rpcd_if_tokio {
    ($($tokens:tt)*) => {};
}

pub use crate::__rpcd_if_tokio as if_tokio;
/// The schema of `T` when it implements [`Describe`](crate::Describe), else
/// `opaque` with the name the macro read: "autoref specialisation" on a concrete type —
/// `(&Probe::<T>::new()).schema_of(name)` picks [`DescribedProbe`] when `T: Describe` (no
/// autoref needed) and falls back to [`OpaqueProbe`] (one autoref) otherwise.
pub struct Probe<T: ?Sized>(std::marker::PhantomData<T>);

impl<T: ?Sized> std::fmt::Debug for Probe<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

impl<T: ?Sized> Probe<T> {
    /// A probe of `T`.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Probe(std::marker::PhantomData)
    }
}

/// The probe's choice for a type that implements [`Describe`](crate::Describe).
pub trait DescribedProbe {
    /// `T::schema()`.
    fn schema_of(&self, name: &str) -> crate::ipc::Schema;
}

impl<T: crate::Describe + ?Sized> DescribedProbe for Probe<T> {
    fn schema_of(&self, _name: &str) -> crate::ipc::Schema {
        T::schema()
    }
}

/// The probe's fallback for any other type.
pub trait OpaqueProbe {
    /// `opaque` named `name`.
    fn schema_of(&self, name: &str) -> crate::ipc::Schema;
}

impl<T: ?Sized> OpaqueProbe for &Probe<T> {
    fn schema_of(&self, name: &str) -> crate::ipc::Schema {
        crate::ipc::Schema::Opaque {
            name: name.to_owned(),
        }
    }
}

/// The options of a stub call to a method that declares `deadline` and `idempotent`
/// (`docs/client.md`, attributes): the stub's own deadline wins over the declared one; the
/// declared idempotency wins over the options' flag.
pub fn declared_options(
    options: crate::CallOptions,
    deadline: Option<std::time::Duration>,
    idempotent: bool,
) -> crate::CallOptions {
    let mut options = options;
    options.deadline = options.deadline.or(deadline);
    options.idempotent = idempotent;
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Borrowed arguments point into the invocation's bytes: decoding copies nothing.
    #[test]
    fn borrowed_arguments_are_read_where_they_are() {
        let data = vec![7u8; 70_000];
        let encoded = rmp_serde::to_vec(&("héllo", serde_bytes::Bytes::new(&data))).unwrap();
        let (s, b): (&str, &serde_bytes::Bytes) = match decode_args("f", &encoded) {
            Ok(args) => args,
            Err(refused) => panic!("refused: {refused:?}"),
        };
        assert_eq!((s, &b[..]), ("héllo", &data[..]));
        let within = |p: *const u8| encoded.as_ptr_range().contains(&p);
        assert!(within(s.as_ptr()) && within(b.as_ptr()));
        // A number where a borrowed string or bytes is declared is refused, not misread.
        let wrong = rmp_serde::to_vec(&(1u8, "y")).unwrap();
        assert!(matches!(
            decode_args::<(&str, &serde_bytes::Bytes)>("f", &wrong),
            Err(Outcome::Refused {
                code: ErrorCode::BadRequest,
                ..
            })
        ));
        let wrong = rmp_serde::to_vec(&("x", 2u8)).unwrap();
        assert!(matches!(
            decode_args::<(&str, &serde_bytes::Bytes)>("f", &wrong),
            Err(Outcome::Refused {
                code: ErrorCode::BadRequest,
                ..
            })
        ));
    }
}
