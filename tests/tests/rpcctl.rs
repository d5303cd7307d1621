//! The `rpcctl` binary end to end: every verb run as a process against real daemons on
//! loopback, each exit status, and a closed stdout. Output goes to files, so a chatty child
//! never blocks on a full pipe; every child is owned by a guard that kills it on drop.

use std::fs::File;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rpcd_client::ipc::{Outcome, Stats};
use rpcd_tests::{bin, tempdir, Daemon, ProcessGuard, Serving};
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
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The stdout as JSON, failing the test with everything known if it is not.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {self:#?}"))
    }

    fn ok(self) -> Run {
        assert_eq!(self.code(), Some(0), "{self:#?}");
        assert_eq!(self.stderr, "", "{self:#?}");
        self
    }
}

/// Runs rpcctl with `args` against the daemon at `socket`, standard input from `stdin`.
fn rpcctl_with_stdin(socket: &Path, args: &[&str], stdin: Option<&Path>) -> Run {
    let mut cmd = Command::new(bin("rpcctl"));
    rpcd_tests::isolate(&mut cmd)
        .arg("--socket")
        .arg(socket)
        .args(args);
    match stdin {
        Some(path) => cmd.stdin(File::open(path).expect("stdin file")),
        None => cmd.stdin(Stdio::null()),
    };
    run(cmd)
}

/// Runs `cmd` under a guard with its output in files, for at most [`RUN_MAX`].
fn run(mut cmd: Command) -> Run {
    let dir = tempdir();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    cmd.stdout(File::create(&out_path).expect("stdout file"))
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

fn rpcctl(socket: &Path, args: &[&str]) -> Run {
    rpcctl_with_stdin(socket, args, None)
}

/// Two fresh daemons on loopback, `a` and `b`, in `dir`.
fn two_daemons(dir: &Path) -> (Daemon, Daemon) {
    (
        Daemon::start(dir, "a", "127.0.0.1:0", None),
        Daemon::start(dir, "b", "127.0.0.1:0", None),
    )
}

/// `call` sends the JSON arguments across two daemons as one MessagePack array, and
/// `rpcd.echo`'s reply prints as the same JSON: pretty by default, one line with `--json`,
/// from the command line, a file, or standard input.
#[test]
fn call_round_trips_json_through_echo_across_daemons() {
    let dir = tempdir();
    let (a, b) = two_daemons(dir.path());
    let target = b.udp.to_string();
    let args = [
        r#""k""#,
        r#"{"a":[1,2],"nested":{"s":"ü","t":true,"n":null}}"#,
        "-1",
        "18446744073709551615",
        "1.5",
        "[]",
    ];
    let expected = json!([
        "k",
        {"a": [1, 2], "nested": {"s": "ü", "t": true, "n": null}},
        -1,
        18446744073709551615u64,
        1.5,
        []
    ]);

    let mut argv = vec!["call", &target, "rpcd.echo"];
    argv.extend(args);
    argv.extend(["--deadline", "5s", "--idempotent"]);
    let run = rpcctl(&a.socket, &argv).ok();
    assert_eq!(run.json(), expected);
    assert!(run.stdout.lines().count() > 1, "pretty by default");

    argv.push("--json");
    let run = rpcctl(&a.socket, &argv).ok();
    assert_eq!(run.json(), expected);
    assert_eq!(run.stdout.lines().count(), 1, "--json is one line");

    // No arguments: an empty array.
    let run = rpcctl(&a.socket, &["call", &target, "rpcd.echo", "--json"]).ok();
    assert_eq!(run.stdout, "[]\n");

    // The same arguments from a file, and from standard input.
    let file = dir.path().join("args.json");
    std::fs::write(&file, expected.to_string()).expect("write args file");
    let file_arg = file.to_str().expect("utf-8 path");
    let run = rpcctl(
        &a.socket,
        &["call", &target, "rpcd.echo", "--args-file", file_arg],
    )
    .ok();
    assert_eq!(run.json(), expected);
    let run = rpcctl_with_stdin(
        &a.socket,
        &["call", &target, "rpcd.echo", "--args-file", "-", "--json"],
        Some(&file),
    )
    .ok();
    assert_eq!(run.json(), expected);

    // A call to the local daemon's own address works too (short-circuit, no UDP).
    let own = a.udp.to_string();
    let run = rpcctl(&a.socket, &["call", &own, "rpcd.ping"]).ok();
    assert_eq!(run.json(), json!("pong"));
}

/// `list` shows the local daemon's functions, or a remote one's through `rpcd.list`.
#[test]
fn list_local_and_remote() {
    let dir = tempdir();
    let (a, b) = two_daemons(dir.path());
    let server = Arc::new(b.connect("server"));
    let _serving = Serving::start(server.clone(), "test.thing", |_| Outcome::Ok(vec![0xc0]));

    let local = rpcctl(&b.socket, &["list"]).ok();
    let names: Vec<&str> = local.stdout.lines().collect();
    for want in [
        "rpcd.echo",
        "rpcd.list",
        "rpcd.ping",
        "rpcd.stats",
        "test.thing",
    ] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }

    let remote = rpcctl(&a.socket, &["list", &b.udp.to_string(), "--json"]).ok();
    let remote: Vec<String> = serde_json::from_value(remote.json()).expect("array of names");
    assert_eq!(remote, names, "remote list equals B's local list");

    // A has no test.thing.
    let a_local = rpcctl(&a.socket, &["list"]).ok();
    assert!(!a_local.stdout.contains("test.thing"), "{a_local:?}");
    drop(server);
}

