//! The messages of the local protocol: what an app sends ([`ClientMsg`]), what the daemon
//! sends ([`DaemonMsg`]), and the values inside them.
//!
//! Each message is a MessagePack map with string keys whose `"op"` key names it; serde's
//! internally tagged enums give exactly that shape.
//!
//! Decoding is strict one way and tolerant the other (`docs/ipc-protocol.md` §3): the
//! daemon refuses an app's message with an unknown key or a value of the wrong type
//! (`deny_unknown_fields` and the [`strict`](super::strict) readers on [`ClientMsg`]), as
//! that is a bug in the app; an app ignores keys it does not know in what the daemon sends
//! ([`DaemonMsg`], [`Stats`], [`NameEntry`], [`Credentials`], [`Limits`]), so that a newer
//! daemon may add them without breaking it.

use serde::{Deserialize, Serialize};

use super::strict;
use super::{CallTrace, ErrorCode, MonitorEvent, Payload, Stats};
pub use crate::identity::Credentials;

/// The highest version of this protocol this build speaks: sent as `Hello::version`, and
/// the version of a session with a daemon that speaks it too.
pub const PROTOCOL_VERSION: u32 = 3;

/// The lowest version of this protocol this build speaks: sent as `Hello::version_min`;
/// the daemon still accepts apps that speak only this one.
pub const PROTOCOL_VERSION_MIN: u32 = 1;

/// The version a session speaks: the highest version in both the app's range
/// (`version_min..=version` of its `hello`) and the daemon's, or `None` when the two do not
/// meet (the daemon then answers `fatal` / `version_mismatch`).
pub fn session_version(
    app_min: u32,
    app_max: u32,
    daemon_min: u32,
    daemon_max: u32,
) -> Option<u32> {
    let low = app_min.max(daemon_min);
    let high = app_max.min(daemon_max);
    (low <= high).then_some(high)
}

/// The `caller` and `peer` of an `Invoke` for a call from an app on the same daemon.
pub const LOCAL_CALLER: &str = "local";

