//! The local socket protocol between applications and `rpcd`: message types and framing.
//!
//! Both sides link this module, so the app and the daemon share one definition of every
//! message. `docs/ipc-protocol.md` describes the same protocol for clients in other languages.
//!
//! A frame is a 4-byte big-endian length `N`, then `N` bytes holding one MessagePack value:
//! a map with string keys (`rmp_serde::to_vec_named`), whose `"op"` key names the message.
//! [`decode_frame`] is the one place where untrusted socket bytes become a typed message or a
//! typed [`FrameError`]; nothing downstream re-checks them.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version of this protocol, sent in `Hello` and echoed in `HelloOk`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default largest frame body (the `N` of a frame): a 16 MiB message plus room for the
/// envelope around it.
pub const FRAME_MAX_DEFAULT: usize = 16 * 1024 * 1024 + 64 * 1024;

/// Deepest nesting of MessagePack arrays and maps accepted in a frame. Our own messages
/// nest at most 4 levels (`Stats` → `peers` → `PeerStats` → `calls`); the bound keeps a
/// hostile frame from driving the decoder's recursion.
pub const NESTING_MAX: usize = 32;

/// Bytes in the length prefix of a frame.
pub const LENGTH_PREFIX_LEN: usize = 4;

// The length prefix is a u32: the maximum must be expressible in it.
const _: () = assert!(FRAME_MAX_DEFAULT <= u32::MAX as usize);

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
pub fn try_encode_frame<T: Serialize>(msg: &T, frame_max: usize) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0u8; LENGTH_PREFIX_LEN];
    rmp_serde::encode::write_named(&mut frame, msg)
        .map_err(|err| FrameError::Invalid(err.to_string()))?;
    let len = frame.len() - LENGTH_PREFIX_LEN;
    let max = frame_max.min(u32::MAX as usize);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    frame[..LENGTH_PREFIX_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(frame)
}

/// Decodes the first frame in `buf`.
///
/// Returns `Ok(None)` while `buf` does not yet hold a whole frame (read more and retry), and
/// `Ok(Some((msg, consumed)))` once it does, where `consumed` is the frame's length including
/// its prefix. A length prefix over `frame_max` is an error as soon as the prefix is seen, so
/// the caller never buffers an oversized frame. After an error the stream is out of sync:
/// report it and close.
pub fn decode_frame<T: DeserializeOwned>(
    buf: &[u8],
    frame_max: usize,
) -> Result<Option<(T, usize)>, FrameError> {
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
    let Some(body) = buf[LENGTH_PREFIX_LEN..].get(..len) else {
        return Ok(None);
    };
    let msg = decode_body(body)?;
    Ok(Some((msg, LENGTH_PREFIX_LEN + len)))
}

/// Decodes exactly one message from a whole frame body.
fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    // `rmp_serde::from_slice` ignores bytes after the value; a cursor tells how far it got.
    let mut de = rmp_serde::Deserializer::new(Cursor::new(body));
    // rmp-serde counts down from the limit and fails when it reaches zero.
    de.set_max_depth(NESTING_MAX + 1);
    let msg = T::deserialize(&mut de).map_err(classify)?;
    let used = usize::try_from(de.position()).unwrap_or(usize::MAX);
    match body.len().checked_sub(used) {
        Some(0) => Ok(msg),
        Some(extra) => Err(FrameError::TrailingBytes(extra)),
        None => Err(FrameError::Malformed("decoder read past the frame".into())),
    }
}

