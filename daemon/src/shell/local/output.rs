//! A connection's output: frames queued for an app and not yet written.
//!
//! Written from the front, appended at the back. The written prefix is dropped (the rest
//! moved to the front) only before an append, and only once it is at least half the
//! buffer, so a byte is moved at most once for each byte written before it: a 16 MiB
//! frame that leaves in pieces of what the socket takes is not moved again after each
//! piece. A large buffer comes from the process's pool when the output is empty and goes
//! back to it once everything is written.
//!
//! A large payload is not copied into the buffer at all: it is queued apart
//! ([`Output::insert_apart`]), a buffer of its own between two regions of the output's
//! (an `invoke`'s arguments, between the frame's bytes up to their `bin` header and the
//! bytes after them), and the pieces leave in order with vectored writes, so a small frame
//! and a large payload still go in one system call when the socket takes them. A payload
//! written goes back to the pool.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use rpcd_client::ipc::{
    self, buffer_pool, encode_invoke, encode_invoke_around, pooled_capacity, BufferPool, DaemonMsg,
    InvokeFields, POOLED_CAPACITY_MIN,
};

use crate::payload::Payload;

/// Pieces handed to one vectored write at most (the regions of the buffer and the payloads
/// between them); whatever is past them goes in the next write.
const WRITE_PIECES_MAX: usize = 16;

/// Arguments of at least this many bytes are queued apart rather than copied into the
/// output's buffer: the size of buffers worth pooling, so a payload queued apart goes back
/// to the pool once written, and below which a copy costs little.
pub(super) const APART_MIN: usize = POOLED_CAPACITY_MIN;

/// Bytes of a frame besides its strings and payload, at most (the length prefix, keys, the
/// op, integers): enough for the output's buffer not to grow while one is encoded.
const FRAME_FIXED_MAX: usize = 128;

/// Why a frame was not queued (nothing of it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unqueued {
    /// It cannot be a frame: a length MessagePack or the length prefix cannot hold.
    NoFrame,
    /// Its bytes, this many, are more than the room the caller gave.
    OverRoom(usize),
}

/// Frames queued for one connection: `buf[pos..]` is still to be written, with the
/// payloads of `apart` between its regions.
#[derive(Debug)]
pub(super) struct Output {
    buf: Vec<u8>,
    pos: usize,
    /// Payloads queued apart, in order, each before `buf[at..]`: their `at` do not decrease,
    /// none is below `pos`, and only the first may be partly written (then `pos` is its `at`).
    apart: VecDeque<Apart>,
    /// The bytes of `apart` not yet written.
    apart_len: usize,
    pool: &'static BufferPool,
}

/// The pieces of one vectored write.
struct Pieces<'a> {
    slices: [IoSlice<'a>; WRITE_PIECES_MAX],
    count: usize,
}

impl<'a> Pieces<'a> {
    /// Adds `bytes` unless they are empty; false, and nothing added, when full.
    fn push(&mut self, bytes: &'a [u8]) -> bool {
        if self.count == WRITE_PIECES_MAX {
            return false;
        }
        if !bytes.is_empty() {
            self.slices[self.count] = IoSlice::new(bytes);
            self.count += 1;
        }
        true
    }
}

/// A payload written between `buf[..at]` and `buf[at..]`.
#[derive(Debug)]
struct Apart {
    at: usize,
    bytes: Payload,
    /// Bytes of it written so far.
    written: usize,
}

impl Default for Output {
    fn default() -> Output {
        Output::with_pool(buffer_pool())
    }
}

impl Output {
    /// An empty output whose large buffers come from and go back to `pool`.
    pub(super) fn with_pool(pool: &'static BufferPool) -> Output {
        Output {
            buf: Vec::new(),
            pos: 0,
            apart: VecDeque::new(),
            apart_len: 0,
            pool,
        }
    }

    /// Bytes queued and not yet written, payloads queued apart included.
    pub(super) fn len(&self) -> usize {
        self.buf.len() - self.pos + self.apart_len
    }

    /// Everything queued has been written.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `msg` as a whole frame (length prefix, then the MessagePack body, as
    /// [`ipc::encode_frame`] makes it) if it takes at most `room` bytes: the bytes it takes.
    /// An `invoke` is better given to [`Output::push_invoke`], which does not copy large
    /// arguments.
    pub(super) fn push_frame(&mut self, msg: &DaemonMsg, room: usize) -> Result<usize, Unqueued> {
        let buf = self.for_append(frame_len_hint(msg));
        let start = buf.len();
        buf.extend_from_slice(&[0; ipc::LENGTH_PREFIX_LEN]);
        // The frames of every call by hand (the same bytes), the rest by serde.
        let written =
            ipc::encode_daemon_msg(buf, msg) || rmp_serde::encode::write_named(buf, msg).is_ok();
        let len = buf.len() - start;
        if !written {
            buf.truncate(start);
            return Err(Unqueued::NoFrame);
        }
        finish_frame(buf, start, len, room)
    }

