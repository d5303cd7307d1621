use proptest::prelude::*;

use super::*;
use crate::ipc::testutil::{decode_client, frame_of, round_trip};
use crate::ipc::{
    check_values, decode_frame, encode_frame, FrameError, ServingTrace, TraceAttempt,
    CLIENT_MSG_VALUES_MAX, FRAME_MAX_DEFAULT,
};

// --- literal bytes -------------------------------------------------------------------

#[test]
fn ping_literal_bytes() {
    let frame = encode_frame(&ClientMsg::Ping { id: 7 });
    #[rustfmt::skip]
    let expected = [
        0x00, 0x00, 0x00, 0x0d,             // length 13
        0x82,                               // map of 2
        0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g',
        0xa2, b'i', b'd', 0x07,
    ];
    assert_eq!(frame, expected);
    assert_eq!(
        decode_client(&expected),
        Ok(Some((ClientMsg::Ping { id: 7 }, expected.len())))
    );
}

#[test]
fn hello_literal_bytes() {
    let frame = encode_frame(&ClientMsg::Hello {
        id: 1,
        version: 1,
        version_min: None,
        name: "a".into(),
    });
    #[rustfmt::skip]
    let body = [
        0x84,
        0xa2, b'o', b'p', 0xa5, b'h', b'e', b'l', b'l', b'o',
        0xa2, b'i', b'd', 0x01,
        0xa7, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x01,
        0xa4, b'n', b'a', b'm', b'e', 0xa1, b'a',
    ];
    assert_eq!(frame, frame_of(&body));
}

#[test]
fn call_literal_bytes_args_are_bin_and_none_is_nil() {
    let frame = encode_frame(&ClientMsg::Call {
        id: 2,
        target: "h:1".into(),
        function: "f".into(),
        args: vec![0x90].into(),
        deadline_ms: None,
        idempotent: true,
        trace: false,
    });
    #[rustfmt::skip]
    let body = [
        0x87,
        0xa2, b'o', b'p', 0xa4, b'c', b'a', b'l', b'l',
        0xa2, b'i', b'd', 0x02,
        0xa6, b't', b'a', b'r', b'g', b'e', b't', 0xa3, b'h', b':', b'1',
        0xa8, b'f', b'u', b'n', b'c', b't', b'i', b'o', b'n', 0xa1, b'f',
        0xa4, b'a', b'r', b'g', b's', 0xc4, 0x01, 0x90,          // bin8 of 1 byte
        0xab, b'd', b'e', b'a', b'd', b'l', b'i', b'n', b'e', b'_', b'm', b's', 0xc0, // nil
        0xaa, b'i', b'd', b'e', b'm', b'p', b'o', b't', b'e', b'n', b't', 0xc3,
    ];
    assert_eq!(frame, frame_of(&body));
}

#[test]
fn result_literal_bytes_outcome_is_a_one_key_map() {
    let ok = encode_frame(&ClientMsg::Result {
        invocation: 3,
        outcome: Outcome::Ok(vec![0xc0]),
    });
    #[rustfmt::skip]
    let ok_body = [
        0x83,
        0xa2, b'o', b'p', 0xa6, b'r', b'e', b's', b'u', b'l', b't',
        0xaa, b'i', b'n', b'v', b'o', b'c', b'a', b't', b'i', b'o', b'n', 0x03,
        0xa7, b'o', b'u', b't', b'c', b'o', b'm', b'e',
        0x81, 0xa2, b'o', b'k', 0xc4, 0x01, 0xc0,
    ];
    assert_eq!(ok, frame_of(&ok_body));

    let err = encode_frame(&Outcome::Error("no".into()));
    #[rustfmt::skip]
    let err_body = [0x81, 0xa5, b'e', b'r', b'r', b'o', b'r', 0xa2, b'n', b'o'];
    assert_eq!(err, frame_of(&err_body));
}

