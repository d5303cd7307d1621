//! Framing: a 4-byte big-endian length, then one MessagePack value.
//!
//! [`decode_frame`] is the one place where untrusted socket bytes become a typed message or a
//! typed [`FrameError`]; [`FrameReader`] is the one buffer both the daemon and the client read
//! a stream of frames through.

use std::io::{self, Read};
use std::ops::Range;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::pool::{buffer_pool, pooled_capacity, pooled_vec, BufferPool, POOLED_CAPACITY_MIN};
use super::{ErrorCode, Payload};

/// Default largest frame body (the `N` of a frame): a 16 MiB message plus room for the
/// envelope around it.
pub const FRAME_MAX_DEFAULT: usize = 16 * 1024 * 1024 + 64 * 1024;

/// Deepest nesting of MessagePack arrays and maps accepted in a frame. Our own messages
/// nest at most 4 levels (`Stats` → `peers` → `PeerStats` → `calls`); the bound keeps a
/// hostile frame from driving the decoder's recursion.
pub const NESTING_MAX: usize = 32;

/// Bytes in the length prefix of a frame.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// The most bytes [`FrameReader::read_from`] asks for in one `read`.
pub const READ_CHUNK: usize = 64 * 1024;

/// Consumed bytes at the front of a [`FrameReader`] past which the unconsumed tail is moved
/// to the front before the next read.
const COMPACT_AT: usize = READ_CHUNK / 2;

/// A [`FrameReader`]'s buffer never grows past this many times the bytes it holds.
const GROWTH_MAX: usize = 8;

/// The least room worth a `read`: with less, the reader compacts or grows first.
const ROOM_MIN: usize = READ_CHUNK / 4;

/// The arguments of a `call` or an `invoke` from this many bytes on are not copied out of
/// the reader's buffer: the buffer goes with them ([`FrameReader::next_frame`]).
pub const IN_PLACE_MIN: usize = POOLED_CAPACITY_MIN;

// The length prefix is a u32: the maximum must be expressible in it.
const _: () = assert!(FRAME_MAX_DEFAULT <= u32::MAX as usize);

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announces a body larger than the frame maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced (or, when encoding, actual) body length.
        len: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The body is not valid MessagePack (truncated value, reserved marker, bad UTF-8).
    #[error("invalid MessagePack: {0}")]
    Malformed(String),
    /// The body holds one complete MessagePack value followed by more bytes.
    #[error("trailing {0} bytes after the message")]
    TrailingBytes(usize),
    /// Arrays and maps nest deeper than [`NESTING_MAX`].
    #[error("MessagePack nested deeper than {max} levels")]
    TooDeep {
        /// The nesting bound in force.
        max: usize,
    },
    /// More MessagePack values than a message of this kind may hold (checked before
    /// decoding, so a bomb of tiny values costs no memory).
    #[error("message holds more than {max} MessagePack values")]
    TooManyValues {
        /// The bound in force.
        max: usize,
    },
    /// Valid MessagePack that is not a valid message: unknown op, unknown or missing field,
    /// wrong field type.
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl FrameError {
    /// The error code the daemon reports in its `Fatal` frame for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            _ => ErrorCode::ProtocolError,
        }
    }
}

/// Encodes `msg` as a whole frame, length prefix included.
///
/// # Panics
/// If `msg` cannot be represented in MessagePack (not the case for any message of this
/// module) or encodes to more than `u32::MAX` bytes. Use [`try_encode_frame`] to check a size
/// bound instead.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    try_encode_frame(msg, u32::MAX as usize).expect("protocol messages always encode")
}

