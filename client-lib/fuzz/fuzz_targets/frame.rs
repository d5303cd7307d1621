//! Socket frame decoder: `decode_frame` is total on arbitrary bytes (what an
//! app sends to the daemon, and what a daemon sends to an app), and coherent:
//! - `Ok(None)` only while the buffer is shorter than the frame it announces;
//! - `Ok(Some((msg, n)))` consumes exactly the prefix plus the announced body;
//! - a decoded message re-encodes to a frame that decodes to the same message
//!   (values, not bytes: MessagePack allows several encodings of one value);
//! - `FrameReader`, fed the same bytes in two reads split anywhere, yields the
//!   same frames as `decode_frame` applied in turn, then the same error or the
//!   same incomplete tail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcd_client::ipc::{
    decode_frame, encode_frame, ClientMsg, DaemonMsg, FrameError, FrameReader, FRAME_MAX_DEFAULT,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn check<T>(data: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let announced = data
        .first_chunk::<4>()
        .map(|p| 4 + u32::from_be_bytes(*p) as usize);
    match decode_frame::<T>(data, FRAME_MAX_DEFAULT) {
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
    T: DeserializeOwned + PartialEq + std::fmt::Debug,
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