#[test]
fn failed_literal_bytes_code_is_a_string() {
    let frame = encode_frame(&DaemonMsg::Failed {
        id: 9,
        code: ErrorCode::NameTaken,
        message: "".into(),
        trace: None,
    });
    #[rustfmt::skip]
    let body = [
        0x84,
        0xa2, b'o', b'p', 0xa6, b'f', b'a', b'i', b'l', b'e', b'd',
        0xa2, b'i', b'd', 0x09,
        0xa4, b'c', b'o', b'd', b'e',
        0xaa, b'n', b'a', b'm', b'e', b'_', b't', b'a', b'k', b'e', b'n',
        0xa7, b'm', b'e', b's', b's', b'a', b'g', b'e', 0xa0,
    ];
    assert_eq!(frame, frame_of(&body));
}

#[test]
fn pong_and_done_literal_bytes() {
    #[rustfmt::skip]
    let pong = [0x82, 0xa2, b'o', b'p', 0xa4, b'p', b'o', b'n', b'g', 0xa2, b'i', b'd', 0x05];
    assert_eq!(encode_frame(&DaemonMsg::Pong { id: 5 }), frame_of(&pong));
    #[rustfmt::skip]
    let done = [0x82, 0xa2, b'o', b'p', 0xa4, b'd', b'o', b'n', b'e', 0xa2, b'i', b'd', 0x05];
    assert_eq!(encode_frame(&DaemonMsg::Done { id: 5 }), frame_of(&done));
}

#[test]
fn call_ok_literal_bytes() {
    let frame = encode_frame(&DaemonMsg::CallOk {
        id: 1,
        data: vec![1, 2],
        trace: None,
    });
    #[rustfmt::skip]
    let body = [
        0x83,
        0xa2, b'o', b'p', 0xa7, b'c', b'a', b'l', b'l', b'_', b'o', b'k',
        0xa2, b'i', b'd', 0x01,
        0xa4, b'd', b'a', b't', b'a', 0xc4, 0x02, 0x01, 0x02,
    ];
    assert_eq!(frame, frame_of(&body));
}

/// The hex examples of `docs/ipc-protocol.md` §10, byte for byte.
#[test]
fn protocol_doc_examples_match() {
    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }
    let hello = ClientMsg::Hello {
        id: 1,
        version: 1,
        version_min: None,
        name: "demo".into(),
    };
    assert_eq!(
        encode_frame(&hello),
        hex(
            "00 00 00 21 84 a2 6f 70 a5 68 65 6c 6c 6f a2 69 64 01 a7 76 65 72 73 69 6f 6e 01 \
             a4 6e 61 6d 65 a4 64 65 6d 6f"
        )
    );
    let hello_ok = DaemonMsg::HelloOk {
        id: 1,
        version: 1,
        daemon: "rpcd 0.1.0".into(),
        listen: "127.0.0.1:7000".into(),
        epoch: 0x1122_3344_5566_7788,
        limits: None,
    };
    assert_eq!(
        encode_frame(&hello_ok),
        hex(
            "00 00 00 51 86 a2 6f 70 a8 68 65 6c 6c 6f 5f 6f 6b a2 69 64 01 \
             a7 76 65 72 73 69 6f 6e 01 a6 64 61 65 6d 6f 6e aa 72 70 63 64 20 30 2e 31 2e 30 \
             a6 6c 69 73 74 65 6e ae 31 32 37 2e 30 2e 30 2e 31 3a 37 30 30 30 \
             a5 65 70 6f 63 68 cf 11 22 33 44 55 66 77 88"
        )
    );
    let call = ClientMsg::Call {
        id: 2,
        target: "127.0.0.1:7001".into(),
        function: "rpcd.echo".into(),
        args: vec![0x92, 0x01, 0x02].into(),
        deadline_ms: Some(500),
        idempotent: false,
        trace: false,
    };
    assert_eq!(
        encode_frame(&call),
        hex("00 00 00 5b 87 a2 6f 70 a4 63 61 6c 6c a2 69 64 02 \
             a6 74 61 72 67 65 74 ae 31 32 37 2e 30 2e 30 2e 31 3a 37 30 30 31 \
             a8 66 75 6e 63 74 69 6f 6e a9 72 70 63 64 2e 65 63 68 6f \
             a4 61 72 67 73 c4 03 92 01 02 \
             ab 64 65 61 64 6c 69 6e 65 5f 6d 73 cd 01 f4 \
             aa 69 64 65 6d 70 6f 74 65 6e 74 c2")
    );
    let call_ok = DaemonMsg::CallOk {
        id: 2,
        data: vec![0x92, 0x01, 0x02],
        trace: None,
    };
    assert_eq!(
        encode_frame(&call_ok),
        hex(
            "00 00 00 1a 83 a2 6f 70 a7 63 61 6c 6c 5f 6f 6b a2 69 64 02 \
             a4 64 61 74 61 c4 03 92 01 02"
        )
    );
    let failed = DaemonMsg::Failed {
        id: 2,
        code: ErrorCode::UnknownFunction,
        message: "no f".into(),
        trace: None,
    };
    assert_eq!(
        encode_frame(&failed),
        hex("00 00 00 32 84 a2 6f 70 a6 66 61 69 6c 65 64 a2 69 64 02 \
             a4 63 6f 64 65 b0 75 6e 6b 6e 6f 77 6e 5f 66 75 6e 63 74 69 6f 6e \
             a7 6d 65 73 73 61 67 65 a4 6e 6f 20 66")
    );
    let result = ClientMsg::Result {
        invocation: 9,
        outcome: Outcome::Ok(vec![0xc0]),
    };
    assert_eq!(
        encode_frame(&result),
        hex("00 00 00 26 83 a2 6f 70 a6 72 65 73 75 6c 74 \
             aa 69 6e 76 6f 63 61 74 69 6f 6e 09 \
             a7 6f 75 74 63 6f 6d 65 81 a2 6f 6b c4 01 c0")
    );
}

