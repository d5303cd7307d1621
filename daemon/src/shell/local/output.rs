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
mod tests;
