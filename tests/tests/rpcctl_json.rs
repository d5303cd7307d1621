//! `rpcctl --json` against real daemons on loopback: every verb's document (shapes checked
//! with serde_json), errors as one JSON object on standard error with the code and the exit
//! status, epochs as strings, `status` of a daemon this test started, and `stats --peers`
//! with one row per peer. Output goes to files; every child is owned by a guard.

use std::fs::File;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rpcd_client::conn::CallOptions;
use rpcd_client::ipc::Outcome;
use rpcd_tests::{bin, tempdir, wait_until, Daemon, ProcessGuard, Serving};
use serde_json::{json, Value};

/// Longest any rpcctl run may take before the test fails (and the guard kills it).
const RUN_MAX: Duration = Duration::from_secs(60);

/// What one run of rpcctl did.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Succeeded with nothing on stderr, and stdout is one JSON document on one line.
    fn doc(&self) -> Value {
        assert_eq!(self.status.code(), Some(0), "{self:#?}");
        assert_eq!(self.stderr, "", "{self:#?}");
        assert_eq!(self.stdout.lines().count(), 1, "one line: {self:#?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {self:#?}"))
    }

    /// Failed with `status`, and stderr is exactly one error object carrying it; returns
    /// the object's code and message.
    fn error(&self, status: i32) -> (String, String) {
        assert_eq!(self.status.code(), Some(status), "{self:#?}");
        assert_eq!(self.stderr.lines().count(), 1, "one line: {self:#?}");
        let v: Value = serde_json::from_str(&self.stderr)
            .unwrap_or_else(|err| panic!("stderr is not JSON ({err}): {self:#?}"));
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{v}");
        let e = &v["error"];
        assert_eq!(e.as_object().map(|o| o.len()), Some(3), "{v}");
        assert_eq!(e["exit_status"], status, "{v}");
        (
            e["code"].as_str().expect("code").to_owned(),
            e["message"].as_str().expect("message").to_owned(),
        )
    }
}

