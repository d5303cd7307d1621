//! A bounded pool of large byte buffers, reused from one message to the next.
//!
//! A 16 MiB buffer from the allocator is fresh memory: glibc maps it, the kernel faults it in
//! and clears it page by page on first touch, and `free` unmaps it again. A large message
//! takes several such buffers on its way (the frame reader's, the decoded payload, the
//! encoded frame or envelope), so without reuse each one costs its size again in page faults
//! and page clearing. The pool keeps buffers of at least [`POOLED_CAPACITY_MIN`] bytes that
//! a message is done with and hands them to the next large frame, payload or envelope.
//!
//! Bounded: it holds at most its `max` bytes of capacity (the daemon's
//! `limits.local_buffer_pool_max`; [`CLIENT_POOL_MAX_DEFAULT`] in an app), preferring large
//! buffers to small ones when full, since a large buffer serves any request. A buffer in use
//! is not the pool's: the bounds on frames, outputs and connections count it as before.
//!
//! What a kept buffer holds is stale: [`BufferPool::take`] answers it emptied, so nothing of
//! an earlier message is ever read as part of a new one; only the frame reader, which must
//! read into initialised bytes, takes one as it is ([`BufferPool::take_filled`]) and reads
//! only what it wrote.
//!
//! Sizes: the buffers of one message differ by a few bytes (the frame, the payload, the
//! envelope, the frame to the serving app), so a buffer allocated here for reuse is rounded
//! up ([`pooled_capacity`]) to serve all of them; and a kept buffer serves a request of at
//! least half its capacity only, so a small message never holds a large buffer.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Buffers of a smaller capacity are neither kept nor handed out: below this, the allocator
/// serves requests from its heap, which it reuses by itself.
pub const POOLED_CAPACITY_MIN: usize = 1024 * 1024;

/// The bound of an app's pool (the process's [`buffer_pool`]), until it calls
/// [`BufferPool::set_max`]: two buffers of the largest default frame, what one large call or
/// invocation needs at a time (the reader's buffer and the decoded payload, or the encoded
/// frame). The largest is the frame reader's, of a whole frame and one read, at its pooled
/// capacity ([`pooled_capacity`]): 18 MiB, so 36 MiB in all.
pub const CLIENT_POOL_MAX_DEFAULT: usize = 2 * pooled_capacity(
    super::frame::LENGTH_PREFIX_LEN + super::FRAME_MAX_DEFAULT + super::frame::READ_CHUNK,
);

/// The process's pool, used by [`FrameReader`](super::FrameReader), the frame and value
/// encoders and the hand-written decoders of payloads. A daemon sets its bound from its
/// configuration; an app keeps [`CLIENT_POOL_MAX_DEFAULT`] or sets its own.
pub fn buffer_pool() -> &'static BufferPool {
    static POOL: BufferPool = BufferPool::new(CLIENT_POOL_MAX_DEFAULT);
    &POOL
}

/// Gives `buf` to the process's pool (see [`BufferPool::give`]): for a large buffer a message
/// is done with. A small one is simply dropped.
pub fn recycle(buf: Vec<u8>) {
    buffer_pool().give(buf);
}

/// An empty buffer with room for `capacity` bytes: from the process's pool when that is
/// large enough to be pooled and a buffer fits, else from the allocator (rounded up by
/// [`pooled_capacity`], so that it serves the other buffers of its message once it is
/// given back).
pub fn pooled_vec(capacity: usize) -> Vec<u8> {
    buffer_pool()
        .take(capacity)
        .unwrap_or_else(|| Vec::with_capacity(pooled_capacity(capacity)))
}

/// `bytes` copied into a buffer of [`pooled_vec`].
pub fn pooled_copy(bytes: &[u8]) -> Vec<u8> {
    let mut out = pooled_vec(bytes.len());
    out.extend_from_slice(bytes);
    out
}

/// The capacity to allocate for a buffer of `len` bytes that may be pooled later: `len`
/// itself below [`POOLED_CAPACITY_MIN`], else `len` rounded up to a sixteenth of its power of
/// two (16 MiB - 4 KiB and 16 MiB + 100 bytes become 16 MiB and 18 MiB): less than 1/8 more.
pub const fn pooled_capacity(len: usize) -> usize {
    if len < POOLED_CAPACITY_MIN {
        return len;
    }
    // `Option::and_then` with a closure is not `const`.
    match len.checked_next_power_of_two() {
        Some(power) => match len.checked_next_multiple_of(power / 16) {
            Some(rounded) => rounded,
            None => len,
        },
        None => len,
    }
}

/// Large byte buffers kept for reuse, at most `max` bytes of capacity in all.
#[derive(Debug)]
pub struct BufferPool {
    shelf: Mutex<Shelf>,
}

#[derive(Debug)]
struct Shelf {
    /// Kept buffers, each of a capacity >= [`POOLED_CAPACITY_MIN`].
    bufs: Vec<Vec<u8>>,
    /// The sum of their capacities, <= `max`.
    bytes: usize,
    max: usize,
    stats: PoolStats,
}

