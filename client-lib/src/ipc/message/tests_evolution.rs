//! Protocol evolution (`docs/ipc-protocol.md` §3): what the daemon sends is read
//! tolerantly, what an app sends strictly, and the version range of `hello`.

use serde_json::json;

use super::tests::{client_msgs, daemon_msgs};
use super::*;
use crate::ipc::testutil::{decode_client, frame_of};
use crate::ipc::{decode_frame, FrameError, PeerCounters, PeerStats, FRAME_MAX_DEFAULT};

/// The MessagePack map `body` with one more key, `"x_new": {"a": [1, "s", nil]}`: what a
/// later version might add.
fn with_extra_key(body: &[u8]) -> Vec<u8> {
    let extra = rmp_serde::to_vec_named(&json!({"x_new": {"a": [1, "s", null]}})).unwrap();
    let mut out = body.to_vec();
    assert!(
        matches!(out[0], 0x80..=0x8e),
        "a fixmap with room: {:x}",
        out[0]
    );
    out[0] += 1;
    // Drop the extra's own map header: its key joins the message's map.
    out.extend_from_slice(&extra[1..]);
    out
}

fn decode_daemon(body: &[u8]) -> Result<DaemonMsg, FrameError> {
    decode_frame::<DaemonMsg>(&frame_of(body), FRAME_MAX_DEFAULT).map(|r| r.expect("whole").0)
}

/// Encodes a JSON value as MessagePack (maps with string keys, like the daemon's).
fn msgpack(v: &serde_json::Value) -> Vec<u8> {
    rmp_serde::to_vec_named(v).unwrap()
}

#[test]
fn every_daemon_msg_with_an_unknown_key_still_decodes() {
    for msg in daemon_msgs() {
        let body = rmp_serde::to_vec_named(&msg).unwrap();
        let extended = with_extra_key(&body);
        assert_eq!(decode_daemon(&extended), Ok(msg.clone()), "{}", msg.op());
    }
}

#[test]
fn unknown_keys_anywhere_in_stats_are_ignored() {
    let msg = DaemonMsg::Stats {
        id: 6,
        stats: crate::ipc::stats::tests::sample_stats(),
    };
    let mut v = serde_json::to_value(&msg).unwrap();
    v["x_top"] = json!(1);
    v["stats"]["build_info"] = json!("rpcd 9.9.9");
    v["stats"]["totals"]["new_counter"] = json!(7);
    v["stats"]["peers"][0]["new_peer_field"] = json!({"k": [1]});
    v["stats"]["peers"][0]["counters"]["new_counter"] = json!(8);
    assert_eq!(decode_daemon(&msgpack(&v)), Ok(msg));
}

#[test]
fn keys_missing_from_stats_read_as_zero() {
    let v = json!({"op": "stats", "id": 1, "stats": {"epoch": 5, "peers": [{"addr": "h:1"}]}});
    let DaemonMsg::Stats { stats, .. } = decode_daemon(&msgpack(&v)).unwrap() else {
        panic!("not stats");
    };
    assert_eq!(stats.epoch, 5);
    assert_eq!(stats.totals, PeerCounters::default());
    assert_eq!(stats.peers.len(), 1);
    assert_eq!(stats.peers[0].addr, "h:1");
    assert_eq!(stats.peers[0].rto_us, PeerStats::default().rto_us);
}

#[test]
fn name_entries_limits_and_credentials_ignore_unknown_keys() {
    let entries: Vec<NameEntry> = rmp_serde::from_slice(&msgpack(&json!([
        {"name": "kv", "targets": ["a:1"], "resolved": [], "errors": [], "weight": 3},
        {"name": "old"}
    ])))
    .unwrap();
    assert_eq!(entries[0].targets, ["a:1"]);
    assert_eq!(entries[1].name, "old");
    assert!(entries[1].targets.is_empty());

    let limits: Limits =
        rmp_serde::from_slice(&msgpack(&json!({"frame_max": 2048, "streams_max": 4}))).unwrap();
    assert_eq!(limits.frame_max, 2048);
    assert_eq!(limits.payload_max, 0);

    let cred: Credentials = rmp_serde::from_slice(&msgpack(
        &json!({"uid": 1, "gid": 2, "pid": 3, "groups": [4, 5]}),
    ))
    .unwrap();
    assert_eq!(cred, Credentials::new(1, 2, 3));
}

