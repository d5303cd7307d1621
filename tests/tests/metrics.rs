//! `[metrics] listen`: a real HTTP client scrapes `GET /metrics` of a real daemon while
//! calls run; every body passes a strict checker of the Prometheus text format (and
//! Python's `prometheus_client.parser` where it is installed); at a quiet moment the
//! figures equal `rpcctl stats --json`; per-function latency and exact call counts are
//! in both; bad requests get HTTP errors and the daemon keeps serving; nothing listens by
//! default. Every process is owned by a guard.

#[path = "metrics/exposition.rs"]
mod exposition;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use exposition::Exposition;
use rpcd_client::conn::CallOptions;
use rpcd_client::ipc::Outcome;
use rpcd_tests::{bin, tempdir, wait_until, Daemon, ProcessGuard, Serving};
use serde_json::Value;

/// Longest a child process may run before the test fails (and the guard kills it).
const RUN_MAX: Duration = Duration::from_secs(60);

/// A metrics endpoint on an ephemeral port, its latency window long enough for a slow run.
const CONFIG: &str =
    "[metrics]\nlisten = \"127.0.0.1:0\"\nrequest_timeout_ms = 1000\nlatency_window_ms = 3600000\n";

/// The address the daemon logged for `GET /metrics`.
fn metrics_addr(d: &Daemon) -> SocketAddr {
    let mut found = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            found = d.log_text().lines().find_map(|l| {
                let rest = l.split("serving GET /metrics").nth(1)?;
                let addr = rest.split("addr=").nth(1)?.split_whitespace().next()?;
                addr.trim_matches('"').parse().ok()
            });
            found.is_some()
        }),
        "no metrics address in the log:\n{}",
        d.log_text()
    );
    found.expect("found")
}

/// One HTTP exchange: `request` sent as is, the status and the body read to the end.
fn http(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(request).expect("send the request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    if !request.starts_with(b"HEAD") {
        assert_eq!(body.len(), length, "{head}");
    }
    (status, head.to_owned(), body.to_owned())
}

