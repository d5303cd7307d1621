//! `srv:` targets through the router's inputs, with a clock only the test
//! moves: the lookup the shell is asked for, the answer reused for its TTL
//! and asked again after, errors as call failures, and `rpcd.names`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rpcd_client::ipc::{ClientMsg, DaemonMsg, ErrorCode, NameEntry, PROTOCOL_VERSION};

use super::srv::{SrvAnswer, SrvRecord};
use super::{ConnId, Incarnation, LookupAnswer, LookupRequest, Output, PeerCred, Resolved, Router};
use crate::settings::Settings;

const ME: &str = "127.0.0.1:7400";
const TARGET: &str = "srv:_kv._udp.test.";

fn router(cache_max: usize) -> Router {
    let me: SocketAddr = ME.parse().expect("test address");
    let mut s = Settings {
        listen: me,
        ..Settings::default()
    };
    s.dns.cache_max = cache_max;
    s.names.insert("kv".into(), vec![TARGET.into()]);
    let inc = Incarnation {
        epoch: 7,
        seed: [1; 32],
        wall_clock: Duration::ZERO,
    };
    Router::new(s, me, Vec::new(), inc, Instant::now())
}

/// What the router asked of the shell since the last look.
#[derive(Default)]
struct Seen {
    frames: Vec<(ConnId, DaemonMsg)>,
    lookups: Vec<LookupRequest>,
}

fn drain(r: &mut Router) -> Seen {
    let mut seen = Seen::default();
    while let Some(o) = r.poll_output() {
        match o {
            Output::Frame(c, m) => seen.frames.push((c, m)),
            Output::Invoke(c, i) => seen.frames.push((c, i.into())),
            Output::Lookup(l) => seen.lookups.push(l),
            Output::Close(_) => {}
        }
    }
    seen
}

fn connect(r: &mut Router, now: Instant, conn: u64) -> ConnId {
    let c = ConnId(conn);
    let cred = PeerCred {
        pid: 1,
        uid: 0,
        gid: 0,
    };
    r.handle_conn_opened(c, cred);
    let hello = ClientMsg::Hello {
        id: 0,
        version: PROTOCOL_VERSION,
        version_min: None,
        name: format!("app{conn}"),
    };
    r.handle_client_msg(now, c, hello);
    drain(r);
    c
}

fn call(r: &mut Router, now: Instant, c: ConnId, id: u64, target: &str, function: &str) {
    let msg = ClientMsg::Call {
        id,
        target: target.into(),
        function: function.into(),
        args: Vec::new().into(),
        deadline_ms: Some(5000),
        idempotent: false,
        trace: false,
    };
    r.handle_client_msg(now, c, msg);
}

/// Records on this daemon itself (so a call is served here, by `server`).
fn answer(ttl_s: u64) -> SrvAnswer {
    SrvAnswer {
        records: vec![SrvRecord {
            priority: 10,
            weight: 5,
            port: 7400,
            target: "me.test.".into(),
            addrs: vec![IpAddr::from([127, 0, 0, 1])],
        }],
        ttl: Duration::from_secs(ttl_s),
    }
}

fn invoked(seen: &Seen, server: ConnId) -> bool {
    seen.frames
        .iter()
        .any(|(c, m)| *c == server && matches!(m, DaemonMsg::Invoke { .. }))
}

/// A call to an `srv:` target asks the resolver once; calls within the TTL
/// use the cached answer (no lookup), the first one after asks again.
#[test]
fn an_srv_answer_is_reused_for_its_ttl_then_asked_again() {
    let t0 = Instant::now();
    let mut r = router(16);
    let server = connect(&mut r, t0, 20);
    r.handle_client_msg(
        t0,
        server,
        ClientMsg::Register {
            id: 1,
            function: "kv.get".into(),
            idempotent: None,
            deadline_ms: None,
            signature: None,
        },
    );
    let caller = connect(&mut r, t0, 21);
    drain(&mut r);

    call(&mut r, t0, caller, 1, TARGET, "kv.get");
    let seen = drain(&mut r);
    assert_eq!(seen.lookups.len(), 1);
    assert_eq!(seen.lookups[0].targets, [TARGET]);
    assert!(!invoked(&seen, server), "nothing before the answer");
    let id = seen.lookups[0].id;
    r.handle_lookup(
        t0,
        LookupAnswer {
            id,
            results: vec![Ok(Resolved::Srv(answer(30)))],
        },
    );
    assert!(
        invoked(&drain(&mut r), server),
        "the record's address serves it"
    );

    // Within the TTL, through the name of [names] too: no lookup.
    let t1 = t0 + Duration::from_millis(29_999);
    call(&mut r, t1, caller, 2, "kv", "kv.get");
    let seen = drain(&mut r);
    assert!(seen.lookups.is_empty(), "the cached answer is used");
    assert!(invoked(&seen, server));

    // The TTL has run out: asked again.
    let t2 = t0 + Duration::from_secs(30);
    call(&mut r, t2, caller, 3, TARGET, "kv.get");
    let seen = drain(&mut r);
    assert_eq!(seen.lookups.len(), 1, "asked again after the TTL");
    assert!(!invoked(&seen, server));
}

