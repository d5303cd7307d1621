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

    #[test]
    fn socket_path_resolution() {
        // One test touches the environment, so no other test races with it.
        std::env::set_var("RPCD_SOCKET", "/x/y.sock");
        assert_eq!(default_socket_path(), PathBuf::from("/x/y.sock"));
        std::env::set_var("RPCD_SOCKET", "");
        let path = default_socket_path();
        std::env::remove_var("RPCD_SOCKET");
        assert_eq!(default_socket_path(), path);
        if nix::unistd::geteuid().is_root() {
            assert_eq!(path, PathBuf::from("/run/rpcd/rpcd.sock"));
        } else {
            assert!(path.ends_with("rpcd.sock"), "{}", path.display());
        }
    }
}
