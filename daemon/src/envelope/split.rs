//! A request with large arguments, or a reply with a large result, handed to the transport
//! without copying them: the envelope's bytes before the payload (up to its `bin` header),
//! the payload's own buffer, and the bytes after it, which the transport sends as one
//! message ([`Outgoing::Split`]). The bytes on the wire are those of [`Envelope::encode`].

use rpcd_client::ipc::{ValueWriter, POOLED_CAPACITY_MIN};
use rpcd_transport::Outgoing;

use super::{count_test_keys, hand, test_keys, test_wire_extra, Envelope, RemoteOutcome};

/// Arguments or results of at least this many bytes go to the transport as their own
/// buffer; smaller ones are copied into the envelope, which costs less than a message in
/// three parts.
pub const SPLIT_PAYLOAD_MIN: usize = POOLED_CAPACITY_MIN;

impl Envelope {
    /// The envelope's bytes for the transport, for an envelope about to be sent: a request
    /// whose arguments, or an untraced reply whose result, are at least
    /// [`SPLIT_PAYLOAD_MIN`] bytes gives that buffer to the message (leaving it empty here)
    /// between the envelope's head and tail; any other envelope is encoded into one buffer,
    /// and its payload's buffer goes back to the process's pool. Either way the message's
    /// bytes are [`Envelope::encode`]'s.
    pub fn take_outgoing(&mut self) -> Outgoing {
        let split = match self {
            Envelope::Request { .. } => self.split_request(),
            Envelope::Reply { .. } => self.split_reply(),
            Envelope::Cancel { .. } => None,
        };
        if let Some(payload) = split {
            return payload;
        }
        let bytes = self.encode();
        // The envelope's bytes hold the payload now.
        self.recycle_payload();
        Outgoing::Whole(bytes)
    }

    fn split_request(&mut self) -> Option<Outgoing> {
        let Envelope::Request {
            call_id,
            function,
            args,
            deadline_ms,
            idempotent,
            trace,
        } = self
        else {
            return None;
        };
        if args.len() < SPLIT_PAYLOAD_MIN {
            return None;
        }
        let mut head = Vec::with_capacity(64 + function.len());
        let mut w = ValueWriter::new(&mut head);
        hand::request_head(&mut w, *call_id, function, *trace).bin_len(args.len());
        if w.failed() {
            return None;
        }
        let mut tail = Vec::with_capacity(32);
        hand::request_tail(
            &mut ValueWriter::new(&mut tail),
            *deadline_ms,
            *idempotent,
            *trace,
        );
        // Handed over as they are, in the buffer they arrived in (a large call frame's).
        let args = std::mem::take(args);
        let start = args.offset();
        Some(finish(head, args.into_buffer(), start, tail))
    }

    fn split_reply(&mut self) -> Option<Outgoing> {
        let Envelope::Reply {
            call_id,
            outcome: RemoteOutcome::Ok(data),
            trace: None,
        } = self
        else {
            return None;
        };
        if data.len() < SPLIT_PAYLOAD_MIN {
            return None;
        }
        let mut head = Vec::with_capacity(64);
        let mut w = ValueWriter::new(&mut head);
        hand::reply_head(&mut w, *call_id)
            .str("ok")
            .bin_len(data.len());
        if w.failed() {
            return None;
        }
        Some(finish(head, std::mem::take(data), 0, Vec::new()))
    }
}

