//! Socket activation: the local socket inherited from the service manager, as
//! `sd_listen_fds(3)` passes it.
//!
//! systemd (or `systemd-socket-activate`) binds the socket, sets its owner,
//! group and mode from the `.socket` unit, and execs rpcd with the listening
//! socket as file descriptor 3, `LISTEN_PID` set to rpcd's pid, `LISTEN_FDS`
//! to the number of descriptors and, optionally, `LISTEN_FDNAMES` to their
//! names. rpcd then serves that socket and leaves its file alone: it neither
//! creates, nor changes, nor removes it (the `.socket` unit owns it).
//!
//! `LISTEN_PID` naming another process (variables inherited from a parent) is
//! no activation. `LISTEN_PID` naming rpcd with anything but exactly one
//! listening Unix stream socket is an [`ActivationError`]: rpcd then refuses
//! to start rather than serve some other socket.
//!
//! Turning the number 3 into an owned listener needs `FromRawFd`, which is
//! `unsafe` (the compiler cannot know that nothing else owns the descriptor),
//! and this workspace forbids `unsafe`: the `listenfd` crate does that one
//! step (it also checks the family and type, and sets `FD_CLOEXEC`). The
//! environment is parsed here, strictly, before it is consulted.

use std::ffi::OsStr;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use nix::sys::socket::{getsockopt, sockopt, SockType};

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: i32 = 3;

/// The socket systemd passed, ready to serve.
#[derive(Debug)]
pub struct Inherited {
    /// The listener: nonblocking, close-on-exec.
    pub listener: UnixListener,
    /// Its path, when it has one (not an abstract or unnamed socket).
    pub path: Option<PathBuf>,
    /// Its name from `LISTEN_FDNAMES` (`FileDescriptorName=`), if given.
    pub name: Option<String>,
}

/// Why the inherited socket cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_PID` is not a process id.
    #[error("LISTEN_PID={0:?} is not a process id")]
    BadPid(String),
    /// `LISTEN_FDS` is missing or not a number.
    #[error("LISTEN_PID names this process but LISTEN_FDS={0:?} is not a count of descriptors")]
    BadCount(String),
    /// Not exactly one descriptor was passed.
    #[error(
        "socket activation passed {0} descriptors (LISTEN_FDS); rpcd serves exactly one \
         listening Unix stream socket: check ListenStream= in the .socket unit"
    )]
    WrongCount(u32),
    /// `LISTEN_FDNAMES` does not name each descriptor.
    #[error("LISTEN_FDNAMES={names:?} names {got} descriptors but LISTEN_FDS is {count}")]
    NameCount {
        /// The variable's value.
        names: String,
        /// How many names it holds.
        got: usize,
        /// `LISTEN_FDS`.
        count: u32,
    },
    /// The descriptor is not a listening Unix stream socket.
    #[error(
        "the socket passed by socket activation (fd {LISTEN_FDS_START}) is not a listening \
         Unix stream socket: {0}"
    )]
    NotUnixListener(String),
}

/// What the `LISTEN_*` variables say, before any descriptor is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Passed {
    /// The descriptor's name from `LISTEN_FDNAMES`.
    pub name: Option<String>,
}

/// Take the socket passed by socket activation, if this process was given
/// one, and unset the `LISTEN_*` variables either way (so that nothing started
/// later inherits them). Call once, at start, before any thread is started:
/// it changes the process's environment.
pub fn take_listener() -> Result<Option<Inherited>, ActivationError> {
    let var = |key: &str| std::env::var_os(key);
    let passed = parse(
        std::process::id(),
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
    );
    // sd_listen_fds() ignores this extension of other tools; so does rpcd,
    // and listenfd (which honours it) must not see it.
    std::env::remove_var("LISTEN_FDS_FIRST_FD");
    std::env::remove_var("LISTEN_FDNAMES");
    let passed = match passed {
        Ok(Some(p)) => p,
        other => {
            std::env::remove_var("LISTEN_PID");
            std::env::remove_var("LISTEN_FDS");
            return other.map(|_| None);
        }
    };
    // Reads LISTEN_PID and LISTEN_FDS again (they agree with `parse`) and
    // removes them.
    let mut fds = listenfd::ListenFd::from_env();
    let listener = fds
        .take_unix_listener(0)
        .map_err(|e| ActivationError::NotUnixListener(e.to_string()))?
        .ok_or_else(|| ActivationError::NotUnixListener("no descriptor".to_owned()))?;
    check_listener(&listener).map_err(ActivationError::NotUnixListener)?;
    listener.set_nonblocking(true).map_err(|e| {
        ActivationError::NotUnixListener(format!("cannot make it nonblocking: {e}"))
    })?;
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(PathBuf::from));
    Ok(Some(Inherited {
        listener,
        path,
        name: passed.name,
    }))
}