/// `ping -c 3` sends three probes and summarises them like `ping`.
#[test]
fn ping_three_probes_with_summary() {
    let dir = tempdir();
    let (a, b) = two_daemons(dir.path());
    let target = b.udp.to_string();
    let run = rpcctl(&a.socket, &["ping", &target, "-c", "3", "-i", "10ms"]).ok();
    let replies = run
        .stdout
        .lines()
        .filter(|l| l.starts_with(&format!("reply from {target}: seq=")) && l.ends_with(" ms"))
        .count();
    assert_eq!(replies, 3, "{run:#?}");
    assert!(
        run.stdout.contains("3 probes sent, 3 received, 0% loss"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("rtt min/avg/max/mdev = "), "{run:#?}");
}

/// `stats` prints counters per peer, locally or from a remote daemon's `rpcd.stats`;
/// `--json` is the `Stats` structure itself, its epochs as strings.
#[test]
fn stats_human_and_json_local_and_remote() {
    let dir = tempdir();
    let (a, b) = two_daemons(dir.path());
    let b_addr = b.udp.to_string();
    rpcctl(&a.socket, &["call", &b_addr, "rpcd.ping"]).ok();

    let run = rpcctl(&a.socket, &["stats", "--json"]).ok();
    assert_eq!(run.stdout.lines().count(), 1);
    let mut stats = run.json();
    // Epochs are strings in rpcctl's JSON (jq would round a u64); the rest is ipc::Stats.
    stats["epoch"] = json!(0);
    for peer in stats["peers"].as_array_mut().expect("peers") {
        peer["epoch"] = Value::Null;
    }
    let stats: Stats = serde_json::from_value(stats).expect("stats JSON is ipc::Stats");
    assert_eq!(stats.listen, a.udp.to_string());
    let peer = stats
        .peers
        .iter()
        .find(|p| p.addr == b_addr)
        .expect("a peer entry for b");
    assert!(peer.counters.datagrams_sent >= 1, "{peer:?}");
    assert!(
        stats.calls.get("ok").copied().unwrap_or(0) >= 1,
        "{stats:?}"
    );

    let human = rpcctl(&a.socket, &["stats"]).ok().stdout;
    assert!(
        human.starts_with(&format!("rpcd at {}, epoch ", a.udp)),
        "{human}"
    );
    for row in [
        "datagrams sent",
        "retransmissions",
        "  after loss detected",
        "  as probes (timeouts)",
        "congestion events",
        "persistent congestion",
        "paced delays",
        "calls ok",
        "PEER ",
    ] {
        assert!(
            human.lines().any(|l| l.starts_with(row)),
            "{row} missing:\n{human}"
        );
    }
    assert!(human.contains(&b_addr), "a row for b:\n{human}");

    // b's counters, fetched through a with rpcd.stats.
    let remote = rpcctl(&a.socket, &["stats", &b_addr, "--json"]).ok();
    assert_eq!(remote.json()["listen"], b_addr);
    let remote_human = rpcctl(&a.socket, &["stats", &b_addr]).ok().stdout;
    assert!(
        remote_human.starts_with(&format!("rpcd at {b_addr}, ")),
        "{remote_human}"
    );
}

/// `names` shows the local daemon's naming table: empty without a `[names]` config.
#[test]
fn names_is_empty_without_config() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let run = rpcctl(&a.socket, &["names", "--json"]).ok();
    assert_eq!(run.json(), json!([]));
    let run = rpcctl(&a.socket, &["names"]).ok();
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        ["NAME  TARGETS  RESOLVED  ERRORS"]
    );
}

