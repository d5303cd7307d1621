//! The README's quick-start script runs end to end (against the binaries this
//! test run built, instead of a release build): its two daemons get keys and call each
//! other by peer name; it cleans up after itself.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use rpcd_tests::bin;

#[test]
fn quickstart_script_runs_and_cleans_up() {
    let rpcd = bin("rpcd");
    let dir = rpcd.parent().expect("binary directory");
    if !dir.join("examples/kv_server").exists() || !dir.join("rpcctl").exists() {
        panic!(
            "{} lacks rpcctl or examples/kv_server: run the tests with `cargo test --workspace`",
            dir.display()
        );
    }
    let tmp = rpcd_tests::tempdir();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/quickstart.sh");
    // The script's daemons read the configs it writes (a key each, the other as a peer);
    // the test's environment (settings overrides, socket path, log filter) stays out.
    let mut cmd = Command::new("bash");
    rpcd_tests::isolate(&mut cmd)
        .arg(script)
        .env("RPCD_QUICKSTART_BIN", dir)
        .env("TMPDIR", tmp.path());
    let out = rpcd_tests::output_within(&mut cmd, std::time::Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart failed:\n{stdout}\n{stderr}"
    );
    for expect in [
        "==> keys:",
        "keys generate --out",
        "[peers.a]",
        "[peers.b]",
        "3 probes sent, 3 received, 0% loss",
        "\"hello from A\"",
        "kv.incr",
        "ok           2000",
        "calls ok",
        // A's stats: with keys, B authenticated by its peer name.
        "keys: public key",
        "peer name",
        "quick start done",
    ] {
        assert!(stdout.contains(expect), "missing {expect:?} in:\n{stdout}");
    }
    // Nothing left behind in its temporary directory.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "quickstart left files: {left:?}");
}
