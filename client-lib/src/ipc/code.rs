//! The stable error codes of the protocol, defined once in [`for_each_error_code!`].
//!
//! Every place that lists the codes — the [`ErrorCode`] enum and its wire strings, [`ErrorCode::ALL`],
//! [`ErrorCode::outcome_unknown`], parsing, and the app-facing [`crate::CallError`] with its
//! mapping both ways — is generated from that one table, so adding a code is one entry and
//! the lists cannot drift apart.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The error-code table: one entry per code, in wire order, each with
/// - its doc line (shared by [`ErrorCode`] and [`crate::CallError`]),
/// - the [`ErrorCode`] variant and its wire string,
/// - whether a call that failed with it may nevertheless have run (`outcome_unknown`),
/// - the [`crate::CallError`] variant it maps to and that variant's message format.
///
/// Invoke it with the name of a macro that takes the entries; it expands to that macro's
/// invocation.
macro_rules! for_each_error_code {
    ($callback:ident) => {
        $callback! {
            /// No app on the target daemon has registered the function.
            UnknownFunction = "unknown_function", outcome_unknown: false,
                call_error: UnknownFunction("unknown function: {0}");
            /// The target daemon did not answer within the retry or keepalive bound.
            PeerUnreachable = "peer_unreachable", outcome_unknown: true,
                call_error: PeerUnreachable("peer unreachable: {0}");
            /// The target daemon restarted (new epoch) while the call was in flight; it may
            /// have run.
            PeerRestarted = "peer_restarted", outcome_unknown: true,
                call_error: PeerRestarted("peer restarted, outcome unknown: {0}");
            /// The call's deadline passed before a reply arrived; it may have run.
            DeadlineExceeded = "deadline_exceeded", outcome_unknown: true,
                call_error: DeadlineExceeded("deadline exceeded: {0}");
            /// The arguments, reply, or a frame exceed the size limit.
            MessageTooLarge = "message_too_large", outcome_unknown: false,
                call_error: MessageTooLarge("message too large: {0}");
            /// The serving app disconnected before answering.
            ServerAppGone = "server_app_gone", outcome_unknown: true,
                call_error: ServerAppGone("server app gone: {0}");
            /// A bound on calls in flight or pending (or the serving app's worker queue) was
            /// reached; retry later.
            Overloaded = "overloaded", outcome_unknown: false,
                call_error: Overloaded("overloaded: {0}");
            /// The request is well-formed but not acceptable (bad target, bad name, arguments
            /// the handler cannot decode, ...).
            BadRequest = "bad_request", outcome_unknown: false,
                call_error: BadRequest("bad request: {0}");
            /// Another live connection already owns the function name.
            NameTaken = "name_taken", outcome_unknown: false,
                call_error: NameTaken("name taken: {0}");
            /// Unregistering a name this connection does not own.
            NotOwner = "not_owner", outcome_unknown: false,
                call_error: NotOwner("not owner: {0}");
            /// The handler returned an application error (or panicked); the message is the
            /// handler's.
            AppError = "app_error", outcome_unknown: false,
                call_error: App("application error: {0}");
            /// The daemon is shutting down and takes no new work.
            ShuttingDown = "shutting_down", outcome_unknown: true,
                call_error: ShuttingDown("rpcd is shutting down: {0}");
            /// The caller is not permitted to do this.
            AccessDenied = "access_denied", outcome_unknown: false,
                call_error: AccessDenied("access denied: {0}");
            /// The peer broke the protocol (bad frame, unexpected message).
            ProtocolError = "protocol_error", outcome_unknown: false,
                call_error: Protocol("protocol error: {0}");
            /// The app and the daemon speak different protocol versions.
            VersionMismatch = "version_mismatch", outcome_unknown: false,
                call_error: VersionMismatch("protocol version mismatch: {0}");
            /// The caller cancelled the call (`cancel_call`); it may have run.
            Cancelled = "cancelled", outcome_unknown: true,
                call_error: Cancelled("call cancelled: {0}");
        }
    };
}
pub(crate) use for_each_error_code;

/// Expands the table into [`ErrorCode`] and its table-driven methods.
macro_rules! define_error_code {
    ($(
        $(#[$doc:meta])*
        $code:ident = $wire:literal, outcome_unknown: $unknown:literal,
            call_error: $call:ident($format:literal);
    )*) => {
        /// The stable error codes of the protocol.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(
                $(#[$doc])*
                #[serde(rename = $wire)]
                $code,
            )*
        }

        impl ErrorCode {
            /// Every code, in declaration (wire table) order.
            pub const ALL: [ErrorCode; [$($wire),*].len()] = [$(ErrorCode::$code),*];

            /// The code as it appears on the wire and in stats; stable across versions.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $(ErrorCode::$code => $wire,)*
                }
            }

            /// True when the call may have run although the caller saw no reply:
            /// the request may have reached the handler before the peer restarted,
            /// stopped answering, lost its serving app or began shutting down, or
            /// before the deadline passed. Retry such a call only if it is idempotent.
            pub fn outcome_unknown(&self) -> bool {
                match self {
                    $(ErrorCode::$code => $unknown,)*
                }
            }
        }
    };
}

for_each_error_code!(define_error_code);

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the protocol's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    /// Parses a wire string (`"unknown_function"`, ...), as [`ErrorCode::as_str`] writes it.
    fn from_str(s: &str) -> Result<ErrorCode, UnknownErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_the_wire_and_parses_back() {
        for code in ErrorCode::ALL {
            let bytes = rmp_serde::to_vec_named(&code).unwrap();
            let wire: String = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(wire, code.as_str());
            assert_eq!(wire.parse::<ErrorCode>(), Ok(code));
            assert_eq!(code.to_string(), wire);
        }
        assert_eq!(
            "nope".parse::<ErrorCode>(),
            Err(UnknownErrorCode("nope".into()))
        );
    }

    #[test]
    fn all_holds_every_code_once_in_order() {
        assert_eq!(ErrorCode::ALL.len(), 16);
        assert!(ErrorCode::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ErrorCode::ALL[0], ErrorCode::UnknownFunction);
        assert_eq!(ErrorCode::ALL[14], ErrorCode::VersionMismatch);
        assert_eq!(ErrorCode::ALL[15], ErrorCode::Cancelled);
    }

    /// `docs/ipc-protocol.md` §7 marks "outcome unknown" exactly the codes whose
    /// `outcome_unknown()` is true, and lists every code.
    #[test]
    fn the_protocol_doc_table_agrees() {
        let doc = include_str!("../../../docs/ipc-protocol.md");
        let section = doc
            .split("## 7. Error codes")
            .nth(1)
            .and_then(|rest| rest.split("## 8.").next())
            .expect("section 7");
        for code in ErrorCode::ALL {
            let row = section
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", code.as_str())))
                .unwrap_or_else(|| panic!("no row for {code}"));
            let marked = row.trim_end().trim_end_matches('|').rsplit('|').next();
            let marked = marked.is_some_and(|cell| cell.contains("**yes**"));
            assert_eq!(marked, code.outcome_unknown(), "{code}: {row}");
        }
    }

    #[test]
    fn outcome_unknown_codes() {
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
                ErrorCode::ShuttingDown,
                ErrorCode::Cancelled
            ]
        );
    }
}
