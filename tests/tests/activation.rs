//! rpcd under a service manager, through its real interfaces: socket activation (the
//! listener passed as fd 3 with `LISTEN_PID`/`LISTEN_FDS`, as systemd and
//! `systemd-socket-activate` pass it), where clients look for the socket, `sd_notify`
//! (`READY`, `RELOADING` with `MONOTONIC_USEC`, `STATUS`, `WATCHDOG`, `STOPPING`) to a
//! notification socket the test binds, and exit status 78 for settings that cannot work.
//!
//! The listener reaches rpcd the way systemd hands it over without `unsafe` in the test:
//! it is the child's standard input, and a shell moves it to fd 3, sets `LISTEN_PID` to
//! its own pid and execs rpcd (so the pid is rpcd's).

#![allow(clippy::unwrap_used)]

use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rpcd_client::conn::Connection;
use rpcd_client::ipc::NameEntry;
use rpcd_tests::{bin, isolate, root_or_skip, tempdir, wait_until, Daemon, ProcessGuard};

const RUN_MAX: Duration = Duration::from_secs(30);
/// The group given to the socket, as `SocketGroup=` would (no entry in /etc/group needed).
const APPS_GID: u32 = 4242;
/// A user in that group, and one outside it (numeric: no /etc/passwd entry needed).
const APP_UID: u32 = 4243;
/// rpcd's own user in the "dynamic user" test: neither the socket's owner nor in its group.
const DAEMON_UID: u32 = 65_534;

/// Shell that turns its standard input into the activation socket: fd 3, `LISTEN_FDS=1`,
/// `LISTEN_PID` its own pid, which `exec` hands to rpcd. Extra variables (`LISTEN_FDS=2`,
/// ...) are set by the caller on the command and win over these defaults.
const ACTIVATE: &str =
    r#"export LISTEN_PID=$$; export LISTEN_FDS="${LISTEN_FDS:-1}"; exec "$@" 3<&0 0</dev/null"#;

