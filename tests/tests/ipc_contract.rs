//! The contract of `docs/ipc-protocol.md` and `docs/rpc-layer.md`, checked through the real
//! socket: what a second implementation, written from the text alone, may rely on.
//! Protocol evolution (a client against a daemon of a later version, daemons of adjacent
//! versions against each other), the version range of `hello` and the limits of
//! `hello_ok`, and each point where the text was once vague.

#[path = "ipc_contract/wire.rs"]
mod wire;

use std::time::Duration;

use rpcd_client::conn::{CallOptions, Connection};
use rpcd_client::ipc::{ClientMsg, DaemonMsg, ErrorCode, Outcome, Stats};
use rpcd_client::{Client, Handler, Server};
use rpcd_tests::{bin, output_within, tempdir, Daemon};
use serde_json::json;
use wire::{msgpack, FakeDaemon, Raw};

fn opts(ms: u64) -> CallOptions {
    let mut o = CallOptions::default();
    o.deadline = Some(Duration::from_millis(ms));
    o
}

/// The code and message of a `failed` frame.
fn failed_code(msg: Option<DaemonMsg>) -> (ErrorCode, String) {
    match msg {
        Some(DaemonMsg::Failed { code, message, .. }) => (code, message),
        other => panic!("expected failed, got {other:?}"),
    }
}

/// The code and message of a `fatal` frame.
fn fatal_code(msg: Option<DaemonMsg>) -> (ErrorCode, String) {
    match msg {
        Some(DaemonMsg::Fatal { code, message }) => (code, message),
        other => panic!("expected fatal, got {other:?}"),
    }
}

/// The Rust client and its `Server` talk to a daemon of a later version, which adds keys
/// to every frame, to `hello_ok`'s limits and at every level of `stats`.
#[test]
fn the_client_library_reads_a_later_daemon() {
    let fake = FakeDaemon::start();
    let client = Client::connect_to(&fake.path).expect("connect");
    assert_eq!(client.daemon().daemon, "rpcd 9.9.9");
    let limits = client.daemon().limits.expect("limits");
    assert_eq!(limits.payload_max, 65536);
    client.ping().expect("ping");
    let echoed: Vec<u32> = client
        .call("127.0.0.1:7999", "rpcd.echo", &vec![1u32, 2])
        .expect("echo");
    assert_eq!(echoed, [1, 2]);
    assert_eq!(client.list().expect("list"), ["rpcd.echo", "rpcd.ping"]);
    let stats: Stats = client.stats().expect("stats");
    assert_eq!(stats.uptime_ms, 1000);
    assert_eq!(stats.totals.datagrams_sent, 5);
    assert_eq!(stats.peers[0].addr, "10.0.0.2:7000");
    assert_eq!(stats.calls.get("new_code"), Some(&1));
    let server = Server::new(&client).expect("server");
    server
        .register(
            "t.f",
            Handler::new(|args: &[u8]| Outcome::Ok(args.to_vec())),
        )
        .expect("register");
    server.stop();
}

/// rpcctl, a client of the library, prints what a later daemon says.
#[test]
fn rpcctl_reads_a_later_daemon() {
    let fake = FakeDaemon::start();
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(bin("rpcctl"));
        rpcd_tests::isolate(&mut cmd)
            .arg("--socket")
            .arg(&fake.path)
            .args(args);
        let out = output_within(&mut cmd, Duration::from_secs(30));
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let stats: serde_json::Value = serde_json::from_str(&run(&["stats", "--json"])).expect("json");
    assert_eq!(stats["uptime_ms"], 1000);
    assert_eq!(
        run(&["call", "127.0.0.1:7999", "rpcd.ping"]).trim(),
        "\"pong\""
    );
    assert!(run(&["list"]).contains("rpcd.echo"));
}

/// An empty `RPCD_SOCKET` is ignored, as if unset (the default path is tried); a set one
/// is used.
#[test]
fn an_empty_rpcd_socket_is_ignored() {
    let fake = FakeDaemon::start();
    let run = |value: &std::ffi::OsStr| {
        let mut cmd = std::process::Command::new(bin("rpcctl"));
        rpcd_tests::isolate(&mut cmd)
            .env("RPCD_SOCKET", value)
            .arg("list");
        output_within(&mut cmd, Duration::from_secs(30))
    };
    let set = run(fake.path.as_os_str());
    assert!(set.status.success(), "{set:?}");
    let empty = run(std::ffi::OsStr::new(""));
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert!(!stderr.contains("value is required"), "{stderr}");
    let default = rpcd_client::default_socket_path();
    assert!(
        empty.status.success() || stderr.contains(&default.display().to_string()),
        "{stderr}"
    );
}

