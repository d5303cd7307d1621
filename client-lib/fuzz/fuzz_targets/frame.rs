//! Socket frame decoder: `decode_frame` is total on arbitrary bytes (what an
//! app sends to the daemon, and what a daemon sends to an app), and coherent:
//! - `Ok(None)` only while the buffer is shorter than the frame it announces;
//! - `Ok(Some((msg, n)))` consumes exactly the prefix plus the announced body;
//! - a decoded message re-encodes to a frame that decodes to the same message
//!   (values, not bytes: MessagePack allows several encodings of one value);
//! - `FrameReader`, fed the same bytes in two reads split anywhere, yields the
//!   same frames as `decode_frame` applied in turn, then the same error or the
//!   same incomplete tail;
//! - bounded memory: the most decoding ever holds at once is at most
//!   `ALLOC_PER_BYTE` times the input plus `ALLOC_SLACK`.
//!
//! `ALLOC_SLACK` is what today's decoder guarantees, not what the design asks
//! ("no 30x blow-up"): serde preallocates up to 1 MiB for each array or map
//! from its claimed length, and the internally tagged messages buffer every
//! level, so 167 bytes of nested arrays that each claim 2^32 elements hold
//! 32 MiB at once (seed `regression-nested-claims-32mib`). Tighten the slack
//! to a few KiB once the decoder charges claims against the input's length.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use rpcd_client::ipc::{
    decode_frame, encode_frame, ClientMsg, DaemonMsg, FrameError, FrameReader, FRAME_MAX_DEFAULT,
    NESTING_MAX,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes a decoded value may hold per input byte: a one-byte MessagePack
/// element can become a 24-byte `String`/`Vec` header in a `Vec`, plus its
/// own smallest heap block.
const ALLOC_PER_BYTE: usize = 64;
/// Fixed slack: serde caps a preallocation from a claimed length at 1 MiB,
/// once per nesting level (see the module doc).
const ALLOC_SLACK: usize = (NESTING_MAX + 2) * 1024 * 1024 + 64 * 1024;

/// The system allocator, counting the bytes live and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Decode `data` and check the memory bound on the way.
fn decode_bounded<T: DeserializeOwned + 'static>(data: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = decode_frame::<T>(data, FRAME_MAX_DEFAULT);
    let used = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let bound = ALLOC_PER_BYTE * data.len() + ALLOC_SLACK;
    assert!(
        used <= bound,
        "decoding {} bytes held {used} bytes at once (bound {bound})",
        data.len()
    );
    r
}

fn check<T>(data: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug + 'static,
{
    let announced = data
        .first_chunk::<4>()
        .map(|p| 4 + u32::from_be_bytes(*p) as usize);
    match decode_bounded::<T>(data) {
        Ok(None) => assert!(announced.is_none_or(|n| data.len() < n)),
        Ok(Some((msg, consumed))) => {
            assert_eq!(Some(consumed), announced);
            assert!(consumed <= data.len());
            let frame = encode_frame(&msg);
            let again = decode_frame::<T>(&frame, FRAME_MAX_DEFAULT);
            assert_eq!(again, Ok(Some((msg, frame.len()))));
        }
        Err(FrameError::TooLarge { len, max }) => {
            assert_eq!(max, FRAME_MAX_DEFAULT);
            assert_eq!(Some(4 + len), announced);
            assert!(len > max);
        }
        Err(_) => assert!(announced.is_some_and(|n| data.len() >= n)),
    }
}

fn check_reader<T>(data: &[u8])
where
    T: DeserializeOwned + PartialEq + std::fmt::Debug + 'static,
{
    let mut expected = Vec::new();
    let mut rest = data;
    let end = loop {
        match decode_frame::<T>(rest, FRAME_MAX_DEFAULT) {
            Ok(Some((msg, used))) => {
                expected.push(msg);
                rest = &rest[used..];
            }
            Ok(None) => break None,
            Err(err) => break Some(err),
        }
    };
    // The first byte picks the split, so the fuzzer explores every boundary.
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut reader = FrameReader::new(FRAME_MAX_DEFAULT);
    let mut got = Vec::new();
    let mut failed = None;
    'feed: for mut piece in [&data[..split], &data[split..]] {
        while !piece.is_empty() {
            reader
                .read_from(&mut piece)
                .expect("reading a slice never fails");
            loop {
                match reader.next_frame::<T>() {
                    Ok(Some(msg)) => got.push(msg),
                    Ok(None) => break,
                    Err(err) => {
                        failed = Some(err);
                        break 'feed;
                    }
                }
            }
        }
    }
    assert_eq!(got, expected);
    assert_eq!(failed, end);
    if end.is_none() {
        assert_eq!(reader.buffered(), rest.len());
    }
}

fuzz_target!(|data: &[u8]| {
    check::<ClientMsg>(data);
    check::<DaemonMsg>(data);
    check_reader::<ClientMsg>(data);
    check_reader::<DaemonMsg>(data);
});
