//! Hand-written decoders for the frames every call passes through, and the borrowed
//! MessagePack reader they are written with.
//!
//! serde reads an internally tagged enum (`ClientMsg`, `DaemonMsg`) by buffering its whole
//! map into a tree of `Content` values before it knows the variant, then decoding the tree:
//! an allocation per value and a second pass, on every frame. The messages of a call (`call`,
//! `result`, `invoke`, `call_ok`, `failed`, `cancel`) are read here instead, straight from
//! the frame's bytes.
//!
//! A hand-written decoder answers `Some` only for a frame it understands completely: the
//! map it expects, each key once, each value of the one type it reads, nothing after it.
//! Anything else (another `op`, an unknown or repeated key, a missing one, a value of
//! another type, a key that is no `str`) makes it answer `None`, and serde decodes the
//! frame as before. So serde stays the one definition of what is accepted and of every
//! error; this path only has to agree with it on the frames it accepts, which the tests
//! check frame by frame against serde.
//!
//! A large payload (`args`, `data`, a result) is copied into a buffer of the process's
//! [`BufferPool`](super::BufferPool) when one fits, except the arguments of a `call` or an
//! `invoke` of at least the size the caller names ([`decode_in_place`]): those are left
//! where they are, for the frame reader to hand its buffer over with them.

mod in_place;

use in_place::Args;
pub(crate) use in_place::{decode_in_place, fill_args};

use super::pool::pooled_copy;
use super::{ClientMsg, DaemonMsg, ErrorCode, Outcome};

/// The value the hand-written decoder for `T` reads from `body` (one whole MessagePack
/// value, its nesting and value count already checked), if there is one for `T` and it
/// understood `body`; `None` sends the body to serde.
#[cfg(test)]
pub(crate) fn decode<T: std::any::Any>(body: &[u8]) -> Option<T> {
    decode_in_place(body, usize::MAX).map(|(msg, _)| msg)
}

/// A borrowed reader of MessagePack for hand-written decoders of hot messages: each read
/// takes one value of the one type asked for, or answers `None` and leaves the position
/// unspecified (the caller then gives up on the fast path).
///
/// It checks nothing about nesting or size: run it on bytes whose shape has been checked
/// ([`check_values`](super::check_values)), and let serde decode what it gives up on.
#[derive(Debug, Clone)]
pub struct ValueReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ValueReader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> ValueReader<'a> {
        ValueReader { buf, pos: 0 }
    }

    /// True once every byte has been read.
    pub fn is_at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Bytes read so far: where the next value starts (so a caller can tell where in the
    /// input a value it read lies).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// A map header: the number of key-value pairs that follow.
    pub fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some(usize::from(m & 0x0f)),
            0xde => self.be(2).and_then(|n| usize::try_from(n).ok()),
            0xdf => self.be(4).and_then(|n| usize::try_from(n).ok()),
            _ => None,
        }
    }

    /// A `str`, its bytes unchecked: for keys, compared with known ASCII names (bytes that
    /// are not UTF-8 match none of them).
    pub fn key(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        self.take(len)
    }

    /// A `str` holding UTF-8.
    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.key()?).ok()
    }

    /// A `bin`.
    pub fn bin(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => return None,
        };
        self.take(len)
    }

    /// An integer of any encoding whose value is not negative.
    pub fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            // Signed encodings of values >= 0: the sign bit is clear.
            m @ 0xd0..=0xd3 => {
                let n = self.be(1 << (m - 0xd0))?;
                let sign = 1u64 << ((8u32 << (m - 0xd0)) - 1);
                (n & sign == 0).then_some(n)
            }
            _ => None,
        }
    }

    /// A boolean.
    pub fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0xc2 => Some(false),
            0xc3 => Some(true),
            _ => None,
        }
    }

    /// `nil` or a non-negative integer.
    pub fn optional_uint(&mut self) -> Option<Option<u64>> {
        if self.buf.get(self.pos) == Some(&0xc0) {
            self.pos += 1;
            return Some(None);
        }
        self.uint().map(Some)
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// An `n`-byte big-endian unsigned integer (n <= 8).
    fn be(&mut self, n: usize) -> Option<u64> {
        let bytes = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn take(&mut self, len: u64) -> Option<&'a [u8]> {
        let len = usize::try_from(len).ok()?;
        let bytes = self.buf.get(self.pos..self.pos.checked_add(len)?)?;
        self.pos += len;
        Some(bytes)
    }
}

