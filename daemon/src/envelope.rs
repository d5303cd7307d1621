//! The RPC envelope: what one transport message between two daemons carries.
//!
//! Each request and each reply is one reliable message (see
//! `docs/wire-protocol.md`, "RPC layer"). The transport delivers a message at
//! most once per channel incarnation and never to a restarted peer, so a
//! request is executed at most once: the daemon runs every request it is
//! delivered, exactly when it is delivered, and needs no reply cache.

mod hand;
mod owned;
mod split;

use std::sync::OnceLock;

use rpcd_client::ipc::{check_values, ErrorCode, FrameError, ServingTrace};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::payload::Payload;

/// The version of the RPC layer this build speaks (`docs/rpc-layer.md`, "Versions and
/// compatible changes"). A daemon of this version sends no `v` key (absent means 1) and
/// ignores one it receives, like every key it does not know.
pub const RPC_VERSION: u32 = 1;

/// A message between daemons. MessagePack, maps with field names, tagged by
/// `"t"`: `"req"`, `"rep"` or `"cancel"`.
///
/// Decoded tolerantly: keys this build does not know are ignored, so a daemon of a later
/// version may add them. What must be there is checked as strictly as before: a missing
/// key, a value of the wrong type or an unknown `t` is no envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Envelope {
    /// Run `function` with `args` and reply with the same `call_id`.
    #[serde(rename = "req")]
    Request {
        /// Chosen by the caller's daemon, unique among its calls.
        call_id: u64,
        /// Registered function name.
        function: String,
        /// Opaque argument bytes (MessagePack by convention); decoded from a delivered
        /// message, large ones are left where they lie in its buffer.
        args: Payload,
        /// Milliseconds the caller will still wait, measured when sent.
        deadline_ms: u64,
        /// Whether the caller marked the call safe to repeat.
        idempotent: bool,
        /// The caller asks for the serving daemon's part of a trace in the reply.
        /// Absent means false (and a daemon that does not know the key ignores it).
        #[serde(default, skip_serializing_if = "is_false")]
        trace: bool,
    },
    /// The outcome of a request.
    #[serde(rename = "rep")]
    Reply {
        /// The request's `call_id`.
        call_id: u64,
        /// Result bytes, or an error code and message.
        outcome: RemoteOutcome,
        /// The serving daemon's times, only when the request asked for a trace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<ServingTrace>,
    },
    /// The caller stopped waiting (deadline or caller gone): drop the work
    /// if it has not started, discard its result otherwise.
    Cancel {
        /// The request's `call_id`.
        call_id: u64,
    },
}

/// The outcome carried by a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteOutcome {
    /// The handler's result bytes.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A typed failure: an application error or a serving-side transport error.
    Err {
        /// Stable code.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Bytes that are not an envelope.
#[derive(Debug, Error)]
#[error("bad RPC envelope: {0}")]
pub struct EnvelopeError(String);

/// Bytes of envelope around a request's function name and arguments, at most.
pub const REQUEST_OVERHEAD: usize = 128;

/// The most MessagePack values an envelope may hold (the largest legitimate one, a traced error
/// reply, holds 21). Checked before decoding, so that a peer's message of millions of tiny
/// values is refused in one pass instead of costing some 30 bytes of memory per byte.
pub const ENVELOPE_VALUES_MAX: usize = 32;

impl Envelope {
    /// Encode as MessagePack (with the test hook's extra keys when it is on, see
    /// [`test_wire_extra`]).
    pub fn encode(&self) -> Vec<u8> {
        // Sized up front either way: a large argument is copied once into the envelope.
        let bytes = hand::encode(self).unwrap_or_else(|| {
            rpcd_client::ipc::encode_value(self).expect("an envelope always serialises")
        });
        if test_wire_extra() {
            with_test_keys(bytes)
        } else {
            bytes
        }
    }

    /// Decode: the whole input must be one envelope; keys it does not know are ignored.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let error = |e: FrameError| EnvelopeError(e.to_string());
        // The bound on values first, whichever decoder reads it.
        check_values(bytes, ENVELOPE_VALUES_MAX).map_err(error)?;
        if let Some(env) = owned::decode_by_hand_copied(bytes) {
            return Ok(env);
        }
        // Borrowing decode: `args` or the reply's bytes are copied once, not also into
        // serde's buffer of the tagged map.
        rpcd_client::ipc::decode_value(bytes, ENVELOPE_VALUES_MAX).map_err(error)
    }
}