/// Two daemons, one of the next version (the test hook `RPCD_TEST_WIRE_EXTRA=1`: its
/// envelopes carry `v: 2` and a key no version defines), serve each other's calls both
/// ways, and neither drops an envelope as malformed.
#[test]
fn daemons_of_adjacent_versions_call_each_other() {
    let dir = tempdir();
    let next = Daemon::start_wrapped(
        dir.path(),
        "next",
        "127.0.0.1:0",
        None,
        &["env", "RPCD_TEST_WIRE_EXTRA=1"],
    );
    let this = Daemon::start(dir.path(), "this", "127.0.0.1:0", None);
    let mut servers = Vec::new();
    for d in [&next, &this] {
        let client = Client::connect_to(&d.socket).expect("connect");
        let server = Server::new(&client).expect("server");
        server
            .register(
                "t.where",
                Handler::new(|args: &[u8]| Outcome::Ok(args.to_vec())),
            )
            .expect("register");
        servers.push((client, server));
    }
    for (from, to) in [(&next, &this), (&this, &next)] {
        let c = from.connect("caller");
        for i in 0..3u8 {
            let got = c
                .call(&to.udp.to_string(), "t.where", vec![0xc4, 1, i], opts(5000))
                .expect("a call across versions");
            assert_eq!(got, [0xc4, 1, i]);
        }
        // An error reply crosses too.
        let err = c
            .call(&to.udp.to_string(), "nobody.here", vec![], opts(5000))
            .expect_err("unknown");
        assert_eq!(err.code(), Some(ErrorCode::UnknownFunction));
    }
    for d in [&next, &this] {
        let stats = d.connect("stats").stats().expect("stats");
        assert_eq!(stats.malformed, 0, "{stats:?}");
        assert_eq!(stats.calls.get("ok"), Some(&3));
    }
    for (_, s) in servers {
        s.stop();
    }
}

/// `hello` carries a version range; the session speaks the highest version both sides
/// speak. An app of version 1 (no `version_min`) gets exactly version 1's `hello_ok`.
#[test]
fn hello_negotiates_a_version_range() {
    let dir = tempdir();
    let d = Daemon::start(dir.path(), "d", "127.0.0.1:0", None);
    // Version 1 only, as an app of version 1 sends it: 5 keys back, no limits.
    let mut raw = Raw::connect(&d.socket);
    raw.send_json(&json!({"op": "hello", "id": 77, "version": 1, "name": "old"}));
    let body = raw.recv_body();
    let v: serde_json::Value = rmp_serde::from_slice(&body).expect("a map");
    assert_eq!(v["version"], 1);
    assert_eq!(v["id"], 77, "hello's id is echoed");
    assert_eq!(v.as_object().expect("map").len(), 6, "{v}");
    // A range reaching past this daemon: its highest.
    let mut raw = Raw::connect(&d.socket);
    raw.send_json(&json!({"op": "hello", "id": 1, "version": 9, "version_min": 1, "name": "new"}));
    match raw.recv() {
        Some(DaemonMsg::HelloOk {
            version, limits, ..
        }) => {
            assert_eq!(version, 3);
            assert!(limits.is_some());
        }
        other => panic!("{other:?}"),
    }
    // Ranges that miss: fatal version_mismatch, and the connection closes.
    for (min, max) in [(4, 9), (0, 0)] {
        let mut raw = Raw::connect(&d.socket);
        raw.send_json(
            &json!({"op": "hello", "id": 1, "version": max, "version_min": min, "name": "x"}),
        );
        let (code, message) = fatal_code(raw.recv());
        assert_eq!(code, ErrorCode::VersionMismatch, "{message}");
        assert!(message.contains("this daemon speaks 1 to 3"), "{message}");
        assert!(raw.recv().is_none());
    }
    // A daemon of the next version (the test hook) picks 4 from the same range.
    let next = Daemon::start_wrapped(
        dir.path(),
        "next",
        "127.0.0.1:0",
        None,
        &["env", "RPCD_TEST_WIRE_EXTRA=1"],
    );
    let mut raw = Raw::connect(&next.socket);
    raw.send_json(&json!({"op": "hello", "id": 1, "version": 9, "version_min": 1, "name": "n"}));
    assert!(matches!(
        raw.recv(),
        Some(DaemonMsg::HelloOk { version: 4, .. })
    ));
}

