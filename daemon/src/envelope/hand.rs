//! The envelopes of every call written by hand: the same bytes `rmp_serde` writes (the
//! tests compare them, shape by shape), in one pass into a buffer sized up front (from the
//! process's pool when large), where serde's encoding of the tagged enum measured it in a
//! first pass and wrote it in a second.

use rpcd_client::ipc::{pooled_vec, ValueWriter};

use super::{Envelope, RemoteOutcome};

/// Bytes of an envelope besides its function name, arguments or result and error
/// message, at most (keys, tags and integers): enough that the buffer never grows.
const FIXED_MAX: usize = 96;

/// `env` encoded as serde encodes it, or `None` for what this does not write (a reply
/// carrying a serving trace; a length MessagePack cannot hold), which serde then writes.
pub(super) fn encode(env: &Envelope) -> Option<Vec<u8>> {
    let mut out;
    let mut w;
    match env {
        Envelope::Request {
            call_id,
            function,
            args,
            deadline_ms,
            idempotent,
            trace,
        } => {
            out = pooled_vec(FIXED_MAX + function.len() + args.len());
            w = ValueWriter::new(&mut out);
            request_head(&mut w, *call_id, function, *trace).bin(args);
            request_tail(&mut w, *deadline_ms, *idempotent, *trace);
        }
        Envelope::Reply {
            call_id,
            outcome,
            trace: None,
        } => {
            let body = match outcome {
                RemoteOutcome::Ok(data) => data.len(),
                RemoteOutcome::Err { message, .. } => message.len(),
            };
            out = pooled_vec(FIXED_MAX + body);
            w = ValueWriter::new(&mut out);
            reply_head(&mut w, *call_id);
            match outcome {
                RemoteOutcome::Ok(data) => {
                    w.raw(b"\xa2ok").bin(data);
                }
                RemoteOutcome::Err { code, message } => {
                    // "err": {"code": ..., "message": ...}
                    w.raw(b"\xa3err\x82\xa4code")
                        .str(code.as_str())
                        .raw(b"\xa7message")
                        .str(message);
                }
            }
        }
        Envelope::Reply { trace: Some(_), .. } => return None,
        Envelope::Cancel { call_id } => {
            out = Vec::with_capacity(FIXED_MAX);
            w = ValueWriter::new(&mut out);
            // {"t": "cancel", "call_id": ...}
            w.raw(b"\x82\xa1t\xa6cancel\xa7call_id").uint(*call_id);
        }
    }
    if w.failed() {
        return None;
    }
    Some(out)
}

/// A request's bytes up to its arguments: the map header and every key before them, up to
/// the `args` key (the arguments' `bin` follows, then [`request_tail`]).
pub(super) fn request_head<'w, 'a>(
    w: &'w mut ValueWriter<'a>,
    call_id: u64,
    function: &str,
    trace: bool,
) -> &'w mut ValueWriter<'a> {
    // {"t": "req", "call_id": ..., "function": ..., "args": ..., with "trace" 7 keys.
    let head: &[u8] = if trace {
        b"\x87\xa1t\xa3req\xa7call_id"
    } else {
        b"\x86\xa1t\xa3req\xa7call_id"
    };
    w.raw(head)
        .uint(call_id)
        .raw(b"\xa8function")
        .str(function)
        .raw(b"\xa4args")
}

/// A request's keys after its arguments.
pub(super) fn request_tail(
    w: &mut ValueWriter<'_>,
    deadline_ms: u64,
    idempotent: bool,
    trace: bool,
) {
    w.raw(b"\xabdeadline_ms")
        .uint(deadline_ms)
        .raw(b"\xaaidempotent")
        .bool(idempotent);
    if trace {
        w.raw(b"\xa5trace\xc3");
    }
}

/// A reply's bytes up to its outcome's one key (`ok` or `err` follows).
pub(super) fn reply_head<'w, 'a>(
    w: &'w mut ValueWriter<'a>,
    call_id: u64,
) -> &'w mut ValueWriter<'a> {
    // {"t": "rep", "call_id": ..., "outcome": {...
    w.raw(b"\x83\xa1t\xa3rep\xa7call_id")
        .uint(call_id)
        .raw(b"\xa7outcome\x81")
}

#[cfg(test)]
mod tests {
    use rpcd_client::ipc::{ErrorCode, ServingTrace};

    use super::*;

    fn serde_bytes_of(env: &Envelope) -> Vec<u8> {
        rmp_serde::to_vec_named(env).expect("serialises")
    }

    /// Integers at each MessagePack width's edges, and lengths at each `str`/`bin` header's.
    const INTS: [u64; 11] = [
        0,
        0x7f,
        0x80,
        0xff,
        0x100,
        0xffff,
        0x1_0000,
        0xffff_ffff,
        0x1_0000_0000,
        u64::MAX - 1,
        u64::MAX,
    ];
    const LENS: [usize; 8] = [0, 1, 31, 32, 255, 256, 65_535, 65_536];

    #[test]
    fn every_envelope_written_by_hand_is_what_serde_writes() {
        let mut envs = Vec::new();
        for (i, &n) in INTS.iter().enumerate() {
            for (j, &len) in LENS.iter().enumerate() {
                let text: String = "é".repeat(len / 2) + &"x".repeat(len % 2);
                let bytes = vec![(i * 7 + j) as u8; len];
                envs.push(Envelope::Request {
                    call_id: n,
                    function: text.clone(),
                    args: bytes.clone().into(),
                    deadline_ms: INTS[(i + j) % INTS.len()],
                    idempotent: j % 2 == 0,
                    trace: i % 2 == 1,
                });
                envs.push(Envelope::Reply {
                    call_id: n,
                    outcome: RemoteOutcome::Ok(bytes),
                    trace: None,
                });
                envs.push(Envelope::Reply {
                    call_id: n,
                    outcome: RemoteOutcome::Err {
                        code: [ErrorCode::AppError, ErrorCode::DeadlineExceeded][j % 2],
                        message: text,
                    },
                    trace: None,
                });
            }
            envs.push(Envelope::Cancel { call_id: n });
        }
        for env in &envs {
            let by_hand = encode(env).expect("written by hand");
            assert_eq!(by_hand, serde_bytes_of(env), "{env:?}");
            assert_eq!(&Envelope::decode(&by_hand).expect("decodes"), env);
        }
    }

    #[test]
    fn a_traced_reply_is_left_to_serde_and_encode_still_writes_it() {
        let env = Envelope::Reply {
            call_id: 3,
            outcome: RemoteOutcome::Ok(vec![1]),
            trace: Some(ServingTrace::default()),
        };
        assert_eq!(encode(&env), None);
        assert_eq!(env.encode(), serde_bytes_of(&env));
    }
}