/// A directory others may traverse, so that only a socket's own mode decides who connects.
fn open_dir() -> tempfile::TempDir {
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `rpcd --config CONFIG --listen 127.0.0.1:0 ARGS` run through the activation shell with
/// `fd` as its fd 3, optionally as `uid` (gid the same, no supplementary groups).
fn activated(dir: &Path, fd: OwnedFd, args: &[&str], as_uid: Option<u32>) -> Command {
    let config = dir.join("rpcd.toml");
    if !config.exists() {
        std::fs::write(&config, "").unwrap();
    }
    let mut cmd = match as_uid {
        None => Command::new("sh"),
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".to_owned(),
                "sh".to_owned(),
            ]);
            c
        }
    };
    cmd.args(["-c", ACTIVATE, "sh"])
        .arg(bin("rpcd"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .args(args);
    isolate(&mut cmd).env("RUST_LOG", "info");
    cmd.stdin(Stdio::from(fd));
    cmd
}

/// Start `cmd` (rpcd) with its stderr in `log`, owned by a guard.
fn spawn(mut cmd: Command, log: &Path) -> ProcessGuard {
    let logf = std::fs::File::create(log).unwrap();
    cmd.stdout(Stdio::null()).stderr(logf);
    ProcessGuard::new("rpcd", cmd.spawn().unwrap())
}

/// Run `cmd` to its end (killed and a panic past [`RUN_MAX`]); stdin must be set.
fn run_to_end(mut cmd: Command) -> Output {
    let dir = tempdir();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    cmd.stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut guard = ProcessGuard::new("bounded", cmd.spawn().unwrap());
    let status = guard
        .wait_timeout(RUN_MAX)
        .unwrap_or_else(|| panic!("{cmd:?} still ran after {RUN_MAX:?}"));
    Output {
        status,
        stdout: std::fs::read(out).unwrap(),
        stderr: std::fs::read(err).unwrap(),
    }
}

/// Wait until rpcd answers the handshake on `socket`; its UDP address.
fn handshake(socket: &Path, daemon: &mut ProcessGuard, log: &Path) -> String {
    let until = Instant::now() + RUN_MAX;
    loop {
        if let Some(st) = daemon.wait_timeout(Duration::ZERO) {
            panic!("rpcd exited ({st}); log:\n{}", read(log));
        }
        if let Ok(c) = Connection::connect(socket, "test") {
            return c.daemon().listen.clone();
        }
        assert!(
            Instant::now() < until,
            "rpcd did not answer; log:\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// rpcctl `args` as `uid` with `groups` (setpriv), its environment cleaned, plus `env`.
fn rpcctl_as(uid: u32, groups: &[u32], env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([format!("--reuid={uid}"), format!("--regid={uid}")]);
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg(bin("rpcctl")).args(args);
    isolate(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null());
    run_to_end(cmd)
}

/// Whether a daemon answers on the system socket of this machine: then the discovery
/// tests cannot tell their own paths apart from it.
fn system_socket_answers() -> bool {
    UnixStream::connect(rpcd_client::ipc::SYSTEM_SOCKET).is_ok()
}

/// The listener passed by socket activation is served; the daemon neither creates the
/// `--socket` path (informational now), nor changes the inherited file's mode, nor
/// removes it at shutdown: it belongs to the .socket unit, which keeps listening.
#[test]
fn an_inherited_listener_is_served_and_its_file_left_alone() {
    let dir = open_dir();
    let path = dir.path().join("activated.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
    let ignored = dir.path().join("settings.sock");
    let log = dir.path().join("rpcd.log");
    let cmd = activated(
        dir.path(),
        listener.into(),
        &["--socket", ignored.to_str().unwrap()],
        None,
    );
    let mut daemon = spawn(cmd, &log);
    let udp = handshake(&path, &mut daemon, &log);

    let conn = Connection::connect(&path, "app").unwrap();
    let reply = conn
        .call(&udp, "rpcd.echo", vec![0x91, 0x07], Default::default())
        .unwrap();
    assert_eq!(reply, vec![0x91, 0x07]);
    assert!(!ignored.exists(), "the settings' socket path was bound");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o604, "the inherited socket's mode was changed");
    let log_text = read(&log);
    assert!(
        log_text.contains("serving the socket passed by socket activation"),
        "{log_text}"
    );
    drop(conn);

    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_timeout(RUN_MAX).expect("rpcd stops on SIGTERM");
    assert!(status.success(), "{status}; log:\n{}", read(&log));
    assert!(path.exists(), "the inherited socket's file was removed");
}

/// The issue's scenario: rpcd runs as a user that is neither the socket's owner nor in
/// its group (as under `DynamicUser=`), the socket is root:APPS_GID 0660 (as
/// `SocketGroup=`/`SocketMode=` make it), and an app of another uid in that group calls
/// through it; the same uid outside the group is refused by the kernel (status 6, even
/// though rpcctl goes on to the other paths it knows, where no daemon is).
#[test]
fn another_uid_in_the_sockets_group_connects() {
    if !root_or_skip("running rpcd and a client as other users") {
        return;
    }
    let dir = open_dir();
    let path = dir.path().join("rpcd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    nix::unistd::chown(&path, Some(0.into()), Some(APPS_GID.into())).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
    let log = dir.path().join("rpcd.log");
    let cmd = activated(dir.path(), listener.into(), &[], Some(DAEMON_UID));
    let mut daemon = spawn(cmd, &log);
    let udp = handshake(&path, &mut daemon, &log);

    let call = [
        "--socket",
        path.to_str().unwrap(),
        "call",
        &udp,
        "rpcd.ping",
    ];
    let member = rpcctl_as(APP_UID, &[APPS_GID], &[], &call);
    assert_eq!(member.status.code(), Some(0), "{}", text(&member));

    let xdg = dir.path().join("xdg");
    let stranger = rpcctl_as(
        APP_UID,
        &[],
        &[("RPCD_SOCKET", &path), ("XDG_RUNTIME_DIR", &xdg)],
        &["call", &udp, "rpcd.ping"],
    );
    assert_eq!(stranger.status.code(), Some(6), "{}", text(&stranger));
    let err = String::from_utf8_lossy(&stranger.stderr);
    assert!(
        err.contains(&format!(
            "{} (RPCD_SOCKET): Permission denied",
            path.display()
        )),
        "{}",
        text(&stranger)
    );
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, APPS_GID), "ownership changed");
}

/// `systemd-socket-activate` (from the systemd package) binds the socket, waits for the
/// first connection, then execs rpcd with `LISTEN_FDNAMES` too: that connection is served.
#[test]
fn systemd_socket_activate_starts_rpcd_on_the_first_connection() {
    let Some(tool) = [
        "/usr/bin/systemd-socket-activate",
        "/bin/systemd-socket-activate",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists()) else {
        eprintln!("skipped: systemd-socket-activate is not installed (package systemd)");
        return;
    };
    let dir = open_dir();
    let path = dir.path().join("rpcd.sock");
    let config = dir.path().join("rpcd.toml");
    std::fs::write(&config, "").unwrap();
    let log = dir.path().join("rpcd.log");
    let mut cmd = Command::new(tool);
    cmd.arg("--listen")
        .arg(&path)
        .args(["--fdname=rpcd.socket", "--setenv=RUST_LOG=info"])
        .arg(bin("rpcd"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"]);
    isolate(&mut cmd).stdin(Stdio::null());
    let mut daemon = spawn(cmd, &log);
    assert!(
        wait_until(RUN_MAX, || path.exists()),
        "systemd-socket-activate did not bind; log:\n{}",
        read(&log)
    );
    // This first connection starts rpcd; its handshake waits for rpcd to accept it.
    let conn = Connection::connect(&path, "first").unwrap_or_else(|e| {
        panic!("{e}; log:\n{}", read(&log));
    });
    let udp = conn.daemon().listen.clone();
    conn.call(&udp, "rpcd.ping", vec![0x90], Default::default())
        .unwrap();
    let log_text = read(&log);
    assert!(
        log_text.contains("serving the socket passed by socket activation")
            && log_text.contains("rpcd.socket"),
        "{log_text}"
    );
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_timeout(RUN_MAX).expect("rpcd stops on SIGTERM");
    assert!(status.success(), "{status}; log:\n{}", read(&log));
}

/// Socket activation that cannot work stops rpcd at start with status 78 and says what is
/// wrong: not one descriptor, names that do not match, or fd 3 that is not a listening
/// Unix stream socket (a file, a datagram socket, a stream socket bound without listen).
#[test]
fn bad_socket_activation_is_refused_with_status_78() {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let dir = open_dir();
    let listener = || -> OwnedFd {
        let p = dir.path().join("l.sock");
        let _ = std::fs::remove_file(&p);
        UnixListener::bind(p).unwrap().into()
    };
    let run = |fd: OwnedFd, env: &[(&str, &str)]| {
        let mut cmd = activated(dir.path(), fd, &[], None);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_to_end(cmd)
    };
    /// What is wrong, fd 3, extra variables, what the error says.
    type Case<'a> = (&'a str, OwnedFd, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "two descriptors",
            listener(),
            vec![("LISTEN_FDS", "2")],
            "passed 2 descriptors (LISTEN_FDS)",
        ),
        (
            "a count that is no number",
            listener(),
            vec![("LISTEN_FDS", "x")],
            "LISTEN_FDS=\"x\"",
        ),
        (
            "names for two",
            listener(),
            vec![("LISTEN_FDNAMES", "a:b")],
            "names 2 descriptors",
        ),
        (
            "a file",
            std::fs::File::open("/dev/null").unwrap().into(),
            vec![],
            "not a listening Unix stream socket",
        ),
        (
            "a datagram socket",
            UnixDatagram::unbound().unwrap().into(),
            vec![],
            "not a listening Unix stream socket",
        ),
        (
            "a stream socket bound without listen",
            {
                let fd = socket(
                    AddressFamily::Unix,
                    SockType::Stream,
                    SockFlag::empty(),
                    None,
                )
                .unwrap();
                let p = dir.path().join("bound.sock");
                bind(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    &UnixAddr::new(&p).unwrap(),
                )
                .unwrap();
                fd
            },
            vec![],
            "not listening",
        ),
    ];
    for (what, fd, env, says) in cases {
        let out = run(fd, &env);
        assert_eq!(out.status.code(), Some(78), "{what}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{what}: {}", text(&out));
    }
    // LISTEN_PID naming another process is no activation: rpcd binds its own socket.
    let own = dir.path().join("own.sock");
    let mut cmd = Command::new(bin("rpcd"));
    cmd.arg("--config")
        .arg(dir.path().join("rpcd.toml"))
        .args(["--listen", "127.0.0.1:0", "--socket"])
        .arg(&own);
    isolate(&mut cmd)
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .stdin(Stdio::null());
    let log = dir.path().join("own.log");
    let mut daemon = spawn(cmd, &log);
    handshake(&own, &mut daemon, &log);
}

/// A settings file rpcd cannot use is status 78 (EX_CONFIG), so that the unit's
/// `RestartPreventExitStatus=78` stops systemd restarting it in a loop; `--check-config`
/// says the same. Other failures stay status 1: a UDP address in use may free up.
#[test]
fn bad_settings_exit_78_and_other_failures_1() {
    let dir = tempdir();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nno_such_key = 1\n").unwrap();
    let rpcd = |args: &[&str], config: &Path| {
        let mut cmd = Command::new(bin("rpcd"));
        cmd.arg("--config").arg(config).args(args);
        isolate(&mut cmd).stdin(Stdio::null());
        run_to_end(cmd)
    };
    let sock = dir.path().join("s.sock");
    let sock = sock.to_str().unwrap();
    for args in [
        &["--check-config"][..],
        &["--listen", "127.0.0.1:0", "--socket", sock],
    ] {
        let out = rpcd(args, &bad);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no_such_key"), "{args:?}: {}", text(&out));
    }
    let missing = dir.path().join("missing.toml");
    assert_eq!(rpcd(&["--check-config"], &missing).status.code(), Some(78));

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "").unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = rpcd(&["--listen", &addr, "--socket", sock], &good);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("binding UDP"));
}

/// Notifications as systemd receives them: `READY=1` with a `STATUS=` line, `WATCHDOG=1`
/// from the loop at half `WATCHDOG_USEC`, `RELOADING=1` with `MONOTONIC_USEC=` then
/// `READY=1` on SIGHUP, a rejected reload reported in `STATUS=` (and logged) while the
/// daemon keeps serving with its old settings, and `STOPPING=1` on SIGTERM.
#[test]
fn notifications_status_reload_and_watchdog() {
    let dir = tempdir();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(RUN_MAX)).unwrap();
    let config = "[names]\none = [\"127.0.0.1:1\"]\n";
    let env_wrapper = [
        "env",
        &format!("NOTIFY_SOCKET={}", notify_path.display()),
        "WATCHDOG_USEC=200000",
    ];
    let mut d = Daemon::start_wrapped(dir.path(), "a", "127.0.0.1:0", Some(config), &env_wrapper);
    let next = || -> String {
        let mut buf = [0u8; 4096];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut watchdogs = 0;
    let next_state = |watchdogs: &mut u32| loop {
        let msg = next();
        if msg == "WATCHDOG=1" {
            *watchdogs += 1;
        } else {
            return msg;
        }
    };
    let ready = next_state(&mut watchdogs);
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving: udp "),
        "{ready}"
    );
    assert!(ready.contains("; 1 service names, 0 peers"), "{ready}");
    // The watchdog pings every 100 ms while nothing else happens.
    while watchdogs < 3 {
        let msg = next();
        assert_eq!(msg, "WATCHDOG=1");
        watchdogs += 1;
    }

    let cfg_path = dir.path().join("a.toml");
    std::fs::write(&cfg_path, "[limits]\nno_such_key = 1\n").unwrap();
    d.process.signal(Signal::SIGHUP);
    let reloading = next_state(&mut watchdogs);
    let first_usec = monotonic_usec(&reloading);
    let failed = next_state(&mut watchdogs);
    assert!(
        failed.starts_with("READY=1\nSTATUS=reload failed, the previous settings stay in force: ")
            && failed.contains("no_such_key")
            && failed.lines().count() == 2,
        "{failed}"
    );
    assert!(d.log_text().contains("reload failed"), "{}", d.log_text());
    // Still serving, with the old names.
    let conn = d.connect("app");
    let names = || -> Vec<String> {
        let reply = conn
            .call(
                &d.udp.to_string(),
                "rpcd.names",
                vec![0x90],
                Default::default(),
            )
            .unwrap();
        let names: Vec<NameEntry> = rmp_serde::from_slice(&reply).unwrap();
        names.into_iter().map(|n| n.name).collect()
    };
    assert_eq!(names(), ["one"]);

    std::fs::write(
        &cfg_path,
        "[names]\none = [\"127.0.0.1:1\"]\ntwo = [\"127.0.0.1:2\"]\n",
    )
    .unwrap();
    d.process.signal(Signal::SIGHUP);
    let reloading = next_state(&mut watchdogs);
    assert!(monotonic_usec(&reloading) > first_usec, "{reloading}");
    let reloaded = next_state(&mut watchdogs);
    assert!(
        reloaded.starts_with("READY=1\nSTATUS=serving (reloaded): udp ")
            && reloaded.contains("; 2 service names, 0 peers"),
        "{reloaded}"
    );
    assert_eq!(names(), ["one", "two"]);
    drop(conn);

    d.process.signal(Signal::SIGTERM);
    assert_eq!(next_state(&mut watchdogs), "STOPPING=1");
    let status = d.process.wait_timeout(RUN_MAX).expect("rpcd stops");
    assert!(status.success(), "{status}");
}