/// A MessagePack writer for hand-written encoders of hot messages, writing each value in
/// the form `rmp_serde` gives it (the shortest), so a hand-encoded message is the same bytes
/// serde would write: maps with `str` keys, `str`, `bin`, non-negative integers, booleans.
///
/// A length that MessagePack cannot hold (more than `u32::MAX`) is not written: the
/// writer is then [`failed`](ValueWriter::failed), and its caller goes to serde instead.
#[derive(Debug)]
pub struct ValueWriter<'a> {
    out: &'a mut Vec<u8>,
    failed: bool,
}

impl<'a> ValueWriter<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> ValueWriter<'a> {
        ValueWriter { out, failed: false }
    }

    /// True when a length did not fit (what was written is then incomplete).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Bytes that are MessagePack already, written as they are: a message's constant keys
    /// and tags, in one copy instead of one value at a time (the tests compare the
    /// messages written with them with serde's bytes).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// A map header of `len` key-value pairs.
    pub fn map_len(&mut self, len: usize) -> &mut Self {
        match len {
            0..=15 => self.out.push(0x80 | len as u8),
            16..=0xffff => self.tagged(0xde, len as u64, 2),
            _ => self.long(0xdf, len),
        }
        self
    }

    /// A `str`.
    pub fn str(&mut self, s: &str) -> &mut Self {
        let len = s.len();
        match len {
            0..=31 => self.out.push(0xa0 | len as u8),
            32..=0xff => self.tagged(0xd9, len as u64, 1),
            0x100..=0xffff => self.tagged(0xda, len as u64, 2),
            _ => self.long(0xdb, len),
        }
        if !self.failed {
            self.out.extend_from_slice(s.as_bytes());
        }
        self
    }

    /// A `bin`.
    pub fn bin(&mut self, b: &[u8]) -> &mut Self {
        self.bin_len(b.len());
        if !self.failed {
            self.out.extend_from_slice(b);
        }
        self
    }

    /// The header of a `bin` of `len` bytes, without them: for a caller that writes the
    /// bytes elsewhere (see [`encode_invoke_around`]).
    pub fn bin_len(&mut self, len: usize) -> &mut Self {
        match len {
            0..=0xff => self.tagged(0xc4, len as u64, 1),
            0x100..=0xffff => self.tagged(0xc5, len as u64, 2),
            _ => self.long(0xc6, len),
        }
        self
    }

    /// A non-negative integer.
    pub fn uint(&mut self, n: u64) -> &mut Self {
        match n {
            0..=0x7f => self.out.push(n as u8),
            0x80..=0xff => self.tagged(0xcc, n, 1),
            0x100..=0xffff => self.tagged(0xcd, n, 2),
            0x1_0000..=0xffff_ffff => self.tagged(0xce, n, 4),
            _ => self.tagged(0xcf, n, 8),
        }
        self
    }

    /// A boolean.
    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.out.push(if b { 0xc3 } else { 0xc2 });
        self
    }

    /// A marker and `n` as a `width`-byte big-endian number.
    fn tagged(&mut self, marker: u8, n: u64, width: usize) {
        self.out.push(marker);
        self.out.extend_from_slice(&n.to_be_bytes()[8 - width..]);
    }

    /// A marker and a 4-byte length, or failure beyond that.
    fn long(&mut self, marker: u8, len: usize) {
        match u32::try_from(len) {
            Ok(n) => self.tagged(marker, u64::from(n), 4),
            Err(_) => self.failed = true,
        }
    }
}

/// Appends the body of `msg` to `out` as serde would write it, for the frames of every
/// call (`invoke`, `call_ok`, `failed`, without a trace or credentials); answers `false`
/// and leaves `out` as it was for any other message, which serde then writes.
pub fn encode_daemon_msg(out: &mut Vec<u8>, msg: &DaemonMsg) -> bool {
    if let DaemonMsg::Invoke {
        invocation,
        function,
        args,
        caller,
        peer,
        deadline_ms,
        credentials: None,
    } = msg
    {
        let fields = InvokeFields {
            invocation: *invocation,
            function,
            caller,
            peer,
            deadline_ms: *deadline_ms,
        };
        return encode_invoke(out, &fields, args);
    }
    let start = out.len();
    let mut w = ValueWriter::new(out);
    match msg {
        DaemonMsg::CallOk {
            id,
            data,
            trace: None,
        } => {
            // {"op": "call_ok", "id": ..., "data": ...}
            w.raw(b"\x83\xa2op\xa7call_ok\xa2id")
                .uint(*id)
                .raw(b"\xa4data")
                .bin(data);
        }
        DaemonMsg::Failed {
            id,
            code,
            message,
            trace: None,
        } => {
            // {"op": "failed", "id": ..., "code": ..., "message": ...}
            w.raw(b"\x84\xa2op\xa6failed\xa2id")
                .uint(*id)
                .raw(b"\xa4code")
                .str(code.as_str())
                .raw(b"\xa7message")
                .str(message);
        }
        _ => return false,
    }
    if w.failed() {
        out.truncate(start);
        return false;
    }
    true
}

