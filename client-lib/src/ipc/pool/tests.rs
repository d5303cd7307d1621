//! Tests of [`BufferPool`]: the bound, reuse, what is refused, and that nothing stale is
//! handed out.

use super::*;

const MIB: usize = 1024 * 1024;

/// A buffer of exactly `cap` bytes of capacity, full of `byte`.
fn buf(cap: usize, byte: u8) -> Vec<u8> {
    let mut b = Vec::with_capacity(cap);
    b.resize(cap, byte);
    assert_eq!(b.capacity(), cap);
    b
}

#[test]
fn a_buffer_given_back_is_the_one_taken_next() {
    let pool = BufferPool::new(8 * MIB);
    let b = buf(2 * MIB, 7);
    let ptr = b.as_ptr();
    pool.give(b);
    let again = pool.take(MIB + 1).expect("a kept buffer fits");
    assert_eq!(again.as_ptr(), ptr, "the same allocation");
    assert!(
        again.is_empty(),
        "handed out emptied: nothing stale to read"
    );
    assert_eq!(again.capacity(), 2 * MIB);
    let s = pool.stats();
    assert_eq!((s.kept, s.reused, s.buffers, s.bytes), (1, 1, 0, 0));
    // Nothing left for the next one.
    assert_eq!(pool.take(MIB), None);
    assert_eq!(pool.stats().missed, 1);
}

#[test]
fn the_smallest_buffer_that_fits_is_taken() {
    let pool = BufferPool::new(64 * MIB);
    for cap in [16 * MIB, 2 * MIB, 4 * MIB, 3 * MIB] {
        pool.give(buf(cap, 0));
    }
    assert_eq!(pool.take(3 * MIB).map(|b| b.capacity()), Some(3 * MIB));
    assert_eq!(pool.take(3 * MIB).map(|b| b.capacity()), Some(4 * MIB));
    assert_eq!(pool.take(MIB).map(|b| b.capacity()), Some(2 * MIB));
    assert_eq!(pool.take(17 * MIB), None, "none is large enough");
    assert_eq!(pool.take(16 * MIB).map(|b| b.capacity()), Some(16 * MIB));
}

#[test]
fn a_buffer_more_than_twice_the_request_is_kept_for_a_larger_one() {
    let pool = BufferPool::new(64 * MIB);
    pool.give(buf(16 * MIB, 0));
    assert_eq!(
        pool.take(2 * MIB),
        None,
        "a 2 MiB message does not hold 16 MiB"
    );
    assert_eq!(pool.take(8 * MIB).map(|b| b.capacity()), Some(16 * MIB));
}

#[test]
fn a_bounded_take_leaves_a_buffer_above_its_bound() {
    let pool = BufferPool::new(64 * MIB);
    pool.give(buf(3 * MIB, 0));
    assert_eq!(pool.take_within(2 * MIB, 3 * MIB - 1), None);
    assert_eq!(pool.stats().buffers, 1);
    assert_eq!(
        pool.take_within(2 * MIB, 3 * MIB).map(|b| b.capacity()),
        Some(3 * MIB)
    );
}

#[test]
fn a_filled_buffer_keeps_what_it_held_and_zeroes_only_new_bytes() {
    let pool = BufferPool::new(64 * MIB);
    let mut b = Vec::with_capacity(4 * MIB);
    b.resize(3 * MIB, 0xab);
    pool.give(b);
    let b = pool.take_filled(3 * MIB + 10).expect("fits");
    assert_eq!(b.len(), 3 * MIB + 10);
    assert!(b[..3 * MIB].iter().all(|&x| x == 0xab), "not written over");
    assert!(b[3 * MIB..].iter().all(|&x| x == 0));
    pool.give(b);
    assert_eq!(pool.take_filled(2 * MIB).map(|b| b.len()), Some(2 * MIB));
}

#[test]
fn pooled_capacities_round_the_buffers_of_one_message_to_one_size() {
    assert_eq!(pooled_capacity(100), 100);
    assert_eq!(
        pooled_capacity(POOLED_CAPACITY_MIN - 1),
        POOLED_CAPACITY_MIN - 1
    );
    // A 16 MiB - 4 KiB argument, its frame, envelope and frame to the serving app.
    for len in [
        16 * MIB - 4096,
        16 * MIB - 4096 + 60,
        16 * MIB - 4096 + 150,
        16 * MIB,
    ] {
        assert_eq!(pooled_capacity(len), 16 * MIB, "{len}");
    }
    assert_eq!(pooled_capacity(16 * MIB + 1), 18 * MIB);
    for len in (MIB..40 * MIB).step_by(12_345) {
        let cap = pooled_capacity(len);
        assert!(cap >= len && cap - len <= len / 8, "{len} -> {cap}");
    }
    assert_eq!(pooled_capacity(usize::MAX), usize::MAX);
}

