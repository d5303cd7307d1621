//! The name grace (`limits.name_grace_ms`) through the router's inputs,
//! with a clock only the test moves.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rpcd_client::ipc::{ClientMsg, DaemonMsg, ErrorCode, PROTOCOL_VERSION};

use super::{ConnId, Incarnation, Output, PeerCred, Router};
use crate::settings::Settings;

const ROOT: u32 = 0;
const OTHER: u32 = 65534;

fn router(grace_ms: u64, functions_max: usize) -> Router {
    let me: SocketAddr = "127.0.0.1:7400".parse().expect("test address");
    let mut s = Settings {
        listen: me,
        ..Settings::default()
    };
    s.limits.name_grace = Duration::from_millis(grace_ms);
    s.limits.functions_max = functions_max;
    let inc = Incarnation {
        epoch: 7,
        seed: [0; 32],
        wall_clock: Duration::ZERO,
    };
    Router::new(s, me, Vec::new(), inc, Instant::now())
}

/// Frames the router wrote to `conn` since the last look.
fn frames(r: &mut Router, conn: ConnId) -> Vec<DaemonMsg> {
    let mut v = Vec::new();
    while let Some(o) = r.poll_output() {
        let (c, m) = match o {
            Output::Frame(c, m) => (c, m),
            Output::Invoke(c, i) => (c, i.into()),
            _ => continue,
        };
        if c == conn {
            v.push(m);
        }
    }
    v
}

fn connect(r: &mut Router, now: Instant, conn: u64, uid: u32) -> ConnId {
    let c = ConnId(conn);
    r.handle_conn_opened(
        c,
        PeerCred {
            pid: 1,
            uid,
            gid: uid,
        },
    );
    r.handle_client_msg(
        now,
        c,
        ClientMsg::Hello {
            id: 0,
            version: PROTOCOL_VERSION,
            version_min: None,
            name: format!("app{conn}"),
        },
    );
    assert!(matches!(
        frames(r, c).as_slice(),
        [DaemonMsg::HelloOk { .. }]
    ));
    c
}

/// `Ok(())` or the error code of a register.
fn register(r: &mut Router, now: Instant, c: ConnId, f: &str) -> Result<(), ErrorCode> {
    r.handle_client_msg(
        now,
        c,
        ClientMsg::Register {
            id: 5,
            function: f.into(),
            idempotent: None,
            deadline_ms: None,
            signature: None,
        },
    );
    match frames(r, c).as_slice() {
        [DaemonMsg::Done { id: 5 }] => Ok(()),
        [DaemonMsg::Failed { id: 5, code, .. }] => Err(*code),
        other => panic!("unexpected answer to register: {other:?}"),
    }
}

#[test]
fn a_released_name_waits_for_its_user_until_the_grace_ends() {
    let t0 = Instant::now();
    let mut r = router(2000, 64);
    let owner = connect(&mut r, t0, 20, ROOT);
    assert_eq!(register(&mut r, t0, owner, "kv.get"), Ok(()));
    assert_eq!(register(&mut r, t0, owner, "kv.put"), Ok(()));
    r.handle_conn_closed(t0, owner);

    let other = connect(&mut r, t0, 21, OTHER);
    let t1 = t0 + Duration::from_millis(1999);
    assert_eq!(
        register(&mut r, t1, other, "kv.get"),
        Err(ErrorCode::NameTaken),
        "another user within the grace"
    );
    // The owner's user comes back within the grace: its name is its own.
    let back = connect(&mut r, t1, 22, ROOT);
    assert_eq!(register(&mut r, t1, back, "kv.get"), Ok(()));
    // Once the grace is over, anyone may take a released name.
    let t2 = t0 + Duration::from_millis(2000);
    r.handle_timeout(t2);
    assert_eq!(register(&mut r, t2, other, "kv.put"), Ok(()));
    assert_eq!(
        register(&mut r, t2, other, "kv.get"),
        Err(ErrorCode::NameTaken),
        "still owned by the returning app"
    );
}

#[test]
fn a_zero_grace_holds_nothing_and_an_unregister_holds_nothing() {
    let t0 = Instant::now();
    let mut r = router(0, 64);
    let owner = connect(&mut r, t0, 20, ROOT);
    assert_eq!(register(&mut r, t0, owner, "kv.get"), Ok(()));
    r.handle_conn_closed(t0, owner);
    let other = connect(&mut r, t0, 21, OTHER);
    assert_eq!(register(&mut r, t0, other, "kv.get"), Ok(()));

    let mut r = router(2000, 64);
    let owner = connect(&mut r, t0, 20, ROOT);
    assert_eq!(register(&mut r, t0, owner, "kv.get"), Ok(()));
    r.handle_client_msg(
        t0,
        owner,
        ClientMsg::Unregister {
            id: 6,
            function: "kv.get".into(),
        },
    );
    assert_eq!(frames(&mut r, owner), vec![DaemonMsg::Done { id: 6 }]);
    let other = connect(&mut r, t0, 21, OTHER);
    assert_eq!(register(&mut r, t0, other, "kv.get"), Ok(()));
}

#[test]
fn held_names_are_bounded_by_functions_max() {
    let t0 = Instant::now();
    let max = 8;
    let mut r = router(60_000, max);
    let mut conn = 100;
    // Register and drop `max` names, three times over: the held table never
    // grows past `max`, and once full a newly released name is not held.
    for round in 0..3 {
        let owner = connect(&mut r, t0, conn, ROOT);
        conn += 1;
        for i in 0..max {
            let f = format!("f{round}.{i}");
            assert_eq!(register(&mut r, t0, owner, &f), Ok(()), "{f}");
        }
        r.handle_conn_closed(t0, owner);
        assert!(r.registry.held() <= max, "{}", r.registry.held());
    }
    let other = connect(&mut r, t0, conn, OTHER);
    assert_eq!(
        register(&mut r, t0, other, "f0.0"),
        Err(ErrorCode::NameTaken)
    );
    assert_eq!(
        register(&mut r, t0, other, "f2.0"),
        Ok(()),
        "not held: table full"
    );
    // After the grace the table empties.
    r.handle_timeout(t0 + Duration::from_secs(61));
    assert_eq!(r.registry.held(), 0);
}