/// Encodes `msg` as a whole frame, length prefix included, refusing a body over `frame_max`.
///
/// The body is measured first (an encoding pass that counts bytes and copies none), so a
/// large message is refused before any memory is taken for it, and written into a buffer of
/// its size: a 16 MiB argument is copied once, not again by each growth of the buffer. A
/// large frame's buffer comes from the process's [`BufferPool`] when one fits (give it back
/// with [`recycle`](super::recycle) once written), else from the allocator.
pub fn try_encode_frame<T: Serialize>(msg: &T, frame_max: usize) -> Result<Vec<u8>, FrameError> {
    let invalid = |err: rmp_serde::encode::Error| FrameError::Invalid(err.to_string());
    let mut counter = ByteCounter(0);
    rmp_serde::encode::write_named(&mut counter, msg).map_err(invalid)?;
    let max = frame_max.min(u32::MAX as usize);
    if counter.0 > max {
        return Err(FrameError::TooLarge {
            len: counter.0,
            max,
        });
    }
    let mut frame = pooled_vec(LENGTH_PREFIX_LEN + counter.0);
    frame.extend_from_slice(&[0; LENGTH_PREFIX_LEN]);
    rmp_serde::encode::write_named(&mut frame, msg).map_err(invalid)?;
    let len = frame.len() - LENGTH_PREFIX_LEN;
    debug_assert_eq!(len, counter.0, "both passes encode the same message");
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    frame[..LENGTH_PREFIX_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(frame)
}

/// Encodes `value` as one MessagePack value (maps with field names, as frames), into a
/// buffer of its size, pooled when large (see [`try_encode_frame`]). For payloads that are not frames,
/// such as the daemons' envelopes.
pub fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let invalid = |err: rmp_serde::encode::Error| FrameError::Invalid(err.to_string());
    let mut counter = ByteCounter(0);
    rmp_serde::encode::write_named(&mut counter, value).map_err(invalid)?;
    let mut out = pooled_vec(counter.0);
    rmp_serde::encode::write_named(&mut out, value).map_err(invalid)?;
    Ok(out)
}

/// Decodes `bytes` as exactly one MessagePack value of type `T`, refusing more than
/// `values_max` values before decoding and trailing bytes after; strings and `bin` values
/// are borrowed while decoding, so a large payload is copied once (see `decode_body`). For
/// payloads that are not frames, such as the daemons' envelopes.
pub fn decode_value<T: DeserializeOwned + 'static>(
    bytes: &[u8],
    values_max: usize,
) -> Result<T, FrameError> {
    let value_len = super::shape::walk(bytes, values_max)?;
    decode_body(bytes, value_len)
}

/// Counts the bytes written to it, keeping none.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Decodes the first frame in `buf`.
///
/// Returns `Ok(None)` while `buf` does not yet hold a whole frame (read more and retry), and
/// `Ok(Some((msg, consumed)))` once it does, where `consumed` is the frame's length including
/// its prefix. A length prefix over `frame_max` is an error as soon as the prefix is seen, so
/// the caller never buffers an oversized frame. After an error the stream is out of sync:
/// report it and close.
pub fn decode_frame<T: DeserializeOwned + 'static>(
    buf: &[u8],
    frame_max: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    // Nothing is left out below `usize::MAX` bytes.
    decode_frame_bounded(buf, frame_max, None, usize::MAX)
        .map(|frame| frame.map(|(msg, used, _)| (msg, used)))
}

/// [`decode_frame`], refusing a body of more than `values_max` MessagePack values before
/// decoding it (see [`check_values`](super::check_values)).
/// A frame's message and its length, and the range in its body of the arguments left out of
/// it (see [`decode_body`]).
type Decoded<T> = (T, usize, Option<Range<usize>>);

fn decode_frame_bounded<T: DeserializeOwned + 'static>(
    buf: &[u8],
    frame_max: usize,
    values_max: Option<usize>,
    in_place_min: usize,
) -> Result<Option<Decoded<T>>, FrameError> {
    let Some(len) = announced_len(buf, frame_max)? else {
        return Ok(None);
    };
    let Some(body) = buf[LENGTH_PREFIX_LEN..].get(..len) else {
        return Ok(None);
    };
    // Always: a claim beyond the bytes left is refused before serde preallocates from it.
    let value_len = super::shape::walk(body, values_max.unwrap_or(usize::MAX))?;
    check_is_map(body)?;
    let (msg, in_place) = decode_body_in_place(body, value_len, in_place_min)?;
    Ok(Some((msg, LENGTH_PREFIX_LEN + len, in_place)))
}

