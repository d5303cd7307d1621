//! Exit statuses and error codes, and how an error maps to them.
//!
//! Errors travel up to `main` as `anyhow::Error`; the status and the code are read off the
//! typed error at the root of the chain, so no code path has to remember to pick one. The
//! code is what `--json` puts in its error object: the daemon's code (docs/ipc-protocol.md
//! §7) when the daemon gave one, otherwise one of rpcctl's own (the `CODE_*` constants).

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

/// Error code: bad command line or input ([`USAGE`]).
pub const CODE_USAGE: &str = "usage";
/// Error code: no daemon could be reached on the socket, or the handshake failed
/// ([`UNREACHABLE`]).
pub const CODE_DAEMON_UNREACHABLE: &str = "daemon_unreachable";
/// Error code: the connection to the daemon closed or broke during a request
/// ([`UNREACHABLE`]); a call in flight may or may not have run.
pub const CODE_DAEMON_DISCONNECTED: &str = "daemon_disconnected";
/// Error code: a reply that is not what the request returns ([`FAILURE`]).
pub const CODE_BAD_REPLY: &str = "bad_reply";
/// Error code: standard output could not be written ([`FAILURE`]).
pub const CODE_OUTPUT_ERROR: &str = "output_error";
/// Error code: anything else ([`FAILURE`]).
pub const CODE_FAILURE: &str = "failure";

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
$RPCD_SOCKET, /run/rpcd/rpcd.sock and the per-user one (see docs/cli.md). With
--json an error is one JSON object on standard error:
{\"error\":{\"code\":\"peer_unreachable\",\"message\":\"...\",\"exit_status\":4}}
(codes in docs/cli.md).";

/// Bad input from the user: exit status [`USAGE`].
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A reply that is not what the request returns (not MessagePack, or not the expected
/// shape): exit status [`FAILURE`], code [`CODE_BAD_REPLY`].
#[derive(Debug)]
pub struct BadReply(pub String);

impl fmt::Display for BadReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadReply {}

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
    classify(err).1
}

/// The error code and exit status of the first typed error in the chain: the daemon's code,
/// or one of the `CODE_*` constants.
fn classify(err: &anyhow::Error) -> (&'static str, u8) {
    for cause in err.chain() {
        if cause.is::<Usage>() {
            return (CODE_USAGE, USAGE);
        }
        if let Some(err) = cause.downcast_ref::<ConnectError>() {
            return (connect_code(err), for_connect(err));
        }
        if let Some(err) = cause.downcast_ref::<RequestError>() {
            return (call_code(err), for_call(err));
        }
        if cause.is::<BadReply>() {
            return (CODE_BAD_REPLY, FAILURE);
        }
        if cause.is::<Output>() {
            return (CODE_OUTPUT_ERROR, FAILURE);
        }
    }
    (CODE_FAILURE, FAILURE)
}

/// The error code for a connection that could not be opened.
fn connect_code(err: &ConnectError) -> &'static str {
    match err {
        ConnectError::Refused { code, .. } => code.as_str(),
        ConnectError::VersionMismatch { .. } => ErrorCode::VersionMismatch.as_str(),
        ConnectError::Protocol(_) => ErrorCode::ProtocolError.as_str(),
        _ if for_connect(err) == ACCESS_DENIED => ErrorCode::AccessDenied.as_str(),
        _ => CODE_DAEMON_UNREACHABLE,
    }
}

/// The error code for a failed request: the daemon's (or the library's) code, else the
/// connection broke.
pub fn call_code(err: &RequestError) -> &'static str {
    match (err.code(), err) {
        (Some(code), _) => code.as_str(),
        (None, RequestError::Protocol(_)) => ErrorCode::ProtocolError.as_str(),
        (None, _) => CODE_DAEMON_DISCONNECTED,
    }
}

/// Reports `err` on standard error: `rpcctl: what failed: why`, or with `json` one line
/// `{"error":{"code":..,"message":..,"exit_status":..}}` (message: the same text).
pub fn report(err: &anyhow::Error, json: bool) {
    let (code, status) = classify(err);
    report_parts(code, &describe(err), status, json);
}

/// [`report`] from its parts, for errors that are no `anyhow::Error` (a refused command line).
pub fn report_parts(code: &str, message: &str, status: u8, json: bool) {
    let line = if json {
        serde_json::json!({
            "error": {"code": code, "message": message, "exit_status": status}
        })
        .to_string()
    } else {
        format!("rpcctl: {message}")
    };
    // If stderr is gone too there is no one left to tell.
    let _ = writeln!(io::stderr(), "{line}");
}

/// The exit status for a failed request on a connection.
pub fn for_call(err: &RequestError) -> u8 {
    match err {
        RequestError::Remote { code, .. } | RequestError::Local { code, .. } => for_code(*code),
        // The daemon went away or broke the protocol (`Fatal`, `Disconnected`, `Io`,
        // `Protocol`, and whatever a later library adds): it is no longer reachable.
        _ => UNREACHABLE,
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

    fn code(err: &anyhow::Error) -> &'static str {
        classify(err).0
    }

    #[test]
    fn statuses_follow_the_error_class() {
        let usage = || anyhow::Error::new(Usage("argument 1 is not JSON".into()));
        assert_eq!(status(&usage().context("call")), USAGE);
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
            assert_eq!(classify(&err).0, code.as_str());
        }
        assert_eq!(
            status(&anyhow::Error::new(RequestError::Disconnected)),
            UNREACHABLE
        );
        assert_eq!(status(&anyhow::anyhow!("other")), FAILURE);
        assert_eq!(code(&anyhow::anyhow!("other")), CODE_FAILURE);
        assert_eq!(code(&usage().context("x")), CODE_USAGE);
        let refused = ConnectError::Io {
            path: "/x.sock".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        let refused = anyhow::Error::new(refused);
        assert_eq!(status(&refused), ACCESS_DENIED);
        assert_eq!(code(&refused), "access_denied");
        let absent = ConnectError::NotRunning {
            path: "/x.sock".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        let absent = anyhow::Error::new(absent).context("list");
        assert_eq!(status(&absent), UNREACHABLE);
        assert_eq!(code(&absent), CODE_DAEMON_UNREACHABLE);
        let gone = anyhow::Error::new(RequestError::Disconnected).context("f on h:1 failed");
        assert_eq!(
            (code(&gone), status(&gone)),
            (CODE_DAEMON_DISCONNECTED, UNREACHABLE)
        );
        let fatal = anyhow::Error::new(RequestError::Fatal {
            code: ErrorCode::ProtocolError,
            message: "bad frame".into(),
        });
        assert_eq!(
            (code(&fatal), status(&fatal)),
            ("protocol_error", UNREACHABLE)
        );
        let bad = anyhow::Error::new(BadReply("not MessagePack".into())).context("f replied");
        assert_eq!((code(&bad), status(&bad)), (CODE_BAD_REPLY, FAILURE));
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