/// A message from an application to the daemon.
///
/// Read strictly by the daemon: an unknown `op` or key, a missing key or a value of the
/// wrong type is a protocol violation. Not `#[non_exhaustive]`: the daemon must handle
/// every variant, and a new one comes with a new protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// Opens the session; must be the first frame. Answered by `HelloOk`.
    Hello {
        /// Request id, echoed in the reply.
        id: u64,
        /// The highest protocol version the app speaks ([`PROTOCOL_VERSION`]).
        version: u32,
        /// The lowest version the app also speaks ([`PROTOCOL_VERSION_MIN`]); absent (as
        /// from an app of version 1): `version` only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version_min: Option<u32>,
        /// The app's name, for logs and stats.
        #[serde(deserialize_with = "strict::string")]
        name: String,
    },
    /// Claims `function` for this connection. Answered by `Done` or `Failed`.
    Register {
        /// Request id, echoed in the reply.
        id: u64,
        /// The function name to serve.
        #[serde(deserialize_with = "strict::string")]
        function: String,
        /// From version 3: whether calls to it may run twice (and fail over); absent: not
        /// declared.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotent: Option<bool>,
        /// From version 3: the default time budget of calls to it; absent: none declared.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
        /// From version 3: its [`Signature`](super::Signature), MessagePack-encoded in one
        /// `bin`; absent: none.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            serialize_with = "serialize_optional_bin",
            deserialize_with = "super::signature::optional_bin"
        )]
        signature: Option<Vec<u8>>,
    },
    /// Releases `function`. Answered by `Done` or `Failed`.
    Unregister {
        /// Request id, echoed in the reply.
        id: u64,
        /// The function name to release.
        #[serde(deserialize_with = "strict::string")]
        function: String,
    },
    /// Invokes `function` on `target`. Answered by `CallOk` or `Failed`.
    Call {
        /// Request id, echoed in the reply.
        id: u64,
        /// `host:port`, a configured service name, or the local daemon's own address.
        #[serde(deserialize_with = "strict::string")]
        target: String,
        /// The function name.
        #[serde(deserialize_with = "strict::string")]
        function: String,
        /// The arguments, opaque to the daemon (MessagePack by convention). A large frame's
        /// are left where the frame reader read them ([`Payload`]).
        #[serde(deserialize_with = "strict::payload")]
        args: Payload,
        /// Time budget in milliseconds from receipt; `None` takes the daemon's default.
        deadline_ms: Option<u64>,
        /// Whether the call may be retried on another daemon of a service.
        idempotent: bool,
        /// Ask for the call's timeline ([`CallTrace`]) in its `call_ok` or `failed`.
        /// Absent means false.
        #[serde(default, skip_serializing_if = "is_false")]
        trace: bool,
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
    /// From version 2: cancels this connection's pending `Call` of request id `id`. Not
    /// answered itself: the call ends at once with `Failed` code `cancelled` (its serving
    /// app is told `Cancel`, its in-flight slot freed). For a call that already ended, or an
    /// id that is no pending call, nothing happens.
    CancelCall {
        /// The `Call`'s request id.
        id: u64,
    },
    /// Turns the connection into a monitor: answered by `Done` (or `Failed`), then an
    /// `Event` with this id for each call passing through the daemon.
    Monitor {
        /// Request id, echoed in the reply and in every `Event`.
        id: u64,
        /// Only calls of functions matching this glob (`*` any run of characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        function: Option<String>,
        /// Only calls whose target or peer address is this string.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a handler produced for one invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// Not `#[non_exhaustive]`, like `ClientMsg`: the daemon reads it and must handle every
// variant; a new one comes with a new protocol version.
pub enum Outcome {
    /// The handler's reply bytes.
    Ok(
        #[serde(
            serialize_with = "serde_bytes::serialize",
            deserialize_with = "strict::bytes"
        )]
        Vec<u8>,
    ),
    /// An application error message from the handler.
    Error(#[serde(deserialize_with = "strict::string")] String),
    /// The serving app refused the work without running it, with a code:
    /// `overloaded` (its worker queue is full), `bad_request` (arguments it
    /// cannot decode) or `server_app_gone` (it is stopping). The caller gets that
    /// code; any other code, also a string that is no code at all (read as
    /// [`ErrorCode::AppError`]), reaches the caller as `app_error`.
    Refused {
        /// Why: `overloaded`, `bad_request` or `server_app_gone`.
        #[serde(deserialize_with = "strict::refused_code")]
        code: ErrorCode,
        /// Human-readable detail.
        #[serde(deserialize_with = "strict::string")]
        message: String,
    },
}

/// One entry of the daemon's naming table, as the built-in `rpcd.names`
/// returns it (a MessagePack array of these maps). Keys a reader does not know are
/// ignored, keys it misses read as empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct NameEntry {
    /// The service name.
    pub name: String,
    /// The `host:port` targets configured for it, in order.
    pub targets: Vec<String>,
    /// The addresses they resolved to just now, in order.
    pub resolved: Vec<String>,
    /// Resolver errors, one per target that did not resolve.
    pub errors: Vec<String>,
    /// The DNS SRV records behind each `srv:` target, in the order of `targets`.
    pub srv: Vec<SrvEntry>,
}

/// The DNS SRV answer behind one `srv:` target of a [`NameEntry`], as the daemon holds
/// it in its cache.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SrvEntry {
    /// The target: `srv:` and the SRV name.
    pub target: String,
    /// The records, as DNS gave them.
    pub records: Vec<SrvRecordEntry>,
    /// Milliseconds since the answer arrived.
    pub age_ms: u64,
    /// Milliseconds the answer is still used for (its TTL less its age; 0: expired, the
    /// next call asks DNS again).
    pub ttl_ms: u64,
}

/// One SRV record of an [`SrvEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SrvRecordEntry {
    /// The target host.
    pub target: String,
    /// The service's port on it.
    pub port: u16,
    /// Lower is tried first.
    pub priority: u16,
    /// Share among the records of one priority.
    pub weight: u16,
    /// The addresses the target resolved to.
    pub addresses: Vec<String>,
}

