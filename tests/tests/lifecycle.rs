//! The daemon's lifecycle through its real interfaces: signals, reload,
//! sd_notify, daemonizing, the socket file, and service names.

// In tests a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rpcd_client::conn::{CallOptions, Connection, RequestError};
use rpcd_client::ipc::{ErrorCode, NameEntry, Outcome};
use rpcd_tests::{output_within, rpcd_command, tempdir, wait_until, Daemon, ProcessGuard, Serving};

fn opts(deadline_ms: u64, idempotent: bool) -> CallOptions {
    CallOptions::new(Some(Duration::from_millis(deadline_ms)), idempotent)
}

fn code(e: &RequestError) -> Option<ErrorCode> {
    e.code()
}

/// How long a command that must exit by itself may run before the test fails.
const EXIT_MAX: Duration = Duration::from_secs(20);

/// Start rpcd by hand (for flags and environment the harness does not set): isolated
/// like the harness's daemons, with an empty config unless `args` names one.
fn spawn(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> ProcessGuard {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut cmd = if args.contains(&"--config") {
        let mut c = Command::new(rpcd_tests::bin("rpcd"));
        rpcd_tests::isolate(&mut c).env("RUST_LOG", "info");
        c
    } else {
        rpcd_command(dir, None)
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    ProcessGuard::new(name, cmd.spawn().unwrap())
}

fn connect_when_up(socket: &Path) -> Connection {
    let mut conn = None;
    assert!(
        wait_until(Duration::from_secs(20), || {
            conn = Connection::connect(socket, "test").ok();
            conn.is_some()
        }),
        "rpcd did not come up on {}",
        socket.display()
    );
    conn.unwrap()
}

/// SIGTERM with a call in flight: the pending call is still answered, new
/// calls are refused with `shutting_down`, the socket file is removed, and
/// the daemon exits 0.
#[test]
fn sigterm_answers_pending_calls_then_exits_cleanly() {
    let dir = tempdir();
    let mut a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let server = Arc::new(b.connect("server"));
    server.register("test.slow").unwrap();
    let client = Arc::new(a.connect("client"));
    let target = b.udp.to_string();
    let caller = {
        let (c, t) = (client.clone(), target.clone());
        thread::spawn(move || c.call(&t, "test.slow", b"x".to_vec(), opts(10_000, false)))
    };
    let inv = server
        .next_invocation(Some(Duration::from_secs(5)))
        .unwrap();
    a.process.signal(Signal::SIGTERM);
    // New calls are refused while the old one is still pending.
    assert!(wait_until(Duration::from_secs(5), || {
        matches!(
            client.call(&target, "rpcd.ping", Vec::new(), opts(2000, false)),
            Err(ref e) if code(e) == Some(ErrorCode::ShuttingDown)
        )
    }));
    thread::sleep(Duration::from_millis(200));
    server
        .send_result(inv.invocation, Outcome::Ok(b"done".to_vec()))
        .unwrap();
    assert_eq!(caller.join().unwrap().unwrap(), b"done");
    let status = a
        .process
        .wait_timeout(Duration::from_secs(10))
        .expect("rpcd exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(!a.socket.exists(), "socket file left behind");
}

/// SIGTERM at the *serving* daemon while a remote caller's call is being
/// served there, after a quiet spell (so the reply waits behind an epoch
/// revalidation): the caller gets the reply — not `peer_unreachable` seconds
/// later — and the daemon exits 0 only afterwards. A second held call that
/// is never answered ends `shutting_down` at the end of the grace period.
#[test]
fn sigterm_at_the_serving_daemon_delivers_the_remote_callers_reply() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let mut b = Daemon::start(
        dir.path(),
        "b",
        "127.0.0.1:0",
        Some("[limits]\nshutdown_grace_ms = 1500\n"),
    );
    let server = Arc::new(b.connect("server"));
    server.register("test.slow").unwrap();
    let client = Arc::new(a.connect("client"));
    let target = b.udp.to_string();
    let call = |arg: &'static [u8]| {
        let (c, t) = (client.clone(), target.clone());
        thread::spawn(move || c.call(&t, "test.slow", arg.to_vec(), opts(30_000, false)))
    };
    let answered = call(b"answered");
    let first = server
        .next_invocation(Some(Duration::from_secs(5)))
        .unwrap();
    let ignored = call(b"ignored");
    let second = server
        .next_invocation(Some(Duration::from_secs(5)))
        .unwrap();
    // Longer than transport.revalidate_after_ms (250 ms): quiet channel.
    thread::sleep(Duration::from_millis(400));
    b.process.signal(Signal::SIGTERM);
    thread::sleep(Duration::from_millis(100));
    let (keep, drop_) = if first.args[..] == b"answered"[..] {
        (first, second)
    } else {
        (second, first)
    };
    server
        .send_result(keep.invocation, Outcome::Ok(b"done".to_vec()))
        .unwrap();
    let t = Instant::now();
    assert_eq!(answered.join().unwrap().unwrap(), b"done");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "reply took {:?}",
        t.elapsed()
    );
    let err = ignored.join().unwrap().expect_err("never answered");
    assert_eq!(code(&err), Some(ErrorCode::ShuttingDown), "{err:?}");
    // The cancel and the caller's error leave B together but reach their processes by
    // different ways (the serving app's socket; UDP, daemon A, the caller's socket), in
    // either order: wait for the cancel.
    assert!(
        wait_until(Duration::from_secs(5), || drop_.is_cancelled()),
        "the serving app is told to stop the invocation it never answered"
    );
    let status = b
        .process
        .wait_timeout(Duration::from_secs(10))
        .expect("rpcd exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
}

/// `--daemonize --pid-file`: the parent returns at once, the pid file names a
/// live daemon that serves, and SIGTERM removes socket and pid file.
#[test]
fn daemonize_writes_pid_file_and_sigterm_cleans_up() {
    let dir = tempdir();
    let socket = dir.path().join("d.sock");
    let pid_file = dir.path().join("rpcd.pid");
    let log = dir.path().join("d.log");
    let parent = output_within(
        rpcd_command(dir.path(), None)
            .args(["--daemonize", "--listen", "127.0.0.1:0"])
            .arg("--socket")
            .arg(&socket)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--log-file")
            .arg(&log),
        EXIT_MAX,
    );
    let status = parent.status;
    assert!(status.success(), "the foreground parent failed: {status}");
    assert!(wait_until(Duration::from_secs(10), || pid_file.exists()));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(pid);
    // Owned by this guard from here on, even if an assertion fails.
    struct KillOnDrop(nix::unistd::Pid);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, Signal::SIGKILL);
        }
    }
    let guard = KillOnDrop(pid);
    let conn = connect_when_up(&socket);
    conn.ping().unwrap();
    drop(conn);
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || !socket.exists()
            && !pid_file.exists()),
        "socket or pid file left after SIGTERM; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(wait_until(Duration::from_secs(10), || {
        nix::sys::signal::kill(pid, None).is_err()
    }));
    drop(guard);
}

