//! The `rpcctl` binary without a daemon: help, exit statuses for bad input and for no
//! daemon, completions, and a closed stdout. (`tests/tests/rpcctl.rs` runs it against real
//! daemons; this test is also what makes `cargo test --workspace` build the binary.)

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn rpcctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rpcctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("RPCD_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("run rpcctl")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `--help` documents every exit status.
#[test]
fn help_documents_the_exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["call", "--help"]] {
        let out = rpcctl(&dir.path().join("none.sock"), args);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        for line in [
            "Exit status:",
            "0  success",
            "2  usage",
            "3  rpcd not reachable",
            "4  transport error",
            "5  application error",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}

/// Bad JSON is a usage error naming the argument and the position, found before any attempt
/// to reach a daemon.
#[test]
fn bad_json_is_status_2_naming_argument_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let out = rpcctl(
        &dir.path().join("none.sock"),
        &["call", "127.0.0.1:1", "f", "1", "{\"a\": tru}"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "rpcctl: argument 2 is not valid JSON: expected ident at line 1 column 10\n"
    );
    assert!(out.stdout.is_empty());

    let file = dir.path().join("args.json");
    std::fs::write(&file, "{\"not\": \"an array\"}").unwrap();
    let out = rpcctl(
        &dir.path().join("none.sock"),
        &["call", "h:1", "f", "--args-file", file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("must hold a JSON array"),
        "{}",
        stderr(&out)
    );

    let out = rpcctl(&dir.path().join("none.sock"), &["call"]);
    assert_eq!(out.status.code(), Some(2), "missing arguments");
}

/// No daemon on the socket: status 3 and a message naming the path.
#[test]
fn no_daemon_is_status_3() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    for args in [&["list"][..], &["stats"], &["call", "h:1", "f", "1"]] {
        let out = rpcctl(&socket, args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("rpcctl: is rpcd running? tried "), "{err}");
        assert!(err.contains(socket.to_str().unwrap()), "{err}");
    }
}

/// A completion script comes out, and a reader that closes early is no error.
#[test]
fn completions_and_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let out = rpcctl(&dir.path().join("none.sock"), &["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("complete -F _rpcctl"), "{script}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_rpcctl"))
        .args(["completions", "zsh"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
}
