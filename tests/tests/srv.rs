//! DNS SRV naming end to end: a DNS responder of the test's own (`srv/dns.rs`,
//! hickory-proto) on a loopback port serves SRV and A records; the calling
//! daemon asks it (`[dns] servers`), tries the records by priority, fails over
//! when the first target's daemon dies, follows a record change once the TTL
//! has run out, and shows the records in `rpcctl names`. Errors: an unknown
//! name and a silent server are `peer_unreachable` saying why, a malformed
//! `srv:` target is `bad_request`, and `rpcd --check-config` refuses one in
//! `[names]`.

#[path = "srv/dns.rs"]
mod dns;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::{Record, RecordType};
use rpcd_client::conn::CallOptions;
use rpcd_client::ipc::Outcome;
use rpcd_tests::{bin, output_within, rpcd_command, tempdir, wait_until, Daemon, Serving};
use serde_json::{json, Value};

use dns::DnsServer;

const SVC: &str = "_kv._udp.test.";
const TARGET: &str = "srv:_kv._udp.test.";
const RUN_MAX: Duration = Duration::from_secs(60);

/// An app on `d` serving `svc.who`, answering `who` (a MessagePack string).
fn serve(d: &Daemon, who: &str) -> Serving {
    let answer = rmp_serde::to_vec(who).expect("encode");
    Serving::on(d, "server", "svc.who", move |_| Outcome::Ok(answer.clone()))
}

/// `_kv._udp.test.` with `first` at priority 10 and `second` at 20, both
/// targets on 127.0.0.1, every record with `ttl`.
fn zone(ttl: u32, first: &Daemon, second: &Daemon) -> Vec<Record> {
    vec![
        dns::srv(SVC, ttl, 10, 5, first.udp.port(), "one.test."),
        dns::srv(SVC, ttl, 20, 7, second.udp.port(), "two.test."),
        dns::a("one.test.", ttl, Ipv4Addr::LOCALHOST),
        dns::a("two.test.", ttl, Ipv4Addr::LOCALHOST),
    ]
}

/// The calling daemon's settings: fast liveness, the test's DNS server,
/// and the name `kv` for the SRV name.
fn caller_config(dns: &DnsServer) -> String {
    format!(
        "[transport]\nkeepalive_interval_ms = 100\npeer_timeout_ms = 600\n\
         [dns]\nservers = [\"{}\"]\ntimeout_ms = 300\nattempts = 1\n\
         [names]\nkv = \"{TARGET}\"\n",
        dns.addr
    )
}

/// What one rpcctl run did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self
    }

    /// The error object of a `--json` run that failed.
    fn error(&self) -> Value {
        let v: Value = serde_json::from_str(&self.stderr)
            .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {self:#?}"));
        v["error"].clone()
    }
}

fn rpcctl(socket: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(bin("rpcctl"));
    rpcd_tests::isolate(&mut cmd)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null());
    let out = output_within(&mut cmd, RUN_MAX);
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Who answered `svc.who` called through `target` with rpcctl.
fn who(a: &Daemon, target: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--json", "call", target, "svc.who", "--deadline", "8s"];
    args.extend_from_slice(extra);
    rpcctl(&a.socket, &args).ok().json()
}