/// Reads a stream of frames: one buffer, consumed from the front.
///
/// Call order: [`FrameReader::read_from`] once, then [`FrameReader::next_frame`] until it
/// returns `Ok(None)`, and again. Taking the frames after each read is what keeps the buffer
/// within its bound: it then never holds more than one partial frame (at most
/// [`LENGTH_PREFIX_LEN`] + `frame_max` bytes) plus one read of [`READ_CHUNK`] bytes.
///
/// Taking a frame only moves a start offset. The unconsumed tail is moved to the front only
/// before a read, and only when the consumed prefix has grown past half a [`READ_CHUNK`] or
/// the room left is too small to be worth a read (the buffer would otherwise have to grow) — never once per frame — so many small frames in one
/// read cost no copy per frame, and a large frame arriving over many reads is not moved again
/// and again.
#[derive(Debug)]
pub struct FrameReader {
    /// Initialized bytes; `buf[start..end]` is the unconsumed data, `buf[end..]` room to read
    /// into. Its length is the reader's memory, bounded by [`FrameReader::limit`].
    buf: Vec<u8>,
    start: usize,
    end: usize,
    frame_max: usize,
    /// Values a frame may hold, checked before decoding; `None`: no bound.
    values_max: Option<usize>,
    /// Where a large frame's buffer comes from, and goes back to once the frame is taken.
    pool: &'static BufferPool,
}