#[test]
fn invoke_literal_bytes_peer_follows_caller() {
    let frame = encode_frame(&DaemonMsg::Invoke {
        invocation: 3,
        function: "f".into(),
        args: vec![].into(),
        caller: "h:1".into(),
        peer: String::new(),
        deadline_ms: 9,
        credentials: None,
    });
    #[rustfmt::skip]
    let body = [
        0x87,
        0xa2, b'o', b'p', 0xa6, b'i', b'n', b'v', b'o', b'k', b'e',
        0xaa, b'i', b'n', b'v', b'o', b'c', b'a', b't', b'i', b'o', b'n', 0x03,
        0xa8, b'f', b'u', b'n', b'c', b't', b'i', b'o', b'n', 0xa1, b'f',
        0xa4, b'a', b'r', b'g', b's', 0xc4, 0x00,                 // bin8 of 0 bytes
        0xa6, b'c', b'a', b'l', b'l', b'e', b'r', 0xa3, b'h', b':', b'1',
        0xa4, b'p', b'e', b'e', b'r', 0xa0,                       // "": not authenticated
        0xab, b'd', b'e', b'a', b'd', b'l', b'i', b'n', b'e', b'_', b'm', b's', 0x09,
    ];
    assert_eq!(frame, frame_of(&body));
}

/// `peer` is a required field like the others: an `invoke` without it (as a daemon
/// from before the field would send) is a protocol violation, and so is one with a
/// `peer` that is not a string.
#[test]
fn invoke_without_a_string_peer_is_refused() {
    #[rustfmt::skip]
    let without = [
        0x86,
        0xa2, b'o', b'p', 0xa6, b'i', b'n', b'v', b'o', b'k', b'e',
        0xaa, b'i', b'n', b'v', b'o', b'c', b'a', b't', b'i', b'o', b'n', 0x03,
        0xa8, b'f', b'u', b'n', b'c', b't', b'i', b'o', b'n', 0xa1, b'f',
        0xa4, b'a', b'r', b'g', b's', 0xc4, 0x00,
        0xa6, b'c', b'a', b'l', b'l', b'e', b'r', 0xa3, b'h', b':', b'1',
        0xab, b'd', b'e', b'a', b'd', b'l', b'i', b'n', b'e', b'_', b'm', b's', 0x09,
    ];
    let got = decode_frame::<DaemonMsg>(&frame_of(&without), FRAME_MAX_DEFAULT);
    assert!(
        matches!(&got, Err(FrameError::Invalid(m)) if m.contains("peer")),
        "{got:?}"
    );
    let mut nil_peer = without.to_vec();
    nil_peer[0] = 0x87;
    nil_peer.extend_from_slice(&[0xa4, b'p', b'e', b'e', b'r', 0xc0]);
    let got = decode_frame::<DaemonMsg>(&frame_of(&nil_peer), FRAME_MAX_DEFAULT);
    assert!(matches!(got, Err(FrameError::Invalid(_))), "{got:?}");
}