/// The test hook `RPCD_TEST_WIRE_EXTRA=1` (read once, from the daemon's environment): the
/// daemon behaves as one of the next protocol versions would towards this one. Each
/// envelope it sends carries `v` = [`RPC_VERSION`] + 1 and a key no version defines, and it
/// accepts apps up to the next IPC protocol version. Tests run two daemons, one with the
/// hook, to check that adjacent versions interoperate; it is for tests only
/// (`docs/rpc-layer.md`).
pub fn test_wire_extra() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("RPCD_TEST_WIRE_EXTRA").is_some_and(|v| v == "1"))
}

/// `bytes` (one encoded envelope, a map of at most 6 keys) with the test hook's two keys
/// added: `"v": RPC_VERSION + 1` and `"x_test_extra": {"n": [1, 2]}`.
fn with_test_keys(mut bytes: Vec<u8>) -> Vec<u8> {
    if count_test_keys(&mut bytes) {
        bytes.extend_from_slice(&test_keys());
    }
    bytes
}

/// Adds the test hook's two keys to the count in the map header that `head` starts with;
/// false (and nothing changed) if it is not a fixmap with room for them.
fn count_test_keys(head: &mut [u8]) -> bool {
    const EXTRA_KEYS: u8 = 2;
    match head.first_mut() {
        // A fixmap with room for two more keys: every envelope is one.
        Some(header @ 0x80..=0x8d) => {
            *header += EXTRA_KEYS;
            true
        }
        _ => false,
    }
}