    /// Appends an `invoke` of `fields` and `args` (without credentials) if its frame takes at
    /// most `room` bytes: the bytes it takes, the arguments included. Arguments of at least
    /// [`APART_MIN`] bytes are queued apart, their buffer going back to the pool once
    /// written; smaller ones are copied in (and their buffer given back at once). The app
    /// reads the same bytes either way. Not queued, the arguments' buffer is given back.
    pub(super) fn push_invoke(
        &mut self,
        fields: &InvokeFields<'_>,
        args: Payload,
        room: usize,
    ) -> Result<usize, Unqueued> {
        const PREFIX: usize = ipc::LENGTH_PREFIX_LEN;
        let apart = args.len() >= APART_MIN;
        let strings = fields.function.len() + fields.caller.len() + fields.peer.len();
        let copied = if apart { 0 } else { args.len() };
        let pool = self.pool;
        let buf = self.for_append(FRAME_FIXED_MAX + strings + copied);
        let start = buf.len();
        buf.extend_from_slice(&[0; PREFIX]);
        let at = if apart {
            encode_invoke_around(buf, fields, args.len())
        } else {
            encode_invoke(buf, fields, &args).then_some(buf.len())
        };
        let Some(at) = at else {
            buf.truncate(start);
            pool.give(args.into_buffer());
            return Err(Unqueued::NoFrame);
        };
        let len = buf.len() - start + if apart { args.len() } else { 0 };
        if let Err(e) = finish_frame(buf, start, len, room) {
            pool.give(args.into_buffer());
            return Err(e);
        }
        if apart {
            self.insert_apart(at, args);
        } else {
            pool.give(args.into_buffer());
        }
        Ok(len)
    }

    /// One vectored write to `w` of what is still to be written, in order (at most
    /// [`WRITE_PIECES_MAX`] pieces); what `w` took is then written. `w`'s answer.
    pub(super) fn write_to(&mut self, w: &mut impl Write) -> io::Result<usize> {
        let mut pieces = Pieces {
            slices: [IoSlice::new(&[]); WRITE_PIECES_MAX],
            count: 0,
        };
        let mut from = self.pos;
        let mut all = true;
        for a in &self.apart {
            all = pieces.push(&self.buf[from..a.at]) && pieces.push(&a.bytes[a.written..]);
            if !all {
                break;
            }
            from = a.at;
        }
        if all {
            pieces.push(&self.buf[from..]);
        }
        let n = w.write_vectored(&pieces.slices[..pieces.count])?;
        self.advance(n);
        Ok(n)
    }

    /// `n` bytes of what was still to be written were written: a payload queued apart that
    /// is all written goes back to the pool.
    pub(super) fn advance(&mut self, mut n: usize) {
        debug_assert!(n <= self.len());
        loop {
            let region_end = self.apart.front().map_or(self.buf.len(), |a| a.at);
            let step = n.min(region_end - self.pos);
            self.pos += step;
            n -= step;
            let Some(front) = self.apart.front_mut() else {
                break;
            };
            if self.pos < front.at {
                break;
            }
            let step = n.min(front.bytes.len() - front.written);
            front.written += step;
            self.apart_len -= step;
            n -= step;
            if front.written < front.bytes.len() {
                break;
            }
            if let Some(done) = self.apart.pop_front() {
                self.pool.give(done.bytes.into_buffer());
            }
        }
        if self.pos == self.buf.len() && self.apart.is_empty() {
            self.pos = 0;
            if self.buf.capacity() >= rpcd_client::ipc::POOLED_CAPACITY_MIN {
                // All written: a large buffer serves the next large frame, of any app.
                self.pool.give(std::mem::take(&mut self.buf));
            } else {
                self.buf.clear();
            }
        }
    }

