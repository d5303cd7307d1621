//! A connection's output: frames queued for an app and not yet written.
//!
//! Written from the front, appended at the back. The written prefix is dropped (the rest
//! moved to the front) only before an append, and only once it is at least half the
//! buffer, so a byte is moved at most once for each byte written before it: a 16 MiB
//! frame that leaves in pieces of what the socket takes is not moved again after each
//! piece. A large buffer comes from the process's pool when the output is empty and goes
//! back to it once everything is written.

use rpcd_client::ipc::{buffer_pool, pooled_capacity, BufferPool};

/// Frames queued for one connection: `buf[pos..]` is still to be written.
#[derive(Debug)]
pub(super) struct Output {
    buf: Vec<u8>,
    pos: usize,
    pool: &'static BufferPool,
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
            pool,
        }
    }

    /// Bytes queued and not yet written.
    pub(super) fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Everything queued has been written.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What is still to be written.
    pub(super) fn unwritten(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// `n` bytes of [`Output::unwritten`] were written.
    pub(super) fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
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
    /// it back to its length before the append). An empty output takes a pooled buffer for
    /// a large frame; a written prefix of at least half the buffer is dropped first.
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
            self.pos = 0;
        }
        &mut self.buf
    }

    /// Gives a large buffer back to the pool, whatever it holds (the connection is gone).
    pub(super) fn discard(&mut self) {
        self.pos = 0;
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn private_pool(max: usize) -> &'static BufferPool {
        Box::leak(Box::new(BufferPool::new(max)))
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
        let (mut written, mut moved, mut got) = (0usize, 0usize, Vec::new());
        for i in 0u32.. {
            if out.is_empty() {
                break;
            }
            let n = out.len().min(200_000);
            got.extend_from_slice(&out.unwritten()[..n]);
            out.advance(n);
            written += n;
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
        assert!(got == expected, "the frames in order");
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
        assert_eq!(out.unwritten(), b"0123456789");
        out.discard();
        assert_eq!(pool.stats().bytes, 4 * MIB);
    }
}