/// READY=1 on start, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM (the
/// STATUS= and MONOTONIC_USEC= lines are tested in `activation.rs`).
#[test]
fn sd_notify_states() {
    let dir = tempdir();
    let notify_path = dir.path().join("notify");
    let rx = UnixDatagram::bind(&notify_path).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let socket = dir.path().join("n.sock");
    let mut p = spawn(
        dir.path(),
        "n",
        &[
            "--listen",
            "127.0.0.1:0",
            "--socket",
            socket.to_str().unwrap(),
        ],
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = rx.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.starts_with("READY=1\nSTATUS=serving: "), "{ready}");
    p.signal(Signal::SIGHUP);
    let reloading = next();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let ready = next();
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving (reloaded): "),
        "{ready}"
    );
    p.signal(Signal::SIGTERM);
    assert_eq!(next(), "STOPPING=1");
    assert!(p
        .wait_timeout(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

/// SIGHUP reloads the naming table from a good file; a bad file is
/// refused (logged) and the old settings stay in force.
#[test]
fn sighup_reload_good_then_bad_file() {
    let dir = tempdir();
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let cfg = dir.path().join("a.toml");
    std::fs::write(&cfg, "[daemon]\nlog_level = \"info\"\n").unwrap();
    let socket = dir.path().join("a.sock");
    let a = spawn(
        dir.path(),
        "a",
        &[
            "--listen",
            "127.0.0.1:0",
            "--socket",
            socket.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    let conn = connect_when_up(&socket);
    let err = conn
        .call("svc", "rpcd.echo", b"hi".to_vec(), opts(3000, false))
        .unwrap_err();
    assert_eq!(code(&err), Some(ErrorCode::BadRequest), "{err:?}");
    std::fs::write(&cfg, format!("[names]\nsvc = [\"{}\"]\n", b.udp)).unwrap();
    a.signal(Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || conn
        .call("svc", "rpcd.echo", b"hi".to_vec(), opts(3000, false))
        .is_ok()));
    // A typo: refused, logged, old table kept.
    std::fs::write(
        &cfg,
        "[names]\nsvc = [\"nope\"]\n[limits]\nconections_max = 1\n",
    )
    .unwrap();
    a.signal(Signal::SIGHUP);
    let log = dir.path().join("a.log");
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("reload failed"))
    }));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("conections_max"),
        "the log does not name the key:\n{text}"
    );
    assert_eq!(
        conn.call("svc", "rpcd.echo", b"still".to_vec(), opts(3000, false))
            .unwrap(),
        b"still"
    );
}