/// `RELOADING=1\nMONOTONIC_USEC=N`: N.
fn monotonic_usec(msg: &str) -> u64 {
    let mut lines = msg.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{msg}");
    let usec = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {msg:?}"));
    assert!(usec > 0, "{msg}");
    usec
}

/// Without `--socket`, a client tries `RPCD_SOCKET`, then the system socket, then the
/// per-user one (`$XDG_RUNTIME_DIR/rpcd/rpcd.sock`), and uses the first that answers;
/// with none answering, its error lists each path, where it came from and why it failed.
#[test]
fn clients_look_in_rpcd_socket_then_the_system_then_their_own_socket() {
    if system_socket_answers() {
        eprintln!(
            "skipped: a daemon answers on {} and would be found before the test's",
            rpcd_client::ipc::SYSTEM_SOCKET
        );
        return;
    }
    let dir = tempdir();
    let bogus = dir.path().join("bogus.sock");
    let xdg = dir.path().join("xdg");
    let rpcctl = |args: &[&str]| {
        let mut cmd = Command::new(bin("rpcctl"));
        cmd.args(args);
        isolate(&mut cmd)
            .env("RPCD_SOCKET", &bogus)
            .env("XDG_RUNTIME_DIR", &xdg)
            .stdin(Stdio::null());
        run_to_end(cmd)
    };

    let out = rpcctl(&["list"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let per_user = xdg.join("rpcd").join("rpcd.sock");
    let want = [
        format!(
            "is rpcd running? tried {} (RPCD_SOCKET): No such file or directory",
            bogus.display()
        ),
        format!(
            "; {} (the system socket): ",
            rpcd_client::ipc::SYSTEM_SOCKET
        ),
        format!(
            "; {} (the per-user socket): No such file or directory",
            per_user.display()
        ),
    ];
    let mut at = 0;
    for w in &want {
        let found = err[at..]
            .find(w.as_str())
            .unwrap_or_else(|| panic!("{w:?} (in order) missing from {err}"));
        at += found + w.len();
    }

    // A daemon on the per-user path is found past the two that do not answer.
    std::fs::create_dir_all(per_user.parent().unwrap()).unwrap();
    std::fs::set_permissions(
        per_user.parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let mut cmd = rpcd_tests::rpcd_command(dir.path(), None);
    cmd.args(["--listen", "127.0.0.1:0", "--socket"])
        .arg(&per_user)
        .stdin(Stdio::null());
    let log = dir.path().join("mine.log");
    let mut daemon = spawn(cmd, &log);
    let udp = handshake(&per_user, &mut daemon, &log);
    let out = rpcctl(&["call", &udp, "rpcd.echo", "\"found\""]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("found"),
        "{}",
        text(&out)
    );
}
