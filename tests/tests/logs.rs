//! The daemon's log through the real binary: plain text off a terminal,
//! journald's priority prefixes on the journal's stream, JSON lines, the
//! per-call debug lines both daemons write with the same call id, and the
//! level reloaded on SIGHUP.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;
use rpcd_client::conn::{CallOptions, Connection};
use rpcd_client::ipc::Outcome;
use rpcd_tests::{output_within, rpcd_command, tempdir, wait_until, Daemon};

/// Run rpcd without the harness's `RUST_LOG=info`, so that the settings
/// choose the level, with `vars` set.
fn without_rust_log(vars: &[String]) -> Vec<String> {
    let mut w = vec!["env".to_owned(), "-u".to_owned(), "RUST_LOG".to_owned()];
    w.extend(vars.iter().cloned());
    w
}

fn start(dir: &Path, name: &str, config: &str, wrapper: &[String]) -> Daemon {
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    Daemon::start_wrapped(dir, name, "127.0.0.1:0", Some(config), &wrapper)
}

/// Wait until `d`'s log has a line containing every one of `parts`; that line.
fn wait_line(d: &Daemon, parts: &[&str]) -> String {
    let mut found = None;
    let ok = wait_until(Duration::from_secs(20), || {
        found = d
            .log_text()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned);
        found.is_some()
    });
    assert!(ok, "no line with {parts:?} in the log:\n{}", d.log_text());
    found.unwrap()
}

/// The value of `call=` in a text line.
fn call_id(line: &str) -> String {
    let rest = line
        .split_once("call=")
        .unwrap_or_else(|| panic!("no call= in {line:?}"))
        .1;
    rest.split_whitespace().next().unwrap().to_owned()
}

fn echo(conn: &Connection, target: &str) {
    let mut opts = CallOptions::default();
    opts.deadline = Some(Duration::from_secs(10));
    let reply = conn.call(target, "rpcd.echo", vec![0xc0], opts).unwrap();
    assert_eq!(reply, vec![0xc0]);
}

/// Two daemons at debug level, one call from an app on A to an app on B:
/// A logs it sent and answered, B logs it received, invoked and replied,
/// all with the same `call=` id; neither log has a colour code (stderr is
/// a file).
#[test]
fn both_daemons_log_one_call_under_one_id() {
    let dir = tempdir();
    let cfg = "[daemon]\nlog_level = \"debug\"\n";
    let a = start(dir.path(), "a", cfg, &without_rust_log(&[]));
    let b = start(dir.path(), "b", cfg, &without_rust_log(&[]));
    let server = Arc::new(b.connect("server"));
    server.register("logs.double").unwrap();
    let serving = {
        let server = server.clone();
        thread::spawn(move || {
            let inv = server
                .next_invocation(Some(Duration::from_secs(20)))
                .expect("an invocation");
            server
                .send_result(inv.invocation, Outcome::Ok(vec![0x02]))
                .unwrap();
        })
    };
    let client = a.connect("client");
    let mut opts = CallOptions::default();
    opts.deadline = Some(Duration::from_secs(10));
    let reply = client
        .call(&b.udp.to_string(), "logs.double", vec![0x01], opts)
        .unwrap();
    assert_eq!(reply, vec![0x02]);
    serving.join().unwrap();

    let sent = wait_line(&a, &["call sent", "function=logs.double"]);
    let id = call_id(&sent);
    let tag = format!("call={id} ");
    let (epoch, n) = id.split_once('-').unwrap();
    assert_eq!(epoch.len(), 16, "{id}");
    assert!(u64::from_str_radix(epoch, 16).is_ok() && n.parse::<u64>().is_ok());
    wait_line(&a, &[&tag, "call answered", "outcome=\"ok\""]);
    wait_line(&b, &[&tag, "request received", "function=logs.double"]);
    wait_line(&b, &[&tag, "invoked", "function=logs.double"]);
    wait_line(&b, &[&tag, "reply sent", "outcome=\"ok\""]);
    for d in [&a, &b] {
        let log = d.log_text();
        assert!(!log.contains('\x1b'), "colour codes in a file:\n{log}");
    }
}

/// `JOURNAL_STREAM` naming stderr (device:inode): every line starts with
/// its syslog priority and has no timestamp. Naming another stream: text.
#[test]
fn journald_prefixes_on_the_journal_stream_only() {
    let dir = tempdir();
    let cfg = "[daemon]\nlog_level = \"debug\"\n";
    // The harness appends stderr to <dir>/<name>.log: create it to know its inode.
    let log = dir.path().join("j.log");
    std::fs::write(&log, "").unwrap();
    let m = std::fs::metadata(&log).unwrap();
    let stream = format!("JOURNAL_STREAM={}:{}", m.dev(), m.ino());
    let j = start(dir.path(), "j", cfg, &without_rust_log(&[stream]));
    echo(&j.connect("client"), &j.udp.to_string());
    wait_line(&j, &["<7>", "call served by this daemon"]);
    wait_line(&j, &["<6>", "rpcd listening"]);
    wait_line(&j, &["<4>", "plaintext transport on loopback"]);
    let text = j.log_text();
    for line in text.lines() {
        let prio = line.get(..3).unwrap_or_default();
        assert!(
            ["<3>", "<4>", "<6>", "<7>"].contains(&prio),
            "a line without a priority: {line:?}"
        );
        assert!(!has_timestamp(line), "a timestamp: {line:?}");
        assert!(
            !line.contains(" INFO ") && !line.contains(" DEBUG "),
            "{line:?}"
        );
    }

    let other = dir.path().join("t.log");
    std::fs::write(&other, "").unwrap();
    let m = std::fs::metadata(&other).unwrap();
    let wrong = format!("JOURNAL_STREAM={}:{}", m.dev(), m.ino() + 1);
    let t = start(dir.path(), "t", cfg, &without_rust_log(&[wrong]));
    let line = wait_line(&t, &["rpcd listening"]);
    assert!(has_timestamp(&line) && line.contains("INFO"), "{line:?}");
    assert!(!t.log_text().contains("<6>"));
}

