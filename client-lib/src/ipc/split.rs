//! A `call` with large arguments framed around them instead of copied into one buffer:
//! the frame's bytes before the arguments (length prefix up to their `bin` header), then the
//! arguments' own buffer, then the bytes after them. Written together (a vectored write),
//! they are exactly the frame [`try_encode_frame`](super::try_encode_frame) builds. A
//! `result` with large `ok` bytes likewise ([`split_result_frame`]).

use super::frame::LENGTH_PREFIX_LEN;
use super::hot::ValueWriter;
use super::message::{ClientMsg, Outcome};
use super::pool::POOLED_CAPACITY_MIN;

/// Arguments of at least this many bytes are written from their own buffer.
pub const SPLIT_ARGS_MIN: usize = POOLED_CAPACITY_MIN;

/// MessagePack's `nil`.
const NIL: u8 = 0xc0;

/// The head and tail of `msg`'s frame around its arguments, when `msg` is a `call` whose
/// arguments are at least [`SPLIT_ARGS_MIN`] bytes and whose frame fits `frame_max`;
/// `None` otherwise (the whole frame is then encoded as usual, which also reports a frame
/// that is too large).
pub fn split_call_frame(msg: &ClientMsg, frame_max: usize) -> Option<(Vec<u8>, Vec<u8>)> {
    let ClientMsg::Call {
        id,
        target,
        function,
        args,
        deadline_ms,
        idempotent,
        trace,
    } = msg
    else {
        return None;
    };
    if args.len() < SPLIT_ARGS_MIN {
        return None;
    }
    let mut head = Vec::with_capacity(64 + target.len() + function.len());
    head.extend_from_slice(&[0; LENGTH_PREFIX_LEN]);
    let mut w = ValueWriter::new(&mut head);
    w.map_len(if *trace { 8 } else { 7 })
        .str("op")
        .str("call")
        .str("id")
        .uint(*id)
        .str("target")
        .str(target)
        .str("function")
        .str(function)
        .str("args")
        .bin_len(args.len());
    if w.failed() {
        return None;
    }
    let mut tail = Vec::with_capacity(32);
    let mut w = ValueWriter::new(&mut tail);
    w.str("deadline_ms");
    match deadline_ms {
        Some(ms) => {
            w.uint(*ms);
        }
        None => tail.push(NIL),
    }
    let mut w = ValueWriter::new(&mut tail);
    w.str("idempotent").bool(*idempotent);
    if *trace {
        w.str("trace").bool(true);
    }
    let body = head.len() - LENGTH_PREFIX_LEN + args.len() + tail.len();
    if body > frame_max {
        return None;
    }
    let prefix = u32::try_from(body).ok()?;
    head[..LENGTH_PREFIX_LEN].copy_from_slice(&prefix.to_be_bytes());
    Some((head, tail))
}

