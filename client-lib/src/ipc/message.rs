//! The messages of the local protocol: what an app sends ([`ClientMsg`]), what the daemon
//! sends ([`DaemonMsg`]), and the values inside them.
//!
//! Each message is a MessagePack map with string keys whose `"op"` key names it; serde's
//! internally tagged enums give exactly that shape, and `deny_unknown_fields` makes decoding
//! strict, as `docs/ipc-protocol.md` §3 requires.

use serde::{Deserialize, Serialize};

use super::{ErrorCode, Stats};

/// Version of this protocol, sent in `Hello` and echoed in `HelloOk`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The `caller` and `peer` of an `Invoke` for a call from an app on the same daemon.
pub const LOCAL_CALLER: &str = "local";

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
// `Stats` is large (the loss-recovery counters) but rare: boxing it would
// change the public type for one reply.
#[allow(clippy::large_enum_variant)]
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
    },
    /// The caller of an invocation is gone (it disconnected, or its call was cancelled): stop
    /// working on it. A `Result` still sent for it is dropped by the daemon and counted as a
    /// late result. An app ignores a `Cancel` for an invocation it does not know (it may
    /// have answered already). Not answered.
    Cancel {
        /// The `invocation` of the `Invoke` whose caller is gone.
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
            DaemonMsg::Fatal { .. } => "fatal",
        }
    }
}

#[cfg(test)]
mod tests;
