//! The anti-replay window of RFC 6479: a ring of bit blocks that remembers
//! which of the last `REPLAY_WINDOW` counters were received.
//!
//! Counters of a session's datagrams are the AEAD nonces, so they are
//! authentic once the datagram decrypts; the window drops a replayed one and
//! anything too old to tell. It sits under the channel's own duplicate
//! detection, which works on sequence counters the sender may reuse when it
//! retransmits: the window works on the per-datagram nonce, never reused.

/// Bits per block.
const BLOCK_BITS: u64 = 64;
/// Blocks in the ring; one block is always being recycled, so the window
/// proper is `(BLOCKS - 1) * BLOCK_BITS` counters.
const BLOCKS: usize = 33;
/// Counters behind the highest one that are still told apart (RFC 6479's
/// window size). Older ones are dropped.
pub const REPLAY_WINDOW: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;
const _: () = assert!(REPLAY_WINDOW >= 1024);

/// Which recent counters were seen.
#[derive(Debug, Clone)]
pub(crate) struct ReplayWindow {
    /// The highest counter accepted, plus one (zero: none yet).
    next: u64,
    blocks: [u64; BLOCKS],
}

impl ReplayWindow {
    pub(crate) fn new() -> Self {
        ReplayWindow {
            next: 0,
            blocks: [0; BLOCKS],
        }
    }

    /// Would `counter` be accepted? Cheap; call before decrypting.
    pub(crate) fn check(&self, counter: u64) -> bool {
        if counter >= self.next {
            return true;
        }
        if self.next - counter > REPLAY_WINDOW {
            return false;
        }
        let (block, bit) = Self::position(counter);
        self.blocks[block] & (1 << bit) == 0
    }

    /// Record an authentic `counter`. False (and nothing changes) when it
    /// is a replay or too old.
    pub(crate) fn accept(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.next {
            // Clear the blocks the window slides over (at most all of them).
            let first = if self.next == 0 {
                0
            } else {
                (self.next - 1) / BLOCK_BITS + 1
            };
            let last = counter / BLOCK_BITS;
            let span = last.saturating_sub(first).saturating_add(1);
            if last >= first {
                for i in 0..span.min(BLOCKS as u64) {
                    self.blocks[((first + i) % BLOCKS as u64) as usize] = 0;
                }
            }
            self.next = counter + 1;
        }
        let (block, bit) = Self::position(counter);
        self.blocks[block] |= 1 << bit;
        true
    }

    fn position(counter: u64) -> (usize, u64) {
        (
            ((counter / BLOCK_BITS) % BLOCKS as u64) as usize,
            counter % BLOCK_BITS,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn replays_are_refused_and_reordering_within_the_window_is_not() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(0));
        assert!(!w.accept(0));
        assert!(w.accept(5));
        assert!(w.accept(3));
        assert!(!w.accept(3));
        assert!(!w.accept(5));
        assert!(w.accept(4));
        assert!(w.accept(5000));
        assert!(!w.accept(5000));
        // Within the window behind the highest: accepted once.
        assert!(w.accept(5000 - REPLAY_WINDOW + 1));
        assert!(!w.accept(5000 - REPLAY_WINDOW + 1));
        // Too old to tell: refused.
        assert!(!w.accept(5000 - REPLAY_WINDOW - 1));
        assert!(!w.accept(4));
    }

    /// Against a model that remembers everything: the window accepts a
    /// counter exactly when it is new and not older than the window.
    #[test]
    fn agrees_with_a_complete_model() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..20 {
            let mut w = ReplayWindow::new();
            let mut seen = BTreeSet::new();
            let mut highest: Option<u64> = None;
            for _ in 0..20_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let base = highest.unwrap_or(0);
                // Mostly near the top, sometimes far ahead or far behind.
                let c = match state % 16 {
                    0 => base + (state >> 8) % 5000,
                    1 => base.saturating_sub((state >> 8) % 4000),
                    _ => (base + (state >> 8) % 64).saturating_sub(32),
                };
                let fresh =
                    !seen.contains(&c) && highest.is_none_or(|h| c > h || h - c < REPLAY_WINDOW);
                assert_eq!(w.accept(c), fresh, "round {round} counter {c}");
                if fresh {
                    seen.insert(c);
                    highest = Some(highest.map_or(c, |h| h.max(c)));
                }
            }
        }
    }
}