/// `daemon.log_format = "json"`: every line is one JSON object with a
/// timestamp, a level, a message and the event's fields.
#[test]
fn json_lines() {
    let dir = tempdir();
    let d = start(dir.path(), "json", "[daemon]\nlog_format = \"json\"\n", &[]);
    wait_line(&d, &["rpcd listening"]);
    let text = d.log_text();
    let mut listening = None;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{v}");
        if v["message"] == "rpcd listening" {
            listening = Some(v);
        }
    }
    let v = listening.unwrap();
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["udp"], d.udp.to_string());
    assert_eq!(v["target"], "rpcd::shell");
}

/// `--log-format journald` on a plain file: the flag overrides `auto`.
#[test]
fn log_format_flag_overrides_the_setting() {
    let dir = tempdir();
    let socket = dir.path().join("f.sock");
    let out = dir.path().join("f.log");
    let mut cmd = rpcd_command(dir.path(), None);
    cmd.args(["--listen", "127.0.0.1:0", "--log-format", "journald"])
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&out).unwrap());
    let mut p = rpcd_tests::ProcessGuard::new("f", cmd.spawn().unwrap());
    let ok = wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("<6>rpcd::shell: rpcd listening"))
    });
    assert!(ok, "{}", std::fs::read_to_string(&out).unwrap_or_default());
    p.kill();
    let bad = output_within(
        rpcd_command(dir.path(), None).args(["--log-format", "xml", "--check-config"]),
        Duration::from_secs(20),
    );
    assert!(!bad.status.success());
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(e.contains("journald") && e.contains("json"), "{e}");
}

/// Started at info, the config rewritten to debug, SIGHUP: the next call is
/// logged at debug. With RUST_LOG set at start, the file's level is not
/// applied.
#[test]
fn sighup_reloads_the_log_level() {
    let dir = tempdir();
    let d = start(
        dir.path(),
        "r",
        "[daemon]\nlog_level = \"info\"\n",
        &without_rust_log(&[]),
    );
    let conn = d.connect("client");
    echo(&conn, &d.udp.to_string());
    // The call was answered: at info it left no line.
    assert!(!d.log_text().contains("call="), "{}", d.log_text());
    std::fs::write(
        dir.path().join("r.toml"),
        "[daemon]\nlog_level = \"debug\"\n",
    )
    .unwrap();
    d.process.signal(Signal::SIGHUP);
    wait_line(&d, &["log level changed", "log_level=debug"]);
    echo(&conn, &d.udp.to_string());
    wait_line(&d, &["call served by this daemon", "call="]);
    wait_line(&d, &["call answered", "call="]);

    // The harness sets RUST_LOG=info: it wins over a reload.
    let e = Daemon::start(dir.path(), "e", "127.0.0.1:0", Some("[daemon]\n"));
    std::fs::write(
        dir.path().join("e.toml"),
        "[daemon]\nlog_level = \"debug\"\n",
    )
    .unwrap();
    e.process.signal(Signal::SIGHUP);
    wait_line(&e, &["RUST_LOG is set: daemon.log_level is not applied"]);
    echo(&e.connect("client"), &e.udp.to_string());
    wait_line(&e, &["settings reloaded"]);
    assert!(!e.log_text().contains("call="), "{}", e.log_text());
}

/// `--daemonize --log-file` started from a terminal: the log file gets no
/// colour codes (stderr is redirected after logging starts).
#[test]
fn daemonized_from_a_terminal_logs_plain_text_to_the_file() {
    let probe = Command::new("script")
        .args(["-qec", "test -t 2", "/dev/null"])
        .stdin(Stdio::null())
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP: `script` (util-linux) cannot give a command a terminal here");
        return;
    }
    let dir = tempdir();
    let socket = dir.path().join("d.sock");
    let pid_file = dir.path().join("d.pid");
    let log = dir.path().join("d.log");
    let config = dir.path().join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let line = format!(
        "exec '{}' --config '{}' --listen 127.0.0.1:0 --socket '{}' --daemonize \
         --pid-file '{}' --log-file '{}'",
        rpcd_tests::bin("rpcd").display(),
        config.display(),
        socket.display(),
        pid_file.display(),
        log.display()
    );
    let mut cmd = Command::new("script");
    rpcd_tests::isolate(&mut cmd)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null());
    let parent = output_within(&mut cmd, Duration::from_secs(20));
    assert!(parent.status.success(), "{parent:?}");
    assert!(wait_until(Duration::from_secs(10), || pid_file.exists()));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Owned by this guard from here on, even if an assertion fails.
    struct KillOnDrop(nix::unistd::Pid);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, Signal::SIGKILL);
        }
    }
    let _guard = KillOnDrop(nix::unistd::Pid::from_raw(pid));
    let ok = wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("rpcd listening"))
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ok, "{text}");
    assert!(
        !text.contains('\x1b'),
        "colour codes in the log file:\n{text}"
    );
}

/// `2026-11-30T07:22:07...` at the start of a line.
fn has_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 11
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
}