#[test]
fn small_buffers_and_small_requests_bypass_the_pool() {
    let pool = BufferPool::new(64 * MIB);
    pool.give(buf(POOLED_CAPACITY_MIN - 1, 0));
    assert_eq!(pool.stats().buffers, 0, "too small to be worth keeping");
    pool.give(buf(2 * MIB, 0));
    assert_eq!(
        pool.take(POOLED_CAPACITY_MIN - 1),
        None,
        "the allocator serves it"
    );
    assert_eq!(pool.stats().buffers, 1);
    assert!(pool.take(POOLED_CAPACITY_MIN).is_some());
}

#[test]
fn the_bound_is_never_passed_and_larger_buffers_are_preferred() {
    let pool = BufferPool::new(10 * MIB);
    for _ in 0..4 {
        pool.give(buf(2 * MIB, 0));
    }
    assert_eq!(pool.stats().bytes, 8 * MIB);
    // A fifth fits exactly; a sixth does not, and evicts nothing of its own size.
    pool.give(buf(2 * MIB, 0));
    pool.give(buf(2 * MIB, 0));
    let s = pool.stats();
    assert_eq!((s.buffers, s.bytes, s.dropped), (5, 10 * MIB, 1));
    // A larger one evicts smaller ones until it fits.
    pool.give(buf(5 * MIB, 0));
    let s = pool.stats();
    assert_eq!((s.buffers, s.bytes), (3, 9 * MIB));
    assert!(s.bytes <= pool.max());
    // One larger than the whole bound is dropped, and evicts nothing.
    pool.give(buf(11 * MIB, 0));
    assert_eq!(pool.stats().bytes, 9 * MIB);
}

#[test]
fn lowering_the_bound_drops_buffers_at_once_and_zero_keeps_nothing() {
    let pool = BufferPool::new(64 * MIB);
    for cap in [2 * MIB, 16 * MIB, 4 * MIB] {
        pool.give(buf(cap, 0));
    }
    pool.set_max(17 * MIB);
    let s = pool.stats();
    assert_eq!((s.buffers, s.bytes), (1, 16 * MIB), "the smallest go first");
    pool.set_max(0);
    assert_eq!(pool.stats().bytes, 0);
    pool.give(buf(2 * MIB, 0));
    assert_eq!(pool.stats().buffers, 0);
    assert_eq!(pool.take(MIB), None);
}

#[test]
fn a_pooled_copy_holds_exactly_the_bytes_copied() {
    // A long message's buffer, then a shorter one copied into it.
    let long = vec![0xee; 3 * MIB];
    let first = pooled_copy(&long);
    assert_eq!(first, long);
    recycle(first);
    let short = vec![0x11; 2 * MIB];
    let second = pooled_copy(&short);
    // The process's pool is shared with the tests running at once, so whether this is the
    // same allocation is not asserted (`a_buffer_given_back_is_the_one_taken_next` checks
    // reuse on a pool of its own); what it holds is.
    assert_eq!(second, short, "no byte of the longer message is left in it");
    recycle(second);
}

#[test]
fn the_default_bound_keeps_two_buffers_of_the_largest_default_frame() {
    // The frame reader's buffer for a frame of the default maximum: the whole frame and one
    // read, allocated at its pooled capacity (see `FrameReader::make_room`).
    let largest = pooled_capacity(
        crate::ipc::LENGTH_PREFIX_LEN + crate::ipc::FRAME_MAX_DEFAULT + crate::ipc::READ_CHUNK,
    );
    assert_eq!(largest, 18 * MIB);
    let pool = BufferPool::new(CLIENT_POOL_MAX_DEFAULT);
    // Capacity only: nothing is touched, so the test costs no memory.
    pool.give(Vec::with_capacity(largest));
    pool.give(Vec::with_capacity(largest));
    let stats = pool.stats();
    assert_eq!((stats.buffers, stats.bytes), (2, 2 * largest), "{stats:?}");
    // A decoded payload of a maximal argument beside the reader's buffer fits too.
    assert!(pooled_capacity(crate::ipc::FRAME_MAX_DEFAULT) <= largest);
}