/// Sorts rmp-serde's errors into broken MessagePack vs. a well-formed value that is not a
/// message.
fn classify(err: rmp_serde::decode::Error) -> FrameError {
    use rmp_serde::decode::Error as E;
    match err {
        E::DepthLimitExceeded => FrameError::TooDeep { max: NESTING_MAX },
        E::InvalidMarkerRead(e) | E::InvalidDataRead(e) => {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
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

/// A message from an application to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// Opens the session; must be the first frame. Answered by `HelloOk`.
    Hello {
        /// Request id, echoed in the reply.
        id: u64,
        /// The [`PROTOCOL_VERSION`] the app speaks.
        version: u32,
        /// The app's name, for logs and stats.
        name: String,
    },
    /// Claims `function` for this connection. Answered by `Done` or `Failed`.
    Register {
        /// Request id, echoed in the reply.
        id: u64,
        /// The function name to serve.
        function: String,
    },
    /// Releases `function`. Answered by `Done` or `Failed`.
    Unregister {
        /// Request id, echoed in the reply.
        id: u64,
        /// The function name to release.
        function: String,
    },
    /// Invokes `function` on `target`. Answered by `CallOk` or `Failed`.
    Call {
        /// Request id, echoed in the reply.
        id: u64,
        /// `host:port`, a configured service name, or the local daemon's own address.
        target: String,
        /// The function name.
        function: String,
        /// The arguments, opaque to the daemon (MessagePack by convention).
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// Time budget in milliseconds from receipt; `None` takes the daemon's default.
        deadline_ms: Option<u64>,
        /// Whether the call may be retried on another daemon of a service.
        idempotent: bool,
    },
    /// A serving app's answer to an `Invoke`. Not answered.
    Result {
        /// The `invocation` of the `Invoke` being answered.
        invocation: u64,
        /// What the handler produced.
        outcome: Outcome,
    },
    /// Asks for the functions registered on the daemon. Answered by `List`.
    List {
        /// Request id, echoed in the reply.
        id: u64,
    },
    /// Asks for the daemon's counters. Answered by `Stats`.
    Stats {
        /// Request id, echoed in the reply.
        id: u64,
    },
    /// Liveness check of the daemon itself. Answered by `Pong`.
    Ping {
        /// Request id, echoed in the reply.
        id: u64,
    },
}

/// What a handler produced for one invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The handler's reply bytes.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// An application error message from the handler.
    Error(String),
    /// The serving app refused the work without running it, with a code:
    /// `overloaded` (its worker queue is full) or `bad_request` (arguments it
    /// cannot decode). Any other code is reported to the caller as `app_error`.
    Refused {
        /// Why: `overloaded` or `bad_request`.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

/// One entry of the daemon's naming table, as the built-in `rpcd.names`
/// returns it (a MessagePack array of these maps).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameEntry {
    /// The service name.
    pub name: String,
    /// The `host:port` targets configured for it, in order.
    pub targets: Vec<String>,
    /// The addresses they resolved to just now, in order.
    pub resolved: Vec<String>,
    /// Resolver errors, one per target that did not resolve.
    pub errors: Vec<String>,
}

/// A message from the daemon to an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum DaemonMsg {
    /// The handshake succeeded.
    HelloOk {
        /// The `Hello`'s id.
        id: u64,
        /// The [`PROTOCOL_VERSION`] the daemon speaks.
        version: u32,
        /// The daemon's name and version, e.g. `rpcd 0.1.0`.
        daemon: String,
        /// The daemon's UDP address, `host:port`.
        listen: String,
        /// The daemon's current epoch (random at each start).
        epoch: u64,
    },
    /// A `Register` or `Unregister` succeeded.
    Done {
        /// The request's id.
        id: u64,
    },
    /// A call succeeded.
    CallOk {
        /// The `Call`'s id.
        id: u64,
        /// The handler's reply bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A request failed: a transport error, a refusal, or (code `app_error`) an application
    /// error from the handler.
    Failed {
        /// The request's id.
        id: u64,
        /// What went wrong.
        code: ErrorCode,
        /// Details for a human; for `app_error` the handler's message.
        message: String,
    },
    /// The registered functions.
    List {
        /// The `List` request's id.
        id: u64,
        /// Function names, sorted.
        functions: Vec<String>,
    },
    /// The daemon's counters.
    Stats {
        /// The `Stats` request's id.
        id: u64,
        /// The counters.
        stats: Stats,
    },
    /// Answer to `Ping`.
    Pong {
        /// The `Ping`'s id.
        id: u64,
    },
    /// Asks a serving app to run one of its functions; answered by `Result`.
    Invoke {
        /// Daemon-chosen id to echo in the `Result`.
        invocation: u64,
        /// The registered function to run.
        function: String,
        /// The arguments.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        /// Who called: the calling daemon's `host:port` (local calls: the local address).
        caller: String,
        /// Milliseconds left before the caller gives up; a later result is dropped.
        deadline_ms: u64,
    },
    /// The caller of an invocation is gone; drop its result.
    Cancel {
        /// The `Invoke`'s id.
        invocation: u64,
    },
    /// The daemon is closing this connection for a protocol violation.
    Fatal {
        /// What went wrong.
        code: ErrorCode,
        /// The problem, for a human.
        message: String,
    },
}

/// The stable error codes of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No app on the target daemon has registered the function.
    UnknownFunction,
    /// The target daemon did not answer within the retry or keepalive bound.
    PeerUnreachable,
    /// The target daemon restarted (new epoch) while the call was in flight; it may have run.
    PeerRestarted,
    /// The call's deadline passed before a reply arrived; it may have run.
    DeadlineExceeded,
    /// The arguments, reply, or a frame exceed the size limit.
    MessageTooLarge,
    /// The serving app disconnected before answering.
    ServerAppGone,
    /// A bound on calls in flight or pending was reached; retry later.
    Overloaded,
    /// The request is well-formed but not acceptable (bad target, bad name, ...).
    BadRequest,
    /// Another live connection already owns the function name.
    NameTaken,
    /// Unregistering a name this connection does not own.
    NotOwner,
    /// The handler returned an application error; the message is the handler's.
    AppError,
    /// The daemon is shutting down and takes no new work.
    ShuttingDown,
    /// The caller is not permitted to do this.
    AccessDenied,
    /// The peer broke the protocol (bad frame, unexpected message).
    ProtocolError,
    /// The app and the daemon speak different protocol versions.
    VersionMismatch,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::UnknownFunction,
        ErrorCode::PeerUnreachable,
        ErrorCode::PeerRestarted,
        ErrorCode::DeadlineExceeded,
        ErrorCode::MessageTooLarge,
        ErrorCode::ServerAppGone,
        ErrorCode::Overloaded,
        ErrorCode::BadRequest,
        ErrorCode::NameTaken,
        ErrorCode::NotOwner,
        ErrorCode::AppError,
        ErrorCode::ShuttingDown,
        ErrorCode::AccessDenied,
        ErrorCode::ProtocolError,
        ErrorCode::VersionMismatch,
    ];

    /// The code as it appears on the wire and in stats; stable across versions.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::UnknownFunction => "unknown_function",
            ErrorCode::PeerUnreachable => "peer_unreachable",
            ErrorCode::PeerRestarted => "peer_restarted",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::ServerAppGone => "server_app_gone",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::NotOwner => "not_owner",
            ErrorCode::AppError => "app_error",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ProtocolError => "protocol_error",
            ErrorCode::VersionMismatch => "version_mismatch",
        }
    }

    /// True when the call may have run although the caller saw no reply:
    /// the request may have reached the handler before the peer restarted,
    /// stopped answering, lost its serving app or began shutting down, or
    /// before the deadline passed. Retry such a call only if it is idempotent.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            ErrorCode::PeerRestarted
                | ErrorCode::DeadlineExceeded
                | ErrorCode::PeerUnreachable
                | ErrorCode::ServerAppGone
                | ErrorCode::ShuttingDown
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The daemon's counters, as returned by the `stats` operation and `rpcd.stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// The daemon's current epoch.
    pub epoch: u64,
    /// The daemon's UDP address.
    pub listen: String,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Local app connections open now.
    pub connections: u64,
    /// Functions registered now.
    pub functions: u64,
    /// Datagrams (and RPC envelopes) dropped as malformed.
    pub malformed: u64,
    /// Datagrams dropped for a bad checksum.
    pub corrupt: u64,
    /// Datagrams dropped from new peers beyond `peers_max`.
    pub refused_peers: u64,
    /// Replies from peers for calls that were no longer waiting (deadline
    /// passed, caller gone): dropped.
    pub late_replies: u64,
    /// Results from serving apps for invocations the daemon no longer knows
    /// (deadline passed, caller gone, or not the app's): dropped.
    pub late_results: u64,
    /// Datagrams dropped because the UDP send backlog was full (the
    /// transport retransmits them, as after a loss).
    pub dropped_transmits: u64,
    /// Sum of the per-peer counters.
    pub totals: PeerCounters,
    /// Calls finished, by outcome: an [`ErrorCode::as_str`] or `"ok"`.
    pub calls: BTreeMap<String, u64>,
    /// One entry per known peer daemon.
    pub peers: Vec<PeerStats>,
}