/// The daemon→app frames are read without a value bound (the app trusts its daemon), but
/// an `invoke` stays small and fixed: 7 keys and their values plus the map, whatever the
/// sizes of its strings and arguments.
#[test]
fn invoke_holds_fifteen_values() {
    let body = rmp_serde::to_vec_named(&DaemonMsg::Invoke {
        invocation: u64::MAX,
        function: "f".repeat(256),
        args: vec![0x90; 70_000].into(),
        caller: "[::1]:65535".into(),
        peer: "p".repeat(300),
        deadline_ms: u64::MAX,
        credentials: None,
    })
    .expect("encodes");
    assert!(check_values(&body, 15).is_ok());
    assert!(check_values(&body, 14).is_err());
    const _: () = assert!(15 <= CLIENT_MSG_VALUES_MAX);
}

#[test]
fn cancel_literal_bytes() {
    let frame = encode_frame(&DaemonMsg::Cancel { invocation: 9 });
    #[rustfmt::skip]
    let body = [
        0x82,
        0xa2, b'o', b'p', 0xa6, b'c', b'a', b'n', b'c', b'e', b'l',
        0xaa, b'i', b'n', b'v', b'o', b'c', b'a', b't', b'i', b'o', b'n', 0x09,
    ];
    assert_eq!(frame, frame_of(&body));
}

#[test]
fn op_names_match_the_wire() {
    let msgs = [
        DaemonMsg::Done { id: 1 },
        DaemonMsg::Pong { id: 1 },
        DaemonMsg::Cancel { invocation: 1 },
        DaemonMsg::Fatal {
            code: ErrorCode::ProtocolError,
            message: String::new(),
        },
    ];
    for msg in msgs {
        // The encoder writes `op` first: map marker, "op", then the name as a fixstr.
        let frame = encode_frame(&msg);
        let op = msg.op().as_bytes();
        assert_eq!(frame[5..8], [0xa2, b'o', b'p']);
        assert_eq!(usize::from(frame[8] & 0x1f), op.len());
        assert_eq!(&frame[9..9 + op.len()], op);
    }
}

/// The `cancel` example of `docs/ipc-protocol.md` §10, byte for byte.
#[test]
fn protocol_doc_cancel_example_matches() {
    #[rustfmt::skip]
    let expected = [
        0x00, 0x00, 0x00, 0x17, 0x82,
        0xa2, 0x6f, 0x70, 0xa6, 0x63, 0x61, 0x6e, 0x63, 0x65, 0x6c,
        0xaa, 0x69, 0x6e, 0x76, 0x6f, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x09,
    ];
    assert_eq!(encode_frame(&DaemonMsg::Cancel { invocation: 9 }), expected);
    assert_eq!(expected.len(), 27);
}

/// The `invoke` example of `docs/ipc-protocol.md` §10, byte for byte.
#[test]
fn protocol_doc_invoke_example_matches() {
    let invoke = DaemonMsg::Invoke {
        invocation: 9,
        function: "kv.get".into(),
        args: vec![0x91, 0xa1, 0x6b].into(),
        caller: "10.0.0.2:7400".into(),
        peer: "b".into(),
        deadline_ms: 500,
        credentials: None,
    };
    #[rustfmt::skip]
    let expected = [
        0x00, 0x00, 0x00, 0x5c, 0x87,
        0xa2, 0x6f, 0x70, 0xa6, 0x69, 0x6e, 0x76, 0x6f, 0x6b, 0x65,
        0xaa, 0x69, 0x6e, 0x76, 0x6f, 0x63, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x09,
        0xa8, 0x66, 0x75, 0x6e, 0x63, 0x74, 0x69, 0x6f, 0x6e, 0xa6, 0x6b, 0x76, 0x2e, 0x67,
        0x65, 0x74,
        0xa4, 0x61, 0x72, 0x67, 0x73, 0xc4, 0x03, 0x91, 0xa1, 0x6b,
        0xa6, 0x63, 0x61, 0x6c, 0x6c, 0x65, 0x72, 0xad, 0x31, 0x30, 0x2e, 0x30, 0x2e, 0x30,
        0x2e, 0x32, 0x3a, 0x37, 0x34, 0x30, 0x30,
        0xa4, 0x70, 0x65, 0x65, 0x72, 0xa1, 0x62,
        0xab, 0x64, 0x65, 0x61, 0x64, 0x6c, 0x69, 0x6e, 0x65, 0x5f, 0x6d, 0x73, 0xcd, 0x01,
        0xf4,
    ];
    assert_eq!(encode_frame(&invoke), expected);
    assert_eq!(expected.len(), 96);
}