/// Read the `LISTEN_*` variables as `sd_listen_fds(3)` does, for the process
/// `pid`: `None` when they are absent or meant for another process.
pub(crate) fn parse(
    pid: u32,
    listen_pid: Option<&OsStr>,
    listen_fds: Option<&OsStr>,
    fdnames: Option<&OsStr>,
) -> Result<Option<Passed>, ActivationError> {
    let Some(listen_pid) = listen_pid else {
        return Ok(None);
    };
    let text = listen_pid.to_string_lossy();
    let for_pid: u32 = text
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ActivationError::BadPid(text.clone().into_owned()))?;
    if for_pid != pid {
        return Ok(None);
    }
    let count_text = listen_fds.map(|v| v.to_string_lossy().into_owned());
    let count: u32 = count_text
        .as_deref()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ActivationError::BadCount(count_text.clone().unwrap_or_default()))?;
    if count != 1 {
        return Err(ActivationError::WrongCount(count));
    }
    let name = match fdnames {
        None => None,
        Some(names) => {
            let names = names.to_string_lossy();
            let got = names.split(':').count();
            if got != 1 {
                return Err(ActivationError::NameCount {
                    names: names.into_owned(),
                    got,
                    count,
                });
            }
            Some(names.into_owned()).filter(|n| !n.is_empty())
        }
    };
    Ok(Some(Passed { name }))
}

/// A stream socket that listens: the family was checked when it became a
/// `UnixListener`; the type and the listening state are checked here.
fn check_listener(listener: &UnixListener) -> Result<(), String> {
    let kind = getsockopt(listener, sockopt::SockType).map_err(|e| format!("SO_TYPE: {e}"))?;
    if kind != SockType::Stream {
        return Err(format!("its type is {kind:?}, not a stream"));
    }
    let listening =
        getsockopt(listener, sockopt::AcceptConn).map_err(|e| format!("SO_ACCEPTCONN: {e}"))?;
    if !listening {
        return Err("it is not listening (bound without listen(2))".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn absent_or_for_another_process_is_no_activation() {
        assert_eq!(parse(42, None, None, None).unwrap(), None);
        assert_eq!(parse(42, None, os("1"), None).unwrap(), None);
        assert_eq!(parse(42, os("41"), os("1"), None).unwrap(), None);
        // Another process's variables are ignored even when they are wrong for us.
        assert_eq!(parse(42, os("41"), os("7"), os("a:b")).unwrap(), None);
    }

    #[test]
    fn one_socket_for_this_process_is_taken_with_its_name() {
        assert_eq!(
            parse(42, os("42"), os("1"), None).unwrap(),
            Some(Passed { name: None })
        );
        assert_eq!(
            parse(42, os("42"), os("1"), os("rpcd.socket")).unwrap(),
            Some(Passed {
                name: Some("rpcd.socket".to_owned())
            })
        );
    }

    #[test]
    fn bad_variables_for_this_process_are_errors() {
        let err = |pid: Option<&str>, fds: Option<&str>, names: Option<&str>| {
            parse(
                42,
                pid.map(OsStr::new),
                fds.map(OsStr::new),
                names.map(OsStr::new),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(err(Some("x"), Some("1"), None).contains("LISTEN_PID=\"x\""));
        assert!(err(Some("0"), Some("1"), None).contains("LISTEN_PID"));
        assert!(err(Some("42"), None, None).contains("LISTEN_FDS=\"\""));
        assert!(err(Some("42"), Some("one"), None).contains("LISTEN_FDS=\"one\""));
        for n in ["0", "2"] {
            let e = err(Some("42"), Some(n), None);
            assert!(e.contains(&format!("passed {n} descriptors")), "{e}");
        }
        let e = err(Some("42"), Some("1"), Some("a:b"));
        assert!(e.contains("names 2 descriptors"), "{e}");
    }

    #[test]
    fn a_stream_listener_passes_the_checks_and_a_bound_socket_does_not() {
        use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, UnixAddr};
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("l.sock")).unwrap();
        check_listener(&listener).unwrap();

        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let path = dir.path().join("bound.sock");
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &UnixAddr::new(&path).unwrap(),
        )
        .unwrap();
        let bound = UnixListener::from(fd);
        let e = check_listener(&bound).unwrap_err();
        assert!(e.contains("not listening"), "{e}");
    }
}
