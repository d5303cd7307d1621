//! Self-describing functions through real daemons: the `kv_server` example registers each
//! method's signature, doc and attributes on daemon B; `rpcctl` on daemon A shows them with
//! `describe` and `list -l` (through `rpcd.describe` on B), and checks a call's JSON
//! arguments against them before anything is sent.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rpcd_client::ipc::Stats;
use rpcd_tests::{bin, example, output_within, tempdir, wait_until, Daemon, ProcessGuard};

fn rpcctl(socket: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(bin("rpcctl"));
    rpcd_tests::isolate(&mut cmd)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null());
    let out = output_within(&mut cmd, Duration::from_secs(60));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kv_server` serving through `b`, once its functions are registered.
fn kv_server(b: &Daemon) -> ProcessGuard {
    let child = Command::new(example("kv_server"))
        .arg("--socket")
        .arg(&b.socket)
        .args(["--workers", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn kv_server");
    let server = ProcessGuard::new("kv_server", child);
    let probe = b.connect("probe");
    assert!(wait_until(Duration::from_secs(20), || probe
        .list()
        .is_ok_and(|l| l.iter().any(|f| f == "kv.put"))));
    server
}

const KV_DESCRIBED: &str = "\
kv.delete is a function:
// Removes `key`; returns whether it was there.
kv.delete(key: string) -> bool
attributes: not idempotent

kv.get is a function:
// The value of `key`, if any.
kv.get(key: string) -> option<string>
attributes: idempotent, deadline 2s

kv.incr is a function:
// Adds 1 to the integer value of `key` (a missing key counts as 0), stores it, and
// returns the new value. A value that is not an integer is an application error.
kv.incr(key: string) -> result<i64, string>
attributes: not idempotent

kv.put is a function:
// Sets `key` to `value`; returns the previous value.
kv.put(key: string, value: string) -> option<string>
attributes: not idempotent

rpcd.describe is a built-in function (no signature)

rpcd.echo is a built-in function (no signature)

rpcd.list is a built-in function (no signature)

rpcd.names is a built-in function (no signature)

rpcd.ping is a built-in function (no signature)

rpcd.stats is a built-in function (no signature)
";

const KV_LISTED: &str = "\
kv.delete(key: string) -> bool  [not idempotent]
kv.get(key: string) -> option<string>  [idempotent, deadline 2s]
kv.incr(key: string) -> result<i64, string>  [not idempotent]
kv.put(key: string, value: string) -> option<string>  [not idempotent]
rpcd.describe  (built-in)
rpcd.echo  (built-in)
rpcd.list  (built-in)
rpcd.names  (built-in)
rpcd.ping  (built-in)
rpcd.stats  (built-in)
";

/// `rpcctl describe B` on A prints the kv example exactly; one function alone, `--json`,
/// `list -l`, and a function registered without a signature work too.
#[test]
fn kv_example_describes_itself_through_two_daemons() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let _server = kv_server(&b);
    let target = b.udp.to_string();

    let (status, out, err) = rpcctl(&a.socket, &["describe", &target]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(out, KV_DESCRIBED);

    let (status, out, err) = rpcctl(&a.socket, &["describe", &target, "kv.get"]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(
        out,
        "kv.get is a function:\n// The value of `key`, if any.\n\
         kv.get(key: string) -> option<string>\nattributes: idempotent, deadline 2s\n"
    );

    let (status, out, err) = rpcctl(&a.socket, &["--json", "describe", &target, "kv.put"]);
    assert_eq!(status, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{
            "function": "kv.put",
            "builtin": false,
            "idempotent": false,
            "signature": {
                "args": [
                    {"name": "key", "type": {"kind": "string"}},
                    {"name": "value", "type": {"kind": "string"}}
                ],
                "returns": {"kind": "option", "of": {"kind": "string"}},
                "fallible": false,
                "doc": "Sets `key` to `value`; returns the previous value."
            }
        }])
    );

    let (status, out, err) = rpcctl(&a.socket, &["list", "-l", &target]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(out, KV_LISTED);

    // A raw registration (as from Python) has no signature, and says so.
    let raw = b.connect("raw");
    raw.register("py.add").unwrap();
    let (status, out, err) = rpcctl(&a.socket, &["describe", &target, "py.add"]);
    assert_eq!(status, Some(0), "{err}");
    assert_eq!(out, "py.add is a function (no signature)\n");

    let (status, _, err) = rpcctl(&a.socket, &["describe", &target, "kv.nosuch"]);
    assert_eq!(status, Some(4), "{err}");
    assert!(
        err.contains("unknown function") || err.contains("unknown_function"),
        "{err}"
    );
}

/// Total calls A made, by outcome.
fn calls_made(a: &Daemon) -> u64 {
    let conn = a.connect("stats");
    let stats: Stats = conn.stats().unwrap();
    stats.calls.values().sum()
}

/// A JSON argument that does not match the signature is refused by `rpcctl call` with
/// exit status 2 and a message naming the argument, and the function is never invoked:
/// A made one call (the signature lookup), and the store is unchanged.
#[test]
fn call_arguments_are_checked_before_anything_is_sent() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let _server = kv_server(&b);
    let target = b.udp.to_string();

    let before = calls_made(&a);
    let (status, out, err) = rpcctl(&a.socket, &["call", &target, "kv.put", "\"k\"", "5"]);
    assert_eq!(status, Some(2), "{out}{err}");
    assert!(
        err.contains("kv.put: argument `value` must be string, not the number 5"),
        "{err}"
    );
    let (status, _, err) = rpcctl(&a.socket, &["call", &target, "kv.put", "\"k\""]);
    assert_eq!(status, Some(2), "{err}");
    assert!(err.contains("kv.put takes 2 arguments"), "{err}");
    assert_eq!(
        calls_made(&a) - before,
        2,
        "only the two signature lookups left A: {err}"
    );
    let (status, out, err) = rpcctl(&a.socket, &["call", &target, "kv.get", "\"k\""]);
    assert_eq!((status, out.as_str()), (Some(0), "null\n"), "{err}");

    // Matching arguments go through.
    let (status, out, err) = rpcctl(&a.socket, &["call", &target, "kv.put", "\"k\"", "\"v\""]);
    assert_eq!((status, out.as_str()), (Some(0), "null\n"), "{err}");
    // --no-check sends what it is given; the server refuses it itself.
    let (status, _, err) = rpcctl(
        &a.socket,
        &["call", &target, "kv.put", "\"k\"", "5", "--no-check"],
    );
    assert_eq!(status, Some(4), "{err}");
    assert!(
        err.contains("bad request") || err.contains("bad_request"),
        "{err}"
    );
}