#[test]
fn every_client_msg_with_an_unknown_key_is_refused() {
    for msg in client_msgs() {
        let body = rmp_serde::to_vec_named(&msg).unwrap();
        let err = decode_client(&frame_of(&with_extra_key(&body))).unwrap_err();
        assert!(
            matches!(&err, FrameError::Invalid(m) if m.contains("x_new")),
            "{msg:?}: {err}"
        );
    }
}

/// A `call` as a JSON value, `args` left to the test.
fn call_with(args: serde_json::Value) -> serde_json::Value {
    json!({"op": "call", "id": 2, "target": "h:1", "function": "f", "args": args,
           "deadline_ms": null, "idempotent": false})
}

#[test]
fn args_must_be_bin() {
    for args in [json!("abc"), json!([1, 2, 3])] {
        let err = decode_client(&frame_of(&msgpack(&call_with(args.clone())))).unwrap_err();
        assert!(
            matches!(&err, FrameError::Invalid(m) if m.contains("bin")),
            "{args}: {err}"
        );
    }
    // The same call with bin args is fine.
    let mut good = msgpack(&call_with(json!(null)));
    let at = good.windows(5).position(|w| w == b"\xa4args").unwrap() + 5;
    good.splice(at..at + 1, [0xc4, 0x01, 0x90]);
    assert!(decode_client(&frame_of(&good)).is_ok());
}

#[test]
fn strings_must_be_str() {
    // {"op": "register", "id": 1, "function": bin "f"}
    #[rustfmt::skip]
    let body = [
        0x83, 0xa2, b'o', b'p', 0xa8, b'r', b'e', b'g', b'i', b's', b't', b'e', b'r',
        0xa2, b'i', b'd', 0x01,
        0xa8, b'f', b'u', b'n', b'c', b't', b'i', b'o', b'n', 0xc4, 0x01, b'f',
    ];
    let err = decode_client(&frame_of(&body)).unwrap_err();
    assert!(
        matches!(&err, FrameError::Invalid(m) if m.contains("str")),
        "{err}"
    );
}

#[test]
fn a_message_must_be_a_map() {
    // ["ping", 7]: serde alone would take it for {"op": "ping", "id": 7}.
    let body = msgpack(&json!(["ping", 7]));
    let err = decode_client(&frame_of(&body)).unwrap_err();
    assert_eq!(
        err,
        FrameError::Invalid("a message is a MessagePack map, not an array".into())
    );
    let err = decode_client(&frame_of(&msgpack(&json!("ping")))).unwrap_err();
    assert!(err.to_string().contains("not a string"), "{err}");
    // The daemon's messages too.
    assert!(decode_daemon(&msgpack(&json!(["pong", 7]))).is_err());
}

#[test]
fn a_refusal_with_a_string_that_is_no_code_reads_as_app_error() {
    let v = json!({"op": "result", "invocation": 3,
                   "outcome": {"refused": {"code": "too_busy", "message": "m"}}});
    let got = decode_client(&frame_of(&msgpack(&v))).unwrap().unwrap().0;
    assert_eq!(
        got,
        ClientMsg::Result {
            invocation: 3,
            outcome: Outcome::Refused {
                code: ErrorCode::AppError,
                message: "m".into()
            }
        }
    );
}

#[test]
fn the_session_speaks_the_highest_common_version() {
    // An app of version 1 only (no version_min), and ranges on both sides.
    assert_eq!(session_version(1, 1, 1, 2), Some(1));
    assert_eq!(session_version(1, 2, 1, 2), Some(2));
    assert_eq!(session_version(1, 3, 1, 2), Some(2));
    assert_eq!(session_version(2, 3, 1, 2), Some(2));
    assert_eq!(session_version(1, 2, 1, 3), Some(2));
    assert_eq!(session_version(3, 4, 1, 2), None);
    assert_eq!(session_version(0, 0, 1, 2), None);
    // A range upside down meets nothing.
    assert_eq!(session_version(2, 1, 1, 2), None);
}

#[test]
fn a_version_1_hello_is_what_version_1_sent() {
    // No version_min key: an app of version 1 sends exactly this, and a daemon reads it.
    let hello = ClientMsg::Hello {
        id: 1,
        version: 1,
        version_min: None,
        name: "a".into(),
    };
    let body = rmp_serde::to_vec_named(&hello).unwrap();
    assert!(!body.windows(11).any(|w| w == b"version_min"));
    assert_eq!(
        decode_client(&frame_of(&body)),
        Ok(Some((hello, body.len() + 4)))
    );
}