/// An `invoke` frame's fields besides its arguments (and without credentials), for
/// [`encode_invoke_around`].
#[derive(Debug, Clone, Copy)]
pub struct InvokeFields<'a> {
    /// Daemon-chosen id to echo in the `Result`.
    pub invocation: u64,
    /// The registered function to run.
    pub function: &'a str,
    /// Where the call came from.
    pub caller: &'a str,
    /// Who called.
    pub peer: &'a str,
    /// Milliseconds left before the caller gives up.
    pub deadline_ms: u64,
}

impl InvokeFields<'_> {
    /// The map up to and including the header of `args`.
    fn head(&self, w: &mut ValueWriter<'_>, args_len: usize) {
        // {"op": "invoke", "invocation": ..., "function": ..., "args": ...
        w.raw(b"\x87\xa2op\xa6invoke\xaainvocation")
            .uint(self.invocation)
            .raw(b"\xa8function")
            .str(self.function)
            .raw(b"\xa4args")
            .bin_len(args_len);
    }

    /// The map after the bytes of `args`.
    fn tail(&self, w: &mut ValueWriter<'_>) {
        w.raw(b"\xa6caller")
            .str(self.caller)
            .raw(b"\xa4peer")
            .str(self.peer)
            .raw(b"\xabdeadline_ms")
            .uint(self.deadline_ms);
    }
}

/// Appends the body of an `invoke` of `fields` and `args` to `out` as serde would write it
/// ([`encode_daemon_msg`] of the message); `false`, and `out` as it was, when a length does
/// not fit MessagePack.
pub fn encode_invoke(out: &mut Vec<u8>, fields: &InvokeFields<'_>, args: &[u8]) -> bool {
    let start = out.len();
    let mut w = ValueWriter::new(out);
    fields.head(&mut w, args.len());
    if !w.failed() {
        w.out.extend_from_slice(args);
    }
    fields.tail(&mut w);
    if w.failed() {
        out.truncate(start);
        return false;
    }
    true
}

/// Appends the body of an `invoke` of `fields` and `args_len` bytes of arguments to `out`,
/// all but the arguments, which the caller writes apart (a large argument is not copied into
/// the frame): the bytes serde would write are `out[..at]`, the arguments, then `out[at..]`,
/// where `at` is the answer (just after the arguments' `bin` header). `None`, and `out` as it
/// was, when a length does not fit MessagePack.
pub fn encode_invoke_around(
    out: &mut Vec<u8>,
    fields: &InvokeFields<'_>,
    args_len: usize,
) -> Option<usize> {
    let start = out.len();
    let mut w = ValueWriter::new(out);
    fields.head(&mut w, args_len);
    let at = w.out.len();
    fields.tail(&mut w);
    if w.failed() {
        out.truncate(start);
        return None;
    }
    Some(at)
}

/// Sets a field read from the map, refusing a second value for it (serde reports a
/// duplicate field).
pub fn set_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

