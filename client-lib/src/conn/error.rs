//! The connection's errors: connecting ([`ConnectError`]), a request failing
//! ([`RequestError`]), and why a connection closed ([`Closed`]), which every request still
//! waiting on it then fails with.
//!
//! These are the low-level errors of [`super::Connection`]; apps using [`crate::Client`] see
//! them mapped into the one app-facing [`crate::CallError`].

use std::io;
use std::path::PathBuf;

use crate::ipc::{ErrorCode, FrameError, SocketSource};

#[cfg(doc)]
use super::{Connection, REPLY_GRACE};
#[cfg(doc)]
use crate::ipc::PROTOCOL_VERSION;

/// Why [`Connection::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Nothing listens on the socket path (no file, or a stale one).
    #[error("is rpcd running? tried {}: {source}", .path.display())]
    NotRunning {
        /// The socket path tried.
        path: PathBuf,
        /// The error from `connect`.
        source: io::Error,
    },
    /// No daemon accepted a connection at any of the paths a client looks at
    /// ([`crate::ipc::socket_candidates`]); each is listed with why it failed.
    #[error("is rpcd running? tried {}", TriedSocket::list(.tried))]
    NoDaemon {
        /// Every path tried, in order.
        tried: Vec<TriedSocket>,
    },
    /// Connecting, or the handshake's reads and writes, failed otherwise (permissions,
    /// timeout, reset).
    #[error("cannot talk to rpcd at {}: {source}", .path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The daemon speaks none of the protocol versions this library speaks.
    #[error(
        "protocol version mismatch: this client speaks versions {} to {ours}; rpcd: {message}",
        crate::ipc::PROTOCOL_VERSION_MIN
    )]
    VersionMismatch {
        /// [`PROTOCOL_VERSION`], the highest this library speaks.
        ours: u32,
        /// The daemon's explanation, or the version it announced.
        message: String,
    },
    /// The daemon refused the handshake for another reason.
    #[error("rpcd refused the connection ({code}): {message}")]
    Refused {
        /// The daemon's code.
        code: ErrorCode,
        /// The daemon's message.
        message: String,
    },
    /// The daemon's answer to `Hello` made no sense, or it closed the connection.
    #[error("handshake with rpcd failed: {0}")]
    Protocol(String),
}

/// One socket path a client tried, and why nothing answered there.
#[derive(Debug)]
pub struct TriedSocket {
    /// The path.
    pub path: PathBuf,
    /// Where the path came from.
    pub source: SocketSource,
    /// Why connecting failed: no file, nothing listening, or no permission.
    pub error: io::Error,
}

impl TriedSocket {
    /// A failed connect to a candidate path from `source`: a [`TriedSocket`] when the next
    /// candidate should be tried (nothing there, nothing listening, or no permission),
    /// else the error itself, which ends the search.
    pub(crate) fn from_failure(
        source: SocketSource,
        failure: ConnectError,
    ) -> Result<TriedSocket, ConnectError> {
        match failure {
            ConnectError::NotRunning {
                path,
                source: error,
            } => Ok(TriedSocket {
                path,
                source,
                error,
            }),
            ConnectError::Io {
                path,
                source: error,
            } if error.kind() == io::ErrorKind::PermissionDenied => Ok(TriedSocket {
                path,
                source,
                error,
            }),
            other => Err(other),
        }
    }

    /// `PATH (SOURCE): ERROR; ...`.
    pub(crate) fn list(tried: &[TriedSocket]) -> String {
        tried
            .iter()
            .map(|t| format!("{} ({}): {}", t.path.display(), t.source, t.error))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Why a request on a [`Connection`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The daemon answered with an error: a transport error, a refusal, or (code
    /// `app_error`) the handler's error message.
    #[error("{code}: {message}")]
    Remote {
        /// The daemon's code.
        code: ErrorCode,
        /// The daemon's message.
        message: String,
    },
    /// This library refused the request (too large to send) or gave up waiting for its
    /// reply (`deadline_exceeded` after the deadline plus [`REPLY_GRACE`]).
    #[error("{code}: {message}")]
    Local {
        /// The code the daemon would have used.
        code: ErrorCode,
        /// What happened.
        message: String,
    },
    /// The daemon closed the connection for a protocol violation.
    #[error("rpcd closed the connection ({code}): {message}")]
    Fatal {
        /// The daemon's code.
        code: ErrorCode,
        /// The problem, as the daemon named it.
        message: String,
    },
    /// The connection to the daemon is closed (daemon gone, or the connection dropped).
    #[error("connection to rpcd closed")]
    Disconnected,
    /// Writing to the socket failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// The daemon sent something this library does not understand; the connection is
    /// closed.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl RequestError {
    /// Why a request's frame could not be encoded: one over the frame maximum fails here,
    /// before anything is written, as `message_too_large`.
    pub(crate) fn of_request_frame(err: FrameError) -> RequestError {
        match err {
            FrameError::TooLarge { len, max } => RequestError::Local {
                code: ErrorCode::MessageTooLarge,
                message: format!("request of {len} bytes exceeds the frame maximum of {max}"),
            },
            other => RequestError::Protocol(other.to_string()),
        }
    }

    /// The protocol error code, when there is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            RequestError::Remote { code, .. }
            | RequestError::Local { code, .. }
            | RequestError::Fatal { code, .. } => Some(*code),
            RequestError::Disconnected | RequestError::Io(_) | RequestError::Protocol(_) => None,
        }
    }

    /// True when a call that failed this way may nevertheless have run: a code with
    /// [`ErrorCode::outcome_unknown`], or the connection failing under it.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            RequestError::Remote { code, .. } | RequestError::Local { code, .. } => {
                code.outcome_unknown()
            }
            RequestError::Fatal { .. }
            | RequestError::Disconnected
            | RequestError::Io(_)
            | RequestError::Protocol(_) => true,
        }
    }
}

/// Why the connection closed.
#[derive(Debug, Clone)]
pub(super) enum Closed {
    /// The daemon closed the socket, or reading it failed.
    Disconnected,
    /// The daemon sent `Fatal`.
    Fatal { code: ErrorCode, message: String },
    /// The daemon sent a frame we could not decode.
    Protocol(String),
    /// The `Connection` was dropped.
    Dropped,
}

impl Closed {
    pub(super) fn to_error(&self) -> RequestError {
        match self {
            Closed::Disconnected | Closed::Dropped => RequestError::Disconnected,
            Closed::Fatal { code, message } => RequestError::Fatal {
                code: *code,
                message: message.clone(),
            },
            Closed::Protocol(message) => RequestError::Protocol(message.clone()),
        }
    }
}