    /// The buffer to append a frame of about `frame_len` bytes to (the caller may truncate
    /// it back to its length before the append, and insert payloads apart within what it
    /// appended). An empty output takes a pooled buffer for a large frame; a written prefix
    /// of at least half the buffer is dropped first.
    pub(super) fn for_append(&mut self, frame_len: usize) -> &mut Vec<u8> {
        if self.buf.is_empty() {
            if self.buf.capacity() < frame_len {
                match self.pool.take(frame_len) {
                    Some(pooled) => {
                        let small = std::mem::replace(&mut self.buf, pooled);
                        self.pool.give(small);
                    }
                    // At once at the size it will need (rounded to serve other large
                    // buffers once given back), not grown by the encoder step by step.
                    None => self.buf.reserve_exact(pooled_capacity(frame_len)),
                }
            }
        } else if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            for a in &mut self.apart {
                a.at -= self.pos;
            }
            self.pos = 0;
        }
        &mut self.buf
    }

    /// Queues `bytes` to be written between the buffer's bytes before `at` and those from
    /// `at` on, without copying them: `at` is in what was appended since the last payload
    /// queued apart (at most the buffer's length, at least the last one's `at`).
    fn insert_apart(&mut self, at: usize, bytes: Payload) {
        let last = self.apart.back().map_or(self.pos, |a| a.at);
        debug_assert!(
            last <= at && at <= self.buf.len(),
            "{last} <= {at} <= {}",
            self.buf.len()
        );
        if bytes.is_empty() {
            // Nothing to write: an empty piece would only be one to skip.
            self.pool.give(bytes.into_buffer());
            return;
        }
        let at = at.clamp(last, self.buf.len());
        self.apart_len += bytes.len();
        self.apart.push_back(Apart {
            at,
            bytes,
            written: 0,
        });
    }

    /// Gives the large buffers back to the pool, whatever they hold (the connection is gone).
    pub(super) fn discard(&mut self) {
        self.pos = 0;
        self.pool.give(std::mem::take(&mut self.buf));
        for a in self.apart.drain(..) {
            self.pool.give(a.bytes.into_buffer());
        }
        self.apart_len = 0;
    }
}

/// Writes the length prefix of the frame of `len` bytes at `buf[start..]` (the body's bytes
/// not in `buf` included), or takes it back off `buf` if it cannot be a frame or is more
/// than `room` bytes.
fn finish_frame(
    buf: &mut Vec<u8>,
    start: usize,
    len: usize,
    room: usize,
) -> Result<usize, Unqueued> {
    const PREFIX: usize = ipc::LENGTH_PREFIX_LEN;
    let Ok(body) = u32::try_from(len - PREFIX) else {
        buf.truncate(start);
        return Err(Unqueued::NoFrame);
    };
    if len > room {
        buf.truncate(start);
        return Err(Unqueued::OverRoom(len));
    }
    buf[start..start + PREFIX].copy_from_slice(&body.to_be_bytes());
    Ok(len)
}