/// `call` and `result`, the app's side of every call it makes or serves.
fn client_msg(body: &[u8], bytes: &mut Args<'_>) -> Option<ClientMsg> {
    let mut r = ValueReader::new(body);
    let mut op = None;
    let (mut id, mut target, mut function, mut args) = (None, None, None, None);
    let (mut deadline_ms, mut idempotent, mut trace) = (None, None, None);
    let (mut invocation, mut outcome) = (None, None);
    for _ in 0..r.map_len()? {
        match r.key()? {
            b"op" => set_once(&mut op, r.key()?)?,
            b"id" => set_once(&mut id, r.uint()?)?,
            b"target" => set_once(&mut target, r.str()?)?,
            b"function" => set_once(&mut function, r.str()?)?,
            b"args" => set_once(&mut args, r.bin()?)?,
            b"deadline_ms" => set_once(&mut deadline_ms, r.optional_uint()?)?,
            b"idempotent" => set_once(&mut idempotent, r.bool()?)?,
            b"trace" => set_once(&mut trace, r.bool()?)?,
            b"invocation" => set_once(&mut invocation, r.uint()?)?,
            b"outcome" => set_once(&mut outcome, app_outcome(&mut r)?)?,
            _ => return None,
        }
    }
    if !r.is_at_end() {
        return None;
    }
    // Which message's keys are there, so that a frame mixing them is left to serde.
    let call_keys = [
        id.is_some(),
        target.is_some(),
        function.is_some(),
        args.is_some(),
    ]
    .contains(&true)
        || deadline_ms.is_some()
        || idempotent.is_some()
        || trace.is_some();
    let result_keys = invocation.is_some() || outcome.is_some();
    match op? {
        b"call" if !result_keys => Some(ClientMsg::Call {
            id: id?,
            target: target?.to_owned(),
            function: function?.to_owned(),
            args: bytes.take(args?),
            deadline_ms: deadline_ms?,
            idempotent: idempotent?,
            trace: trace.unwrap_or(false),
        }),
        b"result" if !call_keys => Some(ClientMsg::Result {
            invocation: invocation?,
            outcome: outcome?,
        }),
        _ => None,
    }
}

/// A result's `outcome`: `{"ok": bin}` or `{"error": str}` (a `refused` goes to serde).
fn app_outcome(r: &mut ValueReader<'_>) -> Option<Outcome> {
    if r.map_len()? != 1 {
        return None;
    }
    match r.key()? {
        b"ok" => Some(Outcome::Ok(pooled_copy(r.bin()?))),
        b"error" => Some(Outcome::Error(r.str()?.to_owned())),
        _ => None,
    }
}

/// `invoke`, `call_ok`, `failed` and `cancel`: what an app is sent for every call it makes
/// or serves. Keys this build does not know send the frame to serde, which ignores them.
fn daemon_msg(body: &[u8], bytes: &mut Args<'_>) -> Option<DaemonMsg> {
    let mut r = ValueReader::new(body);
    let mut op = None;
    let (mut id, mut invocation, mut function, mut args) = (None, None, None, None);
    let (mut caller, mut peer, mut deadline_ms) = (None, None, None);
    let (mut data, mut code, mut message) = (None, None, None);
    for _ in 0..r.map_len()? {
        match r.key()? {
            b"op" => set_once(&mut op, r.key()?)?,
            b"id" => set_once(&mut id, r.uint()?)?,
            b"invocation" => set_once(&mut invocation, r.uint()?)?,
            b"function" => set_once(&mut function, r.str()?)?,
            b"args" => set_once(&mut args, r.bin()?)?,
            b"caller" => set_once(&mut caller, r.str()?)?,
            b"peer" => set_once(&mut peer, r.str()?)?,
            b"deadline_ms" => set_once(&mut deadline_ms, r.uint()?)?,
            b"data" => set_once(&mut data, r.bin()?)?,
            b"code" => set_once(&mut code, r.str()?.parse::<ErrorCode>().ok()?)?,
            b"message" => set_once(&mut message, r.str()?)?,
            _ => return None,
        }
    }
    if !r.is_at_end() {
        return None;
    }
    // Which keys each message has, so that one with a key of another is left to serde.
    let any_invoke_key = [function.is_some(), args.is_some(), caller.is_some()].contains(&true)
        || peer.is_some()
        || deadline_ms.is_some();
    let any_failed_key = code.is_some() || message.is_some();
    let msg = match op? {
        b"call_ok" if invocation.is_none() && !any_invoke_key && !any_failed_key => {
            DaemonMsg::CallOk {
                id: id?,
                data: pooled_copy(data?),
                trace: None,
            }
        }
        b"failed" if invocation.is_none() && !any_invoke_key && data.is_none() => {
            DaemonMsg::Failed {
                id: id?,
                code: code?,
                message: message?.to_owned(),
                trace: None,
            }
        }
        b"invoke" if id.is_none() && data.is_none() && !any_failed_key => DaemonMsg::Invoke {
            invocation: invocation?,
            function: function?.to_owned(),
            args: bytes.take(args?),
            caller: caller?.to_owned(),
            peer: peer?.to_owned(),
            deadline_ms: deadline_ms?,
            credentials: None,
        },
        b"cancel" if id.is_none() && data.is_none() && !any_invoke_key && !any_failed_key => {
            DaemonMsg::Cancel {
                invocation: invocation?,
            }
        }
        _ => return None,
    };
    Some(msg)
}

#[cfg(test)]
mod tests;
