//! Where the daemon's socket is: one resolution rule for the daemon and every client.

use std::path::PathBuf;

/// Where the daemon's socket is, for both the daemon and its clients.
///
/// In order: `RPCD_SOCKET` if set and non-empty; `/run/rpcd/rpcd.sock` for root (effective
/// uid 0); `$XDG_RUNTIME_DIR/rpcd/rpcd.sock` if that variable is set and non-empty;
/// otherwise `/tmp/rpcd-$EUID/rpcd.sock`.
pub fn default_socket_path() -> PathBuf {
    if let Some(path) = std::env::var_os("RPCD_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        return PathBuf::from("/run/rpcd/rpcd.sock");
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(dir).join("rpcd").join("rpcd.sock");
    }
    PathBuf::from(format!("/tmp/rpcd-{euid}/rpcd.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each `RPCD_SOCKET` case runs in a child process whose environment is set for it:
    /// the test process's own environment is never changed (other tests read it).
    #[test]
    fn socket_path_resolution() {
        let default = if nix::unistd::geteuid().is_root() {
            "/run/rpcd/rpcd.sock".to_owned()
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
    }
}
