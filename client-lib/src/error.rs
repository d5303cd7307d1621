//! The typed error of the high-level API: one variant per daemon code, plus what can go
//! wrong on this side (encoding, decoding, no daemon, a connection lost mid-call).

use std::path::PathBuf;

use crate::conn;
use crate::ipc::ErrorCode;

/// Why a call through [`crate::Client`] (or a generated stub) failed.
///
/// Every variant but [`CallError::App`] carries a human-readable message; `App` carries the
/// handler's own message. [`CallError::code`] gives the stable protocol code, and
/// [`CallError::outcome_unknown`] tells whether the call may nevertheless have run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No app on the target daemon has registered the function.
    #[error("unknown function: {0}")]
    UnknownFunction(String),
    /// The target daemon did not answer within the retry or keepalive bound.
    #[error("peer unreachable: {0}")]
    PeerUnreachable(String),
    /// The target daemon restarted while the call was in flight; the call may have run.
    #[error("peer restarted, outcome unknown: {0}")]
    PeerRestarted(String),
    /// The deadline passed before a reply arrived; the call may have run.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The arguments or the reply exceed a size limit.
    #[error("message too large: {0}")]
    MessageTooLarge(String),
    /// The serving app disconnected before answering.
    #[error("server app gone: {0}")]
    ServerAppGone(String),
    /// A bound was reached (the serving app's worker queue, calls in flight); retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The request was refused as malformed: a bad target, or arguments the handler could
    /// not decode.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Registering a function another live app already serves.
    #[error("name taken: {0}")]
    NameTaken(String),
    /// Unregistering a function this app does not serve.
    #[error("not owner: {0}")]
    NotOwner(String),
    /// The daemon is shutting down and takes no new work.
    #[error("rpcd is shutting down: {0}")]
    ShuttingDown(String),
    /// The caller is not permitted to do this.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The daemon and this library disagree on the protocol; the connection was closed.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The daemon speaks another protocol version.
    #[error("protocol version mismatch: {0}")]
    VersionMismatch(String),
    /// The handler returned an error (or panicked); the message is the handler's.
    #[error("application error: {0}")]
    App(String),
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
            ErrorCode::UnknownFunction => CallError::UnknownFunction(message),
            ErrorCode::PeerUnreachable => CallError::PeerUnreachable(message),
            ErrorCode::PeerRestarted => CallError::PeerRestarted(message),
            ErrorCode::DeadlineExceeded => CallError::DeadlineExceeded(message),
            ErrorCode::MessageTooLarge => CallError::MessageTooLarge(message),
            ErrorCode::ServerAppGone => CallError::ServerAppGone(message),
            ErrorCode::Overloaded => CallError::Overloaded(message),
            ErrorCode::BadRequest => CallError::BadRequest(message),
            ErrorCode::NameTaken => CallError::NameTaken(message),
            ErrorCode::NotOwner => CallError::NotOwner(message),
            ErrorCode::AppError => CallError::App(message),
            ErrorCode::ShuttingDown => CallError::ShuttingDown(message),
            ErrorCode::AccessDenied => CallError::AccessDenied(message),
            ErrorCode::ProtocolError => CallError::Protocol(message),
            ErrorCode::VersionMismatch => CallError::VersionMismatch(message),
        }
    }

    /// The stable protocol code of this error, when it has one.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            CallError::UnknownFunction(_) => ErrorCode::UnknownFunction,
            CallError::PeerUnreachable(_) => ErrorCode::PeerUnreachable,
            CallError::PeerRestarted(_) => ErrorCode::PeerRestarted,
            CallError::DeadlineExceeded(_) => ErrorCode::DeadlineExceeded,
            CallError::MessageTooLarge(_) => ErrorCode::MessageTooLarge,
            CallError::ServerAppGone(_) => ErrorCode::ServerAppGone,
            CallError::Overloaded(_) => ErrorCode::Overloaded,
            CallError::BadRequest(_) => ErrorCode::BadRequest,
            CallError::NameTaken(_) => ErrorCode::NameTaken,
            CallError::NotOwner(_) => ErrorCode::NotOwner,
            CallError::ShuttingDown(_) => ErrorCode::ShuttingDown,
            CallError::AccessDenied(_) => ErrorCode::AccessDenied,
            CallError::Protocol(_) => ErrorCode::ProtocolError,
            CallError::VersionMismatch(_) => ErrorCode::VersionMismatch,
            CallError::App(_) => ErrorCode::AppError,
            CallError::Encode(_)
            | CallError::Decode(_)
            | CallError::DaemonUnavailable { .. }
            | CallError::ConnectionLost => return None,
        })
    }

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
            conn::ConnectError::VersionMismatch { ours, message } => {
                CallError::VersionMismatch(format!("this client speaks version {ours}; {message}"))
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