impl FrameReader {
    /// An empty reader refusing frame bodies over `frame_max`.
    pub fn new(frame_max: usize) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            frame_max,
            values_max: None,
            pool: buffer_pool(),
        }
    }

    /// Take large buffers from `pool` and give them back to it, instead of the process's
    /// [`buffer_pool`].
    pub fn with_pool(mut self, pool: &'static BufferPool) -> FrameReader {
        self.pool = pool;
        self
    }

    /// Refuse frames holding more than `max` MessagePack values, before decoding them: the
    /// daemon reads apps' frames with [`CLIENT_MSG_VALUES_MAX`](super::CLIENT_MSG_VALUES_MAX).
    pub fn with_values_max(mut self, max: usize) -> FrameReader {
        self.values_max = Some(max);
        self
    }

    /// One `read()` from `r` into the buffer, of at most [`READ_CHUNK`] bytes, or of what is
    /// missing of a larger frame whose length prefix is in (one read, not one per chunk, can
    /// then take what the socket holds of it). `Ok(0)` is the end of the stream. `WouldBlock` and `Interrupted` are returned as errors for the caller
    /// to handle (stop until readable, retry). If the buffer is already at its bound because
    /// the caller did not take the buffered frames, nothing is read and the error is of kind
    /// `OutOfMemory`: take the frames, then read again.
    pub fn read_from<R: Read>(&mut self, r: &mut R) -> io::Result<usize> {
        let want = READ_CHUNK
            .max(self.missing())
            .min(self.limit() - self.buffered());
        if want == 0 {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "frame buffer full: take the buffered frames before reading more",
            ));
        }
        let room = self.make_room(want);
        let n = r.read(&mut self.buf[self.end..self.end + room])?;
        // A reader claiming more than it was given would break the buffer's invariant.
        self.end += n.min(room);
        Ok(n)
    }

    /// The next whole frame, decoded. `Ok(None)` while the buffer holds no whole frame yet
    /// (incomplete is not an error). A bad frame is a [`FrameError`]; a length over
    /// `frame_max` is detected as soon as the 4-byte prefix is in. After an error the stream
    /// is out of sync and every later call returns the same error: report it and close.
    ///
    /// The arguments of a `call` or an `invoke` of at least [`IN_PLACE_MIN`] bytes are not
    /// copied out of the buffer: the buffer goes with them (a [`Payload`] of the message),
    /// and the reader goes on with a new one, into which what it holds of the next frames is
    /// copied (at most one read).
    pub fn next_frame<T: DeserializeOwned + 'static>(&mut self) -> Result<Option<T>, FrameError> {
        let Some((mut msg, used, in_place)) = decode_frame_bounded(
            &self.buf[self.start..self.end],
            self.frame_max,
            self.values_max,
            IN_PLACE_MIN,
        )?
        else {
            return Ok(None);
        };
        let body = self.start + LENGTH_PREFIX_LEN;
        self.start += used;
        if let Some(range) = in_place {
            let args = body + range.start..body + range.end;
            let rest = self.buf[self.start..self.end].to_vec();
            let whole = std::mem::replace(&mut self.buf, rest);
            self.end -= self.start;
            self.start = 0;
            super::hot::fill_args(&mut msg, Payload::in_place(whole, args));
        }
        if self.start == self.end {
            // Drained: start over at the front for free, no bytes to move.
            self.start = 0;
            self.end = 0;
            self.release_large();
        }
        Ok(Some(msg))
    }

    /// Bytes buffered and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Once drained after a large frame: its buffer goes back to the pool (or to the
    /// allocator), rather than stay with a connection that may stay idle.
    fn release_large(&mut self) {
        debug_assert_eq!(self.start, self.end);
        if self.buf.len() > 2 * READ_CHUNK {
            self.pool.give(std::mem::take(&mut self.buf));
        }
    }

    /// Bytes still to come of the frame at the front, once its length prefix is in (0 before,
    /// and for a prefix over the maximum, which [`FrameReader::next_frame`] reports).
    fn missing(&self) -> usize {
        let pending = &self.buf[self.start..self.end];
        match announced_len(pending, self.frame_max) {
            Ok(Some(len)) => (LENGTH_PREFIX_LEN + len).saturating_sub(pending.len()),
            _ => 0,
        }
    }

    /// The most bytes the buffer ever holds: one partial frame of the largest size, plus one
    /// read.
    fn limit(&self) -> usize {
        LENGTH_PREFIX_LEN
            .saturating_add(self.frame_max)
            .saturating_add(READ_CHUNK)
    }

    /// Makes room after `end` for a read of up to `want` bytes and returns the room to read
    /// into (at least [`ROOM_MIN`], or `want` if less, or what the frame at the front still
    /// lacks if that fits). Moves the unconsumed bytes to the front only when the consumed
    /// prefix is large or the room too small, and grows only after that. `want` never takes
    /// the buffered bytes past [`FrameReader::limit`].
    fn make_room(&mut self, want: usize) -> usize {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.release_large();
        }
        let enough = want.min(ROOM_MIN);
        if self.start > 0 && (self.start >= COMPACT_AT || self.buf.len() - self.end < enough) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // Room for the rest of the frame at the front is enough to read it: a buffer taken
        // at the whole frame's size is not grown to read its last bytes, which would copy
        // the frame into a second large buffer (allocated: the pool's is this one).
        let rest = self.missing();
        let rest_fits = rest > 0 && self.buf.len() - self.end >= rest;
        if self.buf.len() - self.end < enough && !rest_fits {
            // Grow to the whole announced frame (when its prefix is in: compacted above, it
            // is at the front) as soon as that is at most `GROWTH_MAX` times what is in, so
            // a large frame is reallocated a few times, not once per read, and the reads
            // that follow go straight into its final place. The bound keeps a peer that
            // announces a large frame and sends little from making us hold memory it never
            // fills. A new buffer comes zeroed from the allocator (`calloc`), not written
            // over a second time.
            //
            // A pooled buffer that holds the whole frame is memory the process holds
            // already: it is taken at once, past the growth bound (what a reader can make
            // the process hold beyond the old bound is then at most the pool's). It is not
            // zeroed: the reads write what is read.
            let frame_len = announced_len(&self.buf[..self.end], self.frame_max)
                .ok()
                .flatten()
                .map_or(0, |len| LENGTH_PREFIX_LEN + len);
            let len = frame_len
                .min(self.end.saturating_mul(GROWTH_MAX))
                .max(self.end + want.min(READ_CHUNK))
                .min(self.limit());
            let whole = frame_len.max(len).min(self.limit());
            let mut grown = self.pool.take_filled(whole).unwrap_or_else(|| {
                // Rounded up, so that once given back it serves the other buffers of a
                // message of this size (`pooled_capacity`).
                let mut fresh = vec![0u8; pooled_capacity(len)];
                fresh.truncate(len);
                fresh
            });
            grown[..self.end].copy_from_slice(&self.buf[..self.end]);
            let old = std::mem::replace(&mut self.buf, grown);
            self.pool.give(old);
        }
        debug_assert!(self.buf.len() <= self.limit());
        (self.buf.len() - self.end).min(want)
    }
}

