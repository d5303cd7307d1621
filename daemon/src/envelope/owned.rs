//! The owned decode and the way back to the pool: each envelope of a call is read by hand
//! straight from its bytes, its payload (a request's `args`, a reply's result) left where it
//! lies; [`Envelope::decode_owned`] then keeps a large request's arguments where they are in
//! the message's own buffer (a [`Payload`] from their offset: the serving app is written
//! them from there) and moves a large result to the buffer's front instead of copying it,
//! and [`Envelope::recycle_payload`] gives a sent envelope's payload back to the process's
//! pool once it has been encoded (into a pooled buffer when large, see `hand`).

use std::ops::Range;

use rpcd_client::ipc::{
    pooled_copy, recycle, set_once, ErrorCode, ValueReader, POOLED_CAPACITY_MIN,
};

use super::{Envelope, EnvelopeError, RemoteOutcome, ENVELOPE_VALUES_MAX};
use crate::payload::Payload;

impl Envelope {
    /// [`Envelope::decode`] of a message the caller is done with: a large payload stays in
    /// `bytes` rather than being copied into a buffer of its own (a request's arguments where
    /// they are, a reply's result moved to the front); what is left of `bytes` otherwise goes
    /// back to the process's pool. The same envelopes and errors as [`Envelope::decode`].
    pub fn decode_owned(bytes: Vec<u8>) -> Result<Self, EnvelopeError> {
        // The bound on values guards serde's buffering; the hand-written decoder buffers
        // nothing, and what it understands passes the bound (at most
        // `BY_HAND_VALUES_MAX` values, each container's elements all there): only what it
        // gives up on is checked, by `decode`, before serde reads it.
        let Some((mut env, payload)) = decode_by_hand(&bytes) else {
            let env = Self::decode(&bytes);
            recycle(bytes);
            return env;
        };
        match payload {
            Some(range) if range.len() >= POOLED_CAPACITY_MIN => {
                env.set_payload(Payload::in_place(bytes, range));
            }
            Some(range) => {
                env.set_payload(bytes[range].to_vec().into());
                recycle(bytes);
            }
            None => recycle(bytes),
        }
        Ok(env)
    }

    /// Puts `payload` where a request's `args` or a successful reply's bytes go (a reply's
    /// moved to the front of its buffer if it does not start there); any other envelope
    /// carries none, and the buffer goes back to the pool.
    fn set_payload(&mut self, payload: Payload) {
        match self {
            Envelope::Request { args, .. } => *args = payload,
            Envelope::Reply {
                outcome: RemoteOutcome::Ok(data),
                ..
            } => *data = payload.into_vec(),
            _ => recycle(payload.into_buffer()),
        }
    }

    /// Gives the payload's buffer back to the process's pool, leaving it empty: for an
    /// envelope that has been encoded, whose bytes now hold the payload.
    pub fn recycle_payload(&mut self) {
        match self {
            Envelope::Request { args, .. } => recycle(std::mem::take(args).into_buffer()),
            Envelope::Reply {
                outcome: RemoteOutcome::Ok(data),
                ..
            } => recycle(std::mem::take(data)),
            _ => {}
        }
    }
}

/// The most values an envelope [`decode_by_hand`] understands can hold: a traced request's
/// map and its seven keys and values.
const BY_HAND_VALUES_MAX: usize = 1 + 2 * 7;
const _: () = assert!(BY_HAND_VALUES_MAX <= ENVELOPE_VALUES_MAX);

