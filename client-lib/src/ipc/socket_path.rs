//! Where the daemon's socket is: the path a daemon binds, and the paths a client tries.
//!
//! A daemon binds one path ([`default_socket_path`] unless told otherwise). A client does
//! not know which daemon it will find — the system one (socket-activated by `rpcd.socket`,
//! or run as root) or one a user runs for themselves — so it tries, in order
//! ([`socket_candidates`]): `RPCD_SOCKET` if set and non-empty, then the system socket
//! [`SYSTEM_SOCKET`], then the per-user path ([`per_user_socket_path`]), and uses the first
//! path where a daemon accepts the connection.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// The system daemon's socket: where `rpcd.socket` listens, and where rpcd run as root
/// binds by default.
pub const SYSTEM_SOCKET: &str = "/run/rpcd/rpcd.sock";

/// Where a candidate socket path comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketSource {
    /// The `RPCD_SOCKET` environment variable.
    Env,
    /// [`SYSTEM_SOCKET`].
    System,
    /// [`per_user_socket_path`].
    PerUser,
}

impl fmt::Display for SocketSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketSource::Env => "RPCD_SOCKET",
            SocketSource::System => "the system socket",
            SocketSource::PerUser => "the per-user socket",
        })
    }
}

/// The path a daemon binds when neither `--socket` nor its settings file names one (and no
/// socket is passed by socket activation).
///
/// In order: `RPCD_SOCKET` if set and non-empty; [`SYSTEM_SOCKET`] for root (effective uid
/// 0); otherwise [`per_user_socket_path`]. Clients try more than this one path: see
/// [`socket_candidates`].
pub fn default_socket_path() -> PathBuf {
    if let Some(path) = std::env::var_os("RPCD_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from(SYSTEM_SOCKET);
    }
    per_user_socket_path()
}

/// This user's own daemon's socket: `$XDG_RUNTIME_DIR/rpcd/rpcd.sock` if that variable is
/// set and non-empty, else `/tmp/rpcd-$EUID/rpcd.sock` (numeric effective uid).
pub fn per_user_socket_path() -> PathBuf {
    per_user(
        std::env::var_os("XDG_RUNTIME_DIR"),
        nix::unistd::geteuid().as_raw(),
    )
}

/// The paths a client tries, in order, each once: `RPCD_SOCKET` if set and non-empty, then
/// [`SYSTEM_SOCKET`], then [`per_user_socket_path`].
pub fn socket_candidates() -> Vec<(SocketSource, PathBuf)> {
    candidates(
        std::env::var_os("RPCD_SOCKET"),
        std::env::var_os("XDG_RUNTIME_DIR"),
        nix::unistd::geteuid().as_raw(),
    )
}

fn candidates(
    env: Option<OsString>,
    xdg_runtime_dir: Option<OsString>,
    euid: u32,
) -> Vec<(SocketSource, PathBuf)> {
    let mut out: Vec<(SocketSource, PathBuf)> = Vec::with_capacity(3);
    let all = [
        env.filter(|p| !p.is_empty())
            .map(|p| (SocketSource::Env, PathBuf::from(p))),
        Some((SocketSource::System, PathBuf::from(SYSTEM_SOCKET))),
        Some((SocketSource::PerUser, per_user(xdg_runtime_dir, euid))),
    ];
    for (source, path) in all.into_iter().flatten() {
        if !out.iter().any(|(_, p)| *p == path) {
            out.push((source, path));
        }
    }
    out
}

fn per_user(xdg_runtime_dir: Option<OsString>, euid: u32) -> PathBuf {
    match xdg_runtime_dir.filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("rpcd").join("rpcd.sock"),
        None => PathBuf::from(format!("/tmp/rpcd-{euid}/rpcd.sock")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn clients_try_the_environment_then_the_system_then_their_own_socket() {
        let got = candidates(os("/x/y.sock"), os("/run/user/1000"), 1000);
        assert_eq!(
            got,
            vec![
                (SocketSource::Env, PathBuf::from("/x/y.sock")),
                (SocketSource::System, PathBuf::from(SYSTEM_SOCKET)),
                (
                    SocketSource::PerUser,
                    PathBuf::from("/run/user/1000/rpcd/rpcd.sock")
                ),
            ]
        );
        // Empty variables count as unset.
        let got = candidates(os(""), os(""), 1000);
        assert_eq!(
            got,
            vec![
                (SocketSource::System, PathBuf::from(SYSTEM_SOCKET)),
                (
                    SocketSource::PerUser,
                    PathBuf::from("/tmp/rpcd-1000/rpcd.sock")
                ),
            ]
        );
        // RPCD_SOCKET naming the system socket (as the unit sets it) is tried once.
        let got = candidates(os(SYSTEM_SOCKET), None, 0);
        assert_eq!(
            got,
            vec![
                (SocketSource::Env, PathBuf::from(SYSTEM_SOCKET)),
                (
                    SocketSource::PerUser,
                    PathBuf::from("/tmp/rpcd-0/rpcd.sock")
                ),
            ]
        );
    }

    /// Each `RPCD_SOCKET` case runs in a child process whose environment is set for it:
    /// the test process's own environment is never changed (other tests read it).
    #[test]
    fn socket_path_resolution() {
        let default = if nix::unistd::geteuid().is_root() {
            SYSTEM_SOCKET.to_owned()
        } else {
            String::new() // per-user: checked by suffix in the child
        };
        for (value, want) in [
            (Some("/x/y.sock"), "/x/y.sock".to_owned()),
            (Some(""), default.clone()),
            (None, default),
        ] {
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "--exact",
                "ipc::socket_path::tests::socket_path_in_a_child",
                "--ignored",
                "--test-threads=1",
            ])
            .env("RPCD_TEST_WANT_SOCKET", &want)
            .env_remove("RPCD_SOCKET");
            if let Some(v) = value {
                cmd.env("RPCD_SOCKET", v);
            }
            let out = cmd.output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "RPCD_SOCKET={value:?}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Run by [`socket_path_resolution`] in a child process whose environment it set.
    #[test]
    #[ignore = "run in a child process by socket_path_resolution"]
    fn socket_path_in_a_child() {
        let want = std::env::var("RPCD_TEST_WANT_SOCKET").unwrap();
        let path = default_socket_path();
        if want.is_empty() {
            assert!(path.ends_with("rpcd.sock"), "{}", path.display());
        } else {
            assert_eq!(path, PathBuf::from(want));
        }
        let tried = socket_candidates();
        match std::env::var("RPCD_SOCKET").ok().filter(|v| !v.is_empty()) {
            Some(env) => assert_eq!(tried[0], (SocketSource::Env, PathBuf::from(env))),
            None => assert_eq!(
                tried[0],
                (SocketSource::System, PathBuf::from(SYSTEM_SOCKET))
            ),
        }
        assert_eq!(tried.last().unwrap().1, per_user_socket_path());
    }
}