/// The UDP socket's buffers are sized at start: a reload that changes
/// `udp_recv_buffer` and `udp_send_buffer` says so and leaves the socket as it
/// was, while the rest of the file (a service name) takes effect. So is the
/// transport's bound on spare datagram buffers (`udp_spare_buffers_max`): a change
/// is named, and the bound in force is not taken for a change of `[transport]`.
#[test]
fn sighup_keeps_the_udp_buffer_sizes_and_says_so() {
    let dir = tempdir();
    let cfg = dir.path().join("a.toml");
    // Under the default net.core.rmem_max/wmem_max (212992): granted as asked, root or not.
    let limits = |size: u32| {
        format!(
            "[limits]\nudp_recv_buffer = {size}\nudp_send_buffer = {size}\n\
             udp_spare_buffers_max = {size}\n"
        )
    };
    std::fs::write(&cfg, limits(65536)).unwrap();
    let socket = dir.path().join("a.sock");
    let _a = spawn(
        dir.path(),
        "a",
        &[
            "--listen",
            "127.0.0.1:0",
            "--socket",
            socket.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
    );
    let conn = connect_when_up(&socket);
    let listen: std::net::SocketAddr = conn.daemon().listen.parse().unwrap();
    // Linux reports twice the size asked, for its bookkeeping.
    assert_eq!(udp_buffers(listen.port()), (2 * 65536, 2 * 65536));
    std::fs::write(
        &cfg,
        format!("{}[names]\nsvc = [\"{listen}\"]\n", limits(98304)),
    )
    .unwrap();
    _a.signal(Signal::SIGHUP);
    let log = dir.path().join("a.log");
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains(
                "udp_recv_buffer and limits.udp_send_buffer are read at start"
            ))),
        "no warning for the changed buffer sizes:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains(
                "limits.udp_spare_buffers_max is read at start only"
            ))),
        "no warning for the changed spare buffers' bound:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(wait_until(Duration::from_secs(10), || conn
        .call("svc", "rpcd.echo", b"hi".to_vec(), opts(3000, false))
        .is_ok()));
    assert_eq!(udp_buffers(listen.port()), (2 * 65536, 2 * 65536));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("transport settings take effect at restart"),
        "no [transport] key changed:\n{text}"
    );
}