// --- round trips -----------------------------------------------------------------------

#[test]
fn every_client_msg_round_trips() {
    for msg in client_msgs() {
        round_trip(msg);
    }
}

/// One of each app→daemon message, and a few variations.
pub(super) fn client_msgs() -> Vec<ClientMsg> {
    vec![
        ClientMsg::Hello {
            id: 1,
            version: PROTOCOL_VERSION,
            version_min: Some(PROTOCOL_VERSION_MIN),
            name: "app".into(),
        },
        ClientMsg::Hello {
            id: 1,
            version: 1,
            version_min: None,
            name: "old".into(),
        },
        ClientMsg::Register {
            id: 2,
            function: "svc.f".into(),
            idempotent: None,
            deadline_ms: None,
            signature: None,
        },
        ClientMsg::Register {
            id: 2,
            function: "svc.g".into(),
            idempotent: Some(true),
            deadline_ms: Some(2000),
            signature: Some(vec![0x80]),
        },
        ClientMsg::Unregister {
            id: 3,
            function: "svc.f".into(),
        },
        ClientMsg::Call {
            id: u64::MAX,
            target: "host:1".into(),
            function: "f".into(),
            args: vec![].into(),
            deadline_ms: Some(1500),
            idempotent: false,
            trace: false,
        },
        ClientMsg::Result {
            invocation: 4,
            outcome: Outcome::Ok(vec![1, 2, 3]),
        },
        ClientMsg::Result {
            invocation: 5,
            outcome: Outcome::Error("boom".into()),
        },
        ClientMsg::Result {
            invocation: 6,
            outcome: Outcome::Refused {
                code: ErrorCode::Overloaded,
                message: "queue full".into(),
            },
        },
        ClientMsg::List { id: 6 },
        ClientMsg::Stats { id: 7 },
        ClientMsg::Ping { id: 8 },
        ClientMsg::CancelCall { id: 9 },
        ClientMsg::Call {
            id: 9,
            target: "kv".into(),
            function: "kv.get".into(),
            args: vec![0x90].into(),
            deadline_ms: None,
            idempotent: true,
            trace: true,
        },
        ClientMsg::Monitor {
            id: 10,
            function: None,
            peer: None,
        },
        ClientMsg::Monitor {
            id: 11,
            function: Some("kv.*".into()),
            peer: Some("10.0.0.2:7400".into()),
        },
    ]
}

#[test]
fn every_daemon_msg_round_trips() {
    for msg in daemon_msgs() {
        round_trip(msg);
    }
}