/// With `cache_max = 0` every call asks; a resolver error fails the call
/// with `peer_unreachable` carrying the resolver's words; a malformed
/// target is `bad_request` and asks nothing.
#[test]
fn no_cache_errors_and_malformed_targets() {
    let t0 = Instant::now();
    let mut r = router(0);
    let caller = connect(&mut r, t0, 21);
    call(&mut r, t0, caller, 1, TARGET, "kv.get");
    let id = drain(&mut r).lookups[0].id;
    r.handle_lookup(
        t0,
        LookupAnswer {
            id,
            results: vec![Ok(Resolved::Srv(answer(30)))],
        },
    );
    drain(&mut r);
    call(&mut r, t0, caller, 2, TARGET, "kv.get");
    let seen = drain(&mut r);
    assert_eq!(seen.lookups.len(), 1, "nothing cached");
    r.handle_lookup(
        t0,
        LookupAnswer {
            id: seen.lookups[0].id,
            results: vec![Err("srv:_kv._udp.test.: DNS timed out".into())],
        },
    );
    let seen = drain(&mut r);
    let failed = seen.frames.iter().find_map(|(_, m)| match m {
        DaemonMsg::Failed {
            id: 2,
            code,
            message,
            ..
        } => Some((*code, message.clone())),
        _ => None,
    });
    let (code, message) = failed.expect("the call failed");
    assert_eq!(code, ErrorCode::PeerUnreachable);
    assert!(message.contains("DNS timed out"), "{message}");

    call(&mut r, t0, caller, 3, "srv:kv.test", "kv.get");
    let seen = drain(&mut r);
    assert!(seen.lookups.is_empty());
    assert!(
        seen.frames.iter().any(|(_, m)| matches!(
            m,
            DaemonMsg::Failed {
                id: 3,
                code: ErrorCode::BadRequest,
                ..
            }
        )),
        "{:?}",
        seen.frames
    );
}

/// `rpcd.names` shows a cached answer without asking again, with its age
/// and the TTL it has left on the virtual clock.
#[test]
fn names_show_the_cached_records_with_age_and_ttl() {
    let t0 = Instant::now();
    let mut r = router(16);
    let caller = connect(&mut r, t0, 21);
    call(&mut r, t0, caller, 1, TARGET, "rpcd.nothing");
    let id = drain(&mut r).lookups[0].id;
    r.handle_lookup(
        t0,
        LookupAnswer {
            id,
            results: vec![Ok(Resolved::Srv(answer(30)))],
        },
    );
    drain(&mut r);
    let t1 = t0 + Duration::from_secs(12);
    call(&mut r, t1, caller, 2, ME, "rpcd.names");
    let seen = drain(&mut r);
    assert!(seen.lookups.is_empty(), "fresh in the cache: not asked");
    let data = seen
        .frames
        .iter()
        .find_map(|(_, m)| match m {
            DaemonMsg::CallOk { id: 2, data, .. } => Some(data.clone()),
            _ => None,
        })
        .expect("rpcd.names answered");
    let entries: Vec<NameEntry> = rmp_serde::from_slice(&data).expect("names");
    assert_eq!(entries.len(), 1, "kv; the SRV name is the one kv lists");
    let e = &entries[0];
    assert_eq!(e.resolved, ["127.0.0.1:7400"]);
    assert_eq!(e.srv.len(), 1);
    assert_eq!(e.srv[0].target, TARGET);
    assert_eq!(e.srv[0].age_ms, 12_000);
    assert_eq!(e.srv[0].ttl_ms, 18_000);
    let rec = &e.srv[0].records[0];
    assert_eq!(
        (rec.priority, rec.weight, rec.port, rec.target.as_str()),
        (10, 5, 7400, "me.test.")
    );
}