/// `GET /metrics`, checked strictly.
fn scrape(addr: SocketAddr) -> (String, Exposition) {
    let (status, head, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: rpcd\r\n\r\n");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let parsed = Exposition::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    (body, parsed)
}

/// `rpcctl --socket SOCKET --json stats`, under a guard.
fn stats_json(socket: &Path) -> Value {
    let dir = tempdir();
    let out = dir.path().join("stdout");
    let mut cmd = Command::new(bin("rpcctl"));
    rpcd_tests::isolate(&mut cmd)
        .arg("--socket")
        .arg(socket)
        .args(["--json", "stats"])
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(Stdio::inherit());
    let mut guard = ProcessGuard::new("rpcctl", cmd.spawn().expect("spawn rpcctl"));
    let status = guard.wait_timeout(RUN_MAX).expect("rpcctl finished");
    assert!(status.success(), "rpcctl stats: {status}");
    serde_json::from_str(&std::fs::read_to_string(out).expect("read")).expect("JSON")
}

/// The JSON without what moves by itself (time) or by asking (the asking connection).
fn steady(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("uptime_ms");
    }
    v
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// Scrapes while an app's calls run, then at a quiet moment: every body strict, the
/// figures equal to `rpcctl stats --json`, per-function counts exact and latency present.
#[test]
fn scrape_while_calls_run_matches_stats() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(CONFIG));
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", Some(CONFIG));
    let addr = metrics_addr(&a);
    let server = Arc::new(b.connect("server"));
    let serving = Serving::start(server.clone(), "kv.get", |_| {
        thread::sleep(Duration::from_millis(2));
        Outcome::Ok(vec![0xc0])
    });
    let target = b.udp.to_string();

    const OK_CALLS: u64 = 60;
    const MISSING_CALLS: u64 = 7;
    let done = Arc::new(AtomicBool::new(false));
    let caller = {
        let conn = a.connect("caller");
        let done = done.clone();
        let target = target.clone();
        thread::spawn(move || {
            for i in 0..OK_CALLS {
                conn.call(&target, "kv.get", vec![0x90], CallOptions::default())
                    .expect("kv.get answers");
                if i < MISSING_CALLS {
                    conn.call(&target, "kv.nope", vec![0x90], CallOptions::default())
                        .expect_err("kv.nope is not registered");
                }
            }
            done.store(true, Ordering::SeqCst);
            conn
        })
    };
    let mut during = 0;
    while !done.load(Ordering::SeqCst) {
        let (body, _) = scrape(addr);
        python_check(&body);
        during += 1;
    }
    let caller_conn = caller.join().expect("the caller thread");
    assert!(during >= 1, "scraped while the calls ran");

    // A quiet moment: the stats before and after the scrape agree.
    let mut compared = false;
    for _ in 0..20 {
        let before = stats_json(&a.socket);
        let (body, m) = scrape(addr);
        let after = stats_json(&a.socket);
        if steady(before.clone()) != steady(after) {
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        python_check(&body);
        same_figures(&before, &m);
        compared = true;
        break;
    }
    assert!(compared, "no quiet moment in 20 tries");

    // Exact counts by function, and latency, in rpcctl stats --json and in /metrics.
    let stats = stats_json(&a.socket);
    let get = &stats["by_function"]["kv.get"];
    assert_eq!(u64_of(&get["calls"]["ok"]), OK_CALLS, "{stats}");
    assert_eq!(get["calls"].as_object().map(|o| o.len()), Some(1), "{get}");
    let nope = &stats["by_function"]["kv.nope"];
    assert_eq!(
        u64_of(&nope["calls"]["unknown_function"]),
        MISSING_CALLS,
        "{stats}"
    );
    assert_eq!(u64_of(&get["window_calls"]), OK_CALLS);
    let (p50, p99) = (u64_of(&get["p50_us"]), u64_of(&get["p99_us"]));
    assert!(2_000 <= p50 && p50 <= p99, "the handler sleeps 2 ms: {get}");
    let (_, m) = scrape(addr);
    let f = [("function", "kv.get")];
    assert_eq!(
        m.value("rpcd_call_duration_seconds_count", &f),
        Some(OK_CALLS as f64)
    );
    assert_eq!(
        m.value(
            "rpcd_function_calls_total",
            &[("function", "kv.nope"), ("outcome", "unknown_function")]
        ),
        Some(MISSING_CALLS as f64)
    );
    // The human table has the same row.
    let table = rpcctl_stats_text(&a.socket);
    let row = table
        .lines()
        .find(|l| l.starts_with("kv.get "))
        .unwrap_or_else(|| panic!("no kv.get row:\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..3], [OK_CALLS.to_string(), "0".to_owned()], "{row}");
    assert_eq!(cells[3], format!("{:.3}", p50 as f64 / 1000.0), "{row}");

    drop(caller_conn);
    drop(serving);
}

/// `rpcctl stats` (the human tables).
fn rpcctl_stats_text(socket: &Path) -> String {
    let dir = tempdir();
    let out = dir.path().join("stdout");
    let mut cmd = Command::new(bin("rpcctl"));
    rpcd_tests::isolate(&mut cmd)
        .arg("--socket")
        .arg(socket)
        .arg("stats")
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout file"));
    let mut guard = ProcessGuard::new("rpcctl", cmd.spawn().expect("spawn rpcctl"));
    assert!(guard.wait_timeout(RUN_MAX).expect("finished").success());
    std::fs::read_to_string(out).expect("read")
}

/// Every counter and gauge of `stats` (rpcctl's JSON) equals its series in `m`.
fn same_figures(stats: &Value, m: &Exposition) {
    let top = stats.as_object().expect("an object");
    let eq = |name: &str, labels: &[(&str, &str)], want: f64| {
        assert_eq!(
            m.value(name, labels),
            Some(want),
            "{name}{labels:?} in the scrape vs. {want} in rpcctl stats --json"
        );
    };
    // Top-level numbers, mechanically: a counter `rpcd_<key>_total` or a gauge `rpcd_<key>`.
    for (key, v) in top {
        let Some(n) = v.as_u64() else { continue };
        match key.as_str() {
            "uptime_ms" => {}
            // rpcctl's own connection is open while it asks.
            // rpcctl's own connection is open while it asks; the loop may answer the
            // scrape before it has seen that connection close.
            "connections" => {
                let scraped = m.value("rpcd_connections", &[]);
                assert!(
                    scraped == Some((n - 1) as f64) || scraped == Some(n as f64),
                    "rpcd_connections {scraped:?}, stats {n}"
                );
            }
            _ => match m.value(&format!("rpcd_{key}_total"), &[]) {
                Some(_) => eq(&format!("rpcd_{key}_total"), &[], n as f64),
                None => eq(&format!("rpcd_{key}"), &[], n as f64),
            },
        }
    }
    eq(
        "rpcd_info",
        &[
            ("version", top["version"].as_str().expect("version")),
            ("listen", top["listen"].as_str().expect("listen")),
            (
                "epoch",
                &format!(
                    "{:016x}",
                    top["epoch"]
                        .as_str()
                        .and_then(|e| e.parse::<u64>().ok())
                        .expect("epoch")
                ),
            ),
        ],
        1.0,
    );
    for (map, metric, label) in [
        ("calls", "rpcd_calls_total", "outcome"),
        ("security", "rpcd_security_events_total", "event"),
        ("access_denied", "rpcd_access_denied_total", "reason"),
    ] {
        let entries = top[map].as_object().expect("a map");
        for (k, v) in entries {
            eq(metric, &[(label, k)], u64_of(v) as f64);
        }
        assert_eq!(m.count(metric), entries.len(), "{metric}");
    }
    let peers = top["peers"].as_array().expect("peers");
    assert!(!peers.is_empty(), "a peer");
    eq("rpcd_peers", &[], peers.len() as f64);
    for p in peers {
        let addr = p["addr"].as_str().expect("addr");
        let l = [("peer", addr), ("peer_name", "")];
        let counters = p["counters"].as_object().expect("counters");
        for (k, v) in counters {
            eq(&format!("rpcd_peer_{k}_total"), &l, u64_of(v) as f64);
        }
        for (k, v) in p["calls"].as_object().expect("calls") {
            eq(
                "rpcd_peer_calls_total",
                &[l[0], l[1], ("outcome", k)],
                u64_of(v) as f64,
            );
        }
        eq(
            "rpcd_peer_in_flight_datagrams",
            &l,
            u64_of(&p["in_flight"]) as f64,
        );
        eq("rpcd_peer_cwnd_datagrams", &l, u64_of(&p["cwnd"]) as f64);
        eq(
            "rpcd_peer_calls_in_flight",
            &l,
            u64_of(&p["calls_in_flight"]) as f64,
        );
        eq(
            "rpcd_peer_rto_seconds",
            &l,
            u64_of(&p["rto_us"]) as f64 / 1e6,
        );
        if let Some(srtt) = p["srtt_us"].as_u64() {
            eq("rpcd_peer_srtt_seconds", &l, srtt as f64 / 1e6);
        }
    }
    let functions = top["by_function"].as_object().expect("by_function");
    assert!(functions.contains_key("kv.get"), "{functions:?}");
    for (name, f) in functions {
        let fl = [("function", name.as_str())];
        let mut total = 0;
        for (code, v) in f["calls"].as_object().expect("calls") {
            eq(
                "rpcd_function_calls_total",
                &[fl[0], ("outcome", code)],
                u64_of(v) as f64,
            );
            total += u64_of(v);
        }
        eq("rpcd_call_duration_seconds_count", &fl, total as f64);
        eq(
            "rpcd_call_duration_seconds_sum",
            &fl,
            u64_of(&f["latency_sum_us"]) as f64 / 1e6,
        );
        for b in f["latency_buckets"].as_array().expect("buckets") {
            let le = exposition::go_float(u64_of(&b["le_us"]) as f64 / 1e6);
            eq(
                "rpcd_call_duration_seconds_bucket",
                &[fl[0], ("le", &le)],
                u64_of(&b["count"]) as f64,
            );
        }
        eq(
            "rpcd_call_duration_seconds_bucket",
            &[fl[0], ("le", "+Inf")],
            total as f64,
        );
        eq(
            "rpcd_call_duration_window_calls",
            &fl,
            u64_of(&f["window_calls"]) as f64,
        );
        for (q, key) in [("0.5", "p50_us"), ("0.99", "p99_us")] {
            let labels = [fl[0], ("quantile", q)];
            match f[key].as_u64() {
                Some(us) => eq(
                    "rpcd_call_duration_window_seconds",
                    &labels,
                    us as f64 / 1e6,
                ),
                None => assert_eq!(m.value("rpcd_call_duration_window_seconds", &labels), None),
            }
        }
    }
    for process in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        // CPU seconds may still read 0 on a daemon that has barely run (10 ms ticks).
        let floor_ok = |v: f64| {
            if process == "process_cpu_seconds_total" {
                v >= 0.0
            } else {
                v > 0.0
            }
        };
        assert!(m.value(process, &[]).is_some_and(floor_ok), "{process}");
    }
}

/// The Python interpreter with `prometheus_client` to cross-check with: `RPCD_METRICS_PYTHON`
/// (then it must work: `.ci/run` sets it), else the CI venv under `target/` if it has the
/// package, else none (the strict Rust checker alone; the reason is printed).
fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RPCD_METRICS_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = rpcd_tests::bin_dir()
        .parent()
        .map(|t| t.join("python-venv/bin/python"))?;
    let has = Command::new(&venv)
        .args(["-c", "import prometheus_client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        eprintln!(
            "skipping the Python parser check: no {} with prometheus_client \
             (.ci/run installs it and sets RPCD_METRICS_PYTHON)",
            venv.display()
        );
    }
    has.then_some(venv)
}

