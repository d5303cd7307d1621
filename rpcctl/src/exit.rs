//! Exit statuses, and how an error maps to one.
//!
//! Errors travel up to `main` as `anyhow::Error`; the status is read off the typed error at the
//! root of the chain, so no code path has to remember to pick one.

use std::fmt;
use std::io::{self, Write};

use rpcd_client::conn::{ConnectError, RequestError};
use rpcd_client::ipc::ErrorCode;

/// The call, or the command, succeeded.
pub const SUCCESS: u8 = 0;
/// Anything not covered below: a reply that is not MessagePack, an output error.
pub const FAILURE: u8 = 1;
/// Bad command line, an argument that is not JSON, an unreadable or malformed args file or key
/// file, a key file to create that exists.
pub const USAGE: u8 = 2;
/// rpcd is not reachable on the socket, or it closed the connection.
pub const UNREACHABLE: u8 = 3;
/// The call failed with a transport error code (anything but `app_error`).
pub const TRANSPORT: u8 = 4;
/// The remote handler returned an application error (`app_error`).
pub const APPLICATION: u8 = 5;
/// Access denied: the kernel refused the socket (its mode and group), or the daemon's
/// policy refused the request (`access_denied`).
pub const ACCESS_DENIED: u8 = 6;

/// The exit-status table for `--help`; docs/cli.md holds the same table.
pub const HELP: &str = "\
Exit status:
  0  success
  1  other failure (a reply that is not MessagePack, an output error)
  2  usage: bad command line, an ARG that is not JSON, a bad --args-file,
     a key file that is not a key, or a `keys generate --out` file that exists
  3  rpcd not reachable on the socket (not running, wrong --socket), or it
     closed the connection
  4  transport error: the call failed with a code other than app_error
     (unknown_function, peer_unreachable, peer_restarted, deadline_exceeded,
     overloaded, message_too_large, server_app_gone, bad_request, ...)
  5  application error: the remote handler returned an error (app_error)
  6  access denied: this user may not connect to the socket, or the
     daemon's policy refused the request (access_denied)

A closed standard output (e.g. `rpcctl stats | head -1`) ends rpcctl quietly
with status 0. Without --socket, rpcctl uses the first socket that answers of
$RPCD_SOCKET, /run/rpcd/rpcd.sock and the per-user one (see docs/cli.md).";

/// Bad input from the user: exit status [`USAGE`].
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Writing to standard output failed. Kept apart from other I/O errors so that only a broken
/// pipe on *our* output counts as a clean exit, not one on the daemon's socket.
#[derive(Debug)]
pub struct Output(pub io::Error);

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write to standard output: {}", self.0)
    }
}

impl std::error::Error for Output {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Writes `text` to standard output and flushes it, so each line reaches a pipe at once.
pub fn print(text: &str) -> Result<(), Output> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(Output)?;
    out.flush().map_err(Output)
}

/// The exit status for `err`.
pub fn status(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<Usage>() {
            return USAGE;
        }
        if let Some(err) = cause.downcast_ref::<ConnectError>() {
            return for_connect(err);
        }
        if let Some(err) = cause.downcast_ref::<RequestError>() {
            return for_call(err);
        }
    }
    FAILURE
}

/// The exit status for a failed request on a connection.
pub fn for_call(err: &RequestError) -> u8 {
    match err {
        RequestError::Remote { code, .. } | RequestError::Local { code, .. } => for_code(*code),
        // The daemon went away or broke the protocol: it is no longer reachable.
        RequestError::Fatal { .. }
        | RequestError::Disconnected
        | RequestError::Io(_)
        | RequestError::Protocol(_) => UNREACHABLE,
    }
}

/// The exit status for a connection that could not be opened.
pub fn for_connect(err: &ConnectError) -> u8 {
    match err {
        ConnectError::NotRunning { source, .. } | ConnectError::Io { source, .. }
            if source.kind() == io::ErrorKind::PermissionDenied =>
        {
            ACCESS_DENIED
        }
        // A daemon is there, but this user may not connect to it.
        ConnectError::NoDaemon { tried }
            if tried
                .iter()
                .any(|t| t.error.kind() == io::ErrorKind::PermissionDenied) =>
        {
            ACCESS_DENIED
        }
        ConnectError::Refused {
            code: ErrorCode::AccessDenied,
            ..
        } => ACCESS_DENIED,
        _ => UNREACHABLE,
    }
}

/// The exit status for a call that failed with `code`.
pub fn for_code(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::AppError => APPLICATION,
        ErrorCode::AccessDenied => ACCESS_DENIED,
        _ => TRANSPORT,
    }
}

/// The error and its causes on one line, `outer: inner: root`, leaving out a cause whose
/// text the message before it already ends with (many errors print their source too).
pub fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// True when `err` is a broken pipe on standard output: the reader went away, which is a
/// normal way for a pipeline to end.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<Output>()
            .is_some_and(|Output(io)| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn statuses_follow_the_error_class() {
        let usage = anyhow::Error::new(Usage("argument 1 is not JSON".into()));
        assert_eq!(status(&usage.context("call")), USAGE);
        let app = Err::<(), _>(RequestError::Remote {
            code: ErrorCode::AppError,
            message: "boom".into(),
        })
        .context("f on h:1 failed")
        .unwrap_err();
        assert_eq!(status(&app), APPLICATION);
        for code in ErrorCode::ALL {
            let err = anyhow::Error::new(RequestError::Local {
                code,
                message: String::new(),
            });
            let want = match code {
                ErrorCode::AppError => APPLICATION,
                ErrorCode::AccessDenied => ACCESS_DENIED,
                _ => TRANSPORT,
            };
            assert_eq!(status(&err), want, "{code}");
        }
        assert_eq!(
            status(&anyhow::Error::new(RequestError::Disconnected)),
            UNREACHABLE
        );
        assert_eq!(status(&anyhow::anyhow!("other")), FAILURE);
        let refused = ConnectError::Io {
            path: "/x.sock".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(status(&anyhow::Error::new(refused)), ACCESS_DENIED);
        let absent = ConnectError::NotRunning {
            path: "/x.sock".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(status(&anyhow::Error::new(absent)), UNREACHABLE);
    }

    #[test]
    fn description_does_not_repeat_a_cause() {
        let err = anyhow::Error::new(ConnectError::NotRunning {
            path: "/x.sock".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
        .context("list");
        assert_eq!(
            describe(&err),
            format!(
                "list: is rpcd running? tried /x.sock: {}",
                io::Error::from(io::ErrorKind::NotFound)
            )
        );
    }

    #[test]
    fn only_a_broken_pipe_on_our_output_is_clean() {
        let pipe = || io::Error::from(io::ErrorKind::BrokenPipe);
        let ours = anyhow::Error::new(Output(pipe())).context("printing");
        assert!(is_broken_pipe(&ours));
        // EPIPE on the daemon's socket is the daemon going away, not a clean exit.
        let socket = anyhow::Error::new(RequestError::Io(pipe()));
        assert!(!is_broken_pipe(&socket));
        assert_eq!(status(&socket), UNREACHABLE);
        let full = anyhow::Error::new(Output(io::Error::from(io::ErrorKind::StorageFull)));
        assert!(!is_broken_pipe(&full));
    }
}