/// Calls follow the priorities, through the `srv:` target itself and
/// through a `[names]` entry naming it; the answer is reused for its TTL;
/// an idempotent call fails over to the next record when the first
/// target's daemon is dead, and later calls prefer the live one.
/// `rpcctl names` shows the records, their age and the TTL left, also for
/// an SRV name that was called directly.
#[test]
fn srv_calls_follow_priority_and_fail_over() {
    let dns = DnsServer::start();
    let dir = tempdir();
    let mut b1 = Daemon::start(dir.path(), "b1", "127.0.0.1:0", None);
    let b2 = Daemon::start(dir.path(), "b2", "127.0.0.1:0", None);
    let _s1 = serve(&b1, "b1");
    let _s2 = serve(&b2, "b2");
    let mut records = zone(300, &b1, &b2);
    records.push(dns::srv(
        "_db._udp.test.",
        300,
        0,
        0,
        b2.udp.port(),
        "two.test.",
    ));
    dns.set(records);
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(&caller_config(&dns)));

    assert_eq!(who(&a, TARGET, &[]), json!("b1"), "priority 10 first");
    assert_eq!(who(&a, "kv", &[]), json!("b1"), "a [names] entry too");
    assert_eq!(who(&a, "srv:_db._udp.test.", &[]), json!("b2"));
    assert_eq!(
        dns.queries(SVC, RecordType::SRV),
        1,
        "the answer is reused while its TTL lasts"
    );

    let names = rpcctl(&a.socket, &["--json", "names"]).ok().json();
    let kv = names
        .as_array()
        .and_then(|v| v.iter().find(|e| e["name"] == "kv"))
        .unwrap_or_else(|| panic!("no kv entry: {names}"));
    assert_eq!(kv["targets"], json!([TARGET]));
    assert_eq!(
        kv["resolved"],
        json!([b1.udp.to_string(), b2.udp.to_string()]),
        "addresses by priority"
    );
    let srv = &kv["srv"][0];
    assert_eq!(srv["target"], TARGET);
    assert_eq!(
        srv["records"],
        json!([
            {"target": "one.test.", "port": b1.udp.port(), "priority": 10, "weight": 5,
             "addresses": ["127.0.0.1"]},
            {"target": "two.test.", "port": b2.udp.port(), "priority": 20, "weight": 7,
             "addresses": ["127.0.0.1"]},
        ])
    );
    let ttl = srv["ttl_ms"].as_u64().expect("ttl_ms");
    let age = srv["age_ms"].as_u64().expect("age_ms");
    assert!(ttl > 0 && ttl <= 300_000 && age + ttl <= 300_000, "{srv}");
    let direct = names
        .as_array()
        .and_then(|v| v.iter().find(|e| e["name"] == "srv:_db._udp.test."))
        .unwrap_or_else(|| panic!("an SRV name called directly is listed: {names}"));
    assert_eq!(direct["srv"][0]["records"][0]["priority"], 0);
    let text = rpcctl(&a.socket, &["names"]).ok().stdout;
    let row = text
        .lines()
        .find(|l| l.starts_with(TARGET) && l.contains("one.test."))
        .unwrap_or_else(|| panic!("no SRV row for one.test.:\n{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    let port = b1.udp.port().to_string();
    assert_eq!(
        cells[1..5],
        ["10", "5", "one.test.", port.as_str()],
        "{text}"
    );

    b1.process.kill();
    assert_eq!(
        who(&a, TARGET, &["--idempotent"]),
        json!("b2"),
        "an idempotent call fails over to the next record"
    );
    assert_eq!(
        who(&a, TARGET, &[]),
        json!("b2"),
        "later calls try the live target first"
    );
}

/// With a TTL of 1 s, a change of the records (the priorities swapped) is
/// followed once the TTL has run out: the daemon asks DNS again, and calls
/// go to the new first target, never sooner than the TTL after the first
/// answer.
#[test]
fn a_record_change_is_followed_after_its_ttl() {
    let dns = DnsServer::start();
    let dir = tempdir();
    let b1 = Daemon::start(dir.path(), "b1", "127.0.0.1:0", None);
    let b2 = Daemon::start(dir.path(), "b2", "127.0.0.1:0", None);
    let _s1 = serve(&b1, "b1");
    let _s2 = serve(&b2, "b2");
    dns.set(zone(1, &b1, &b2));
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(&caller_config(&dns)));
    let c = a.connect("caller");
    let call = || -> String {
        let opts = CallOptions::new(Some(Duration::from_secs(8)), false);
        let reply = c.call(TARGET, "svc.who", Vec::new(), opts).expect("call");
        rmp_serde::from_slice(&reply).expect("a string")
    };

    let before_first_answer = Instant::now();
    assert_eq!(call(), "b1");
    let asked = dns.queries(SVC, RecordType::SRV);
    assert_eq!(asked, 1);
    dns.set(zone(1, &b2, &b1));
    let mut switched = None;
    let followed = wait_until(Duration::from_secs(30), || {
        if call() == "b2" {
            switched = Some(before_first_answer.elapsed());
            true
        } else {
            false
        }
    });
    assert!(followed, "calls never went to the new first target");
    let switched = switched.expect("set with followed");
    assert!(
        switched >= Duration::from_secs(1),
        "the change was followed after {switched:?}, before the TTL ran out"
    );
    assert!(
        dns.queries(SVC, RecordType::SRV) > asked,
        "the daemon asked DNS again"
    );
}

/// An SRV name DNS does not know, and one whose server never answers, are
/// `peer_unreachable` with a message saying so; a malformed `srv:` target
/// is `bad_request`; `rpcd --check-config` refuses one in `[names]`.
#[test]
fn srv_errors_say_what_failed() {
    let dns = DnsServer::start();
    dns.silence("_slow._udp.test.");
    dns.set(vec![dns::a("one.test.", 60, Ipv4Addr::LOCALHOST)]);
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", Some(&caller_config(&dns)));

    let cases = [
        ("srv:_nosuch._udp.test.", "peer_unreachable", "no records"),
        ("srv:_slow._udp.test.", "peer_unreachable", "timed out"),
        ("srv:_kv.test.", "bad_request", "_service._proto.domain"),
    ];
    for (target, code, words) in cases {
        let run = rpcctl(&a.socket, &["--json", "call", target, "svc.who"]);
        assert_eq!(run.code, Some(4), "{target}: {run:#?}");
        let e = run.error();
        assert_eq!(e["code"], code, "{target}: {e}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(words) && message.contains(&target[4..]),
            "{target}: {message}"
        );
    }

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[names]\nkv = [\"srv:kv.example.org\"]\n").expect("write");
    let out = output_within(
        rpcd_command(dir.path(), Some(&bad)).arg("--check-config"),
        RUN_MAX,
    );
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("names.kv") && err.contains("_service._proto.domain"),
        "{err}"
    );
}