/// Transport counters for one peer, or summed over all peers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerCounters {
    /// Datagrams sent, retransmissions included.
    pub datagrams_sent: u64,
    /// Datagrams received, duplicates included.
    pub datagrams_received: u64,
    /// Datagrams sent again after a timeout or a selective-ack gap.
    pub retransmissions: u64,
    /// Duplicate datagrams acknowledged but not delivered.
    pub duplicates: u64,
    /// Datagrams dropped for carrying an old epoch.
    pub stale_epoch: u64,
    /// Datagrams dropped for falling outside the receive window.
    pub out_of_window: u64,
    /// Messages handed to the channel for sending.
    pub messages_sent: u64,
    /// Messages delivered complete.
    pub messages_delivered: u64,
    /// Messages given up on (retries exhausted, deadline, peer restart).
    pub messages_failed: u64,
}

/// The state of the channel to one peer daemon.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerStats {
    /// The peer's `host:port`.
    pub addr: String,
    /// The peer's epoch, once heard from.
    pub epoch: Option<u64>,
    /// The channel's counters.
    pub counters: PeerCounters,
    /// Smoothed round-trip time in microseconds, once measured.
    pub srtt_us: Option<u64>,
    /// Current retransmission timeout in microseconds.
    pub rto_us: u64,
    /// Datagrams sent and not yet acknowledged.
    pub in_flight: u64,
    /// Congestion window in datagrams.
    pub cwnd: u32,
    /// Calls to this peer awaiting a reply.
    pub calls_in_flight: u64,
    /// Calls to this peer finished, by outcome code or `"ok"`.
    pub calls: BTreeMap<String, u64>,
}