/// A message from the daemon to an application.
// `Stats` is the large one and the rare one; boxing it would change the public type of
// every match on it for no measurable gain.
///
/// Read tolerantly: keys this build does not know are ignored, so a newer daemon may add
/// them (`docs/ipc-protocol.md` §3). A new `op` comes only with a new protocol version.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DaemonMsg {
    /// The handshake succeeded.
    HelloOk {
        /// The `Hello`'s id.
        id: u64,
        /// The version of this session: the highest both the app and the daemon speak.
        version: u32,
        /// The daemon's name and version, e.g. `rpcd 0.1.0`.
        daemon: String,
        /// The daemon's UDP address, `host:port`.
        listen: String,
        /// The daemon's current epoch (random at each start).
        epoch: u64,
        /// From version 2: the bounds the app must respect. Absent in a version-1 session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limits: Option<Limits>,
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
        /// The call's timeline, when the `Call` asked for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<Box<CallTrace>>,
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
        /// The call's timeline, when the `Call` asked for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<Box<CallTrace>>,
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
        /// The arguments. A large frame's are left where the frame reader read them
        /// ([`Payload`]).
        args: Payload,
        /// Where the call came from: the calling daemon's `host:port`, or [`LOCAL_CALLER`] for a
        /// call from an app on this daemon.
        caller: String,
        /// Who called: the configured name of the calling daemon once its session is
        /// authenticated; [`LOCAL_CALLER`] for a call from an app on this daemon; empty for a
        /// remote daemon that is not authenticated (plaintext transport). See
        /// [`Identity`](crate::Identity) for the typed view.
        peer: String,
        /// Milliseconds left before the caller gives up; a later result is dropped.
        deadline_ms: u64,
        /// For a call from an app on this daemon: the kernel's credentials of the calling
        /// process (`SO_PEERCRED`). Absent for a remote caller, whose identity is `peer`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials: Option<Credentials>,
    },
    /// The caller of an invocation is gone (it disconnected, or its call was cancelled): stop
    /// working on it. A `Result` still sent for it is dropped by the daemon and counted as a
    /// late result. An app ignores a `Cancel` for an invocation it does not know (it may
    /// have answered already). Not answered.
    Cancel {
        /// The `invocation` of the `Invoke` whose caller is gone.
        invocation: u64,
    },
    /// One call passing through the daemon, for a monitor (see `Monitor`).
    Event {
        /// The `Monitor` request's id.
        id: u64,
        /// What happened.
        event: MonitorEvent,
    },
    /// The daemon is closing this connection for a protocol violation.
    Fatal {
        /// What went wrong.
        code: ErrorCode,
        /// The problem, for a human.
        message: String,
    },
}

/// The bounds a daemon holds an app to, as `hello_ok` reports them from version 2
/// (`docs/ipc-protocol.md` §9). Keys a reader does not know are ignored; keys it misses
/// (from an older daemon) read as 0, meaning "not reported".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Limits {
    /// The largest frame body (`N`) the daemon reads from an app (`limits.frame_max`); a
    /// larger one is a protocol violation that closes the connection.
    pub frame_max: u64,
    /// The most bytes of a call's `args` and `function` together, and of a result's `ok`
    /// bytes: more fails the call with `message_too_large`.
    pub payload_max: u64,
    /// The longest function name, in bytes.
    pub name_max: u64,
    /// The most MessagePack values one app→daemon frame may hold.
    pub values_max: u64,
    /// The deepest nesting of arrays and maps in a frame.
    pub nesting_max: u64,
    /// Calls in flight on one connection (`limits.calls_per_connection_max`); more fail
    /// with `overloaded`.
    pub calls_max: u64,
    /// Invocations one serving connection may have pending
    /// (`limits.invocations_per_app_max`); more fail at their callers with `overloaded`.
    pub invocations_max: u64,
    /// Function names registered on the daemon, all connections together
    /// (`limits.functions_max`); more fail with `overloaded`.
    pub functions_max: u64,
    /// The deadline of a call whose `deadline_ms` is nil (`limits.deadline_default_ms`).
    pub deadline_default_ms: u64,
    /// The cap on a call's `deadline_ms` (`limits.deadline_max_ms`).
    pub deadline_max_ms: u64,
}

impl DaemonMsg {
    /// The message's `op` name as on the wire, for logs and error messages.
    pub fn op(&self) -> &'static str {
        match self {
            DaemonMsg::HelloOk { .. } => "hello_ok",
            DaemonMsg::Done { .. } => "done",
            DaemonMsg::CallOk { .. } => "call_ok",
            DaemonMsg::Failed { .. } => "failed",
            DaemonMsg::List { .. } => "list",
            DaemonMsg::Stats { .. } => "stats",
            DaemonMsg::Pong { .. } => "pong",
            DaemonMsg::Invoke { .. } => "invoke",
            DaemonMsg::Cancel { .. } => "cancel",
            DaemonMsg::Event { .. } => "event",
            DaemonMsg::Fatal { .. } => "fatal",
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_evolution;

/// Writes an optional `bytes` field as `bin`.
fn serialize_optional_bin<S: serde::Serializer>(
    v: &Option<Vec<u8>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => serde_bytes::serialize(b, s),
        None => s.serialize_none(),
    }
}