/// `hello_ok` reports the limits, and `payload_max` is the real bound on a call's `args`
/// and `function` together.
#[test]
fn hello_ok_reports_the_limits_a_client_must_respect() {
    let dir = tempdir();
    let config = "[transport]\nmessage_max = 8192\n[limits]\ncalls_per_connection_max = 7\n\
                  invocations_per_app_max = 5\nfunctions_max = 9\ndeadline_default_ms = 1234\n";
    let d = Daemon::start(dir.path(), "d", "127.0.0.1:0", Some(config));
    let c = d.connect("limits");
    let l = c.daemon().limits.expect("version 2 reports limits");
    assert_eq!(l.payload_max, 8192 - 128);
    assert_eq!(l.frame_max, rpcd_client::ipc::FRAME_MAX_DEFAULT as u64);
    assert_eq!((l.name_max, l.values_max, l.nesting_max), (256, 64, 32));
    assert_eq!((l.calls_max, l.invocations_max, l.functions_max), (7, 5, 9));
    assert_eq!(l.deadline_default_ms, 1234);
    let target = d.udp.to_string();
    let room = l.payload_max as usize - "rpcd.echo".len();
    let got = c.call(&target, "rpcd.echo", vec![7; room], opts(5000));
    assert_eq!(got.expect("at the bound").len(), room);
    let err = c
        .call(&target, "rpcd.echo", vec![7; room + 1], opts(5000))
        .expect_err("over the bound");
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge));
}

/// Inputs §3 calls violations are refused as such: `args` as a string or an array, a
/// string field as bin, a message as an array. Each gets `fatal` / `protocol_error`, and
/// the connection closes.
#[test]
fn wrongly_typed_fields_and_non_map_messages_are_violations() {
    let dir = tempdir();
    let d = Daemon::start(dir.path(), "d", "127.0.0.1:0", None);
    let call = |args: serde_json::Value| {
        json!({"op": "call", "id": 2, "target": d.udp.to_string(), "function": "rpcd.echo",
               "args": args, "deadline_ms": null, "idempotent": false})
    };
    let mut bin_function = msgpack(&json!({"op": "register", "id": 3, "function": "x"}));
    let at = bin_function.len() - 2;
    bin_function.splice(at.., [0xc4, 1, b'x']);
    for (what, body) in [
        ("args as a string", msgpack(&call(json!("abc")))),
        ("args as an array", msgpack(&call(json!([1, 2, 3])))),
        ("a function name as bin", bin_function),
        ("a message as an array", msgpack(&json!(["ping", 7]))),
    ] {
        let (mut raw, _) = Raw::greeted(&d.socket);
        raw.send_body(&body);
        let (code, message) = fatal_code(raw.recv());
        assert_eq!(code, ErrorCode::ProtocolError, "{what}: {message}");
        assert!(raw.recv().is_none(), "{what}: closed");
    }
}

/// A refusal with a code the caller may not get — also a string that is no code — reaches
/// the caller as `app_error`, and the serving app's connection stays open.
#[test]
fn a_refusal_with_any_other_code_is_app_error() {
    let dir = tempdir();
    let d = Daemon::start(dir.path(), "d", "127.0.0.1:0", None);
    let (mut server, _) = Raw::greeted(&d.socket);
    server.send(&ClientMsg::Register {
        id: 2,
        function: "t.f".into(),
        idempotent: None,
        deadline_ms: None,
        signature: None,
    });
    assert!(matches!(server.recv(), Some(DaemonMsg::Done { id: 2 })));
    let caller = d.connect("caller");
    let target = d.udp.to_string();
    for (code, want) in [
        ("too_busy_from_the_future", ErrorCode::AppError),
        ("not_owner", ErrorCode::AppError),
        ("overloaded", ErrorCode::Overloaded),
    ] {
        std::thread::scope(|s| {
            let call = s.spawn(|| caller.call(&target, "t.f", vec![], opts(5000)));
            let Some(DaemonMsg::Invoke { invocation, .. }) = server.recv() else {
                panic!("no invoke");
            };
            server.send_json(&json!({"op": "result", "invocation": invocation,
                                     "outcome": {"refused": {"code": code, "message": "m"}}}));
            let err = call.join().expect("join").expect_err("refused");
            assert_eq!(err.code(), Some(want), "{code}: {err}");
        });
    }
    server.send(&ClientMsg::Ping { id: 9 });
    assert!(matches!(server.recv(), Some(DaemonMsg::Pong { id: 9 })));
}

