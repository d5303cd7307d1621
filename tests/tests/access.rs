//! Local access control end to end (`docs/security.md`, "Local access"): the socket's
//! mode and group, the socket directory, the `[access]` policy for register, call and
//! stats, `access_denied` through the client library and rpcctl, and the caller's
//! identity as a handler sees it. Another user is `nobody` through `setpriv`; tests that
//! need it skip as non-root (see [`rpcd_tests::root_or_skip`]).

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rpcd_client::conn::{ConnectError, Connection, RequestError};
use rpcd_client::ipc::ErrorCode;
use rpcd_tests::{as_nobody, bin, output_within, root_or_skip, tempdir, Daemon, NOBODY};

const RUN_MAX: Duration = Duration::from_secs(30);

/// rpcctl as `nobody` against `socket`.
fn rpcctl_as_nobody(socket: &Path, args: &[&str]) -> Output {
    let mut cmd = as_nobody(&bin("rpcctl"));
    cmd.arg("--socket").arg(socket).args(args);
    cmd.stdin(Stdio::null());
    output_within(&mut cmd, RUN_MAX)
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A directory others may traverse, so that only the socket's own mode decides who
/// connects.
fn open_dir() -> tempfile::TempDir {
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Started at umask 000, the socket is still 0660: `nobody` (not in its group) is
/// refused by the kernel, and rpcctl says so with status 6.
#[test]
fn socket_is_0660_whatever_the_umask() {
    let dir = open_dir();
    let umask_000 = ["sh", "-c", "umask 000; exec \"$@\"", "sh"];
    let d = Daemon::start_wrapped(dir.path(), "a", "127.0.0.1:0", None, &umask_000);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode");
    if !root_or_skip("connecting as another user") {
        return;
    }
    let out = rpcctl_as_nobody(&d.socket, &["list"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ermission denied"), "{}", text(&out));
}

/// `access.socket_group` gives the socket to a group: a member connects.
#[test]
fn socket_group_members_connect() {
    if !root_or_skip("connecting as another user") {
        return;
    }
    let dir = open_dir();
    let cfg = format!("[access]\nsocket_group = {NOBODY}\n");
    let d = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(&cfg));
    let meta = std::fs::metadata(&d.socket).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.gid(), NOBODY);
    let out = rpcctl_as_nobody(&d.socket, &["call", &d.udp.to_string(), "rpcd.ping"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A socket directory another user controls is refused at start, naming the path: the
/// squatted `/tmp/rpcd-<uid>` of the issue (a world-writable directory made beforehand),
/// and, as root, one owned by another user.
#[test]
fn squatted_socket_directory_is_refused() {
    let dir = tempdir();
    let squat = dir.path().join("rpcd-squatted");
    std::fs::create_dir(&squat).unwrap();
    std::fs::set_permissions(&squat, std::fs::Permissions::from_mode(0o777)).unwrap();
    let start = |socket_dir: &Path| {
        let mut cmd = rpcd_tests::rpcd_command(dir.path(), None);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--socket")
            .arg(socket_dir.join("rpcd.sock"))
            .stdin(Stdio::null());
        output_within(&mut cmd, RUN_MAX)
    };
    let out = start(&squat);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&squat.display().to_string()) && err.contains("0777"),
        "{}",
        text(&out)
    );
    assert!(!squat.join("rpcd.sock").exists());
    if !root_or_skip("a directory owned by another user") {
        return;
    }
    let theirs = dir.path().join("rpcd-theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(&theirs, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    let out = start(&theirs);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&theirs.display().to_string()) && err.contains("owned by uid 65534"),
        "{}",
        text(&out)
    );
}

/// A missing socket directory is created 0750.
#[test]
fn created_socket_directory_is_0750() {
    let dir = tempdir();
    let sub = dir.path().join("run").join("rpcd");
    let mut cmd = rpcd_tests::rpcd_command(dir.path(), None);
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--socket")
        .arg(sub.join("rpcd.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _guard = rpcd_tests::ProcessGuard::new("rpcd", cmd.spawn().unwrap());
    assert!(rpcd_tests::wait_until(Duration::from_secs(20), || {
        Connection::connect(&sub.join("rpcd.sock"), "t").is_ok()
    }));
    let mode = std::fs::metadata(&sub).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750);
}

#[allow(dead_code)]
fn unused(_: Command, _: ConnectError, _: RequestError, _: ErrorCode) {}