/// About how long `msg` is as a frame, for the frames that carry a payload (`invoke`,
/// `call_ok`): enough for the output to take a pooled buffer for a large one. Others: 0.
fn frame_len_hint(msg: &DaemonMsg) -> usize {
    match msg {
        DaemonMsg::Invoke {
            function,
            args,
            caller,
            peer,
            ..
        } => FRAME_FIXED_MAX + function.len() + args.len() + caller.len() + peer.len(),
        DaemonMsg::CallOk { data, .. } => FRAME_FIXED_MAX + data.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use rpcd_client::ipc::{encode_frame, ErrorCode};

    use super::*;

    const MIB: usize = 1024 * 1024;

    fn private_pool(max: usize) -> &'static BufferPool {
        Box::leak(Box::new(BufferPool::new(max)))
    }

    /// A socket that takes the next of `sizes` bytes at most per write (round and round),
    /// across the pieces of a vectored write as the kernel does.
    struct Socket {
        sizes: Vec<usize>,
        writes: usize,
        got: Vec<u8>,
    }

    impl Socket {
        fn taking(sizes: &[usize]) -> Socket {
            Socket {
                sizes: sizes.to_vec(),
                writes: 0,
                got: Vec::new(),
            }
        }

        /// Writes `out` until it is empty.
        fn drain(&mut self, out: &mut Output) {
            while !out.is_empty() {
                assert!(out.write_to(self).unwrap() > 0);
            }
        }
    }

    impl Write for Socket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut left = self.sizes[self.writes % self.sizes.len()];
            self.writes += 1;
            let start = self.got.len();
            for b in bufs {
                let n = left.min(b.len());
                self.got.extend_from_slice(&b[..n]);
                left -= n;
            }
            Ok(self.got.len() - start)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn invoke(invocation: u64, args: Vec<u8>) -> DaemonMsg {
        DaemonMsg::Invoke {
            invocation,
            function: "bulk.digest".into(),
            args,
            caller: "127.0.0.1:7000".into(),
            peer: "a".into(),
            deadline_ms: 30_000,
            credentials: None,
        }
    }

    /// `msg`, an `invoke` without credentials, given to [`Output::push_invoke`], its
    /// arguments in place behind `junk` bytes of something else (as in a delivered envelope).
    fn push_invoke(out: &mut Output, msg: &DaemonMsg, junk: usize) -> Result<usize, Unqueued> {
        let DaemonMsg::Invoke {
            invocation,
            function,
            args,
            caller,
            peer,
            deadline_ms,
            credentials: None,
        } = msg
        else {
            panic!("an invoke without credentials");
        };
        let fields = InvokeFields {
            invocation: *invocation,
            function,
            caller,
            peer,
            deadline_ms: *deadline_ms,
        };
        let mut buf = vec![0xee; junk];
        buf.extend_from_slice(args);
        buf.extend_from_slice(&[0xdd; 9]);
        let payload = Payload::in_place(buf, junk..junk + args.len());
        out.push_invoke(&fields, payload, usize::MAX)
    }

    /// Two large `invoke`s, their arguments queued apart, with small frames before, between
    /// and after them (some queued while the first is half written, so the written prefix
    /// is dropped under a payload queued apart): what the app reads is every frame as serde
    /// writes it in one piece, in order, whatever the socket takes at a time.
    #[test]
    fn large_invokes_between_small_frames_come_out_as_serde_writes_them() {
        let large = |seed: usize| -> Vec<u8> {
            (0..APART_MIN + seed)
                .map(|i| (i * 7 + seed) as u8)
                .collect()
        };
        let small = |id| DaemonMsg::CallOk {
            id,
            data: vec![1, 2, 3],
            trace: None,
        };
        let failed = DaemonMsg::Failed {
            id: 4,
            code: ErrorCode::AppError,
            message: "no".into(),
            trace: None,
        };
        let (first, second) = (invoke(1, large(3)), invoke(2, large(70_001)));
        let small_invoke = invoke(3, vec![5; 100]);
        let before = [small(1), failed.clone()];
        let after = [small(2), small_invoke.clone(), failed];
        let mut expected = Vec::new();
        for msg in before
            .iter()
            .chain([&first])
            .chain(&after)
            .chain([&second, &small(9)])
        {
            expected.extend_from_slice(&encode_frame(msg));
        }
        for sizes in [&[1][..], &[7], &[4096], &[1, 7, 4096, 200_000, 3, 65_536]] {
            let pool = private_pool(64 * MIB);
            let mut out = Output::with_pool(pool);
            let mut socket = Socket::taking(sizes);
            for msg in &before {
                out.push_frame(msg, usize::MAX).unwrap();
            }
            let len = push_invoke(&mut out, &first, 40).unwrap();
            assert_eq!(len, encode_frame(&first).len());
            assert_eq!(out.apart.len(), 1, "queued apart");
            // Into the first one's arguments.
            let mid = out.buf.len() + APART_MIN / 2;
            while socket.got.len() < mid {
                out.write_to(&mut socket).unwrap();
            }
            for msg in &after {
                match msg {
                    DaemonMsg::Invoke { .. } => push_invoke(&mut out, msg, 3),
                    _ => out.push_frame(msg, usize::MAX),
                }
                .unwrap();
            }
            assert_eq!(out.apart.len(), 1, "small arguments are copied in");
            push_invoke(&mut out, &second, 0).unwrap();
            out.push_frame(&small(9), usize::MAX).unwrap();
            assert_eq!(out.len() + socket.got.len(), expected.len());
            socket.drain(&mut out);
            assert!(
                socket.got == expected,
                "sizes {sizes:?}: the bytes serde writes"
            );
            assert!(out.apart.is_empty() && out.buf.is_empty());
            assert_eq!(pool.stats().kept, 2, "both payloads given back");
        }
    }

    /// `len()` counts the arguments queued apart; a small frame and a large `invoke` go in one
    /// write when the socket takes them; the arguments' buffer goes back to the pool as their
    /// last byte is written, not before.
    #[test]
    fn arguments_queued_apart_count_in_len_and_go_back_to_the_pool_once_written() {
        let pool = private_pool(64 * MIB);
        let mut out = Output::with_pool(pool);
        let msg = invoke(1, vec![0x11; APART_MIN + 1]);
        let frame = encode_frame(&msg);
        let pong = encode_frame(&DaemonMsg::Pong { id: 1 });
        out.push_frame(&DaemonMsg::Pong { id: 1 }, usize::MAX)
            .unwrap();
        assert_eq!(push_invoke(&mut out, &msg, 0), Ok(frame.len()));
        assert_eq!(out.len(), pong.len() + frame.len(), "the arguments counted");
        assert!(out.buf.len() < 200, "and not copied");
        let mut socket = Socket::taking(&[usize::MAX]);
        assert_eq!(
            out.write_to(&mut socket).unwrap(),
            pong.len() + frame.len(),
            "one write"
        );
        assert!(out.is_empty());
        assert_eq!(pool.stats().kept, 1);

        // Written up to the arguments' last byte, then that byte.
        push_invoke(&mut out, &msg, 0).unwrap();
        let tail = out.buf.len() - out.apart[0].at;
        let to_last = frame.len() - tail - 1;
        let mut socket = Socket::taking(&[to_last, 1, tail]);
        out.write_to(&mut socket).unwrap();
        assert_eq!(out.len(), tail + 1);
        assert_eq!(pool.stats().kept, 1, "still being written");
        out.write_to(&mut socket).unwrap();
        assert_eq!(out.len(), tail);
        assert_eq!(pool.stats().kept, 2, "given back once written");
        out.write_to(&mut socket).unwrap();
        assert!(out.is_empty());
        assert!(socket.got == frame);

        // Not queued (no room): nothing of it stays, its buffer goes back; the same for a
        // connection gone with one queued.
        let before = out.len();
        let fields = InvokeFields {
            invocation: 1,
            function: "f",
            caller: "",
            peer: "",
            deadline_ms: 0,
        };
        let args = Payload::from(vec![0; APART_MIN]);
        let refused = out.push_invoke(&fields, args.clone(), APART_MIN);
        assert!(matches!(refused, Err(Unqueued::OverRoom(n)) if n > APART_MIN));
        assert_eq!(out.len(), before);
        assert_eq!(pool.stats().kept, 3);
        out.push_invoke(&fields, args, usize::MAX).unwrap();
        out.discard();
        assert_eq!(pool.stats().kept, 4);
        assert_eq!(out.len(), 0);
    }

    /// A 16 MiB frame written in pieces of 200,000 bytes (a Unix socket's buffer), a small
    /// frame queued after each piece: the bytes moved to the front stay within the bytes
    /// written, and every frame comes out whole and in order.
    #[test]
    fn a_large_frame_written_in_pieces_is_moved_at_most_once_over() {
        let mut out = Output::with_pool(private_pool(0));
        let large: Vec<u8> = (0..16 * MIB).map(|i| (i % 251) as u8).collect();
        out.for_append(large.len()).extend_from_slice(&large);
        let mut expected = large.clone();
        let (mut written, mut moved) = (0usize, 0usize);
        let mut socket = Socket::taking(&[200_000]);
        for i in 0u32.. {
            if out.is_empty() {
                break;
            }
            written += out.write_to(&mut socket).unwrap();
            if written >= large.len() {
                continue;
            }
            let small = i.to_be_bytes();
            let (pos, len) = (out.pos, out.buf.len());
            out.for_append(small.len()).extend_from_slice(&small);
            if out.pos == 0 && pos > 0 && len > 0 {
                moved += len - pos;
            }
            expected.extend_from_slice(&small);
        }
        assert!(socket.got == expected, "the frames in order");
        // Dropping the written prefix whenever it passed 1 MiB, as before, moved some
        // 120 MiB here.
        assert!(moved <= written, "moved {moved} for {written} written");
    }

    #[test]
    fn a_large_output_buffer_comes_from_the_pool_and_goes_back_once_written() {
        let pool = private_pool(64 * MIB);
        pool.give(vec![0u8; 4 * MIB]);
        let mut out = Output::with_pool(pool);
        out.for_append(3 * MIB).extend_from_slice(&[7; 3 * MIB]);
        assert_eq!(out.buf.capacity(), 4 * MIB, "the pooled buffer");
        assert_eq!(pool.stats().buffers, 0);
        out.advance(MIB);
        assert_eq!(pool.stats().buffers, 0, "still being written");
        out.advance(2 * MIB);
        assert!(out.is_empty());
        assert_eq!(pool.stats().bytes, 4 * MIB, "given back");
        // A small frame does not take a large buffer.
        out.for_append(10).extend_from_slice(b"0123456789");
        assert_eq!(pool.stats().bytes, 4 * MIB);
        let mut socket = Socket::taking(&[4]);
        out.write_to(&mut socket).unwrap();
        assert_eq!(socket.got, b"0123");
        out.discard();
        assert_eq!(pool.stats().bytes, 4 * MIB);
    }
}