impl Drop for FrameReader {
    /// A closed connection's large buffer goes back to the pool.
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// The body length announced by the prefix at the start of `buf`, once the prefix is in.
fn announced_len(buf: &[u8], frame_max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX_LEN>() else {
        return Ok(None);
    };
    // A u32 always fits in usize on the platforms with Unix sockets we support (>= 32 bit).
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > frame_max {
        return Err(FrameError::TooLarge {
            len,
            max: frame_max,
        });
    }
    Ok(Some(len))
}

/// Every message is a map (`docs/ipc-protocol.md` §3). serde would also read an internally
/// tagged message from an array whose first element is the `op`; that is refused here.
fn check_is_map(body: &[u8]) -> Result<(), FrameError> {
    match body.first() {
        // Empty or the reserved byte: the decoder names the problem.
        None | Some(0x80..=0x8f | 0xde | 0xdf | 0xc1) => Ok(()),
        Some(&marker) => Err(FrameError::Invalid(format!(
            "a message is a MessagePack map, not {}",
            marker_kind(marker)
        ))),
    }
}

/// What a MessagePack value starting with `marker` is, for an error message.
fn marker_kind(marker: u8) -> &'static str {
    match marker {
        0x90..=0x9f | 0xdc | 0xdd => "an array",
        0xa0..=0xbf | 0xd9..=0xdb => "a string",
        0xc4..=0xc6 => "a bin",
        0xc0 => "nil",
        0xc2 | 0xc3 => "a boolean",
        0xca | 0xcb => "a float",
        0xc7..=0xc9 | 0xd4..=0xd8 => "an ext",
        _ => "an integer",
    }
}

/// Decodes exactly one message from a whole frame body, whose first value is `value_len`
/// bytes long (from [`walk`](super::shape::walk)).
///
/// The decoder reads from the slice, so strings and `bin` values are borrowed from it: serde
/// buffers an internally tagged message's map (its `Content`) before it knows the variant,
/// and borrowing keeps that buffer to references, so a large `args` or `data` is copied once,
/// from the frame into the message, not also into the buffer.
///
/// The messages of a call are read by hand first (see [`hot`](super::hot)); serde reads what
/// that path does not fully understand, and so decides every error.
fn decode_body<T: DeserializeOwned + 'static>(
    body: &[u8],
    value_len: Option<usize>,
) -> Result<T, FrameError> {
    decode_body_in_place(body, value_len, usize::MAX).map(|(msg, in_place)| {
        debug_assert!(in_place.is_none(), "nothing is left out below usize::MAX");
        msg
    })
}

/// As [`decode_body`], except that the hand decoder leaves out the arguments of a `call` or
/// an `invoke` of at least `in_place_min` bytes and says where they are in `body`, for the
/// caller to put them in ([`hot::fill_args`](super::hot::fill_args)).
fn decode_body_in_place<T: DeserializeOwned + 'static>(
    body: &[u8],
    value_len: Option<usize>,
    in_place_min: usize,
) -> Result<(T, Option<Range<usize>>), FrameError> {
    if value_len == Some(body.len()) {
        if let Some(decoded) = super::hot::decode_in_place::<T>(body, in_place_min) {
            return Ok(decoded);
        }
    }
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    // rmp-serde counts down from the limit and fails when it reaches zero.
    de.set_max_depth(NESTING_MAX + 1);
    let msg = T::deserialize(&mut de).map_err(frame_error_of)?;
    // A value decoded whole is a whole value to the walk too; `None` would mean they differ.
    let used = value_len.unwrap_or(usize::MAX);
    match body.len().checked_sub(used) {
        Some(0) => Ok((msg, None)),
        Some(extra) => Err(FrameError::TrailingBytes(extra)),
        None => Err(FrameError::Malformed("decoder read past the frame".into())),
    }
}

/// Sorts rmp-serde's errors into broken MessagePack vs. a well-formed value that is not a
/// message.
fn frame_error_of(err: rmp_serde::decode::Error) -> FrameError {
    use rmp_serde::decode::Error as E;
    match err {
        E::DepthLimitExceeded => FrameError::TooDeep { max: NESTING_MAX },
        E::InvalidMarkerRead(e) | E::InvalidDataRead(e) => {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                FrameError::Malformed("value truncated by the end of the frame".into())
            } else {
                FrameError::Malformed(e.to_string())
            }
        }
        E::TypeMismatch(rmp::Marker::Reserved) => {
            FrameError::Malformed("reserved marker byte 0xc1".into())
        }
        E::Utf8Error(e) => FrameError::Malformed(format!("string is not UTF-8: {e}")),
        other => FrameError::Invalid(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
