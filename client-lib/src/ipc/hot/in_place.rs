//! Decoding a large `call`'s or `invoke`'s arguments without copying them: the hand
//! decoders leave them out and say where they are, for the frame reader to hand its buffer
//! over with them.

use std::any::Any;
use std::ops::Range;

use super::{client_msg, daemon_msg};
use crate::ipc::pool::pooled_copy;
use crate::ipc::{ClientMsg, DaemonMsg, Payload};

/// As [`decode`], except that the arguments of a `call` or an `invoke` of at least
/// `in_place_min` bytes are not copied: the message's `args` are left empty and their range
/// in `body` is returned with it, for [`fill_args`] to put the bytes in, where they are.
pub(crate) fn decode_in_place<T: Any>(
    body: &[u8],
    in_place_min: usize,
) -> Option<(T, Option<Range<usize>>)> {
    let mut args = Args {
        body,
        in_place_min,
        in_place: None,
    };
    let mut slot: Option<T> = None;
    let any: &mut dyn Any = &mut slot;
    if let Some(s) = any.downcast_mut::<Option<ClientMsg>>() {
        *s = client_msg(body, &mut args);
    } else if let Some(s) = any.downcast_mut::<Option<DaemonMsg>>() {
        *s = daemon_msg(body, &mut args);
    }
    slot.map(|msg| (msg, args.in_place))
}

/// Puts the arguments [`decode_in_place`] left out into `msg`, a `call` or an `invoke`
/// (any other message is left as it is).
pub(crate) fn fill_args<T: Any>(msg: &mut T, bytes: Payload) {
    let any: &mut dyn Any = msg;
    if let Some(ClientMsg::Call { args, .. }) = any.downcast_mut::<ClientMsg>() {
        *args = bytes;
    } else if let Some(DaemonMsg::Invoke { args, .. }) = any.downcast_mut::<DaemonMsg>() {
        *args = bytes;
    }
}

/// How a decoder makes a call's or an invoke's arguments: copied into a pooled buffer, or
/// (from `in_place_min` bytes on) left out, their range in `body` noted.
pub(super) struct Args<'a> {
    body: &'a [u8],
    in_place_min: usize,
    in_place: Option<Range<usize>>,
}

impl Args<'_> {
    pub(super) fn take(&mut self, bytes: &[u8]) -> Payload {
        if bytes.len() < self.in_place_min {
            return pooled_copy(bytes).into();
        }
        // `bytes` lies within `body` (the reader returns slices of it).
        let start = bytes.as_ptr() as usize - self.body.as_ptr() as usize;
        self.in_place = Some(start..start + bytes.len());
        Payload::default()
    }
}