/// Every envelope of a call read straight from its bytes, without serde's buffering of
/// a tagged map (see `rpcd_client::ipc`'s `hot` module): `Some` only for an envelope this
/// understands completely (no key it does not know, none twice, each of its one type, no
/// reply `trace`); serde reads everything else, and so decides every error and what is
/// ignored. The payload (a request's `args`, a reply's `ok` bytes) is left where it is in
/// `bytes`: the envelope's is empty, and the range says where it lies.
fn decode_by_hand(bytes: &[u8]) -> Option<(Envelope, Option<Range<usize>>)> {
    let mut r = ValueReader::new(bytes);
    let mut t = None;
    let (mut call_id, mut function, mut args) = (None, None, None);
    let (mut deadline_ms, mut idempotent, mut trace, mut outcome) = (None, None, None, None);
    for _ in 0..r.map_len()? {
        match r.key()? {
            b"t" => set_once(&mut t, r.key()?)?,
            b"call_id" => set_once(&mut call_id, r.uint()?)?,
            b"function" => set_once(&mut function, r.str()?)?,
            b"args" => set_once(&mut args, bin_range(&mut r)?)?,
            b"deadline_ms" => set_once(&mut deadline_ms, r.uint()?)?,
            b"idempotent" => set_once(&mut idempotent, r.bool()?)?,
            // A request's flag; a reply's trace is a map, left to serde.
            b"trace" => set_once(&mut trace, r.bool()?)?,
            b"outcome" => set_once(&mut outcome, remote_outcome(&mut r)?)?,
            _ => return None,
        }
    }
    if !r.is_at_end() {
        return None;
    }
    let request_keys = function.is_some()
        || args.is_some()
        || deadline_ms.is_some()
        || idempotent.is_some()
        || trace.is_some();
    let found = match t? {
        b"req" if outcome.is_none() => (
            Envelope::Request {
                call_id: call_id?,
                function: function?.to_owned(),
                args: Payload::default(),
                deadline_ms: deadline_ms?,
                idempotent: idempotent?,
                trace: trace.unwrap_or(false),
            },
            Some(args?),
        ),
        b"rep" if !request_keys => {
            let (outcome, payload) = outcome?;
            (
                Envelope::Reply {
                    call_id: call_id?,
                    outcome,
                    trace: None,
                },
                payload,
            )
        }
        b"cancel" if !request_keys && outcome.is_none() => {
            (Envelope::Cancel { call_id: call_id? }, None)
        }
        _ => return None,
    };
    Some(found)
}

/// [`decode_by_hand`] with the payload copied out (into a pooled buffer when large).
pub(super) fn decode_by_hand_copied(bytes: &[u8]) -> Option<Envelope> {
    let (mut env, payload) = decode_by_hand(bytes)?;
    if let Some(range) = payload {
        env.set_payload(pooled_copy(&bytes[range]).into());
    }
    Some(env)
}

/// Where the `bin` value at `r`'s position lies in its input, once read.
fn bin_range(r: &mut ValueReader<'_>) -> Option<Range<usize>> {
    let len = r.bin()?.len();
    let end = r.position();
    Some(end - len..end)
}