/// The test hook's two keys and their values, to append to a map counted for them.
fn test_keys() -> Vec<u8> {
    #[derive(Serialize)]
    struct Extra {
        v: u32,
        x_test_extra: Nested,
    }
    #[derive(Serialize)]
    struct Nested {
        n: [u8; 2],
    }
    let extra = rmp_serde::to_vec_named(&Extra {
        v: RPC_VERSION + 1,
        x_test_extra: Nested { n: [1, 2] },
    })
    .expect("the test keys serialise");
    // Their own map header (0x82) is dropped: the keys join the envelope's map.
    extra[1..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One envelope of each kind (both reply outcomes).
    pub(super) fn samples() -> [Envelope; 6] {
        [
            Envelope::Request {
                call_id: 9,
                function: "kv.get".into(),
                args: vec![1, 2, 3].into(),
                deadline_ms: 5000,
                idempotent: true,
                trace: false,
            },
            Envelope::Reply {
                call_id: 9,
                outcome: RemoteOutcome::Ok(vec![0xc0]),
                trace: None,
            },
            Envelope::Reply {
                call_id: 10,
                outcome: RemoteOutcome::Err {
                    code: ErrorCode::UnknownFunction,
                    message: "no function kv.x".into(),
                },
                trace: None,
            },
            Envelope::Cancel { call_id: 11 },
            Envelope::Request {
                call_id: 12,
                function: "kv.get".into(),
                args: Payload::default(),
                deadline_ms: 1,
                idempotent: false,
                trace: true,
            },
            Envelope::Reply {
                call_id: 12,
                outcome: RemoteOutcome::Ok(vec![]),
                trace: Some(ServingTrace::new(1, 2, 3)),
            },
        ]
    }

    #[test]
    fn unknown_keys_are_ignored_in_every_envelope() {
        for env in samples() {
            let plain = rmp_serde::to_vec_named(&env).unwrap();
            let extended = with_test_keys(plain.clone());
            assert_eq!(extended[0], plain[0] + 2);
            assert!(extended.len() > plain.len());
            assert_eq!(Envelope::decode(&extended).unwrap(), env);
        }
    }

    #[test]
    fn an_unknown_key_inside_an_error_outcome_is_ignored() {
        #[derive(Serialize)]
        struct Rep {
            t: &'static str,
            call_id: u64,
            outcome: Outer,
        }
        #[derive(Serialize)]
        struct Outer {
            err: Err,
        }
        #[derive(Serialize)]
        struct Err {
            code: &'static str,
            message: &'static str,
            retry_after_ms: u64,
        }
        let b = rmp_serde::to_vec_named(&Rep {
            t: "rep",
            call_id: 1,
            outcome: Outer {
                err: Err {
                    code: "overloaded",
                    message: "m",
                    retry_after_ms: 5,
                },
            },
        })
        .unwrap();
        assert_eq!(
            Envelope::decode(&b).unwrap(),
            Envelope::Reply {
                call_id: 1,
                outcome: RemoteOutcome::Err {
                    code: ErrorCode::Overloaded,
                    message: "m".into()
                },
                trace: None,
            }
        );
    }

    #[test]
    fn a_missing_key_a_wrong_type_or_an_unknown_t_is_still_refused() {
        let missing =
            rmp_serde::to_vec_named(&std::collections::BTreeMap::from([("t", "cancel")])).unwrap();
        assert!(Envelope::decode(&missing).is_err());
        #[derive(Serialize)]
        struct Cancel<'a> {
            t: &'a str,
            call_id: &'a str,
        }
        let wrong = rmp_serde::to_vec_named(&Cancel {
            t: "cancel",
            call_id: "1",
        })
        .unwrap();
        assert!(Envelope::decode(&wrong).is_err());
        #[derive(Serialize)]
        struct Other {
            t: &'static str,
            call_id: u64,
        }
        let other = rmp_serde::to_vec_named(&Other {
            t: "stream",
            call_id: 1,
        })
        .unwrap();
        assert!(Envelope::decode(&other).is_err());
    }

    #[test]
    fn an_envelope_of_millions_of_tiny_values_is_refused_before_decoding() {
        // {"t": "req", "x": [nil; 1_000_000]}
        let mut b = vec![0x82, 0xa1, b't', 0xa3, b'r', b'e', b'q', 0xa1, b'x', 0xdd];
        b.extend_from_slice(&1_000_000u32.to_be_bytes());
        b.resize(b.len() + 1_000_000, 0xc0);
        let e = Envelope::decode(&b).unwrap_err().to_string();
        assert!(e.contains("more than 32 MessagePack values"), "{e}");
    }

    #[test]
    fn the_largest_legitimate_envelope_fits_the_value_bound() {
        let env = Envelope::Reply {
            call_id: u64::MAX,
            outcome: RemoteOutcome::Err {
                code: ErrorCode::AppError,
                message: "m".repeat(1000),
            },
            trace: Some(ServingTrace::new(u64::MAX, u64::MAX, u64::MAX)),
        };
        assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
    }

    /// A daemon that predates traces reads a traced request as a plain one, and a
    /// traced reply's `trace` key is ignored by it like any unknown key.
    #[test]
    fn trace_keys_are_absent_unless_asked_for() {
        let plain = &samples()[0];
        assert!(!plain.encode().windows(5).any(|w| w == b"trace"));
        let traced = &samples()[4];
        assert!(traced.encode().windows(5).any(|w| w == b"trace"));
    }

    #[test]
    fn round_trip_each_variant() {
        for e in samples() {
            assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        }
    }

    /// The exact bytes shown in docs/rpc-layer.md.
    #[test]
    fn request_literal_bytes_match_the_doc() {
        let e = Envelope::Request {
            call_id: 7,
            function: "rpcd.echo".into(),
            args: vec![1, 2].into(),
            deadline_ms: 5000,
            idempotent: false,
            trace: false,
        };
        let mut expect = vec![0x86, 0xa1, b't', 0xa3];
        expect.extend_from_slice(b"req");
        expect.push(0xa7);
        expect.extend_from_slice(b"call_id");
        expect.push(0x07);
        expect.push(0xa8);
        expect.extend_from_slice(b"function");
        expect.push(0xa9);
        expect.extend_from_slice(b"rpcd.echo");
        expect.push(0xa4);
        expect.extend_from_slice(b"args");
        expect.extend_from_slice(&[0xc4, 0x02, 0x01, 0x02]);
        expect.push(0xab);
        expect.extend_from_slice(b"deadline_ms");
        expect.extend_from_slice(&[0xcd, 0x13, 0x88]);
        expect.push(0xaa);
        expect.extend_from_slice(b"idempotent");
        expect.push(0xc2);
        assert_eq!(e.encode(), expect);
    }

    #[test]
    fn request_overhead_bound_holds_for_long_ids() {
        let e = Envelope::Request {
            call_id: u64::MAX,
            function: String::new(),
            args: vec![0; 70_000].into(),
            deadline_ms: u64::MAX,
            idempotent: false,
            trace: true,
        };
        assert!(e.encode().len() <= 70_000 + REQUEST_OVERHEAD);
    }

    #[test]
    fn rejects_trailing_bytes_and_garbage() {
        let mut b = Envelope::Cancel { call_id: 1 }.encode();
        b.push(0);
        assert!(Envelope::decode(&b).is_err());
        assert!(Envelope::decode(&[0xff, 0x00]).is_err());
        assert!(Envelope::decode(&[]).is_err());
    }
}
