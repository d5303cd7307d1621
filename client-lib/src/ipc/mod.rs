//! The local socket protocol between applications and `rpcd`: message types and framing.
//!
//! Both sides link this module, so the app and the daemon share one definition of every
//! message. `docs/ipc-protocol.md` describes the same protocol for clients in other languages.
//!
//! A frame is a 4-byte big-endian length `N`, then `N` bytes holding one MessagePack value:
//! a map with string keys (`rmp_serde::to_vec_named`), whose `"op"` key names the message.
//! [`decode_frame`] is the one place where untrusted socket bytes become a typed message or a
//! typed [`FrameError`]; nothing downstream re-checks them. [`FrameReader`] buffers a stream
//! of frames for both sides.
//!
//! - `message`: [`ClientMsg`], [`DaemonMsg`] and what they carry;
//! - `frame`: the framing, [`decode_frame`] and [`FrameReader`];
//! - `hot`: the hand-written decoders of the frames of every call, and [`ValueReader`]
//!   they are written with (serde decides whatever they do not fully understand);
//!   [`ValueWriter`] for hand-written encoders that write what serde would, and
//!   [`encode_invoke_around`], an `invoke` written around arguments kept apart;
//! - `code`: [`ErrorCode`], its table written once;
//! - `stats`: [`Stats`] and the per-peer counters;
//! - `trace`: [`CallTrace`] (a traced call's timeline) and [`MonitorEvent`];
//! - `signature`: what a function declares at registration ([`Declaration`], [`Signature`],
//!   [`Schema`]) and what `rpcd.describe` answers ([`FunctionInfo`]);
//! - `pool`: [`BufferPool`], the bounded pool of large buffers that frames, payloads and
//!   envelopes are reused from ([`buffer_pool`] is the process's);
//! - `strict`: the strict readers of [`ClientMsg`]'s fields (`bin` is bytes, `str` is text);
//! - `socket_path`: [`default_socket_path`] (the daemon's) and [`socket_candidates`] (the
//!   paths a client tries).
//!
//! Everything is re-exported here: `rpcd_client::ipc::X` is the path to use.

mod code;
mod frame;
mod hot;
mod message;
mod payload;
mod pool;
mod shape;
mod signature;
mod socket_path;
mod split;
pub(crate) mod stats;
mod strict;
mod trace;

pub(crate) use code::for_each_error_code;
pub use code::{ErrorCode, UnknownErrorCode};
pub use frame::{
    decode_frame, decode_value, encode_frame, encode_value, try_encode_frame, FrameError,
    FrameReader, FRAME_MAX_DEFAULT, LENGTH_PREFIX_LEN, NESTING_MAX, READ_CHUNK,
};
pub use hot::{
    encode_daemon_msg, encode_invoke, encode_invoke_around, set_once, InvokeFields, ValueReader,
    ValueWriter,
};
pub use message::{
    session_version, ClientMsg, Credentials, DaemonMsg, Limits, NameEntry, Outcome, SrvEntry,
    SrvRecordEntry, LOCAL_CALLER, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN,
};
pub use payload::Payload;
pub use pool::{
    buffer_pool, pooled_capacity, pooled_copy, pooled_vec, recycle, BufferPool, PoolStats,
    CLIENT_POOL_MAX_DEFAULT, POOLED_CAPACITY_MIN,
};
pub use shape::{check_values, CLIENT_MSG_VALUES_MAX};
pub use signature::{
    Declaration, Field, FunctionInfo, Schema, Signature, SignatureError, Variant,
    SIGNATURE_BYTES_MAX, SIGNATURE_VALUES_MAX,
};
pub use socket_path::{
    default_socket_path, per_user_socket_path, socket_candidates, SocketSource, SYSTEM_SOCKET,
};
pub(crate) use split::{split_call_frame, split_result_frame};
pub use stats::{FunctionStats, LatencyBucket, PeerCounters, PeerStats, Stats};
pub use trace::{CallTrace, MonitorEvent, ServingTrace, TraceAttempt};

/// Helpers shared by the tests of the submodules.
#[cfg(test)]
pub(crate) mod testutil {
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::*;

    /// A frame around `body`, whatever it holds.
    pub fn frame_of(body: &[u8]) -> Vec<u8> {
        let mut frame = u32::try_from(body.len())
            .expect("test bodies are small")
            .to_be_bytes()
            .to_vec();
        frame.extend_from_slice(body);
        frame
    }

    pub fn decode_client(buf: &[u8]) -> Result<Option<(ClientMsg, usize)>, FrameError> {
        decode_frame(buf, FRAME_MAX_DEFAULT)
    }

    /// Encodes `msg` and checks it decodes to itself, consuming the whole frame.
    pub fn round_trip<T>(msg: T)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + 'static,
    {
        let frame = encode_frame(&msg);
        let decoded = decode_frame::<T>(&frame, FRAME_MAX_DEFAULT);
        assert_eq!(decoded, Ok(Some((msg, frame.len()))));
    }
}