/// The receive and send buffer sizes (`rb`, `tb`) of the UDP socket bound to
/// `port`, as `ss -m` reports them.
fn udp_buffers(port: u16) -> (u64, u64) {
    let out = Command::new("ss")
        .args(["-u", "-a", "-n", "-m", &format!("sport = :{port}")])
        .output()
        .expect("run ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> u64 {
        text.split(['(', ',', ')'])
            .find_map(|f| f.trim().strip_prefix(name)?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in ss's output:\n{text}"))
    };
    (field("rb"), field("tb"))
}

/// A second daemon on a live socket is refused with a clear error; a stale
/// socket file left by a killed daemon is replaced.
#[test]
fn live_socket_refused_stale_socket_replaced() {
    let dir = tempdir();
    let mut a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let out = output_within(
        rpcd_command(dir.path(), None)
            .args(["--listen", "127.0.0.1:0", "--socket"])
            .arg(&a.socket),
        EXIT_MAX,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another rpcd is serving"), "{err}");
    // The refused daemon left the live one alone.
    a.connect("still").ping().unwrap();
    let first = a.connect("first").daemon().listen.clone();
    a.process.kill();
    assert!(a.socket.exists(), "SIGKILL cannot remove the socket file");
    let p = spawn(
        dir.path(),
        "a3",
        &[
            "--listen",
            "127.0.0.1:0",
            "--socket",
            a.socket.to_str().unwrap(),
        ],
        &[],
    );
    // The daemon answering on the old path is the new one, not a leftover.
    let conn = connect_when_up(&a.socket);
    conn.ping().unwrap();
    assert_ne!(conn.daemon().listen, first, "the killed daemon answered");
    drop(p);
}

/// `--check-config` validates and exits: 0 for a good file, 1 naming the key
/// and line for a bad one.
#[test]
fn check_config() {
    let dir = tempdir();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[names]\nkv = [\"127.0.0.1:7400\", \"localhost:7401\"]\n",
    )
    .unwrap();
    let out = output_within(
        rpcd_command(dir.path(), Some(&good)).arg("--check-config"),
        EXIT_MAX,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 service names"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[transport]\nrto_min_ms = \"fast\"\n").unwrap();
    let out = output_within(
        rpcd_command(dir.path(), Some(&bad)).arg("--check-config"),
        EXIT_MAX,
    );
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("rto_min_ms"),
        "{err}"
    );
}

fn serve_name(d: &Daemon, function: &str, answer: &'static [u8]) -> Serving {
    Serving::on(d, "server", function, move |_| Outcome::Ok(answer.to_vec()))
}

const FAST_LIVENESS: &str = "[transport]\nkeepalive_interval_ms = 100\npeer_timeout_ms = 600\n";

/// A name resolving to one address (through the system resolver) and a name
/// with two: with the first daemon dead, an idempotent call fails over to
/// the second; a non-idempotent one does not (at most once).
#[test]
fn names_one_and_several_addresses_failover_only_when_idempotent() {
    let dir = tempdir();
    let mut b1 = Daemon::start(dir.path(), "b1", "127.0.0.1:0", None);
    let b2 = Daemon::start(dir.path(), "b2", "127.0.0.1:0", None);
    let _s1 = serve_name(&b1, "svc.who", b"b1");
    let _s2 = serve_name(&b2, "svc.who", b"b2");
    let names = format!(
        "{FAST_LIVENESS}[names]\nsvc = [\"{}\", \"{}\"]\nsecond = \"localhost:{}\"\n",
        b1.udp,
        b2.udp,
        b2.udp.port()
    );
    let a1 = Daemon::start(dir.path(), "a1", "127.0.0.1:0", Some(&names));
    let a2 = Daemon::start(dir.path(), "a2", "127.0.0.1:0", Some(&names));
    let c1 = a1.connect("c1");
    let c2 = a2.connect("c2");
    // One address, given as a host name: resolved at call time.
    assert_eq!(
        c1.call("second", "svc.who", Vec::new(), opts(5000, false))
            .unwrap(),
        b"b2"
    );
    // Both up: the first address is preferred.
    assert_eq!(
        c1.call("svc", "svc.who", Vec::new(), opts(5000, false))
            .unwrap(),
        b"b1"
    );
    // The naming table as resolved now.
    let table = c2
        .call(
            &a2.udp.to_string(),
            "rpcd.names",
            Vec::new(),
            opts(5000, false),
        )
        .unwrap();
    let table: Vec<NameEntry> = rmp_serde::from_slice(&table).unwrap();
    let second = table.iter().find(|e| e.name == "second").unwrap();
    assert_eq!(second.resolved, vec![b2.udp.to_string()]);
    assert_eq!(
        table
            .iter()
            .find(|e| e.name == "svc")
            .unwrap()
            .resolved
            .len(),
        2
    );

    b1.process.kill();
    let t = Instant::now();
    let err = c1
        .call("svc", "svc.who", Vec::new(), opts(8000, false))
        .unwrap_err();
    assert_eq!(
        code(&err),
        Some(ErrorCode::PeerUnreachable),
        "a non-idempotent call must not fail over: {err:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "waited for the deadline"
    );
    assert_eq!(
        c2.call("svc", "svc.who", Vec::new(), opts(8000, true))
            .unwrap(),
        b"b2",
        "an idempotent call fails over"
    );
    // Later calls go to the healthy address first, idempotent or not.
    assert_eq!(
        c1.call("svc", "svc.who", Vec::new(), opts(5000, false))
            .unwrap(),
        b"b2"
    );
}