/// `names` lists a configured name with its targets resolved, and `call` accepts the name
/// as a target.
#[test]
fn names_shows_configured_names_and_call_uses_them() {
    let dir = tempdir();
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let config = format!("[names]\necho = [\"{}\"]\n", b.udp);
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(&config));
    let run = rpcctl(&a.socket, &["names", "--json"]).ok();
    let entries = run.json();
    let entry = &entries[0];
    assert_eq!(entry["name"], "echo", "{run:#?}");
    assert_eq!(entry["targets"], json!([b.udp.to_string()]));
    assert_eq!(entry["resolved"], json!([b.udp.to_string()]));
    let human = rpcctl(&a.socket, &["names"]).ok().stdout;
    assert!(human.lines().any(|l| l.starts_with("echo ")), "{human}");

    let run = rpcctl(&a.socket, &["call", "echo", "rpcd.echo", "7", "--json"]).ok();
    assert_eq!(run.stdout, "[7]\n");
}

/// `completions bash` prints a completion script.
#[test]
fn completions_bash_is_a_script() {
    let dir = tempdir();
    let run = rpcctl(&dir.path().join("none.sock"), &["completions", "bash"]).ok();
    assert!(run.stdout.contains("_rpcctl()"), "{run:#?}");
    assert!(run.stdout.contains("complete -F _rpcctl"), "{run:#?}");
}

/// `bench -n 200 -c 4 --json` makes exactly 200 calls and reports latency percentiles.
#[test]
fn bench_counts_calls_and_reports_percentiles() {
    let dir = tempdir();
    let (a, b) = two_daemons(dir.path());
    let target = b.udp.to_string();
    let run = rpcctl(
        &a.socket,
        &[
            "bench",
            &target,
            "rpcd.echo",
            r#"{"k":[1,2,3]}"#,
            "-n",
            "200",
            "-c",
            "4",
            "--json",
        ],
    )
    .ok();
    assert_eq!(run.stdout.lines().count(), 1);
    let report = run.json();
    assert_eq!(report["calls"], 200, "{report}");
    assert_eq!(report["ok"], 200, "{report}");
    assert_eq!(report["concurrency"], 4, "{report}");
    assert_eq!(report["errors"], json!({}), "{report}");
    assert!(
        report["calls_per_s"].as_f64().is_some_and(|r| r > 0.0),
        "{report}"
    );
    let latency = &report["latency_us"];
    let get = |k: &str| {
        latency[k]
            .as_f64()
            .unwrap_or_else(|| panic!("latency_us.{k} missing: {report}"))
    };
    let ordered = ["min", "p50", "p90", "p99", "p99_9", "max"].map(get);
    assert!(ordered.windows(2).all(|w| w[0] <= w[1]), "{report}");

    // The human report, and the server's side: every call arrived.
    let human = rpcctl(&a.socket, &["bench", &target, "rpcd.ping", "-n", "20"]).ok();
    for label in ["throughput", "p50", "p99.9", "max"] {
        assert!(human.stdout.contains(label), "{human:#?}");
    }
}

/// Failed calls in a bench are counted by code, and the exit status is the failure's.
#[test]
fn bench_counts_errors_by_code() {
    let dir = tempdir();
    let (a, b) = two_daemons(dir.path());
    let run = rpcctl(
        &a.socket,
        &[
            "bench",
            &b.udp.to_string(),
            "no.such",
            "-n",
            "10",
            "-c",
            "2",
            "--json",
        ],
    );
    assert_eq!(run.code(), Some(4), "{run:#?}");
    let report = run.json();
    assert_eq!(report["ok"], 0);
    assert_eq!(
        report["errors"],
        json!({"unknown_function": 10}),
        "{report}"
    );
    assert!(run.stderr.contains("10 of 10 calls failed"), "{run:#?}");
}

