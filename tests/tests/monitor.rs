//! `rpcctl monitor` and the IPC `monitor` request against a real daemon
//! (`docs/cli.md`, "monitor"; `docs/ipc-protocol.md` §8): every call of a burst seen with
//! its outcome, a monitor that does not read held to its buffer and told what it missed,
//! and a user who may not read stats refused.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rpcd_client::conn::CallOptions;
use rpcd_client::ipc::{
    encode_frame, ClientMsg, DaemonMsg, FrameReader, FRAME_MAX_DEFAULT, PROTOCOL_VERSION,
};
use rpcd_tests::{
    as_nobody, bin, output_within, root_or_skip, tempdir, Daemon, ProcessGuard, NOBODY,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A raw session (hello done) that sent `monitor` and read its `done`.
fn raw_monitor(d: &Daemon, function: Option<&str>) -> (UnixStream, FrameReader) {
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut r = FrameReader::new(FRAME_MAX_DEFAULT);
    s.write_all(&encode_frame(&ClientMsg::Hello {
        id: 0,
        version: PROTOCOL_VERSION,
        version_min: None,
        name: "raw-monitor".into(),
    }))
    .expect("hello");
    assert!(matches!(
        next(&mut s, &mut r),
        Some(DaemonMsg::HelloOk { .. })
    ));
    s.write_all(&encode_frame(&ClientMsg::Monitor {
        id: 5,
        function: function.map(str::to_owned),
        peer: None,
    }))
    .expect("monitor");
    assert_eq!(next(&mut s, &mut r), Some(DaemonMsg::Done { id: 5 }));
    (s, r)
}

/// The next frame; None at the end of the stream or after the read timeout.
fn next(s: &mut UnixStream, r: &mut FrameReader) -> Option<DaemonMsg> {
    loop {
        if let Some(m) = r.next_frame::<DaemonMsg>().expect("a frame") {
            return Some(m);
        }
        match r.read_from(s) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn opts() -> CallOptions {
    CallOptions::default().with_deadline(Duration::from_secs(10))
}

/// `rpcctl monitor --json` sees every call of a burst (20 answered, 10 refused as
/// `unknown_function`) as a start and an end with the outcome, sizes and duration;
/// `--function` leaves out the others.
#[test]
fn a_monitor_sees_every_call_of_a_burst_with_its_outcome() {
    let dir = tempdir();
    let d = Daemon::start(dir.path(), "m", "127.0.0.1:0", None);
    let out_path = dir.path().join("monitor.out");
    let child = Command::new(bin("rpcctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["--json", "monitor", "--function", "rpcd.*"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("out file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn rpcctl monitor");
    let _guard = ProcessGuard::new("rpcctl monitor", child);
    // Ready once the daemon counts it: a probe call shows up in its output.
    let c = d.connect("burst");
    let me = d.udp.to_string();
    let started = Instant::now();
    loop {
        c.call(&me, "rpcd.ping", Vec::new(), opts()).expect("probe");
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if text.lines().count() >= 2 {
            break;
        }
        assert!(started.elapsed() < WAIT, "the monitor never reported");
        thread::sleep(Duration::from_millis(20));
    }
    for i in 0..20u8 {
        let r = c
            .call(&me, "rpcd.echo", vec![0x91, i], opts())
            .expect("echo");
        assert_eq!(r, vec![0x91, i]);
    }
    for _ in 0..10 {
        // Filtered out by --function, but the call still runs.
        assert!(c.call(&me, "nope.missing", vec![0x90], opts()).is_err());
    }
    for _ in 0..10 {
        assert!(c.call(&me, "rpcd.missing", vec![0x90], opts()).is_err());
    }
    // The probes' events are left out: only the burst's are counted.
    let burst = |text: &str| -> Vec<Value> {
        // Whole lines only: rpcctl may be writing the next one.
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        whole
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("one JSON object per line"))
            .filter(|e| e["function"] != "rpcd.ping")
            .collect()
    };
    let until = Instant::now() + WAIT;
    let events = loop {
        let events = burst(&std::fs::read_to_string(&out_path).unwrap_or_default());
        if events.len() >= 60 || Instant::now() > until {
            break events;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(events.len(), 60, "{events:#?}");
    let ends: Vec<&Value> = events.iter().filter(|e| e["kind"] == "end").collect();
    let starts = events.iter().filter(|e| e["kind"] == "start").count();
    assert_eq!((starts, ends.len()), (30, 30));
    let ok = ends.iter().filter(|e| e["code"] == "ok").count();
    let unknown = ends
        .iter()
        .filter(|e| e["code"] == "unknown_function")
        .count();
    assert_eq!((ok, unknown), (20, 10), "{ends:#?}");
    assert!(
        events.iter().all(|e| e["function"] != "nope.missing"),
        "--function filters"
    );
    for e in &ends {
        assert_eq!(e["direction"], "out");
        assert!(e["function"]
            .as_str()
            .is_some_and(|f| f.starts_with("rpcd.")));
        assert!(e["call"].as_str().is_some_and(|c| c.contains('-')), "{e}");
        if e["code"] == "ok" {
            assert_eq!(
                (e["args_bytes"].as_u64(), e["reply_bytes"].as_u64()),
                (Some(2), Some(2))
            );
        }
    }
}

/// A monitor that does not read while 3000 calls run is held to `monitor_buffer`
/// (16 events) plus what the socket holds: when it reads again, every event is either
/// delivered or counted in a `missed` event, it missed some, and the daemon kept serving.
#[test]
fn a_monitor_that_never_reads_is_bounded_and_told_what_it_missed() {
    let dir = tempdir();
    let d = Daemon::start(
        dir.path(),
        "m",
        "127.0.0.1:0",
        Some("[limits]\nmonitor_buffer = 16\n"),
    );
    let (mut s, mut r) = raw_monitor(&d, None);
    let c = d.connect("burst");
    let me = d.udp.to_string();
    let calls = 3000u64;
    for _ in 0..calls {
        c.call(&me, "rpcd.echo", vec![0x90], opts()).expect("echo");
    }
    // The monitor reads now: what was held, then what the buffer could not hold.
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let (mut delivered, mut missed) = (0u64, 0u64);
        while delivered + missed < 2 * calls {
            match next(&mut s, &mut r) {
                Some(DaemonMsg::Event { id: 5, event }) if event.kind == "missed" => {
                    missed += event.missed
                }
                Some(DaemonMsg::Event { id: 5, .. }) => delivered += 1,
                Some(other) => panic!("unexpected {other:?}"),
                None => break,
            }
        }
        let _ = tx.send((delivered, missed));
    });
    // The last events arrive once the earlier ones are read; one more call flushes
    // nothing new but proves the daemon still serves.
    c.call(&me, "rpcd.ping", Vec::new(), opts())
        .expect("the daemon still serves");
    let (delivered, missed) = rx.recv_timeout(WAIT).expect("the monitor read to the end");
    reader.join().expect("reader");
    assert!(missed > 0, "a monitor that does not read misses events");
    assert!(
        delivered + missed >= 2 * calls,
        "every event delivered or counted: {delivered} + {missed}"
    );
    // The buffer (16) plus one batch plus what the socket buffers held: far fewer than all.
    assert!(delivered < calls, "delivered {delivered} of {}", 2 * calls);
}

/// With a policy that lets only root read stats, `nobody` cannot monitor: status 6 and
/// `access_denied`; root can.
#[test]
fn a_user_who_may_not_read_stats_cannot_monitor() {
    if !root_or_skip("a denied monitor") {
        return;
    }
    let dir = tempdir();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let cfg =
        format!("[access]\nsocket_group = {NOBODY}\n[[access.allow]]\nusers = [0]\nstats = true\n");
    let d = Daemon::start(dir.path(), "m", "127.0.0.1:0", Some(&cfg));
    let mut cmd = as_nobody(&bin("rpcctl"));
    cmd.arg("--socket").arg(&d.socket).args(["monitor"]);
    let out = output_within(&mut cmd, WAIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "stderr: {err}");
    assert!(err.contains("access_denied"), "{err}");
    assert!(out.stdout.is_empty(), "no event for a denied user");
    // Root may: the same request is answered `done`.
    let (s, _) = raw_monitor(&d, None);
    drop(s);
}
