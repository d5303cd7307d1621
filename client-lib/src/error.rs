//! The typed error of the high-level API: one variant per daemon code, plus what can go
//! wrong on this side (encoding, decoding, no daemon, a connection lost mid-call).

use std::path::PathBuf;

use crate::conn;
use crate::ipc::{for_each_error_code, ErrorCode};

/// Expands the error-code table into [`CallError`]: one variant per daemon code, then the
/// failures of this side, and the mapping between codes and variants both ways.
macro_rules! define_call_error {
    ($(
        $(#[$doc:meta])*
        $code:ident = $wire:literal, outcome_unknown: $unknown:literal,
            call_error: $call:ident($format:literal);
    )*) => {
        /// Why a call through [`crate::Client`] (or a generated stub) failed.
        ///
        /// Every variant but [`CallError::App`] carries a human-readable message; `App`
        /// carries the handler's own message. [`CallError::code`] gives the stable protocol
        /// code, and [`CallError::outcome_unknown`] tells whether the call may nevertheless
        /// have run.
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        #[non_exhaustive]
        pub enum CallError {
            $(
                $(#[$doc])*
                #[error($format)]
                $call(String),
            )*
            /// The arguments could not be encoded as MessagePack.
            #[error("cannot encode the arguments: {0}")]
            Encode(String),
            /// The reply could not be decoded into the expected type.
            #[error("cannot decode the reply: {0}")]
            Decode(String),
            /// No daemon answers on the socket, even after the reconnect attempts.
            #[error("is rpcd running? tried {}: {message}", .path.display())]
            DaemonUnavailable {
                /// The socket path tried.
                path: PathBuf,
                /// The last connect error.
                message: String,
            },
            /// The connection to the daemon broke while the call was in flight (the daemon
            /// restarted or died); the call may have run. The next call reconnects.
            #[error("connection to rpcd lost while the call was in flight; it may have run")]
            ConnectionLost,
        }

        impl CallError {
            /// Maps a daemon code and its message to the variant of that code.
            pub fn from_code(code: ErrorCode, message: String) -> CallError {
                match code {
                    $(ErrorCode::$code => CallError::$call(message),)*
                }
            }

            /// The stable protocol code of this error, when it has one.
            pub fn code(&self) -> Option<ErrorCode> {
                match self {
                    $(CallError::$call(_) => Some(ErrorCode::$code),)*
                    CallError::Encode(_)
                    | CallError::Decode(_)
                    | CallError::DaemonUnavailable { .. }
                    | CallError::ConnectionLost => None,
                }
            }
        }
    };
}

for_each_error_code!(define_call_error);

impl CallError {
    /// True when the call may have run although no reply came back: peer restarted,
    /// deadline exceeded, or the connection to the daemon lost mid-call. A call failing
    /// any other way did not run (or, for `App`, ran and said no).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            CallError::ConnectionLost | CallError::Protocol(_) => true,
            other => other.code().is_some_and(|code| code.outcome_unknown()),
        }
    }

    /// True for errors worth retrying later without changing anything: overloaded, and
    /// the daemon being unavailable or restarting.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CallError::Overloaded(_)
                | CallError::DaemonUnavailable { .. }
                | CallError::ConnectionLost
                | CallError::ShuttingDown(_)
        )
    }
}

impl From<conn::RequestError> for CallError {
    fn from(err: conn::RequestError) -> CallError {
        match err {
            conn::RequestError::Remote { code, message }
            | conn::RequestError::Local { code, message } => CallError::from_code(code, message),
            // The daemon closed the connection on us: whatever the code, this call's fate
            // is unknown and the next call reconnects.
            conn::RequestError::Fatal { code, message } => {
                CallError::Protocol(format!("rpcd closed the connection ({code}): {message}"))
            }
            conn::RequestError::Disconnected | conn::RequestError::Io(_) => {
                CallError::ConnectionLost
            }
            conn::RequestError::Protocol(message) => CallError::Protocol(message),
        }
    }
}

impl From<conn::ConnectError> for CallError {
    fn from(err: conn::ConnectError) -> CallError {
        match err {
            conn::ConnectError::NotRunning { path, source }
            | conn::ConnectError::Io { path, source } => CallError::DaemonUnavailable {
                path,
                message: source.to_string(),
            },
            conn::ConnectError::NoDaemon { tried } => match tried.split_first() {
                Some((first, rest)) => CallError::DaemonUnavailable {
                    path: first.path.clone(),
                    message: if rest.is_empty() {
                        first.error.to_string()
                    } else {
                        format!(
                            "{}; also tried {}",
                            first.error,
                            conn::TriedSocket::list(rest)
                        )
                    },
                },
                None => CallError::DaemonUnavailable {
                    path: PathBuf::new(),
                    message: "no socket path to try".to_owned(),
                },
            },
            conn::ConnectError::VersionMismatch { ours, message } => {
                CallError::VersionMismatch(format!(
                    "this client speaks versions {} to {ours}; {message}",
                    crate::ipc::PROTOCOL_VERSION_MIN
                ))
            }
            conn::ConnectError::Refused { code, message } => CallError::from_code(code, message),
            conn::ConnectError::Protocol(message) => CallError::Protocol(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_its_own_variant_and_back() {
        for code in ErrorCode::ALL {
            let err = CallError::from_code(code, "m".into());
            assert_eq!(err.code(), Some(code), "{err:?}");
            assert_eq!(
                err.outcome_unknown(),
                code.outcome_unknown() || code == ErrorCode::ProtocolError
            );
            let low = conn::RequestError::Remote {
                code,
                message: "m".into(),
            };
            assert_eq!(CallError::from(low), err);
        }
        assert_eq!(
            CallError::from_code(ErrorCode::AppError, "boom".into()),
            CallError::App("boom".into())
        );
    }

    #[test]
    fn a_dropped_connection_is_connection_lost_and_outcome_unknown() {
        let err = CallError::from(conn::RequestError::Disconnected);
        assert_eq!(err, CallError::ConnectionLost);
        assert!(err.outcome_unknown());
        assert!(err.is_transient());
        assert_eq!(err.code(), None);
    }

    #[test]
    fn daemon_unavailable_names_the_path() {
        let err = CallError::DaemonUnavailable {
            path: "/run/x.sock".into(),
            message: "No such file or directory".into(),
        };
        assert_eq!(
            err.to_string(),
            "is rpcd running? tried /run/x.sock: No such file or directory"
        );
    }
}
