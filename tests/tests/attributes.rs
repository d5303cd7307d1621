//! Per-method attributes through real daemons: `#[rpcd(idempotent)]` decides failover
//! between the daemons of a service, `#[rpcd(deadline = ...)]` is the default budget of a
//! call to the method — from the typed stub and from `rpcctl call`, which learns both from
//! the serving daemon's `rpcd.describe`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rpcd_client::{CallOptions, Client, ErrorCode, Server};
use rpcd_tests::{bin, output_within, tempdir, Daemon};

/// Which daemon answers, twice over, and a handler that takes its time.
#[rpcd_client::service]
trait Who {
    /// The name of the daemon whose app answered; may run twice.
    #[rpcd(idempotent)]
    fn who_idempotent(&self) -> String;
    /// The same, declared to run at most once.
    fn who(&self) -> String;
    /// Sleeps `ms` milliseconds and returns them; calls to it get 300 ms by default.
    #[rpcd(deadline = "300ms")]
    fn slow(&self, ms: u64) -> u64;
}

struct Named(&'static str);

impl Who for Named {
    fn who_idempotent(&self) -> String {
        self.0.to_owned()
    }
    fn who(&self) -> String {
        self.0.to_owned()
    }
    fn slow(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
}

/// Serves `Who` as `name` through `d`; the pair lives as long as the test needs it.
fn serve(d: &Daemon, name: &'static str) -> (Client, Server) {
    let client = Client::connect_to(&d.socket).unwrap();
    let server = Server::new(&client).unwrap();
    Named(name).serve(&server).unwrap();
    (client, server)
}

fn code(r: Result<String, rpcd_client::CallError>) -> Option<ErrorCode> {
    r.err().and_then(|e| e.code())
}

fn rpcctl(socket: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin("rpcctl"));
    rpcd_tests::isolate(&mut cmd)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null());
    output_within(&mut cmd, Duration::from_secs(60))
}

const FAST_LIVENESS: &str = "[transport]\nkeepalive_interval_ms = 100\npeer_timeout_ms = 600\n";

/// A service of two daemons, the first then killed: the stub's call to the method declared
/// idempotent fails over to the second; the call to the undeclared one is not retried
/// there, whatever the stub's options say.
#[test]
fn failover_only_for_methods_declared_idempotent() {
    let dir = tempdir();
    let mut b1 = Daemon::start(dir.path(), "b1", "127.0.0.1:0", None);
    let b2 = Daemon::start(dir.path(), "b2", "127.0.0.1:0", None);
    let _s1 = serve(&b1, "b1");
    let _s2 = serve(&b2, "b2");
    let names = format!(
        "{FAST_LIVENESS}[names]\nsvc = [\"{}\", \"{}\"]\n",
        b1.udp, b2.udp
    );
    let a1 = Daemon::start(dir.path(), "a1", "127.0.0.1:0", Some(&names));
    let a2 = Daemon::start(dir.path(), "a2", "127.0.0.1:0", Some(&names));
    let c1 = Client::connect_to(&a1.socket).unwrap();
    let c2 = Client::connect_to(&a2.socket).unwrap();
    let deadline = CallOptions::default().with_deadline(Duration::from_secs(8));
    // The per-call flag asks for failover; the declaration (not idempotent) wins.
    let at_most_once = WhoClient::new(&c1, "svc").with_options(deadline.with_idempotent(true));
    let may_retry = WhoClient::new(&c2, "svc").with_options(deadline.with_idempotent(false));
    assert_eq!(
        at_most_once.who().unwrap(),
        "b1",
        "both up: the first address"
    );
    assert_eq!(may_retry.who_idempotent().unwrap(), "b1");

    b1.process.kill();
    assert_eq!(
        code(at_most_once.who()),
        Some(ErrorCode::PeerUnreachable),
        "a method not declared idempotent is not failed over"
    );
    assert_eq!(
        may_retry.who_idempotent().unwrap(),
        "b2",
        "a method declared idempotent fails over"
    );
}

/// `#[rpcd(deadline = "300ms")]` is the budget of a call that names none, from the stub
/// and from `rpcctl call` (which reads it from the serving daemon); a deadline given with
/// the call wins, and `--no-check` leaves the call to the daemon's default.
#[test]
fn the_declared_deadline_is_the_default_budget() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let _server = serve(&b, "b");
    let client = Client::connect_to(&a.socket).unwrap();
    let stub = WhoClient::new(&client, b.udp.to_string());
    assert_eq!(
        stub.slow(1500).err().and_then(|e| e.code()),
        Some(ErrorCode::DeadlineExceeded),
        "300 ms declared, 1500 ms taken"
    );
    let patient = stub.with_options(CallOptions::default().with_deadline(Duration::from_secs(8)));
    assert_eq!(
        patient.slow(1500).unwrap(),
        1500,
        "the call's own deadline wins"
    );

    let target = b.udp.to_string();
    let out = rpcctl(&a.socket, &["call", &target, "who.slow", "1500"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("deadline"), "{stderr}");
    let out = rpcctl(
        &a.socket,
        &["call", &target, "who.slow", "1500", "--deadline", "8s"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1500\n");
    let out = rpcctl(
        &a.socket,
        &["call", &target, "who.slow", "1500", "--no-check"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // The declared idempotency overrides --idempotent, and rpcctl says so.
    let out = rpcctl(&a.socket, &["call", &target, "who.who", "--idempotent"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("declared not idempotent"),
        "{out:?}"
    );
}
