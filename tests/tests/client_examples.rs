//! The client-lib examples as separate processes through real daemons: `kv_server` serves,
//! `kv_client` calls it from another daemon, `bulk` moves multi-megabyte payloads.

use std::process::{Command, Stdio};
use std::time::Duration;

use rpcd_tests::{example, tempdir, wait_until, Daemon, ProcessGuard};

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run example");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `kv_server` on B, `kv_client` on A: the demo runs, `incr` adds 1 and returns the new
/// value, errors exit non-zero with the message, and SIGTERM stops the server cleanly.
#[test]
fn kv_server_and_kv_client() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let child = Command::new(example("kv_server"))
        .arg("--socket")
        .arg(&b.socket)
        .args(["--workers", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn kv_server");
    let mut server = ProcessGuard::new("kv_server", child);
    let probe = b.connect("probe");
    assert!(wait_until(Duration::from_secs(20), || probe
        .list()
        .is_ok_and(|l| l.iter().any(|f| f == "kv.incr"))));
    let target = b.udp.to_string();
    let kv = |args: &[&str]| {
        run(Command::new(example("kv_client"))
            .arg("--socket")
            .arg(&a.socket)
            .args(["--deadline-ms", "10000"])
            .arg(&target)
            .args(args))
    };
    let (ok, text) = kv(&[]);
    assert!(ok, "{text}");
    assert!(text.contains("incr demo.counter -> 1, then 2"), "{text}");
    assert!(text.contains("not an integer"), "{text}");
    assert_eq!(kv(&["incr", "hits"]), (true, "1\n".to_string()));
    assert_eq!(kv(&["incr", "hits"]), (true, "2\n".to_string()));
    assert_eq!(kv(&["get", "hits"]), (true, "2\n".to_string()));
    assert_eq!(kv(&["put", "k", "v"]), (true, "(none)\n".to_string()));
    assert_eq!(kv(&["delete", "k"]), (true, "true\n".to_string()));
    assert_eq!(kv(&["get", "k"]), (true, "(none)\n".to_string()));
    let (ok, text) = kv(&["incr", "greeting"]);
    assert!(ok, "{text}");
    let (ok, text) = kv(&["put", "word", "x"]);
    assert!(ok, "{text}");
    let (ok, text) = kv(&["incr", "word"]);
    assert!(!ok, "{text}");
    assert!(text.contains("application error"), "{text}");

    server.signal(nix::sys::signal::Signal::SIGTERM);
    let status = server.wait_timeout(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let (ok, text) = kv(&["get", "hits"]);
    assert!(!ok && text.contains("unknown function"), "{text}");
}

/// `bulk` checks 4 MiB payloads end to end (CRC32C on both sides), through one daemon
/// and across two.
#[test]
fn bulk_payloads_are_checked_end_to_end() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let (ok, text) = run(Command::new(example("bulk"))
        .arg("--socket")
        .arg(&a.socket)
        .args(["--mib", "4", "--rounds", "1"]));
    assert!(ok && text.contains("all checks passed"), "{text}");

    let child = Command::new(example("bulk"))
        .arg("--socket")
        .arg(&b.socket)
        .arg("--serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn bulk --serve");
    let _server = ProcessGuard::new("bulk", child);
    let probe = b.connect("probe");
    assert!(wait_until(Duration::from_secs(20), || probe
        .list()
        .is_ok_and(|l| l.iter().any(|f| f == "bulk.echo"))));
    let (ok, text) = run(Command::new(example("bulk"))
        .arg("--socket")
        .arg(&a.socket)
        .arg("--target")
        .arg(b.udp.to_string())
        .args(["--mib", "4", "--rounds", "2"]));
    assert!(ok && text.contains("all checks passed"), "{text}");
}
