//! Monitors and traces through the router's inputs, on one router with calls
//! to its own address (served here, no datagram) and a clock only the test moves.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rpcd_client::ipc::{ClientMsg, DaemonMsg, MonitorEvent, PROTOCOL_VERSION};

use super::{ConnId, Incarnation, Output, PeerCred, Router};
use crate::settings::Settings;

const ME: &str = "127.0.0.1:7400";

fn router(buffer: usize) -> Router {
    let me: SocketAddr = ME.parse().expect("test address");
    let mut s = Settings {
        listen: me,
        ..Settings::default()
    };
    s.limits.monitor_buffer = buffer;
    s.limits.monitors_max = 1;
    let inc = Incarnation {
        epoch: 7,
        seed: [0; 32],
        wall_clock: Duration::ZERO,
    };
    Router::new(s, me, Vec::new(), inc, Instant::now())
}

/// Frames the router wrote since the last look, by connection.
fn outputs(r: &mut Router) -> Vec<(ConnId, DaemonMsg)> {
    let mut v = Vec::new();
    while let Some(o) = r.poll_output() {
        match o {
            Output::Frame(c, m) => v.push((c, m)),
            Output::Invoke(c, i) => v.push((c, i.into())),
            _ => {}
        }
    }
    v
}

fn to(conn: ConnId, out: Vec<(ConnId, DaemonMsg)>) -> Vec<DaemonMsg> {
    out.into_iter()
        .filter(|(c, _)| *c == conn)
        .map(|(_, m)| m)
        .collect()
}

fn events(msgs: Vec<DaemonMsg>) -> Vec<MonitorEvent> {
    msgs.into_iter()
        .map(|m| match m {
            DaemonMsg::Event { id: 9, event } => event,
            other => panic!("not an event: {other:?}"),
        })
        .collect()
}

fn connect(r: &mut Router, now: Instant, conn: u64) -> ConnId {
    let c = ConnId(conn);
    r.handle_conn_opened(c, PeerCred::default());
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
        to(c, outputs(r)).as_slice(),
        [DaemonMsg::HelloOk { .. }]
    ));
    c
}

fn echo(r: &mut Router, now: Instant, c: ConnId, id: u64, trace: bool) {
    r.handle_client_msg(
        now,
        c,
        ClientMsg::Call {
            id,
            target: ME.into(),
            function: "rpcd.echo".into(),
            args: vec![0x91, 0x01].into(),
            deadline_ms: None,
            idempotent: false,
            trace,
        },
    );
}

/// A monitor that does not drain holds one frame in the shell and
/// `monitor_buffer` events; the rest are counted and reported as one
/// `missed` after the queue, and later events flow again.
#[test]
fn a_monitor_is_bounded_and_reports_what_it_missed() {
    let now = Instant::now();
    let mut r = router(4);
    let m = connect(&mut r, now, 16);
    let app = connect(&mut r, now, 17);
    r.handle_client_msg(
        now,
        m,
        ClientMsg::Monitor {
            id: 9,
            function: Some("rpcd.*".into()),
            peer: None,
        },
    );
    assert_eq!(to(m, outputs(&mut r)), [DaemonMsg::Done { id: 9 }]);
    // A second monitor is over monitors_max (1).
    r.handle_client_msg(
        now,
        app,
        ClientMsg::Monitor {
            id: 1,
            function: None,
            peer: None,
        },
    );
    assert!(matches!(
        to(app, outputs(&mut r)).as_slice(),
        [DaemonMsg::Failed {
            code: rpcd_client::ipc::ErrorCode::Overloaded,
            ..
        }]
    ));
    for id in 1..=10 {
        echo(&mut r, now, app, id, false);
    }
    let out = outputs(&mut r);
    assert_eq!(to(app, out.clone()).len(), 10, "every call answered");
    let first = events(to(m, out));
    assert_eq!(first.len(), 1, "one frame in the shell until it is written");
    assert_eq!(
        (first[0].kind.as_str(), first[0].direction.as_str()),
        ("start", "out")
    );
    assert!(r.handle_conn_drained(m));
    let next = events(to(m, outputs(&mut r)));
    let kinds: Vec<&str> = next.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["end", "start", "end", "start", "missed"]);
    assert_eq!(next[4].missed, 20 - 5, "20 events, 5 delivered");
    let end = &next[0];
    assert_eq!(
        (
            end.code.as_str(),
            end.args_bytes,
            end.reply_bytes,
            end.function.as_str()
        ),
        ("ok", 2, 2, "rpcd.echo")
    );
    assert!(!r.handle_conn_drained(m), "nothing left");
    echo(&mut r, now, app, 11, false);
    let again = events(to(m, outputs(&mut r)));
    assert_eq!(again.len(), 1);
    assert!(r.handle_conn_drained(m));
    assert_eq!(events(to(m, outputs(&mut r)))[0].kind, "end");
    // A closed monitor is forgotten.
    r.handle_conn_closed(now, m);
    assert!(!r.handle_conn_drained(m));
    assert!(r.monitors.held(m).is_none());
}

/// A traced call served here: one attempt to `local` with no datagram, and
/// the serving part filled in; an untraced call carries no trace.
#[test]
fn a_traced_local_call_has_one_local_attempt_and_serving_times() {
    let now = Instant::now();
    let mut r = router(4);
    let app = connect(&mut r, now, 16);
    echo(&mut r, now, app, 1, true);
    echo(&mut r, now, app, 2, false);
    let out = to(app, outputs(&mut r));
    let DaemonMsg::CallOk {
        id: 1,
        trace: Some(t),
        ..
    } = &out[0]
    else {
        panic!("a traced call_ok: {out:?}");
    };
    assert_eq!(t.target, ME);
    assert_eq!(t.addresses, [ME]);
    assert_eq!(t.attempts.len(), 1);
    assert_eq!(
        (
            t.attempts[0].address.as_str(),
            t.attempts[0].outcome.as_str(),
            t.attempts[0].datagrams
        ),
        ("local", "ok", 0)
    );
    assert!(t.serving.is_some(), "served here: its times too");
    assert!(matches!(
        &out[1],
        DaemonMsg::CallOk {
            id: 2,
            trace: None,
            ..
        }
    ));
}
