//! The `rpcd` binary's command line: flags, settings errors and exit codes.
//! (Having an integration test here also makes `cargo test --workspace`
//! build the `rpcd` binary that the `tests/` crate runs.)

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long an `rpcd` that must exit by itself may run before the test fails.
const EXIT_MAX: Duration = Duration::from_secs(20);

/// `rpcd` with the test's environment left out: no `RPCD_*` settings overrides or socket
/// path, no `NOTIFY_SOCKET`, no log filter.
fn rpcd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rpcd"));
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("RPCD_") || k == "NOTIFY_SOCKET" || k == "RUST_LOG" {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// Run `cmd`, which must exit by itself within [`EXIT_MAX`]: killed (and the test
/// failed) otherwise, also when the test panics first.
fn output(cmd: &mut Command, dir: &std::path::Path) -> Output {
    struct Guard(std::process::Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let until = Instant::now() + EXIT_MAX;
    let status = loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < until, "rpcd still ran after {EXIT_MAX:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: std::fs::read(out).unwrap(),
        stderr: std::fs::read(err).unwrap(),
    }
}

/// `--help` names every flag the brief asks for.
#[test]
fn help_lists_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(rpcd().arg("--help"), dir.path());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--socket"] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

/// Start rpcd with `config` as its file; it must fail. Returns its stderr
/// and whether it left a socket file behind. On an ephemeral port, so a
/// config wrongly accepted never takes the default port 7400, and under a
/// guard, so it never outlives the test.
fn refused_config(config: &str) -> (String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rpcd.toml");
    std::fs::write(&cfg, config).unwrap();
    let out = output(
        rpcd()
            .arg("--config")
            .arg(&cfg)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--socket")
            .arg(dir.path().join("s.sock")),
        dir.path(),
    );
    assert!(!out.status.success(), "rpcd accepted {config:?}");
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        dir.path().join("s.sock").exists(),
    )
}

/// A config file with a typo'd key fails at start, naming the key and line.
#[test]
fn bad_config_key_is_named_with_its_line() {
    let (err, _) = refused_config("[limits]\nconections_max = 3\n");
    assert!(err.contains("conections_max"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

/// A value out of range is refused before anything is bound.
#[test]
fn out_of_range_value_is_refused() {
    let (err, socket_left) = refused_config("[transport]\npayload_max = 5\n");
    assert!(err.contains("transport.payload_max"), "{err}");
    assert!(!socket_left);
}

/// Without peer authentication, a non-loopback address is refused at start,
/// naming the setting that accepts it; nothing is bound. With the setting,
/// the same address is accepted.
#[test]
fn non_loopback_listen_needs_explicit_plaintext() {
    let (err, socket_left) = refused_config("[daemon]\nlisten = \"0.0.0.0:0\"\n");
    assert!(err.contains("daemon.plaintext"), "{err}");
    assert!(!socket_left);
    let dir = tempfile::tempdir().unwrap();
    let check = |config: &str| {
        let cfg = dir.path().join("rpcd.toml");
        std::fs::write(&cfg, config).unwrap();
        rpcd()
            .args(["--listen", "10.0.0.1:0", "--check-config", "--config"])
            .arg(&cfg)
            .env_remove("RPCD_DAEMON__PLAINTEXT")
            .output()
            .unwrap()
    };
    let refused = check("");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("daemon.plaintext"), "{err}");
    let accepted = check("[daemon]\nplaintext = true\n");
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
}