/// Each exit status: 0 ok, 2 bad JSON (naming the argument and the position), 3 no daemon,
/// 4 transport error, 5 application error with the handler's message.
#[test]
fn exit_statuses() {
    let dir = tempdir();
    let (a, b) = two_daemons(dir.path());
    let target = b.udp.to_string();
    let server = Arc::new(b.connect("server"));
    let _serving = Serving::start(server.clone(), "test.fail", |_| {
        Outcome::Error("boom".into())
    });

    rpcctl(&a.socket, &["call", &target, "rpcd.ping"]).ok();

    let run = rpcctl(
        &a.socket,
        &["call", &target, "rpcd.echo", "1", "[1,\n 2,,]"],
    );
    assert_eq!(run.code(), Some(2), "{run:#?}");
    assert_eq!(
        run.stderr,
        "rpcctl: argument 2 is not valid JSON: expected value at line 2 column 4\n"
    );
    assert_eq!(run.stdout, "");

    let run = rpcctl(
        &dir.path().join("none.sock"),
        &["call", &target, "rpcd.ping"],
    );
    assert_eq!(run.code(), Some(3), "{run:#?}");
    assert!(run.stderr.contains("is rpcd running?"), "{run:#?}");

    let run = rpcctl(&a.socket, &["call", &target, "no.such"]);
    assert_eq!(run.code(), Some(4), "{run:#?}");
    assert!(run.stderr.contains("unknown_function"), "{run:#?}");
    assert!(run.stderr.contains("no.such"), "{run:#?}");

    let run = rpcctl(&a.socket, &["call", &target, "test.fail", r#""x""#]);
    assert_eq!(run.code(), Some(5), "{run:#?}");
    assert!(run.stderr.contains("app_error"), "{run:#?}");
    assert!(run.stderr.contains("boom"), "{run:#?}");
    assert_eq!(run.stdout, "");
    drop(server);
}

/// `RPCD_SOCKET` names the socket when `--socket` is not given.
#[test]
fn socket_from_the_environment() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let mut cmd = Command::new(bin("rpcctl"));
    cmd.args(["list", "--json"])
        .env("RPCD_SOCKET", &a.socket)
        .stdin(Stdio::null());
    let listed = run(cmd).ok();
    assert!(listed.stdout.contains("rpcd.echo"), "{listed:#?}");
}

/// A reader that goes away (`rpcctl stats | head -1`) ends rpcctl with status 0 and nothing
/// on stderr, whichever verb was writing.
#[test]
fn closed_stdout_is_a_clean_exit() {
    let dir = tempdir();
    let (a, b) = two_daemons(dir.path());
    let target = b.udp.to_string();
    let verbs: [&[&str]; 4] = [
        &["stats"],
        &["list"],
        &["ping", &target, "-c", "3", "-i", "10ms"],
        &["call", &target, "rpcd.echo", "1"],
    ];
    for verb in verbs {
        let mut cmd = Command::new(bin("rpcctl"));
        cmd.arg("--socket")
            .arg(&a.socket)
            .args(verb)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn rpcctl");
        // Close the read end before rpcctl writes anything.
        drop(child.stdout.take());
        let stderr = child.stderr.take().expect("stderr pipe");
        let mut guard = ProcessGuard::new("rpcctl", child);
        let status = guard.wait_timeout(RUN_MAX).expect("rpcctl exits");
        let stderr = std::io::read_to_string(stderr).expect("read stderr");
        assert_eq!(status.code(), Some(0), "{verb:?}: {stderr}");
        assert_eq!(stderr, "", "{verb:?}");
    }

    // The same through a shell pipeline, as an operator types it.
    let script = r#""$0" --socket "$1" stats | head -c1 >/dev/null; exit "${PIPESTATUS[0]}""#;
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script])
        .arg(bin("rpcctl"))
        .arg(&a.socket)
        .stdin(Stdio::null());
    run(cmd).ok();
}