/// `body` parses with `prometheus_client.parser`, into the very series the strict
/// checker read.
fn python_check(body: &str) {
    let Some(python) = python() else { return };
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        key = s.name + "{" + ",".join(k + "=" + v for k, v in sorted(s.labels.items())) + "}"
        out[key] = s.value
print(json.dumps(out))
"#;
    let dir = tempdir();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::write(&input, body).expect("write");
    let mut cmd = Command::new(&python);
    cmd.args(["-c", script])
        .stdin(File::open(&input).expect("open"))
        .stdout(File::create(&output).expect("create"));
    let mut guard = ProcessGuard::new("python", cmd.spawn().expect("spawn python"));
    let status = guard.wait_timeout(RUN_MAX).expect("python finished");
    assert!(
        status.success(),
        "prometheus_client.parser rejected:\n{body}"
    );
    let parsed: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(output).expect("read")).expect("JSON");
    let ours = Exposition::parse(body).expect("strict");
    assert_eq!(parsed.len(), ours.len(), "series count: python vs. strict");
    for (key, v) in parsed {
        let v = v.as_f64().expect("a number");
        assert_eq!(ours.by_key(&key), Some(v), "{key}");
    }
}

/// Bad requests get 400, 404, 405 or 431, an idle client is cut off after the request
/// timeout, and through all of it the daemon keeps serving calls and scrapes.
#[test]
fn bad_requests_get_http_errors_and_the_daemon_keeps_serving() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(CONFIG));
    let addr = metrics_addr(&a);
    let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    for (request, status) in [
        (&b"POST /metrics HTTP/1.1\r\n\r\n"[..], 405),
        (b"GET /other HTTP/1.1\r\n\r\n", 404),
        (b"GET / HTTP/1.1\r\n\r\n", 404),
        (b"garbage\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"\xff\xfe\r\n\r\n", 400),
        (long.as_bytes(), 431),
    ] {
        let (got, head, _) = http(addr, request);
        assert_eq!(
            got,
            status,
            "{:?}: {head}",
            String::from_utf8_lossy(&request[..20.min(request.len())])
        );
        if status == 405 {
            assert!(head.contains("Allow: GET, HEAD"), "{head}");
        }
    }
    // HEAD: the head alone.
    let (got, head, body) = http(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!((got, body.as_str()), (200, ""), "{head}");

    // An idle client is cut off after the request timeout; the next scrape is served.
    let mut idle = TcpStream::connect(addr).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the idle client was cut off"
    );
    scrape(addr);

    // The daemon answered calls meanwhile and still does.
    let c = a.connect("caller");
    let echoed = c
        .call(
            &a.udp.to_string(),
            "rpcd.echo",
            vec![0x91, 0x01],
            CallOptions::default(),
        )
        .expect("rpcd.echo");
    assert_eq!(echoed, [0x91, 0x01]);
    let (_, m) = scrape(addr);
    assert_eq!(
        m.value(
            "rpcd_function_calls_total",
            &[("function", "rpcd.echo"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
}

/// Without `[metrics] listen` the daemon listens on no TCP port at all.
#[test]
fn metrics_are_off_by_default() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    assert!(!a.log_text().contains("/metrics"), "{}", a.log_text());
    let listening = tcp_listeners(a.process.pid());
    assert!(listening.is_empty(), "TCP listeners: {listening:?}");
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", Some(CONFIG));
    let addr = metrics_addr(&b);
    assert_eq!(
        tcp_listeners(b.process.pid()),
        [addr.port()],
        "the check sees one"
    );
}

/// Large calls through two daemons take their buffers from each daemon's pool
/// (`limits.local_buffer_pool_max`, `rpcd_buffer_pool_*` in `/metrics`) after the first
/// message, within the bound; a reload sets the bound at once (0: nothing kept), and calls
/// still work.
#[test]
fn large_calls_reuse_each_daemons_pooled_buffers_and_a_reload_sets_the_bound() {
    const MIB: usize = 1024 * 1024;
    let pool_max = 48 * MIB;
    let config = |max: usize| format!("{CONFIG}[limits]\nlocal_buffer_pool_max = {max}\n");
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(&config(pool_max)));
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", Some(&config(pool_max)));
    let (a_metrics, b_metrics) = (metrics_addr(&a), metrics_addr(&b));
    let serving = Serving::start(Arc::new(b.connect("server")), "bulk.len", |args| {
        Outcome::Ok((args.len() as u64).to_be_bytes().to_vec())
    });
    let caller = a.connect("caller");
    let call = |len: usize| {
        let reply = caller
            .call(
                &b.udp.to_string(),
                "bulk.len",
                vec![0xa5; len],
                CallOptions::default(),
            )
            .expect("bulk.len answers");
        assert_eq!(reply, (len as u64).to_be_bytes());
    };
    let counts = |addr| {
        let (_, m) = scrape(addr);
        let value = |metric: &str| m.value(metric, &[]).unwrap_or(-1.0);
        (
            value("rpcd_buffer_pool_reused_total"),
            value("rpcd_buffer_pool_missed_total"),
        )
    };
    for _ in 0..3 {
        call(3 * MIB);
    }
    // Warmed up: from now on no large buffer is allocated for a message, on either side
    // (A: the frame reader's, the arguments', the envelope the transport gives back once
    // acknowledged; B: the reassembly, into the buffer of a request decoded earlier), and B
    // takes at least that one per message (its output to the serving app needs no large
    // buffer: the arguments are written from the buffer they arrived in).
    let before = [counts(a_metrics), counts(b_metrics)];
    for _ in 0..3 {
        call(3 * MIB);
    }
    let after = [counts(a_metrics), counts(b_metrics)];
    assert_eq!(
        after[0].1, before[0].1,
        "A allocated: {before:?} -> {after:?}"
    );
    assert_eq!(
        after[1].1, before[1].1,
        "B allocated: {before:?} -> {after:?}"
    );
    assert!(
        after[1].0 >= before[1].0 + 3.0,
        "B reused: {before:?} -> {after:?}"
    );
    for (name, addr) in [("A", a_metrics), ("B", b_metrics)] {
        let (_, m) = scrape(addr);
        let value = |metric: &str| m.value(metric, &[]).unwrap_or(-1.0);
        assert_eq!(
            value("rpcd_buffer_pool_max_bytes"),
            pool_max as f64,
            "{name}"
        );
        let bytes = value("rpcd_buffer_pool_bytes");
        assert!((0.0..=pool_max as f64).contains(&bytes), "{name}: {bytes}");
        // Each message after the first: at least one large buffer not allocated again
        // (A: the frame reader's and the envelope's; B: the reassembly's).
        let reused = value("rpcd_buffer_pool_reused_total");
        assert!(reused >= 3.0, "{name}: {reused} reused");
    }

    // A reload to 0 drops what B keeps and keeps nothing more.
    std::fs::write(dir.path().join("b.toml"), config(0)).expect("rewrite b.toml");
    b.process.signal(nix::sys::signal::Signal::SIGHUP);
    let pool_of = |addr| {
        let (_, m) = scrape(addr);
        (
            m.value("rpcd_buffer_pool_max_bytes", &[]),
            m.value("rpcd_buffer_pool_bytes", &[]),
        )
    };
    assert!(
        wait_until(Duration::from_secs(10), || pool_of(b_metrics)
            == (Some(0.0), Some(0.0))),
        "after the reload: {:?}",
        pool_of(b_metrics)
    );
    call(3 * MIB);
    assert_eq!(pool_of(b_metrics), (Some(0.0), Some(0.0)));
    drop(serving);
}

/// Ports of the TCP sockets process `pid` listens on (from `/proc`).
fn tcp_listeners(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the daemon's fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A: LISTEN), inode.
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                ports.extend(port);
            }
        }
    }
    ports
}