/// Runs `rpcctl --socket SOCKET --json ARGS` under a guard, output in files.
fn rpcctl(socket: &Path, args: &[&str]) -> Run {
    let dir = tempdir();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = Command::new(bin("rpcctl"));
    rpcd_tests::isolate(&mut cmd)
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    let mut guard = ProcessGuard::new("rpcctl", cmd.spawn().expect("spawn"));
    let status = guard
        .wait_timeout(RUN_MAX)
        .unwrap_or_else(|| panic!("{cmd:?} still running after {RUN_MAX:?}"));
    Run {
        status,
        stdout: std::fs::read_to_string(out_path).expect("read stdout"),
        stderr: std::fs::read_to_string(err_path).expect("read stderr"),
    }
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// The daemon's epoch as its handshake tells it.
fn epoch_of(d: &Daemon) -> u64 {
    d.connect("probe").daemon().epoch
}

/// Every verb that talks to a daemon prints one JSON document (`ping`: JSON lines) of the
/// documented shape, with the epochs as decimal strings.
#[test]
fn every_verb_prints_its_json_document() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let b_addr = b.udp.to_string();

    // call: the reply value itself, compact; --json after the verb is the same flag.
    let reply = rpcctl(
        &a.socket,
        &[
            "call",
            &b_addr,
            "rpcd.echo",
            r#""k""#,
            "18446744073709551615",
        ],
    );
    assert_eq!(reply.doc(), json!(["k", 18446744073709551615u64]));
    let reply = rpcctl(&a.socket, &["call", &b_addr, "rpcd.ping", "--json"]);
    assert_eq!(reply.doc(), json!("pong"));

    // list, local and remote: an array of names.
    for target in [None, Some(b_addr.as_str())] {
        let mut args = vec!["list"];
        args.extend(target);
        let list = rpcctl(&a.socket, &args).doc();
        let names: Vec<&str> = list
            .as_array()
            .expect("an array")
            .iter()
            .map(|n| n.as_str().expect("a string"))
            .collect();
        assert!(names.contains(&"rpcd.ping"), "{names:?}");
    }

    // stats, local and remote: Stats with string epochs.
    for (target, daemon) in [(None, &a), (Some(b_addr.as_str()), &b)] {
        let mut args = vec!["stats"];
        args.extend(target);
        let stats = rpcctl(&a.socket, &args).doc();
        assert_eq!(stats["epoch"], epoch_of(daemon).to_string(), "{stats}");
        assert_eq!(stats["listen"], daemon.udp.to_string());
        assert_eq!(stats["version"], env!("CARGO_PKG_VERSION"));
        for key in [
            "uptime_ms",
            "connections",
            "calls_in_flight",
            "invocations_in_flight",
        ] {
            assert!(stats[key].is_u64(), "{key}: {stats}");
        }
        assert!(stats["totals"]["datagrams_sent"].is_u64(), "{stats}");
        assert!(stats["peers"].is_array(), "{stats}");
    }
    let stats = rpcctl(&a.socket, &["stats"]).doc();
    let peer = &stats["peers"][0];
    assert_eq!(peer["addr"], b_addr, "{stats}");
    assert_eq!(peer["epoch"], epoch_of(&b).to_string(), "{stats}");

    // stats --peers: the peers array alone, the same objects (their counters may move on).
    let peers = rpcctl(&a.socket, &["stats", "--peers"]).doc();
    let peers = peers.as_array().expect("an array");
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(keys(&peers[0]), keys(peer));
    assert_eq!(
        (&peers[0]["addr"], &peers[0]["epoch"]),
        (&peer["addr"], &peer["epoch"])
    );

    // names: an array (empty without a [names] table).
    assert_eq!(rpcctl(&a.socket, &["names"]).doc(), json!([]));

    // status and version.
    let status = rpcctl(&a.socket, &["status"]).doc();
    assert_eq!(
        keys(&status),
        ["apps", "calls", "daemon", "peers", "rpcctl"]
    );
    assert_eq!(status["daemon"]["epoch"], epoch_of(&a).to_string());
    let version = rpcctl(&a.socket, &["version"]).doc();
    assert_eq!(
        version,
        json!({"rpcctl": env!("CARGO_PKG_VERSION"), "daemon": env!("CARGO_PKG_VERSION"),
               "protocol": rpcd_client::ipc::PROTOCOL_VERSION})
    );

    // bench: one report.
    let bench = rpcctl(
        &a.socket,
        &["bench", &b_addr, "rpcd.ping", "-n", "20", "-c", "2"],
    )
    .doc();
    assert_eq!(bench["calls"], 20);
    assert_eq!(bench["ok"], 20);
    assert_eq!(bench["errors"], json!({}));
    assert_eq!(
        keys(&bench["latency_us"]),
        ["max", "mean", "min", "p50", "p90", "p99", "p99_9"]
    );

    // ping: JSON lines, start, one per probe, summary.
    let ping = rpcctl(&a.socket, &["ping", &b_addr, "-c", "3", "-i", "0"]);
    assert_eq!(ping.status.code(), Some(0), "{ping:#?}");
    assert_eq!(ping.stderr, "");
    let lines: Vec<Value> = ping
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let events: Vec<&str> = lines
        .iter()
        .map(|l| l["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(events, ["start", "reply", "reply", "reply", "summary"]);
    assert_eq!(
        lines[0],
        json!({"event": "start", "target": b_addr, "via": a.udp.to_string()})
    );
    assert_eq!(lines[2]["seq"], 2);
    assert!(
        lines[1]["rtt_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{:?}",
        lines[1]
    );
    let summary = &lines[4];
    assert_eq!(
        (summary["sent"].as_u64(), summary["received"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(summary["loss_percent"], 0.0);
    assert_eq!(keys(&summary["rtt_ms"]), ["avg", "max", "mdev", "min"]);
}

/// Errors: one JSON object on stderr with the stable code and the exit status, for bad
/// arguments, no daemon, an unknown function, an application error and an unreachable peer
/// (`call` and `ping`, whose probes fail as JSON lines first).
#[test]
fn errors_are_json_objects_with_code_and_exit_status() {
    let dir = tempdir();
    let a = Daemon::start(
        dir.path(),
        "a",
        "127.0.0.1:0",
        Some("[transport]\nkeepalive_interval_ms = 100\npeer_timeout_ms = 500\nretransmits_max = 4\n"),
    );
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let b_addr = b.udp.to_string();
    let server = Arc::new(b.connect("server"));
    let _serving = Serving::start(server.clone(), "test.fail", |_| {
        Outcome::Error("boom".into())
    });

    let run = rpcctl(&a.socket, &["call", &b_addr, "rpcd.echo", "1", "{"]);
    assert_eq!(run.error(2).0, "usage");
    assert_eq!(run.stdout, "");

    let run = rpcctl(&dir.path().join("none.sock"), &["status"]);
    let (code, message) = run.error(3);
    assert_eq!(code, "daemon_unreachable");
    assert!(message.contains("none.sock"), "{message}");

    let run = rpcctl(&a.socket, &["call", &b_addr, "no.such"]);
    let (code, message) = run.error(4);
    assert_eq!(code, "unknown_function");
    assert!(message.contains("no.such"), "{message}");
    let run = rpcctl(&a.socket, &["stats", "--peers", "nosuchname"]);
    assert_eq!(run.error(4).0, "bad_request", "a name no table holds");

    let run = rpcctl(&a.socket, &["call", &b_addr, "test.fail", r#""x""#]);
    let (code, message) = run.error(5);
    assert_eq!(code, "app_error");
    assert!(message.ends_with("boom"), "{message}");
    assert_eq!(run.stdout, "");

    // A peer that never answers: peer_unreachable within a's short bound.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent = silent.local_addr().expect("addr").to_string();
    let run = rpcctl(
        &a.socket,
        &["call", &silent, "rpcd.ping", "--deadline", "30s"],
    );
    assert_eq!(run.error(4).0, "peer_unreachable");
    let run = rpcctl(&a.socket, &["ping", &silent, "-c", "1", "-W", "30s"]);
    assert_eq!(run.error(4).0, "peer_unreachable");
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{run:#?}");
    assert_eq!(lines[1]["event"], "no_reply");
    assert_eq!(lines[1]["error"]["code"], "peer_unreachable");
    assert_eq!(lines[2]["received"], 0);
    assert_eq!(lines[2]["rtt_ms"], Value::Null);

    // A bench with failures: the report on stdout, the first failure's object on stderr.
    let run = rpcctl(&a.socket, &["bench", &b_addr, "test.fail", "-n", "4"]);
    let (code, message) = run.error(5);
    assert_eq!(code, "app_error");
    assert!(message.starts_with("4 of 4 calls failed"), "{message}");
    let report: Value = serde_json::from_str(&run.stdout).expect("the report");
    assert_eq!(report["errors"], json!({"app_error": 4}));
    drop(server);
}

/// `status` of a daemon this test started: its version, an uptime that grows and is no
/// longer than the daemon has existed, its UDP address and socket, and the summaries of
/// peers and calls, a call in flight and an invocation running included.
#[test]
fn status_reports_the_daemon_this_test_started() {
    let dir = tempdir();
    let before_start = Instant::now();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let b_addr = b.udp.to_string();

    let first = rpcctl(&a.socket, &["status"]).doc();
    let lived = before_start.elapsed();
    let daemon = &first["daemon"];
    assert_eq!(daemon["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(daemon["protocol"], rpcd_client::ipc::PROTOCOL_VERSION);
    assert_eq!(daemon["listen"], a.udp.to_string());
    assert_eq!(daemon["socket"], a.socket.to_string_lossy().as_ref());
    assert_eq!(daemon["epoch"], epoch_of(&a).to_string());
    assert_eq!(daemon["public_key"], Value::Null);
    let uptime = daemon["uptime_ms"].as_u64().expect("uptime_ms");
    assert!(
        u128::from(uptime) <= lived.as_millis(),
        "up {uptime} ms, started {lived:?} ago"
    );
    assert_eq!(first["rpcctl"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(first["peers"], json!({"known": 0, "heard_from": 0}));

    // A call held by b's serving app: in flight on a, running on b.
    let server = b.connect("server");
    server.register("test.hold").expect("register");
    let caller = a.connect("caller");
    let target = b_addr.clone();
    let call = thread::spawn(move || {
        let mut opts = CallOptions::default();
        opts.deadline = Some(Duration::from_secs(30));
        caller.call(&target, "test.hold", vec![0x90], opts)
    });
    let inv = server
        .next_invocation(Some(Duration::from_secs(20)))
        .expect("the call arrived");
    // The uptime is in milliseconds: let one pass for certain.
    thread::sleep(Duration::from_millis(20));
    let held = rpcctl(&a.socket, &["status"]).doc();
    assert_eq!(held["calls"]["in_flight"], 1, "{held}");
    assert_eq!(
        held["peers"],
        json!({"known": 1, "heard_from": 1}),
        "{held}"
    );
    assert!(
        held["daemon"]["uptime_ms"].as_u64() > Some(uptime),
        "uptime grows: {held} after {first}"
    );
    let b_status = rpcctl(&b.socket, &["status"]).doc();
    assert_eq!(b_status["calls"]["invocations_in_flight"], 1, "{b_status}");
    assert!(
        b_status["apps"]["connections"].as_u64() >= Some(1),
        "{b_status}"
    );
    assert!(
        b_status["apps"]["functions"].as_u64() >= Some(1),
        "{b_status}"
    );

    server
        .send_result(inv.invocation, Outcome::Ok(vec![0xc0]))
        .expect("result");
    call.join()
        .expect("caller thread")
        .expect("the call succeeds");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let done = rpcctl(&a.socket, &["status"]).doc();
            done["calls"]["in_flight"] == 0 && done["calls"]["ok"] == 1
        }),
        "the call finished"
    );
    let done = rpcctl(&a.socket, &["status"]).doc();
    assert_eq!(done["calls"]["finished"], 1, "{done}");
    assert_eq!(done["calls"]["by_outcome"], json!({"ok": 1}), "{done}");
    assert_eq!(
        rpcctl(&b.socket, &["status"]).doc()["calls"]["invocations_in_flight"],
        0
    );
}

/// After calls to two peers, `stats --peers` has one row per peer in the text table and
/// one object per peer in JSON, with each peer's real epoch.
#[test]
fn stats_peers_has_one_row_per_peer() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let c = Daemon::start(dir.path(), "c", "127.0.0.1:0", None);
    for peer in [&b, &c] {
        rpcctl(&a.socket, &["call", &peer.udp.to_string(), "rpcd.ping"]).doc();
    }
    // `--no-check`: without it rpcctl first asks c's `rpcd.describe` for the function's
    // signature, a second call that fails too (unknown_function).
    rpcctl(
        &a.socket,
        &["call", "--no-check", &c.udp.to_string(), "no.such"],
    )
    .error(4);

    let peers = rpcctl(&a.socket, &["stats", "--peers"]).doc();
    let peers = peers.as_array().expect("an array");
    assert_eq!(peers.len(), 2, "{peers:?}");
    let mut want = [(&b, 1), (&c, 1)];
    want.sort_by_key(|(d, _)| d.udp.to_string());
    for (row, (daemon, ok)) in peers.iter().zip(want) {
        assert_eq!(row["addr"], daemon.udp.to_string());
        assert_eq!(row["epoch"], epoch_of(daemon).to_string());
        assert_eq!(row["calls"]["ok"], ok, "{row}");
    }

    // The text table: a header and one row per peer, one word per cell.
    let mut cmd = Command::new(bin("rpcctl"));
    let out = rpcd_tests::output_within(
        rpcd_tests::isolate(&mut cmd)
            .arg("--socket")
            .arg(&a.socket)
            .args(["stats", "--peers"]),
        RUN_MAX,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert_eq!(
        rows[0][..5],
        ["PEER", "NAME", "KEY", "SESSION_S", "EPOCH"],
        "{text}"
    );
    for (row, (daemon, _)) in rows[1..].iter().zip(want) {
        assert_eq!(row.len(), rows[0].len(), "{text}");
        assert_eq!(row[0], daemon.udp.to_string(), "{text}");
        assert_eq!(row[4], format!("{:016x}", epoch_of(daemon)), "{text}");
    }
    let failed_col = rows[0]
        .iter()
        .position(|h| *h == "CALLS_FAILED")
        .expect("column");
    let c_row = rows[1..]
        .iter()
        .find(|r| r[0] == c.udp.to_string())
        .expect("c's row");
    assert_eq!(c_row[failed_col], "1", "{text}");
}