/// An invocation's life: a result from a connection that does not own it, a second result,
/// and a result after its owner unregistered the function.
#[test]
fn the_lifecycle_of_an_invocation() {
    let dir = tempdir();
    let d = Daemon::start(dir.path(), "d", "127.0.0.1:0", None);
    let (mut owner, _) = Raw::greeted(&d.socket);
    let (mut other, _) = Raw::greeted(&d.socket);
    owner.send(&ClientMsg::Register {
        id: 2,
        function: "t.f".into(),
        idempotent: None,
        deadline_ms: None,
        signature: None,
    });
    assert!(matches!(owner.recv(), Some(DaemonMsg::Done { .. })));
    let caller = d.connect("caller");
    let target = d.udp.to_string();
    let late = |c: &Connection| c.stats().expect("stats").late_results;
    let result = |invocation: u64, byte: u8| ClientMsg::Result {
        invocation,
        outcome: Outcome::Ok(vec![byte]),
    };
    std::thread::scope(|s| {
        let call = s.spawn(|| caller.call(&target, "t.f", vec![], opts(10_000)));
        let Some(DaemonMsg::Invoke { invocation, .. }) = owner.recv() else {
            panic!("no invoke");
        };
        // Not the owner's: dropped and counted, the call still waits.
        other.send(&result(invocation, 1));
        other.send(&ClientMsg::Ping { id: 3 });
        assert!(matches!(other.recv(), Some(DaemonMsg::Pong { .. })));
        assert_eq!(late(&caller), 1);
        // Unregistering does not withdraw it: the owner's result still counts.
        owner.send(&ClientMsg::Unregister {
            id: 4,
            function: "t.f".into(),
        });
        assert!(matches!(owner.recv(), Some(DaemonMsg::Done { id: 4 })));
        owner.send(&result(invocation, 2));
        assert_eq!(call.join().expect("join").expect("the owner's result"), [2]);
        // A second result: dropped and counted.
        owner.send(&result(invocation, 3));
        owner.send(&ClientMsg::Ping { id: 5 });
        assert!(matches!(owner.recv(), Some(DaemonMsg::Pong { .. })));
        assert_eq!(late(&caller), 2);
    });
}

/// Ids are the app's business: two requests in flight with the same id each get a reply
/// carrying it.
#[test]
fn duplicate_ids_in_flight_each_get_their_reply() {
    let dir = tempdir();
    let d = Daemon::start(dir.path(), "d", "127.0.0.1:0", None);
    let (mut raw, _) = Raw::greeted(&d.socket);
    raw.send(&ClientMsg::Ping { id: 5 });
    raw.send(&ClientMsg::List { id: 5 });
    let mut got = [raw.recv(), raw.recv()];
    got.sort_by_key(|m| m.as_ref().map(DaemonMsg::op));
    assert!(
        matches!(got[0], Some(DaemonMsg::List { id: 5, .. })),
        "{got:?}"
    );
    assert!(matches!(got[1], Some(DaemonMsg::Pong { id: 5 })), "{got:?}");
}

/// `deadline_ms: 0` fails at once with `deadline_exceeded`; the handler never sees it.
#[test]
fn a_zero_deadline_fails_at_once_without_running() {
    let dir = tempdir();
    let d = Daemon::start(dir.path(), "d", "127.0.0.1:0", None);
    let (mut server, _) = Raw::greeted(&d.socket);
    server.send(&ClientMsg::Register {
        id: 2,
        function: "t.f".into(),
        idempotent: None,
        deadline_ms: None,
        signature: None,
    });
    assert!(matches!(server.recv(), Some(DaemonMsg::Done { .. })));
    let (mut caller, _) = Raw::greeted(&d.socket);
    caller.send(&ClientMsg::Call {
        id: 3,
        target: d.udp.to_string(),
        function: "t.f".into(),
        args: Vec::new().into(),
        deadline_ms: Some(0),
        idempotent: false,
        trace: false,
    });
    let (code, message) = failed_code(caller.recv());
    assert_eq!(code, ErrorCode::DeadlineExceeded, "{message}");
    // The serving app's next frame is the answer to its ping, not an invoke.
    server.send(&ClientMsg::Ping { id: 4 });
    assert!(matches!(server.recv(), Some(DaemonMsg::Pong { id: 4 })));
}