/// The three parts, with the test hook's keys added when it is on.
fn finish(mut head: Vec<u8>, body: Vec<u8>, body_start: usize, mut tail: Vec<u8>) -> Outgoing {
    if test_wire_extra() && count_test_keys(&mut head) {
        tail.extend_from_slice(&test_keys());
    }
    Outgoing::Split {
        head,
        body,
        body_start,
        tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;

    fn request(args_len: usize, trace: bool, call_id: u64, deadline_ms: u64) -> Envelope {
        request_at(0, args_len, trace, call_id, deadline_ms)
    }

    /// A request whose arguments lie after `skip` other bytes of their buffer (as a large
    /// call frame's do in the frame reader's buffer).
    fn request_at(
        skip: usize,
        args_len: usize,
        trace: bool,
        call_id: u64,
        deadline_ms: u64,
    ) -> Envelope {
        let mut buf = vec![0xee; skip];
        buf.extend((0..args_len).map(|i| (i % 251) as u8));
        Envelope::Request {
            call_id,
            function: "bulk.digest".to_owned(),
            args: Payload::in_place(buf, skip..skip + args_len),
            deadline_ms,
            idempotent: call_id.is_multiple_of(2),
            trace,
        }
    }

    #[test]
    fn large_arguments_are_handed_over_and_the_bytes_are_those_of_encode() {
        for (skip, len, trace, call_id, deadline_ms) in [
            (0, SPLIT_PAYLOAD_MIN, false, 1, 0),
            (0, SPLIT_PAYLOAD_MIN + 1, true, 300, 70_000),
            (0, 3 * SPLIT_PAYLOAD_MIN + 17, false, u64::MAX, u64::MAX),
            (61, SPLIT_PAYLOAD_MIN, false, 2, 9),
            (4096, 2 * SPLIT_PAYLOAD_MIN + 5, true, 7, 1),
        ] {
            let mut env = request_at(skip, len, trace, call_id, deadline_ms);
            let expected = env.encode();
            let args_ptr = match &env {
                Envelope::Request { args, .. } => args.as_ptr(),
                _ => unreachable!(),
            };
            let payload = env.take_outgoing();
            let Outgoing::Split {
                ref body,
                body_start,
                ..
            } = payload
            else {
                panic!("{len} bytes of arguments were copied into one buffer");
            };
            assert_eq!(
                body[body_start..].as_ptr(),
                args_ptr,
                "the arguments where they were, not moved"
            );
            assert_eq!(body_start, skip);
            assert_eq!(payload.to_vec(), expected, "{len} bytes, trace {trace}");
            assert_eq!(
                Envelope::decode(&payload.to_vec()).unwrap(),
                request(len, trace, call_id, deadline_ms)
            );
            match &env {
                Envelope::Request { args, .. } => assert!(args.is_empty()),
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn a_large_result_is_handed_over_and_the_bytes_are_those_of_encode() {
        let reply = |len: usize, call_id: u64| Envelope::Reply {
            call_id,
            outcome: RemoteOutcome::Ok(vec![0x5a; len]),
            trace: None,
        };
        for (len, call_id) in [(SPLIT_PAYLOAD_MIN, 0), (SPLIT_PAYLOAD_MIN * 2 + 3, 1 << 40)] {
            let mut env = reply(len, call_id);
            let expected = env.encode();
            let payload = env.take_outgoing();
            assert!(
                matches!(payload, Outgoing::Split { .. }),
                "{len} bytes copied"
            );
            assert_eq!(payload.to_vec(), expected);
            assert_eq!(Envelope::decode(&expected).unwrap(), reply(len, call_id));
        }
    }

    #[test]
    fn small_arguments_and_other_envelopes_are_one_buffer() {
        let mut small = request(SPLIT_PAYLOAD_MIN - 1, false, 5, 10);
        let expected = small.encode();
        assert_eq!(small.take_outgoing(), Outgoing::Whole(expected));
        let mut cancel = Envelope::Cancel { call_id: 9 };
        let expected = cancel.encode();
        assert_eq!(cancel.take_outgoing(), Outgoing::Whole(expected));
        let mut failed = Envelope::Reply {
            call_id: 3,
            outcome: RemoteOutcome::Err {
                code: rpcd_client::ipc::ErrorCode::AppError,
                message: "x".repeat(SPLIT_PAYLOAD_MIN),
            },
            trace: None,
        };
        let expected = failed.encode();
        assert_eq!(failed.take_outgoing(), Outgoing::Whole(expected));
    }
}
