//! The `rpcd` binary's command line: flags, settings errors and exit codes.
//! (Having an integration test here also makes `cargo test --workspace`
//! build the `rpcd` binary that the `tests/` crate runs.)

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn rpcd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rpcd"))
}

/// `--help` names every flag the brief asks for.
#[test]
fn help_lists_flags() {
    let out = rpcd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--socket"] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

/// Start rpcd with `config` as its file; it must fail. Returns its stderr
/// and whether it left a socket file behind.
fn refused_config(config: &str) -> (String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rpcd.toml");
    std::fs::write(&cfg, config).unwrap();
    let out = rpcd()
        .arg("--config")
        .arg(&cfg)
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .output()
        .unwrap();
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
