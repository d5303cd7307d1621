//! `rpcctl --json` without a daemon: errors as one JSON object on standard error with their
//! code and exit status, and the JSON of the verbs that need no daemon (`version`, `keys`,
//! `completions`). `tests/tests/rpcctl_json.rs` runs the verbs against real daemons.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

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

/// Standard output as one JSON document on one line.
fn stdout_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "one line: {out:?}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}"))
}

/// Standard error as the error object; checks its shape and that `exit_status` is the
/// process's, and returns (code, message).
fn error_json(out: &Output) -> (String, String) {
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(text.lines().count(), 1, "one line: {out:?}");
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {out:?}"));
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.len(), 1, "only `error`: {v}");
    let err = v["error"].as_object().expect("error is an object");
    let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "exit_status", "message"], "{v}");
    assert_eq!(
        err["exit_status"].as_i64(),
        out.status.code().map(i64::from),
        "{v}"
    );
    (
        err["code"].as_str().expect("code").to_owned(),
        err["message"].as_str().expect("message").to_owned(),
    )
}

/// Bad input is `usage`, status 2, whether rpcctl or clap refused it, with `--json` before
/// or after the verb; without `--json` the same error stays one line of text.
#[test]
fn usage_errors_are_a_json_object_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("none.sock");
    let out = rpcctl(
        &none,
        &["--json", "call", "127.0.0.1:1", "f", "1", "{\"a\": tru}"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        error_json(&out),
        (
            "usage".to_owned(),
            "argument 2 is not valid JSON: expected ident at line 1 column 10".to_owned()
        )
    );

    // Refused by clap: a missing argument, an unknown option.
    let out = rpcctl(&none, &["call", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let (code, message) = error_json(&out);
    assert_eq!(code, "usage");
    assert!(
        message.starts_with("the following required arguments were not provided:")
            && message.contains("<TARGET>"),
        "{message}"
    );
    let out = rpcctl(&none, &["--json", "stats", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let (code, message) = error_json(&out);
    assert_eq!(code, "usage");
    assert!(message.contains("'--bogus'"), "{message}");

    let out = rpcctl(&none, &["stats", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: unexpected argument"),
        "text without --json: {out:?}"
    );
}

/// No daemon on the socket: `daemon_unreachable`, status 3, the message naming the path.
#[test]
fn no_daemon_is_daemon_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("none.sock");
    for verb in [
        &["stats"][..],
        &["status"],
        &["list"],
        &["names"],
        &["call", "127.0.0.1:1", "rpcd.ping"],
        &["ping", "127.0.0.1:1", "-c", "1"],
        &["bench", "127.0.0.1:1", "rpcd.ping", "-n", "1"],
    ] {
        let mut args = vec!["--json"];
        args.extend_from_slice(verb);
        let out = rpcctl(&none, &args);
        assert_eq!(out.status.code(), Some(3), "{verb:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{verb:?}: {out:?}");
        let (code, message) = error_json(&out);
        assert_eq!(code, "daemon_unreachable", "{verb:?}");
        assert!(message.contains(&*none.to_string_lossy()), "{message}");
    }
}

/// `version` needs no daemon: rpcctl's version, the daemon's `null`.
#[test]
fn version_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let out = rpcctl(&dir.path().join("none.sock"), &["version", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty());
    assert_eq!(
        stdout_json(&out),
        serde_json::json!({"rpcctl": env!("CARGO_PKG_VERSION"), "daemon": null, "protocol": null})
    );
    let out = rpcctl(&dir.path().join("none.sock"), &["version"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("rpcctl {}\nrpcd not reachable\n", env!("CARGO_PKG_VERSION"))
    );
}

/// `keys` with `--json`: one object on stdout, nothing on stderr; the public key of the
/// generated private key is the one `keys public` computes; an existing `--out` file is a
/// usage error object.
#[test]
fn keys_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("none.sock");
    let out = rpcctl(&none, &["--json", "keys", "generate"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let generated = stdout_json(&out);
    let private = generated["private_key"].as_str().expect("private_key");
    let public = generated["public_key"].as_str().expect("public_key");
    assert_eq!(private.len(), 44);
    let file = dir.path().join("k");
    std::fs::write(&file, format!("{private}\n")).unwrap();
    let out = rpcctl(&none, &["keys", "public", file.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout_json(&out), serde_json::json!({"public_key": public}));

    let key_file = dir.path().join("new.key");
    let key_path = key_file.to_str().unwrap();
    let out = rpcctl(&none, &["--json", "keys", "generate", "--out", key_path]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let written = stdout_json(&out);
    assert_eq!(written["private_key_file"], key_path);
    let out = rpcctl(&none, &["--json", "keys", "public", key_path]);
    assert_eq!(stdout_json(&out)["public_key"], written["public_key"]);

    let out = rpcctl(&none, &["--json", "keys", "generate", "--out", key_path]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(error_json(&out).0, "usage");
}

/// `completions --json` wraps the script.
#[test]
fn completions_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = rpcctl(
        &dir.path().join("none.sock"),
        &["--json", "completions", "bash"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc = stdout_json(&out);
    assert_eq!(doc["shell"], "bash");
    let script = doc["script"].as_str().expect("script");
    assert!(script.contains("_rpcctl()"), "{script}");
}