/// One of each daemon→app message, and a few variations.
pub(super) fn daemon_msgs() -> Vec<DaemonMsg> {
    let mut msgs = vec![
        DaemonMsg::HelloOk {
            id: 1,
            version: PROTOCOL_VERSION,
            daemon: "rpcd 0.1.0".into(),
            listen: "0.0.0.0:7000".into(),
            epoch: u64::MAX,
            limits: Some(Limits {
                frame_max: 1 << 24,
                payload_max: 1 << 20,
                name_max: 256,
                values_max: 64,
                nesting_max: 32,
                calls_max: 4096,
                invocations_max: 1024,
                functions_max: 4096,
                deadline_default_ms: 10_000,
                deadline_max_ms: u64::MAX,
            }),
        },
        DaemonMsg::HelloOk {
            id: 1,
            version: 1,
            daemon: "rpcd 0.1.0".into(),
            listen: "0.0.0.0:7000".into(),
            epoch: 1,
            limits: None,
        },
        DaemonMsg::Done { id: 2 },
        DaemonMsg::CallOk {
            id: 3,
            data: vec![0; 300],
            trace: None,
        },
        DaemonMsg::List {
            id: 5,
            functions: vec!["rpcd.echo".into(), "rpcd.ping".into()],
        },
        DaemonMsg::Stats {
            id: 6,
            stats: crate::ipc::stats::tests::sample_stats(),
        },
        DaemonMsg::Stats {
            id: 6,
            stats: Stats::default(),
        },
        DaemonMsg::Pong { id: 7 },
        DaemonMsg::Invoke {
            invocation: 8,
            function: "f".into(),
            args: vec![9; 70_000].into(),
            caller: "10.0.0.1:7000".into(),
            peer: String::new(),
            deadline_ms: 250,
            credentials: None,
        },
        DaemonMsg::Invoke {
            invocation: 9,
            function: "f".into(),
            args: vec![].into(),
            caller: LOCAL_CALLER.into(),
            peer: LOCAL_CALLER.into(),
            deadline_ms: 0,
            credentials: None,
        },
        DaemonMsg::Invoke {
            invocation: u64::MAX,
            function: "svc.f".into(),
            args: vec![1].into(),
            caller: "[2001:db8::1]:7000".into(),
            peer: "db-1".into(),
            deadline_ms: u64::MAX,
            credentials: None,
        },
        DaemonMsg::Cancel {
            invocation: u64::MAX,
        },
    ];
    let mut trace = CallTrace::new("kv");
    trace.addresses = vec!["10.0.0.2:7400".into(), "10.0.0.3:7400".into()];
    let attempt = TraceAttempt {
        address: "10.0.0.2:7400".into(),
        datagrams: 3,
        retransmissions: 2,
        rtt_us: vec![120],
        outcome: "peer_unreachable".into(),
        ..Default::default()
    };
    trace.attempts = vec![attempt.clone(), attempt];
    trace.serving = Some(ServingTrace::new(1, 2, 3));
    trace.total_us = 9;
    msgs.push(DaemonMsg::CallOk {
        id: 12,
        data: vec![0xc0],
        trace: Some(Box::new(trace.clone())),
    });
    msgs.push(DaemonMsg::Failed {
        id: 13,
        code: ErrorCode::PeerUnreachable,
        message: "gone".into(),
        trace: Some(Box::new(trace)),
    });
    let event = MonitorEvent {
        kind: "end".into(),
        code: "ok".into(),
        duration_us: 5,
        ..Default::default()
    };
    msgs.push(DaemonMsg::Event { id: 10, event });
    for code in ErrorCode::ALL {
        msgs.push(DaemonMsg::Failed {
            id: 4,
            code,
            message: code.to_string(),
            trace: None,
        });
        msgs.push(DaemonMsg::Fatal {
            code,
            message: "bye".into(),
        });
    }
    msgs
}

proptest! {
    #[test]
    fn call_round_trips(
        id: u64,
        target in "[a-z0-9.:]{0,40}",
        function in "\\PC{0,20}",
        args in proptest::collection::vec(any::<u8>(), 0..5000),
        deadline_ms: Option<u64>,
        idempotent: bool,
    ) {
        let msg = ClientMsg::Call { id, target, function, args: args.into(), deadline_ms, idempotent, trace: false, };
        let frame = encode_frame(&msg);
        prop_assert_eq!(decode_client(&frame), Ok(Some((msg, frame.len()))));
    }

    #[test]
    fn invoke_round_trips(
        invocation: u64,
        function in "\\PC{0,20}",
        args in proptest::collection::vec(any::<u8>(), 0..5000),
        caller in "[a-z0-9.:]{0,40}",
        peer in "\\PC{0,40}",
        deadline_ms: u64,
    ) {
        let msg = DaemonMsg::Invoke { invocation, function, args: args.into(), caller, peer, deadline_ms, credentials: None };
        let frame = encode_frame(&msg);
        let decoded = decode_frame::<DaemonMsg>(&frame, FRAME_MAX_DEFAULT);
        prop_assert_eq!(decoded, Ok(Some((msg, frame.len()))));
    }
}
