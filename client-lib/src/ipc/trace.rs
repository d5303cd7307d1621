//! What a traced call reports (`call` with `trace: true`, answered by `call_ok` or
//! `failed` carrying a [`CallTrace`]) and what a monitor receives ([`MonitorEvent`] in
//! `event` frames). `docs/ipc-protocol.md` §5 and §8 give the schemas.
//!
//! Read tolerantly like every daemon→app value: keys a reader does not know are ignored,
//! keys it misses read as empty or zero. Times are microseconds, measured by the daemon
//! that reports them (the two daemons' clocks are never compared).

use serde::{Deserialize, Serialize};

/// A call's timeline across both daemons.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CallTrace {
    /// The target as the app named it.
    pub target: String,
    /// The addresses it resolved to, in the order they were to be tried.
    pub addresses: Vec<String>,
    /// From the call's receipt to its addresses being known (name resolution).
    pub resolve_us: u64,
    /// Each address the request went to, in order: more than one is a failover.
    pub attempts: Vec<TraceAttempt>,
    /// The serving daemon's part; absent when it sent none (an older daemon, a call
    /// that failed before it was served, or a call served by no app).
    pub serving: Option<ServingTrace>,
    /// From the call's receipt to its outcome, at the caller's daemon.
    pub total_us: u64,
}

/// One address a call's request was sent to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TraceAttempt {
    /// `host:port`, or `local` for a call served by this daemon (no datagram).
    pub address: String,
    /// When the request was handed to the transport, from the call's receipt.
    pub start_us: u64,
    /// Time the request waited at the caller's daemon before its first datagram left.
    pub queued_us: u64,
    /// Datagrams that carried the request's fragments, retransmissions included.
    pub datagrams: u64,
    /// Of those, retransmissions.
    pub retransmissions: u64,
    /// When the peer acknowledged the whole request, from the call's receipt (0: never).
    pub acked_us: u64,
    /// RTT samples taken from the request's datagrams (sent once, Karn's rule).
    pub rtt_us: Vec<u64>,
    /// How this attempt ended: `ok`, or the error code (`peer_unreachable` before a
    /// failover).
    pub outcome: String,
    /// When it ended, from the call's receipt.
    pub end_us: u64,
}

/// The serving daemon's part of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ServingTrace {
    /// From the request's delivery to its hand-over to the serving app (`invoke`).
    pub queued_us: u64,
    /// From `invoke` to the app's `result` (the whole time for a built-in).
    pub handler_us: u64,
    /// From the request's delivery to the reply being handed to the transport.
    pub total_us: u64,
}

/// One event of a monitor's stream.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct MonitorEvent {
    /// `start`, `end`, or `missed` (events the monitor's buffer could not hold).
    pub kind: String,
    /// `out` (an app of this daemon calls) or `in` (a peer's call served here);
    /// empty for `missed`.
    pub direction: String,
    /// Microseconds since the daemon started.
    pub time_us: u64,
    /// The call as both daemons' logs name it (`<epoch>-<id>`).
    pub call: String,
    /// The function called.
    pub function: String,
    /// `out`: the target as the app named it (and, once sent, ` -> ` the address);
    /// `in`: the calling daemon's address.
    pub peer: String,
    /// Size of the arguments, bytes.
    pub args_bytes: u64,
    /// `end` of a successful call: size of the reply, bytes.
    pub reply_bytes: u64,
    /// `end`: `ok` or the error code.
    pub code: String,
    /// `end`: from `start` to the outcome.
    pub duration_us: u64,
    /// `missed`: events dropped since the last one delivered.
    pub missed: u64,
}

impl CallTrace {
    /// A trace of a call to `target`, started now.
    pub fn new(target: impl Into<String>) -> CallTrace {
        CallTrace {
            target: target.into(),
            ..CallTrace::default()
        }
    }
}

impl ServingTrace {
    /// A serving daemon's part from its three figures.
    pub fn new(queued_us: u64, handler_us: u64, total_us: u64) -> ServingTrace {
        ServingTrace {
            queued_us,
            handler_us,
            total_us,
        }
    }
}
