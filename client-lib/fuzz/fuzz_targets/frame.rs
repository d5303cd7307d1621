//! Socket frame decoder: `decode_frame` is total on arbitrary bytes (what an
//! app sends to the daemon, and what a daemon sends to an app), and coherent:
//! - `Ok(None)` only while the buffer is shorter than the frame it announces;
//! - `Ok(Some((msg, n)))` consumes exactly the prefix plus the announced body;
//! - a decoded message re-encodes to a frame that decodes to the same message
//!   (values, not bytes: MessagePack allows several encodings of one value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcd_client::ipc::{
    decode_frame, encode_frame, ClientMsg, DaemonMsg, FrameError, FRAME_MAX_DEFAULT,
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

fuzz_target!(|data: &[u8]| {
    check::<ClientMsg>(data);
    check::<DaemonMsg>(data);
});