/// What a pool did so far and holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Requests answered with a kept buffer.
    pub reused: u64,
    /// Large requests the pool had no buffer for (the caller allocated).
    pub missed: u64,
    /// Buffers given back and kept.
    pub kept: u64,
    /// Large buffers given back or kept and then dropped: over the bound, or evicted for a
    /// larger one.
    pub dropped: u64,
    /// Buffers held now.
    pub buffers: usize,
    /// Their capacity in all.
    pub bytes: usize,
}

impl BufferPool {
    /// An empty pool keeping at most `max` bytes (0: keeps nothing).
    pub const fn new(max: usize) -> BufferPool {
        BufferPool {
            shelf: Mutex::new(Shelf {
                bufs: Vec::new(),
                bytes: 0,
                max,
                stats: PoolStats {
                    reused: 0,
                    missed: 0,
                    kept: 0,
                    dropped: 0,
                    buffers: 0,
                    bytes: 0,
                },
            }),
        }
    }

    /// The bound in force.
    pub fn max(&self) -> usize {
        self.shelf().max
    }

    /// A new bound, in force at once: buffers past it are dropped, the smallest first.
    pub fn set_max(&self, max: usize) {
        let mut shelf = self.shelf();
        shelf.max = max;
        while shelf.bytes > shelf.max {
            shelf.evict_smallest();
        }
    }

    /// An emptied buffer (length 0) of a capacity of at least `min` bytes and at most twice
    /// that, the smallest kept one that fits; `None` when `min` is below
    /// [`POOLED_CAPACITY_MIN`] or no kept buffer fits.
    pub fn take(&self, min: usize) -> Option<Vec<u8>> {
        self.take_within(min, usize::MAX)
    }

    /// [`BufferPool::take`], of a capacity of at most `max` bytes too: for a caller that
    /// is charged for spare capacity (the transport's reassembly).
    pub fn take_within(&self, min: usize, max: usize) -> Option<Vec<u8>> {
        let mut buf = self.take_as_is(min, max)?;
        buf.clear();
        Some(buf)
    }

    /// A buffer of exactly `len` initialised bytes, as [`BufferPool::take`] chooses it, for a
    /// reader to read into: the bytes are what its last user left there (zero past that),
    /// so a reader of it must read only what it wrote itself. Unlike zeroing, this writes
    /// none of the bytes a buffer already had.
    pub fn take_filled(&self, len: usize) -> Option<Vec<u8>> {
        let mut buf = self.take_as_is(len, usize::MAX)?;
        buf.resize(len, 0);
        Some(buf)
    }

    fn take_as_is(&self, min: usize, max: usize) -> Option<Vec<u8>> {
        if min < POOLED_CAPACITY_MIN {
            return None;
        }
        let mut shelf = self.shelf();
        let best = shelf
            .bufs
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                let cap = b.capacity();
                cap >= min && cap / 2 <= min && cap <= max
            })
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let Some(i) = best else {
            shelf.stats.missed += 1;
            return None;
        };
        let buf = shelf.bufs.swap_remove(i);
        shelf.bytes -= buf.capacity();
        shelf.stats.reused += 1;
        Some(buf)
    }

    /// Keeps `buf` for a later [`BufferPool::take`] if it is large enough to be worth it and
    /// fits the bound, making room by dropping smaller kept buffers; otherwise drops it.
    pub fn give(&self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap < POOLED_CAPACITY_MIN {
            return;
        }
        let mut shelf = self.shelf();
        if cap > shelf.max {
            shelf.stats.dropped += 1;
            return;
        }
        while shelf.bytes + cap > shelf.max {
            let smallest = shelf.bufs.iter().map(Vec::capacity).min();
            if smallest.is_some_and(|s| s < cap) {
                shelf.evict_smallest();
            } else {
                // Everything kept is at least as large: keep those.
                shelf.stats.dropped += 1;
                return;
            }
        }
        shelf.bytes += cap;
        shelf.stats.kept += 1;
        shelf.bufs.push(buf);
        debug_assert!(shelf.bytes <= shelf.max);
    }

    /// Drops every kept buffer.
    pub fn clear(&self) {
        let mut shelf = self.shelf();
        shelf.bufs.clear();
        shelf.bytes = 0;
    }

    /// Counters and what is held now.
    pub fn stats(&self) -> PoolStats {
        let shelf = self.shelf();
        PoolStats {
            buffers: shelf.bufs.len(),
            bytes: shelf.bytes,
            ..shelf.stats
        }
    }

    /// The shelf; a panic elsewhere while it was held left it consistent (every change is
    /// one step), so a poisoned lock is still used.
    fn shelf(&self) -> MutexGuard<'_, Shelf> {
        self.shelf.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shelf {
    fn evict_smallest(&mut self) {
        let smallest = self
            .bufs
            .iter()
            .enumerate()
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = smallest {
            let buf = self.bufs.swap_remove(i);
            self.bytes -= buf.capacity();
            self.stats.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests;