/// The head of `msg`'s frame before its result's bytes (the tail is empty: the result ends
/// the frame), when `msg` is a `result` whose `ok` bytes are at least [`SPLIT_ARGS_MIN`]
/// and whose frame fits `frame_max`; `None` otherwise (encode the whole frame, which also
/// reports a frame that is too large).
pub fn split_result_frame(msg: &ClientMsg, frame_max: usize) -> Option<Vec<u8>> {
    let ClientMsg::Result {
        invocation,
        outcome: Outcome::Ok(data),
    } = msg
    else {
        return None;
    };
    if data.len() < SPLIT_ARGS_MIN {
        return None;
    }
    let mut head = Vec::with_capacity(48);
    head.extend_from_slice(&[0; LENGTH_PREFIX_LEN]);
    let mut w = ValueWriter::new(&mut head);
    w.map_len(3)
        .str("op")
        .str("result")
        .str("invocation")
        .uint(*invocation)
        .str("outcome")
        .map_len(1)
        .str("ok")
        .bin_len(data.len());
    if w.failed() {
        return None;
    }
    let body = head.len() - LENGTH_PREFIX_LEN + data.len();
    if body > frame_max {
        return None;
    }
    let prefix = u32::try_from(body).ok()?;
    head[..LENGTH_PREFIX_LEN].copy_from_slice(&prefix.to_be_bytes());
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::try_encode_frame;

    #[test]
    fn a_large_results_head_and_bytes_are_the_frame_serde_writes() {
        for (len, invocation) in [
            (SPLIT_ARGS_MIN, 0),
            (SPLIT_ARGS_MIN + 1, 127),
            (SPLIT_ARGS_MIN * 3 + 7, 1 << 20),
            (SPLIT_ARGS_MIN + 9, u64::MAX),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 239) as u8).collect();
            let msg = ClientMsg::Result {
                invocation,
                outcome: Outcome::Ok(data.clone()),
            };
            let expected = try_encode_frame(&msg, usize::MAX).unwrap();
            let head = split_result_frame(&msg, usize::MAX).expect("split");
            let joined = [head.as_slice(), &data].concat();
            assert!(joined == expected, "{len} bytes, invocation {invocation}");
            let fits = expected.len() - LENGTH_PREFIX_LEN;
            assert!(split_result_frame(&msg, fits).is_some());
            assert!(
                split_result_frame(&msg, fits - 1).is_none(),
                "over frame_max"
            );
        }
        let small = ClientMsg::Result {
            invocation: 1,
            outcome: Outcome::Ok(vec![1; SPLIT_ARGS_MIN - 1]),
        };
        assert!(split_result_frame(&small, usize::MAX).is_none());
        let error = ClientMsg::Result {
            invocation: 1,
            outcome: Outcome::Error("e".repeat(SPLIT_ARGS_MIN)),
        };
        assert!(split_result_frame(&error, usize::MAX).is_none());
    }

    fn call(args_len: usize, deadline_ms: Option<u64>, trace: bool, id: u64) -> ClientMsg {
        ClientMsg::Call {
            id,
            target: "127.0.0.1:7000".to_owned(),
            function: "bulk.digest".to_owned(),
            args: (0..args_len).map(|i| (i % 241) as u8).collect(),
            deadline_ms,
            idempotent: !id.is_multiple_of(2),
            trace,
        }
    }

    #[test]
    fn head_arguments_and_tail_are_the_frame_serde_writes() {
        for (len, deadline_ms, trace, id) in [
            (SPLIT_ARGS_MIN, None, false, 0),
            (SPLIT_ARGS_MIN + 1, Some(0), true, 1),
            (SPLIT_ARGS_MIN * 3 + 7, Some(127), false, 128),
            (SPLIT_ARGS_MIN + 9, Some(70_000), true, u64::MAX),
            (SPLIT_ARGS_MIN, Some(u64::MAX), false, 1 << 33),
        ] {
            let msg = call(len, deadline_ms, trace, id);
            let expected = try_encode_frame(&msg, usize::MAX).unwrap();
            let (head, tail) = split_call_frame(&msg, usize::MAX).expect("split");
            let ClientMsg::Call { args, .. } = &msg else {
                unreachable!()
            };
            let joined = [head.as_slice(), args, &tail].concat();
            assert!(
                joined == expected,
                "{len} bytes, deadline {deadline_ms:?}, trace {trace}, id {id}"
            );
        }
    }

    #[test]
    fn small_arguments_other_messages_and_frames_over_the_bound_are_not_split() {
        assert!(split_call_frame(&call(SPLIT_ARGS_MIN - 1, None, false, 1), usize::MAX).is_none());
        assert!(split_call_frame(&ClientMsg::CancelCall { id: 1 }, usize::MAX).is_none());
        let big = call(SPLIT_ARGS_MIN, None, false, 1);
        assert!(split_call_frame(&big, SPLIT_ARGS_MIN).is_none());
        let fits = try_encode_frame(&big, usize::MAX).unwrap().len() - LENGTH_PREFIX_LEN;
        assert!(split_call_frame(&big, fits).is_some());
        assert!(split_call_frame(&big, fits - 1).is_none());
    }
}