/// Where the daemon's socket is, for both the daemon and its clients.
///
/// In order: `RPCD_SOCKET` if set and non-empty; `/run/rpcd/rpcd.sock` for root (effective
/// uid 0); `$XDG_RUNTIME_DIR/rpcd/rpcd.sock` if that variable is set and non-empty;
/// otherwise `/tmp/rpcd-$EUID/rpcd.sock`.
pub fn default_socket_path() -> PathBuf {
    if let Some(path) = std::env::var_os("RPCD_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        return PathBuf::from("/run/rpcd/rpcd.sock");
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(dir).join("rpcd").join("rpcd.sock");
    }
    PathBuf::from(format!("/tmp/rpcd-{euid}/rpcd.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_of(body: &[u8]) -> Vec<u8> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    fn decode_client(buf: &[u8]) -> Result<Option<(ClientMsg, usize)>, FrameError> {
        decode_frame(buf, FRAME_MAX_DEFAULT)
    }

    fn round_trip<T>(msg: T)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let frame = encode_frame(&msg);
        let decoded = decode_frame::<T>(&frame, FRAME_MAX_DEFAULT);
        assert_eq!(decoded, Ok(Some((msg, frame.len()))));
    }

    // --- literal bytes -------------------------------------------------------------------

    #[test]
    fn ping_literal_bytes() {
        let frame = encode_frame(&ClientMsg::Ping { id: 7 });
        #[rustfmt::skip]
        let expected = [
            0x00, 0x00, 0x00, 0x0d,             // length 13
            0x82,                               // map of 2
            0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g',
            0xa2, b'i', b'd', 0x07,
        ];
        assert_eq!(frame, expected);
        assert_eq!(
            decode_client(&expected),
            Ok(Some((ClientMsg::Ping { id: 7 }, expected.len())))
        );
    }

    #[test]
    fn hello_literal_bytes() {
        let frame = encode_frame(&ClientMsg::Hello {
            id: 1,
            version: 1,
            name: "a".into(),
        });
        #[rustfmt::skip]
        let body = [
            0x84,
            0xa2, b'o', b'p', 0xa5, b'h', b'e', b'l', b'l', b'o',
            0xa2, b'i', b'd', 0x01,
            0xa7, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x01,
            0xa4, b'n', b'a', b'm', b'e', 0xa1, b'a',
        ];
        assert_eq!(frame, frame_of(&body));
    }

    #[test]
    fn call_literal_bytes_args_are_bin_and_none_is_nil() {
        let frame = encode_frame(&ClientMsg::Call {
            id: 2,
            target: "h:1".into(),
            function: "f".into(),
            args: vec![0x90],
            deadline_ms: None,
            idempotent: true,
        });
        #[rustfmt::skip]
        let body = [
            0x87,
            0xa2, b'o', b'p', 0xa4, b'c', b'a', b'l', b'l',
            0xa2, b'i', b'd', 0x02,
            0xa6, b't', b'a', b'r', b'g', b'e', b't', 0xa3, b'h', b':', b'1',
            0xa8, b'f', b'u', b'n', b'c', b't', b'i', b'o', b'n', 0xa1, b'f',
            0xa4, b'a', b'r', b'g', b's', 0xc4, 0x01, 0x90,          // bin8 of 1 byte
            0xab, b'd', b'e', b'a', b'd', b'l', b'i', b'n', b'e', b'_', b'm', b's', 0xc0, // nil
            0xaa, b'i', b'd', b'e', b'm', b'p', b'o', b't', b'e', b'n', b't', 0xc3,
        ];
        assert_eq!(frame, frame_of(&body));
    }

    #[test]
    fn result_literal_bytes_outcome_is_a_one_key_map() {
        let ok = encode_frame(&ClientMsg::Result {
            invocation: 3,
            outcome: Outcome::Ok(vec![0xc0]),
        });
        #[rustfmt::skip]
        let ok_body = [
            0x83,
            0xa2, b'o', b'p', 0xa6, b'r', b'e', b's', b'u', b'l', b't',
            0xaa, b'i', b'n', b'v', b'o', b'c', b'a', b't', b'i', b'o', b'n', 0x03,
            0xa7, b'o', b'u', b't', b'c', b'o', b'm', b'e',
            0x81, 0xa2, b'o', b'k', 0xc4, 0x01, 0xc0,
        ];
        assert_eq!(ok, frame_of(&ok_body));

        let err = encode_frame(&Outcome::Error("no".into()));
        #[rustfmt::skip]
        let err_body = [0x81, 0xa5, b'e', b'r', b'r', b'o', b'r', 0xa2, b'n', b'o'];
        assert_eq!(err, frame_of(&err_body));
    }

    #[test]
    fn failed_literal_bytes_code_is_a_string() {
        let frame = encode_frame(&DaemonMsg::Failed {
            id: 9,
            code: ErrorCode::NameTaken,
            message: "".into(),
        });
        #[rustfmt::skip]
        let body = [
            0x84,
            0xa2, b'o', b'p', 0xa6, b'f', b'a', b'i', b'l', b'e', b'd',
            0xa2, b'i', b'd', 0x09,
            0xa4, b'c', b'o', b'd', b'e',
            0xaa, b'n', b'a', b'm', b'e', b'_', b't', b'a', b'k', b'e', b'n',
            0xa7, b'm', b'e', b's', b's', b'a', b'g', b'e', 0xa0,
        ];
        assert_eq!(frame, frame_of(&body));
    }

    #[test]
    fn pong_and_done_literal_bytes() {
        #[rustfmt::skip]
        let pong = [0x82, 0xa2, b'o', b'p', 0xa4, b'p', b'o', b'n', b'g', 0xa2, b'i', b'd', 0x05];
        assert_eq!(encode_frame(&DaemonMsg::Pong { id: 5 }), frame_of(&pong));
        #[rustfmt::skip]
        let done = [0x82, 0xa2, b'o', b'p', 0xa4, b'd', b'o', b'n', b'e', 0xa2, b'i', b'd', 0x05];
        assert_eq!(encode_frame(&DaemonMsg::Done { id: 5 }), frame_of(&done));
    }

    #[test]
    fn call_ok_literal_bytes() {
        let frame = encode_frame(&DaemonMsg::CallOk {
            id: 1,
            data: vec![1, 2],
        });
        #[rustfmt::skip]
        let body = [
            0x83,
            0xa2, b'o', b'p', 0xa7, b'c', b'a', b'l', b'l', b'_', b'o', b'k',
            0xa2, b'i', b'd', 0x01,
            0xa4, b'd', b'a', b't', b'a', 0xc4, 0x02, 0x01, 0x02,
        ];
        assert_eq!(frame, frame_of(&body));
    }

    /// The hex examples of `docs/ipc-protocol.md` §10, byte for byte.
    #[test]
    fn protocol_doc_examples_match() {
        fn hex(text: &str) -> Vec<u8> {
            text.split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).unwrap())
                .collect()
        }
        let hello = ClientMsg::Hello {
            id: 1,
            version: 1,
            name: "demo".into(),
        };
        assert_eq!(
            encode_frame(&hello),
            hex(
                "00 00 00 21 84 a2 6f 70 a5 68 65 6c 6c 6f a2 69 64 01 a7 76 65 72 73 69 6f 6e 01 \
                 a4 6e 61 6d 65 a4 64 65 6d 6f"
            )
        );
        let hello_ok = DaemonMsg::HelloOk {
            id: 1,
            version: 1,
            daemon: "rpcd 0.1.0".into(),
            listen: "127.0.0.1:7000".into(),
            epoch: 0x1122_3344_5566_7788,
        };
        assert_eq!(
            encode_frame(&hello_ok),
            hex(
                "00 00 00 51 86 a2 6f 70 a8 68 65 6c 6c 6f 5f 6f 6b a2 69 64 01 \
                 a7 76 65 72 73 69 6f 6e 01 a6 64 61 65 6d 6f 6e aa 72 70 63 64 20 30 2e 31 2e 30 \
                 a6 6c 69 73 74 65 6e ae 31 32 37 2e 30 2e 30 2e 31 3a 37 30 30 30 \
                 a5 65 70 6f 63 68 cf 11 22 33 44 55 66 77 88"
            )
        );
        let call = ClientMsg::Call {
            id: 2,
            target: "127.0.0.1:7001".into(),
            function: "rpcd.echo".into(),
            args: vec![0x92, 0x01, 0x02],
            deadline_ms: Some(500),
            idempotent: false,
        };
        assert_eq!(
            encode_frame(&call),
            hex("00 00 00 5b 87 a2 6f 70 a4 63 61 6c 6c a2 69 64 02 \
                 a6 74 61 72 67 65 74 ae 31 32 37 2e 30 2e 30 2e 31 3a 37 30 30 31 \
                 a8 66 75 6e 63 74 69 6f 6e a9 72 70 63 64 2e 65 63 68 6f \
                 a4 61 72 67 73 c4 03 92 01 02 \
                 ab 64 65 61 64 6c 69 6e 65 5f 6d 73 cd 01 f4 \
                 aa 69 64 65 6d 70 6f 74 65 6e 74 c2")
        );
        let call_ok = DaemonMsg::CallOk {
            id: 2,
            data: vec![0x92, 0x01, 0x02],
        };
        assert_eq!(
            encode_frame(&call_ok),
            hex(
                "00 00 00 1a 83 a2 6f 70 a7 63 61 6c 6c 5f 6f 6b a2 69 64 02 \
                 a4 64 61 74 61 c4 03 92 01 02"
            )
        );
        let failed = DaemonMsg::Failed {
            id: 2,
            code: ErrorCode::UnknownFunction,
            message: "no f".into(),
        };
        assert_eq!(
            encode_frame(&failed),
            hex("00 00 00 32 84 a2 6f 70 a6 66 61 69 6c 65 64 a2 69 64 02 \
                 a4 63 6f 64 65 b0 75 6e 6b 6e 6f 77 6e 5f 66 75 6e 63 74 69 6f 6e \
                 a7 6d 65 73 73 61 67 65 a4 6e 6f 20 66")
        );
        let result = ClientMsg::Result {
            invocation: 9,
            outcome: Outcome::Ok(vec![0xc0]),
        };
        assert_eq!(
            encode_frame(&result),
            hex("00 00 00 26 83 a2 6f 70 a6 72 65 73 75 6c 74 \
                 aa 69 6e 76 6f 63 61 74 69 6f 6e 09 \
                 a7 6f 75 74 63 6f 6d 65 81 a2 6f 6b c4 01 c0")
        );
    }

    // --- round trips -----------------------------------------------------------------------

    fn sample_stats() -> Stats {
        let counters = PeerCounters {
            datagrams_sent: 1,
            datagrams_received: 2,
            retransmissions: 3,
            duplicates: 4,
            stale_epoch: 5,
            out_of_window: 6,
            messages_sent: 7,
            messages_delivered: 8,
            messages_failed: u64::MAX,
        };
        Stats {
            epoch: 0xdead_beef_dead_beef,
            listen: "127.0.0.1:7000".into(),
            uptime_ms: 10,
            connections: 1,
            functions: 4,
            malformed: 0,
            corrupt: 2,
            refused_peers: 0,
            late_replies: 3,
            late_results: 0,
            dropped_transmits: 1,
            totals: counters.clone(),
            calls: BTreeMap::from([("ok".into(), 10), ("deadline_exceeded".into(), 1)]),
            peers: vec![
                PeerStats {
                    addr: "10.0.0.2:7000".into(),
                    epoch: Some(42),
                    counters,
                    srtt_us: Some(120),
                    rto_us: 2000,
                    in_flight: 3,
                    cwnd: 16,
                    calls_in_flight: 1,
                    calls: BTreeMap::from([("ok".into(), 10)]),
                },
                PeerStats::default(),
            ],
        }
    }

    #[test]
    fn every_client_msg_round_trips() {
        let msgs = [
            ClientMsg::Hello {
                id: 1,
                version: PROTOCOL_VERSION,
                name: "app".into(),
            },
            ClientMsg::Register {
                id: 2,
                function: "svc.f".into(),
            },
            ClientMsg::Unregister {
                id: 3,
                function: "svc.f".into(),
            },
            ClientMsg::Call {
                id: u64::MAX,
                target: "host:1".into(),
                function: "f".into(),
                args: vec![],
                deadline_ms: Some(1500),
                idempotent: false,
            },
            ClientMsg::Result {
                invocation: 4,
                outcome: Outcome::Ok(vec![1, 2, 3]),
            },
            ClientMsg::Result {
                invocation: 5,
                outcome: Outcome::Error("boom".into()),
            },
            ClientMsg::List { id: 6 },
            ClientMsg::Stats { id: 7 },
            ClientMsg::Ping { id: 8 },
        ];
        for msg in msgs {
            round_trip(msg);
        }
    }

    #[test]
    fn every_daemon_msg_round_trips() {
        let mut msgs = vec![
            DaemonMsg::HelloOk {
                id: 1,
                version: PROTOCOL_VERSION,
                daemon: "rpcd 0.1.0".into(),
                listen: "0.0.0.0:7000".into(),
                epoch: u64::MAX,
            },
            DaemonMsg::Done { id: 2 },
            DaemonMsg::CallOk {
                id: 3,
                data: vec![0; 300],
            },
            DaemonMsg::List {
                id: 5,
                functions: vec!["rpcd.echo".into(), "rpcd.ping".into()],
            },
            DaemonMsg::Stats {
                id: 6,
                stats: sample_stats(),
            },
            DaemonMsg::Stats {
                id: 6,
                stats: Stats::default(),
            },
            DaemonMsg::Pong { id: 7 },
            DaemonMsg::Invoke {
                invocation: 8,
                function: "f".into(),
                args: vec![9; 70_000],
                caller: "10.0.0.1:7000".into(),
                deadline_ms: 250,
            },
        ];
        for code in ErrorCode::ALL {
            msgs.push(DaemonMsg::Failed {
                id: 4,
                code,
                message: code.to_string(),
            });
            msgs.push(DaemonMsg::Fatal {
                code,
                message: "bye".into(),
            });
        }
        for msg in msgs {
            round_trip(msg);
        }
    }

    #[test]
    fn error_code_as_str_matches_the_wire() {
        for code in ErrorCode::ALL {
            let bytes = rmp_serde::to_vec_named(&code).unwrap();
            let wire: String = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(wire, code.as_str());
        }
        let unknown: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(ErrorCode::outcome_unknown)
            .collect();
        assert_eq!(
            unknown,
            [
                ErrorCode::PeerUnreachable,
                ErrorCode::PeerRestarted,
                ErrorCode::DeadlineExceeded,
                ErrorCode::ServerAppGone,
                ErrorCode::ShuttingDown
            ]
        );
    }

    proptest! {
        #[test]
        fn call_round_trips(
            id: u64,
            target in "[a-z0-9.:]{0,40}",
            function in "\\PC{0,20}",
            args in proptest::collection::vec(any::<u8>(), 0..5000),
            deadline_ms: Option<u64>,
            idempotent: bool,
        ) {
            let msg = ClientMsg::Call { id, target, function, args, deadline_ms, idempotent };
            let frame = encode_frame(&msg);
            prop_assert_eq!(decode_client(&frame), Ok(Some((msg, frame.len()))));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame::<ClientMsg>(&bytes, 1024);
            let _ = decode_frame::<DaemonMsg>(&frame_of(&bytes), 1024);
        }
    }

    // --- incomplete frames -------------------------------------------------------------------

    #[test]
    fn every_strict_prefix_of_a_frame_is_incomplete() {
        let frame = encode_frame(&ClientMsg::Ping { id: 300 });
        for end in 0..frame.len() {
            assert_eq!(decode_client(&frame[..end]), Ok(None), "prefix of {end}");
        }
    }

    #[test]
    fn two_frames_in_one_buffer_decode_one_at_a_time() {
        let mut buf = encode_frame(&ClientMsg::Ping { id: 1 });
        let first_len = buf.len();
        buf.extend(encode_frame(&ClientMsg::List { id: 2 }));
        let (first, used) = decode_client(&buf).unwrap().unwrap();
        assert_eq!((first, used), (ClientMsg::Ping { id: 1 }, first_len));
        let (second, _) = decode_client(&buf[used..]).unwrap().unwrap();
        assert_eq!(second, ClientMsg::List { id: 2 });
    }

    // --- one test per FrameError case ----------------------------------------------------------

    #[test]
    fn oversize_prefix_is_refused_before_the_body_arrives() {
        let prefix = 20_000_000u32.to_be_bytes();
        let err = decode_client(&prefix).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: 20_000_000,
                max: FRAME_MAX_DEFAULT
            }
        );
        assert_eq!(
            err.to_string(),
            "frame of 20000000 bytes exceeds the maximum of 16842752"
        );
        assert_eq!(err.code(), ErrorCode::MessageTooLarge);
    }

    #[test]
    fn encoding_over_the_maximum_is_refused() {
        let msg = ClientMsg::Call {
            id: 1,
            target: "t".into(),
            function: "f".into(),
            args: vec![0; 100],
            deadline_ms: None,
            idempotent: false,
        };
        assert!(matches!(
            try_encode_frame(&msg, 50),
            Err(FrameError::TooLarge { max: 50, .. })
        ));
    }

    #[test]
    fn value_truncated_inside_its_frame_is_malformed() {
        // A map announcing 2 entries but holding one.
        let body = [0x82, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g'];
        let err = decode_client(&frame_of(&body)).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
        assert!(err.to_string().starts_with("invalid MessagePack: "));
    }

    #[test]
    fn reserved_marker_is_malformed() {
        let err = decode_client(&frame_of(&[0xc1])).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }

    #[test]
    fn empty_body_is_malformed() {
        let err = decode_client(&frame_of(&[])).unwrap_err();
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }

    #[test]
    fn trailing_bytes_inside_the_frame_are_refused() {
        let mut body = encode_frame(&ClientMsg::Ping { id: 7 }).split_off(LENGTH_PREFIX_LEN);
        body.extend_from_slice(&[0xc0, 0xc0, 0xc0]);
        let err = decode_client(&frame_of(&body)).unwrap_err();
        assert_eq!(err, FrameError::TrailingBytes(3));
        assert_eq!(err.to_string(), "trailing 3 bytes after the message");
    }

    #[test]
    fn deep_nesting_is_refused() {
        // {"op":"ping","id":1,"x":[[[[...]]]]} with 10_000 levels: fails on depth, not on
        // the unknown field, and without overflowing the stack.
        let mut body = vec![0x83, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g'];
        body.extend_from_slice(&[0xa1, b'x']);
        body.extend(vec![0x91; 10_000]);
        body.push(0xc0);
        body.extend_from_slice(&[0xa2, b'i', b'd', 0x01]);
        let err = decode_client(&frame_of(&body)).unwrap_err();
        assert_eq!(err, FrameError::TooDeep { max: NESTING_MAX });
    }

    #[test]
    fn nesting_at_the_bound_is_accepted_by_the_decoder() {
        // A value nested exactly NESTING_MAX levels (the frame's map is level 1) decodes as
        // far as the schema: the error is the unknown field, not the depth.
        let mut body = vec![0x83, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g'];
        body.extend_from_slice(&[0xa2, b'i', b'd', 0x01, 0xa1, b'x']);
        body.extend(vec![0x91; NESTING_MAX - 1]);
        body.push(0xc0);
        let err = decode_client(&frame_of(&body)).unwrap_err();
        assert!(matches!(err, FrameError::Invalid(_)), "{err}");
    }

    #[test]
    fn unknown_op_is_invalid() {
        let body = [
            0x82, 0xa2, b'o', b'p', 0xa3, b'z', b'a', b'p', 0xa2, b'i', b'd', 0x01,
        ];
        let err = decode_client(&frame_of(&body)).unwrap_err();
        assert!(matches!(err, FrameError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("zap"), "{err}");
    }

    #[test]
    fn missing_op_is_invalid() {
        let body = [0x81, 0xa2, b'i', b'd', 0x01];
        let err = decode_client(&frame_of(&body)).unwrap_err();
        assert!(matches!(err, FrameError::Invalid(_)), "{err}");
    }

    #[test]
    fn unknown_field_is_invalid() {
        #[rustfmt::skip]
        let body = [
            0x83, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g',
            0xa2, b'i', b'd', 0x01, 0xa3, b'e', b'x', b't', 0x01,
        ];
        let err = decode_client(&frame_of(&body)).unwrap_err();
        assert!(matches!(err, FrameError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("ext"), "{err}");
    }

    #[test]
    fn wrong_field_type_is_invalid() {
        // id as a string
        #[rustfmt::skip]
        let body = [0x82, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g', 0xa2, b'i', b'd', 0xa1, b'7'];
        let err = decode_client(&frame_of(&body)).unwrap_err();
        assert!(matches!(err, FrameError::Invalid(_)), "{err}");
        // a negative id
        #[rustfmt::skip]
        let body = [0x82, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g', 0xa2, b'i', b'd', 0xff];
        let err = decode_client(&frame_of(&body)).unwrap_err();
        assert!(matches!(err, FrameError::Invalid(_)), "{err}");
        // a top-level array instead of a map
        let err = decode_client(&frame_of(&[0x91, 0x01])).unwrap_err();
        assert!(matches!(err, FrameError::Invalid(_)), "{err}");
    }

    #[test]
    fn missing_field_is_invalid() {
        let body = [0x81, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g'];
        let err = decode_client(&frame_of(&body)).unwrap_err();
        assert!(matches!(err, FrameError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("id"), "{err}");
    }

    #[test]
    fn missing_deadline_decodes_as_none() {
        // Option fields may be omitted; clients in other languages may do so.
        #[rustfmt::skip]
        let body = [
            0x86,
            0xa2, b'o', b'p', 0xa4, b'c', b'a', b'l', b'l',
            0xa2, b'i', b'd', 0x02,
            0xa6, b't', b'a', b'r', b'g', b'e', b't', 0xa1, b'h',
            0xa8, b'f', b'u', b'n', b'c', b't', b'i', b'o', b'n', 0xa1, b'f',
            0xa4, b'a', b'r', b'g', b's', 0xc4, 0x00,
            0xaa, b'i', b'd', b'e', b'm', b'p', b'o', b't', b'e', b'n', b't', 0xc2,
        ];
        let (msg, _) = decode_client(&frame_of(&body)).unwrap().unwrap();
        assert!(matches!(
            msg,
            ClientMsg::Call {
                deadline_ms: None,
                ..
            }
        ));
    }

    // --- socket path -------------------------------------------------------------------------------

    /// `RPCD_SOCKET` set, empty, and unset. The environment is process-wide and the
    /// other tests run on parallel threads, so this process's environment is never
    /// changed: each case runs [`socket_path_in_a_child`] in a child process (this
    /// test binary again) with the variable set there.
    #[test]
    fn socket_path_resolution() {
        let default = if nix::unistd::geteuid().is_root() {
            "/run/rpcd/rpcd.sock".to_owned()
        } else {
            String::new() // per-user: checked by suffix in the child
        };
        for (value, want) in [
            (Some("/x/y.sock"), "/x/y.sock".to_owned()),
            (Some(""), default.clone()),
            (None, default),
        ] {
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "--exact",
                "ipc::tests::socket_path_in_a_child",
                "--ignored",
                "--test-threads=1",
            ])
            .env("RPCD_TEST_WANT_SOCKET", &want)
            .env_remove("RPCD_SOCKET");
            if let Some(v) = value {
                cmd.env("RPCD_SOCKET", v);
            }
            let out = cmd.output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "RPCD_SOCKET={value:?}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Run by [`socket_path_resolution`] in a child process whose environment it set.
    #[test]
    #[ignore = "run in a child process by socket_path_resolution"]
    fn socket_path_in_a_child() {
        let want = std::env::var("RPCD_TEST_WANT_SOCKET").unwrap();
        let path = default_socket_path();
        if want.is_empty() {
            assert!(path.ends_with("rpcd.sock"), "{}", path.display());
        } else {
            assert_eq!(path, PathBuf::from(want));
        }
    }
}
