//! The local socket's file and directory: created so that only rpcd's user
//! and the socket's group can connect, whatever the umask, and never inside
//! a directory another user controls (`docs/security.md`).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context};
use nix::sys::stat::{umask, Mode};
use tracing::info;

/// Mode of the socket file: rpcd's user and the socket's group.
pub const SOCKET_MODE: u32 = 0o660;
/// Mode of a socket directory rpcd creates.
pub const DIR_MODE: u32 = 0o750;

/// Bind the local socket at `path` (mode 0660, group `group` if given),
/// replacing a stale file but never a live daemon's. Its directory is
/// created 0750 if missing, and refused if another user could replace what
/// is in it.
pub fn bind_unix(
    path: &Path,
    group: Option<u32>,
) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            if let Some(up) = dir.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(up).with_context(|| {
                    format!("creating the socket directory's parent {}", up.display())
                })?;
            }
            match std::fs::create_dir(dir) {
                Ok(()) => {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
                        .with_context(|| format!("setting the mode of {}", dir.display()))?;
                }
                // Created meanwhile (by whom is checked next).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("creating the socket directory {}", dir.display())
                    })
                }
            }
        }
        check_dir(dir, nix::unistd::geteuid().as_raw())?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => bail!(
                "another rpcd is serving {} (connect succeeded); stop it first or choose another --socket",
                path.display()
            ),
            Err(_) => {
                info!(path = %path.display(), "replacing a stale socket file");
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale socket {}", path.display()))?;
            }
        }
    }
    // Bound under a umask that leaves the file to its owner only, so that
    // nobody else can connect before its mode and group are set. The umask
    // is the process's: this runs before any thread is started.
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    umask(old);
    let listener = bound.with_context(|| format!("binding the socket {}", path.display()))?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(gid.into())).with_context(|| {
            format!(
                "setting the group of {} to {gid} (access.socket_group): rpcd's user must be in it",
                path.display()
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// Refuse a socket directory another user could replace the socket in: it
/// must be owned by rpcd's user (`euid`) or root and writable by its owner
/// only, or be a root-owned sticky directory like `/tmp`.
pub fn check_dir(dir: &Path, euid: u32) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("reading the socket directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("the socket directory {} is not a directory", dir.display());
    }
    let mode = meta.mode() & 0o7777;
    let owner = meta.uid();
    let writable_by_others = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    if owner != euid && owner != 0 {
        bail!(
            "refusing the socket directory {}: it is owned by uid {owner}, not by rpcd's user \
             (uid {euid}); another user could replace the socket. Remove it, or choose another \
             --socket",
            dir.display()
        );
    }
    if writable_by_others && !(owner == 0 && sticky) {
        bail!(
            "refusing the socket directory {}: mode {mode:04o} lets other users replace the \
             socket (it must not be group- or world-writable unless it is a root-owned sticky \
             directory). Fix its mode, or choose another --socket",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_others_control_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let d = base.path().join("d");
        std::fs::create_dir(&d).unwrap();
        for (mode, ok) in [(0o700, true), (0o750, true), (0o770, false), (0o777, false)] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = check_dir(&d, me);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains(&d.display().to_string()), "{e}");
            }
        }
        // Owned by someone else (as seen from a uid that is neither its owner nor root).
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let r = check_dir(&d, me.wrapping_add(12345));
        if me == 0 {
            // Root-owned and writable by root only: accepted for any user.
            assert!(r.is_ok(), "{r:?}");
        } else {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("owned by uid"), "{e}");
        }
    }
}