/// Every spelling of the daemon's own address is served locally: no datagram leaves.
/// A host that does not resolve is `peer_unreachable`.
#[test]
fn own_address_spellings_short_circuit_and_bad_hosts_are_unreachable() {
    let dir = tempdir();
    let d = Daemon::start(dir.path(), "d", "127.0.0.1:0", None);
    let c = d.connect("spell");
    let port = d.udp.port();
    for target in [
        format!("127.0.0.1:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
    ] {
        let pong = c.call(&target, "rpcd.ping", vec![], opts(5000));
        assert!(pong.is_ok(), "{target}: {pong:?}");
    }
    let stats = c.stats().expect("stats");
    assert_eq!(stats.totals.datagrams_sent, 0, "{stats:?}");
    assert!(stats.peers.is_empty());
    let err = c
        .call(
            "nonexistent.invalid:7000",
            "rpcd.ping",
            vec![],
            opts(20_000),
        )
        .expect_err("no such host");
    assert_eq!(err.code(), Some(ErrorCode::PeerUnreachable), "{err}");
}

/// The built-ins other than `rpcd.echo` ignore their arguments.
#[test]
fn builtins_ignore_their_arguments() {
    let dir = tempdir();
    let d = Daemon::start(dir.path(), "d", "127.0.0.1:0", None);
    let c = d.connect("builtins");
    let target = d.udp.to_string();
    let junk = vec![0xc1, 0xff, 0x00];
    let pong = c
        .call(&target, "rpcd.ping", junk.clone(), opts(5000))
        .expect("ping");
    assert_eq!(rmp_serde::from_slice::<String>(&pong).expect("str"), "pong");
    let list = c
        .call(&target, "rpcd.list", junk.clone(), opts(5000))
        .expect("list");
    let list: Vec<String> = rmp_serde::from_slice(&list).expect("array");
    assert!(list.contains(&"rpcd.names".to_owned()));
    let stats = c
        .call(&target, "rpcd.stats", junk.clone(), opts(5000))
        .expect("stats");
    rmp_serde::from_slice::<Stats>(&stats).expect("stats");
    let names = c
        .call(&target, "rpcd.names", junk, opts(5000))
        .expect("names");
    rmp_serde::from_slice::<Vec<rpcd_client::ipc::NameEntry>>(&names).expect("names");
}

/// `Stats.calls` counts the calls this daemon's apps made and that were admitted, by
/// outcome; calls it served for another daemon, and calls refused at admission, are not
/// in it.
#[test]
fn stats_calls_counts_the_calls_of_this_daemons_apps() {
    let dir = tempdir();
    let a = Daemon::start(dir.path(), "a", "127.0.0.1:0", None);
    let b = Daemon::start(dir.path(), "b", "127.0.0.1:0", None);
    let ca = a.connect("a");
    let cb = b.connect("b");
    for _ in 0..2 {
        ca.call(&b.udp.to_string(), "rpcd.ping", vec![], opts(5000))
            .expect("remote");
    }
    ca.call(&a.udp.to_string(), "rpcd.ping", vec![], opts(5000))
        .expect("local");
    ca.call(&a.udp.to_string(), "no.such", vec![], opts(5000))
        .expect_err("unknown");
    // Refused at admission: not counted.
    ca.call(&a.udp.to_string(), "rpcd.ping", vec![], opts(0))
        .expect_err("zero");
    ca.call("no colon", "rpcd.ping", vec![], opts(5000))
        .expect_err("bad target");
    let sa = ca.stats().expect("stats");
    assert_eq!(sa.calls.get("ok"), Some(&3), "{:?}", sa.calls);
    assert_eq!(sa.calls.get("unknown_function"), Some(&1));
    assert_eq!(sa.calls.len(), 2, "{:?}", sa.calls);
    assert!(cb.stats().expect("stats").calls.is_empty());
}

/// Names are bytes: at most 256 of UTF-8, no control characters.
#[test]
fn function_names_are_bytes_without_control_characters() {
    let dir = tempdir();
    let d = Daemon::start(dir.path(), "d", "127.0.0.1:0", None);
    let c = d.connect("names");
    let e_acute = "é".repeat(128); // 256 bytes, 128 characters
    c.register(&e_acute).expect("256 bytes");
    let over = format!("{e_acute}x");
    for bad in [over.as_str(), "a\u{7f}b", "a\u{85}b", "tab\tname", ""] {
        let err = c.register(bad).expect_err(bad);
        assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{bad:?}: {err}");
    }
    c.register("ünïcode.ok").expect("printable non-ASCII");
}
