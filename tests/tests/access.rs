//! Local access control end to end (`docs/security.md`, "Local access"): the socket's
//! mode and group, the socket directory, the `[access]` policy for register, call and
//! stats, `access_denied` through the client library and rpcctl, and the caller's
//! identity as a handler sees it. Another user is `nobody` through `setpriv`; tests that
//! need it skip as non-root (see [`rpcd_tests::root_or_skip`]).

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use rpcd_client::conn::Connection;
use rpcd_client::{CallError, Client, Handler, Outcome, Server};
use rpcd_tests::{as_nobody, bin, output_within, root_or_skip, tempdir, Daemon, NOBODY};
use rpcd_transport::secure::PrivateKey;

const RUN_MAX: Duration = Duration::from_secs(30);

/// rpcctl as `nobody` against `socket`.
fn rpcctl_as_nobody(socket: &Path, args: &[&str]) -> Output {
    let mut cmd = as_nobody(&bin("rpcctl"));
    cmd.arg("--socket").arg(socket).args(args);
    cmd.stdin(Stdio::null());
    output_within(&mut cmd, RUN_MAX)
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A directory others may traverse, so that only the socket's own mode decides who
/// connects.
fn open_dir() -> tempfile::TempDir {
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Started at umask 000, the socket is still 0660: `nobody` (not in its group) is
/// refused by the kernel, and rpcctl says so with status 6.
#[test]
fn socket_is_0660_whatever_the_umask() {
    let dir = open_dir();
    let umask_000 = ["sh", "-c", "umask 000; exec \"$@\"", "sh"];
    let d = Daemon::start_wrapped(dir.path(), "a", "127.0.0.1:0", None, &umask_000);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode");
    if !root_or_skip("connecting as another user") {
        return;
    }
    let out = rpcctl_as_nobody(&d.socket, &["list"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ermission denied"), "{}", text(&out));
}

/// `access.socket_group` gives the socket to a group: a member connects.
#[test]
fn socket_group_members_connect() {
    if !root_or_skip("connecting as another user") {
        return;
    }
    let dir = open_dir();
    let cfg = format!("[access]\nsocket_group = {NOBODY}\n");
    let d = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(&cfg));
    let meta = std::fs::metadata(&d.socket).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.gid(), NOBODY);
    let out = rpcctl_as_nobody(&d.socket, &["call", &d.udp.to_string(), "rpcd.ping"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A socket directory another user controls is refused at start, naming the path: the
/// squatted `/tmp/rpcd-<uid>` of the issue (a world-writable directory made beforehand),
/// and, as root, one owned by another user.
#[test]
fn squatted_socket_directory_is_refused() {
    let dir = tempdir();
    let squat = dir.path().join("rpcd-squatted");
    std::fs::create_dir(&squat).unwrap();
    std::fs::set_permissions(&squat, std::fs::Permissions::from_mode(0o777)).unwrap();
    let start = |socket_dir: &Path| {
        let mut cmd = rpcd_tests::rpcd_command(dir.path(), None);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--socket")
            .arg(socket_dir.join("rpcd.sock"))
            .stdin(Stdio::null());
        output_within(&mut cmd, RUN_MAX)
    };
    let out = start(&squat);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&squat.display().to_string()) && err.contains("0777"),
        "{}",
        text(&out)
    );
    assert!(!squat.join("rpcd.sock").exists());
    if !root_or_skip("a directory owned by another user") {
        return;
    }
    let theirs = dir.path().join("rpcd-theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(&theirs, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    let out = start(&theirs);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&theirs.display().to_string()) && err.contains("owned by uid 65534"),
        "{}",
        text(&out)
    );
}

/// A missing socket directory is created 0750.
#[test]
fn created_socket_directory_is_0750() {
    let dir = tempdir();
    let sub = dir.path().join("run").join("rpcd");
    let mut cmd = rpcd_tests::rpcd_command(dir.path(), None);
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--socket")
        .arg(sub.join("rpcd.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _guard = rpcd_tests::ProcessGuard::new("rpcd", cmd.spawn().unwrap());
    assert!(rpcd_tests::wait_until(Duration::from_secs(20), || {
        Connection::connect(&sub.join("rpcd.sock"), "t").is_ok()
    }));
    let mode = std::fs::metadata(&sub).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750);
}

/// A server on `d` whose functions answer who called them: `uid=U gid=G pid=P` for a
/// local caller (from the invoke frame's credentials), else the identity.
fn whoami_server(d: &Daemon, functions: &[&str]) -> (Server, Client) {
    let client = Client::connect_to(&d.socket).unwrap();
    let server = Server::new(&client).unwrap();
    for f in functions {
        server
            .register(
                f,
                Handler::with_request(|req| {
                    let who = match req.credentials {
                        Some(c) => format!("uid={} gid={} pid={}", c.uid, c.gid, c.pid),
                        None => req.identity().to_string(),
                    };
                    Outcome::Ok(rmp_serde::to_vec(&who).unwrap())
                }),
            )
            .unwrap();
    }
    (server, client)
}

/// `text` without terminal colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The policy for local users, end to end: root may register `svc.*` and do anything;
/// `nobody` may call `svc.open` only. Refused requests fail `access_denied` (rpcctl
/// status 6), are counted by reason and logged with the caller's uid; the handler sees
/// the caller's uid, gid and pid. After a SIGHUP with a wider policy, `nobody` may call
/// `svc.secret` too.
#[test]
fn policy_allows_and_denies_register_call_and_stats() {
    if !root_or_skip("a policy on another user") {
        return;
    }
    let dir = open_dir();
    let policy = |nobody_calls: &str| {
        format!(
            "[access]\nsocket_group = {NOBODY}\n\
             [[access.allow]]\nusers = [0]\nregister = [\"svc.*\"]\ncall = [\"*\"]\nstats = true\n\
             [[access.allow]]\nusers = [{NOBODY}]\ncall = [{nobody_calls}]\n"
        )
    };
    let d = Daemon::start(
        dir.path(),
        "a",
        "127.0.0.1:0",
        Some(&policy("\"svc.open\"")),
    );
    let (server, _client) = whoami_server(&d, &["svc.open", "svc.secret"]);
    // Register outside the allowed globs: refused.
    let err = server
        .register("other.f", Handler::new(|_| Outcome::Ok(Vec::new())))
        .unwrap_err();
    assert!(
        matches!(err, CallError::AccessDenied(_)),
        "register other.f: {err}"
    );
    let udp = d.udp.to_string();
    // Allowed: the handler sees nobody's credentials.
    let out = rpcctl_as_nobody(&d.socket, &["call", &udp, "svc.open", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).starts_with("\"uid=65534 gid=65534 pid="),
        "{}",
        text(&out)
    );
    // Denied: a function not granted, the function list, the stats.
    for args in [
        &["call", &udp, "svc.secret"][..],
        &["list"],
        &["stats"],
        &["call", &udp, "rpcd.stats"],
    ] {
        let out = rpcctl_as_nobody(&d.socket, args);
        assert_eq!(out.status.code(), Some(6), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("access_denied"), "{args:?}: {}", text(&out));
    }
    // Root may read the stats: the refusals by reason.
    let c = Connection::connect(&d.socket, "root").unwrap();
    let stats = c.stats().unwrap();
    let denied = |k: &str| stats.access_denied.get(k).copied().unwrap_or(0);
    assert_eq!(
        (denied("register"), denied("call"), denied("stats")),
        (1, 1, 3),
        "{:?}",
        stats.access_denied
    );
    // Refusals are logged at most once a second, with the caller's credentials; the
    // next line counts those left out.
    std::thread::sleep(Duration::from_millis(1100));
    let out = rpcctl_as_nobody(&d.socket, &["call", &udp, "svc.secret"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let log = strip_ansi(&d.log_text());
    let denied_lines = log
        .lines()
        .filter(|l| l.contains("access denied by"))
        .count();
    assert_eq!(denied_lines, 2, "{log}");
    assert!(log.contains("uid=65534 gid=65534 pid="), "{log}");
    assert!(log.contains("access denied 4 more times"), "{log}");
    // Reloaded: nobody may call svc.secret now.
    std::fs::write(dir.path().join("a.toml"), policy("\"svc.*\"")).unwrap();
    d.process.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        rpcd_tests::wait_until(Duration::from_secs(20), || {
            rpcctl_as_nobody(&d.socket, &["call", &udp, "svc.secret"])
                .status
                .code()
                == Some(0)
        }),
        "after the reload: {}",
        d.log_text()
    );
    drop(server);
}

/// Without any rule, nothing is refused (today's behaviour), and a local caller's
/// credentials still reach the handler.
#[test]
fn no_policy_allows_everything_and_handlers_see_the_caller() {
    let dir = tempdir();
    let d = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let (_server, client) = whoami_server(&d, &["any.f"]);
    let who: String = client.call(d.udp.to_string(), "any.f", &()).unwrap();
    let uid = nix::unistd::geteuid().as_raw();
    let pid = std::process::id();
    assert!(
        who.starts_with(&format!("uid={uid} ")) && who.ends_with(&format!("pid={pid}")),
        "{who}"
    );
    let c = Connection::connect(&d.socket, "t").unwrap();
    assert!(c.stats().unwrap().access_denied.is_empty());
}

/// The configuration of a keyed daemon `name` with key `me` (written 0600 into `dir`),
/// trusting `peer` (its name, key, and address if known), and `extra` TOML.
fn keyed_config(
    dir: &Path,
    name: &str,
    me: &PrivateKey,
    peer: (&str, &PrivateKey, Option<std::net::SocketAddr>),
    extra: &str,
) -> String {
    let file = dir.join(format!("{name}.key"));
    std::fs::write(&file, me.to_base64()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut c = format!(
        "[security]\nprivate_key_file = {:?}\n[peers.{}]\npublic_key = \"{}\"\n",
        file.display().to_string(),
        peer.0,
        peer.1.public()
    );
    if let Some(at) = peer.2 {
        c.push_str(&format!("addresses = [\"{at}\"]\n"));
    }
    c.push_str(extra);
    c
}

/// A remote peer, named by the key configuration, may call the one function its rule
/// grants and is refused `access_denied` for another, counted as `remote_call`.
#[test]
fn a_remote_peer_may_call_one_function_and_not_another() {
    let dir = tempdir();
    let (ka, kb) = (
        PrivateKey::from_bytes([0xa1; 32]),
        PrivateKey::from_bytes([0xb2; 32]),
    );
    let policy = "[[access.allow]]\npeers = [\"a\"]\ncall = [\"svc.open\"]\n\
                  [[access.allow]]\nusers = [\"*\"]\nregister = [\"svc.*\"]\nstats = true\n";
    let b_cfg = keyed_config(dir.path(), "b", &kb, ("a", &ka, None), policy);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", Some(&b_cfg));
    let a_cfg = keyed_config(dir.path(), "a", &ka, ("b", &kb, Some(b.udp)), "");
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(&a_cfg));
    let (_server, _server_client) = whoami_server(&b, &["svc.open", "svc.secret"]);
    let client = Client::connect_to(&a.socket).unwrap();
    let who: String = client.call("b", "svc.open", &()).unwrap();
    assert_eq!(who, "peer a");
    let err = client
        .call::<_, String>("b", "svc.secret", &())
        .unwrap_err();
    assert!(matches!(err, CallError::AccessDenied(_)), "{err}");
    let stats = Connection::connect(&b.socket, "t")
        .unwrap()
        .stats()
        .unwrap();
    assert_eq!(
        stats.access_denied.get("remote_call"),
        Some(&1),
        "{stats:?}"
    );
}

/// Whether `function` is registered on `d` now.
fn registered(d: &Daemon, function: &str) -> bool {
    let c = Connection::connect(&d.socket, "probe").unwrap();
    c.list().unwrap().iter().any(|f| f == function)
}

/// The name grace (`limits.name_grace_ms`): root's server disconnects without
/// unregistering; within the grace
/// `nobody`'s kv_server is refused `kv.get` with `name_taken`, while root's reconnecting
/// server gets it back; once the grace after root's next disconnect is over, `nobody`
/// registers it.
#[test]
fn a_disconnected_owners_user_gets_its_names_back_first() {
    if !root_or_skip("registering as another user") {
        return;
    }
    const GRACE_MS: u64 = 3000;
    let dir = open_dir();
    let cfg = format!("[access]\nsocket_group = {NOBODY}\n[limits]\nname_grace_ms = {GRACE_MS}\n");
    let d = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(&cfg));
    let kv_server_as_nobody = || {
        let mut cmd = as_nobody(&rpcd_tests::example("kv_server"));
        cmd.arg("--socket").arg(&d.socket).arg("--workers").arg("1");
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    };
    // A raw connection: it ends without unregistering, as a crashed server's does (a
    // `Server` unregisters its names when dropped, and an unregister holds nothing).
    let root_serves = || {
        let c = Connection::connect(&d.socket, "owner").unwrap();
        c.register("kv.get").unwrap();
        c
    };

    let owner = root_serves();
    drop(owner);
    assert!(
        rpcd_tests::wait_until(RUN_MAX, || !registered(&d, "kv.get")),
        "kv.get released"
    );
    let out = output_within(&mut kv_server_as_nobody(), RUN_MAX);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kv.get") && err.contains("held for its previous owner"),
        "{}",
        text(&out)
    );

    // Root's server reconnects within the grace: kv.get is its again.
    let back = root_serves();
    assert!(registered(&d, "kv.get"));
    drop(back);
    assert!(
        rpcd_tests::wait_until(RUN_MAX, || !registered(&d, "kv.get")),
        "kv.get released again"
    );
    std::thread::sleep(Duration::from_millis(GRACE_MS + 300));
    let child = kv_server_as_nobody().spawn().unwrap();
    let _nobody = rpcd_tests::ProcessGuard::new("kv_server", child);
    assert!(
        rpcd_tests::wait_until(RUN_MAX, || registered(&d, "kv.get")),
        "nobody's kv_server registers kv.get after the grace"
    );
}