/// A reply's `outcome`: `{"ok": bin}` (its bytes left in place: empty, and where they
/// lie) or `{"err": {"code": str, "message": str}}`.
fn remote_outcome(r: &mut ValueReader<'_>) -> Option<(RemoteOutcome, Option<Range<usize>>)> {
    if r.map_len()? != 1 {
        return None;
    }
    match r.key()? {
        b"ok" => Some((RemoteOutcome::Ok(Vec::new()), Some(bin_range(r)?))),
        b"err" => {
            let (mut code, mut message) = (None, None);
            for _ in 0..r.map_len()? {
                match r.key()? {
                    b"code" => set_once(&mut code, r.str()?.parse::<ErrorCode>().ok()?)?,
                    b"message" => set_once(&mut message, r.str()?)?,
                    _ => return None,
                }
            }
            Some((
                RemoteOutcome::Err {
                    code: code?,
                    message: message?.to_owned(),
                },
                None,
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::tests::samples;
    use crate::envelope::with_test_keys;

    /// Each envelope of a call is read by hand (a traced reply by serde), and whatever the
    /// hand-written decoder takes, serde reads the same: checked on every sample with each
    /// of its bytes replaced by each of a set of values, and cut short at every length.
    #[test]
    fn what_is_read_by_hand_serde_reads_the_same() {
        let serde = |b: &[u8]| rmp_serde::from_slice::<Envelope>(b).ok();
        // And the owned decoder says what the borrowing one says, error for error.
        let owned = |b: &[u8]| Envelope::decode_owned(b.to_vec()).map_err(|e| e.to_string());
        let copied = |b: &[u8]| Envelope::decode(b).map_err(|e| e.to_string());
        for env in samples() {
            let bytes = rmp_serde::to_vec_named(&env).unwrap();
            let traced_reply = matches!(&env, Envelope::Reply { trace: Some(_), .. });
            let by_hand = decode_by_hand_copied(&bytes);
            assert_eq!(by_hand.is_some(), !traced_reply, "{env:?}");
            assert!(by_hand.is_none_or(|h| h == env));
            assert_eq!(decode_by_hand_copied(&with_test_keys(bytes.clone())), None);
            for at in 0..bytes.len() {
                for b in [
                    0x00, 0x01, 0x7f, 0x80, 0x81, 0xa1, 0xa3, 0xc0, 0xc2, 0xc3, 0xc4, 0xd0,
                ]
                .into_iter()
                .chain([
                    0xd3,
                    0xde,
                    0xff,
                    bytes[at] ^ 1,
                    bytes[at].wrapping_add(1),
                ]) {
                    let mut m = bytes.clone();
                    m[at] = b;
                    if let Some(h) = decode_by_hand_copied(&m) {
                        assert_eq!(Some(h), serde(&m), "{m:02x?}");
                    }
                    assert_eq!(owned(&m), copied(&m), "{m:02x?}");
                }
                assert_eq!(decode_by_hand_copied(&bytes[..at]), None);
                assert_eq!(owned(&bytes[..at]), copied(&bytes[..at]));
            }
        }
    }

    /// A large payload is taken out of the message's own buffer, not copied into another: a
    /// request's arguments left where they are, a reply's result moved to its front; a small
    /// one is copied, the buffer given back.
    #[test]
    fn the_owned_decode_keeps_a_large_payload_in_its_buffer() {
        let big = |byte| vec![byte; POOLED_CAPACITY_MIN + 7];
        let request = Envelope::Request {
            call_id: 1,
            function: "bulk.digest".into(),
            args: big(0xa5).into(),
            deadline_ms: 1000,
            idempotent: false,
            trace: false,
        };
        let bytes = request.encode();
        let front = bytes.as_ptr() as usize;
        let mut decoded = Envelope::decode_owned(bytes).unwrap();
        assert_eq!(decoded, request);
        let Envelope::Request { args, .. } = &decoded else {
            panic!("a request");
        };
        assert!(args.offset() > 0, "not moved");
        assert_eq!(
            args.as_ptr() as usize,
            front + args.offset(),
            "where it arrived"
        );
        decoded.recycle_payload();
        assert!(matches!(&decoded, Envelope::Request { args, .. } if args.is_empty()));

        let reply = Envelope::Reply {
            call_id: 1,
            outcome: RemoteOutcome::Ok(big(0x5a)),
            trace: None,
        };
        let bytes = reply.encode();
        let front = bytes.as_ptr();
        let mut decoded = Envelope::decode_owned(bytes).unwrap();
        assert_eq!(decoded, reply);
        let Envelope::Reply {
            outcome: RemoteOutcome::Ok(data),
            ..
        } = &decoded
        else {
            panic!("a successful reply");
        };
        assert_eq!(data.as_ptr(), front, "the message's own buffer");
        decoded.recycle_payload();
        assert!(matches!(
            &decoded,
            Envelope::Reply { outcome: RemoteOutcome::Ok(data), .. } if data.is_empty()
        ));
        for env in samples() {
            assert_eq!(Envelope::decode_owned(env.encode()).unwrap(), env);
        }
    }
}
