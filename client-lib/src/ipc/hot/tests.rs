//! The hand-written decoders agree with serde: they take the frames our encoder writes, and
//! whatever they take from any map, serde reads the same; everything else is serde's.

use proptest::prelude::*;

use super::*;
use crate::ipc::{
    decode_frame, encode_frame, Credentials, ErrorCode, FrameError, FRAME_MAX_DEFAULT, LOCAL_CALLER,
};

/// The body of `msg` as the encoder writes it.
fn body_of<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(msg).expect("encodes")
}

/// One MessagePack value, written by hand so that a test can build what no encoder would.
#[derive(Debug, Clone)]
enum V {
    Str(String),
    Bin(Vec<u8>),
    Uint(u64),
    Int(i64),
    Bool(bool),
    Nil,
    Map(Vec<(String, V)>),
    /// A key or value written as a `bin` holding these bytes where a `str` is expected.
    BinStr(String),
}

fn write(out: &mut Vec<u8>, v: &V) {
    use rmp::encode as e;
    match v {
        V::Str(s) => e::write_str(out, s).expect("vec"),
        V::Bin(b) => e::write_bin(out, b).expect("vec"),
        V::Uint(n) => {
            e::write_uint(out, *n).expect("vec");
        }
        V::Int(n) => {
            e::write_sint(out, *n).expect("vec");
        }
        V::Bool(b) => e::write_bool(out, *b).expect("vec"),
        V::Nil => e::write_nil(out).expect("vec"),
        V::Map(entries) => {
            e::write_map_len(out, entries.len() as u32).expect("vec");
            for (k, v) in entries {
                e::write_str(out, k).expect("vec");
                write(out, v);
            }
        }
        V::BinStr(s) => e::write_bin(out, s.as_bytes()).expect("vec"),
    }
}

fn map(entries: &[(&str, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    write(
        &mut out,
        &V::Map(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        ),
    );
    out
}

/// Whatever the hand-written decoder takes, serde reads identically.
fn agrees<T>(body: &[u8]) -> Option<T>
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + 'static,
{
    let hot = decode::<T>(body);
    if let Some(msg) = &hot {
        let serde: Result<T, _> = rmp_serde::from_slice(body);
        assert_eq!(
            serde.as_ref().ok(),
            Some(msg),
            "serde disagrees on {body:02x?}"
        );
    }
    hot
}

fn call_entries() -> Vec<(&'static str, V)> {
    vec![
        ("op", V::Str("call".into())),
        ("id", V::Uint(7)),
        ("target", V::Str("127.0.0.1:7000".into())),
        ("function", V::Str("kv.get".into())),
        ("args", V::Bin(vec![0x91, 0xa1, b'k'])),
        ("deadline_ms", V::Nil),
        ("idempotent", V::Bool(false)),
    ]
}

#[test]
fn the_frames_of_a_call_are_read_by_hand() {
    let client = [
        ClientMsg::Call {
            id: u64::MAX,
            target: "b".into(),
            function: "kv.get".into(),
            args: vec![1; 300].into(),
            deadline_ms: Some(70_000),
            idempotent: true,
            trace: true,
        },
        ClientMsg::Call {
            id: 0,
            target: String::new(),
            function: "é".into(),
            args: vec![].into(),
            deadline_ms: None,
            idempotent: false,
            trace: false,
        },
        ClientMsg::Result {
            invocation: 3,
            outcome: Outcome::Ok(vec![0xc0; 70_000]),
        },
        ClientMsg::Result {
            invocation: 4,
            outcome: Outcome::Error("no such key".into()),
        },
    ];
    for msg in client {
        assert_eq!(agrees::<ClientMsg>(&body_of(&msg)), Some(msg));
    }
    let daemon = [
        DaemonMsg::CallOk {
            id: 9,
            data: vec![0xc0],
            trace: None,
        },
        DaemonMsg::Failed {
            id: 10,
            code: ErrorCode::DeadlineExceeded,
            message: "too late".into(),
            trace: None,
        },
        DaemonMsg::Invoke {
            invocation: 11,
            function: "kv.get".into(),
            args: vec![1, 2].into(),
            caller: "127.0.0.1:1".into(),
            peer: String::new(),
            deadline_ms: 5000,
            credentials: None,
        },
        DaemonMsg::Cancel { invocation: 12 },
    ];
    for msg in daemon {
        assert_eq!(agrees::<DaemonMsg>(&body_of(&msg)), Some(msg));
    }
}

#[test]
fn the_frame_decoder_takes_the_same_messages_either_way() {
    let msg = ClientMsg::Call {
        id: 1,
        target: "t".into(),
        function: "f".into(),
        args: vec![1].into(),
        deadline_ms: Some(5),
        idempotent: true,
        trace: false,
    };
    let frame = encode_frame(&msg);
    assert_eq!(
        decode_frame::<ClientMsg>(&frame, FRAME_MAX_DEFAULT),
        Ok(Some((msg, frame.len())))
    );
}

#[test]
fn other_messages_and_other_types_are_left_to_serde() {
    let rare = [
        ClientMsg::Ping { id: 1 },
        ClientMsg::CancelCall { id: 2 },
        ClientMsg::Result {
            invocation: 1,
            outcome: Outcome::Refused {
                code: ErrorCode::Overloaded,
                message: "busy".into(),
            },
        },
    ];
    for msg in rare {
        assert_eq!(decode::<ClientMsg>(&body_of(&msg)), None, "{msg:?}");
    }
    let traced = DaemonMsg::CallOk {
        id: 1,
        data: vec![],
        trace: Some(Box::default()),
    };
    assert_eq!(decode::<DaemonMsg>(&body_of(&traced)), None);
    assert_eq!(
        decode::<DaemonMsg>(&body_of(&DaemonMsg::Pong { id: 1 })),
        None
    );
    // A type with no hand-written decoder.
    assert_eq!(decode::<u64>(&[0x01]), None);
}

#[test]
fn a_frame_the_hand_written_path_does_not_take_gets_serdes_error() {
    let mut unknown_key = call_entries();
    unknown_key.push(("colour", V::Str("red".into())));
    let mut duplicate = call_entries();
    duplicate.push(("id", V::Uint(8)));
    let mut missing = call_entries();
    missing.retain(|(k, _)| *k != "idempotent");
    let mut str_args = call_entries();
    str_args[4].1 = V::Str("abc".into());
    let mut bin_target = call_entries();
    bin_target[2].1 = V::BinStr("127.0.0.1:7000".into());
    let mut negative_id = call_entries();
    negative_id[1].1 = V::Int(-1);
    for entries in [
        unknown_key,
        duplicate,
        missing,
        str_args,
        bin_target,
        negative_id,
    ] {
        let body = map(&entries);
        assert_eq!(decode::<ClientMsg>(&body), None, "{entries:?}");
        let frame = crate::ipc::testutil::frame_of(&body);
        let err = decode_frame::<ClientMsg>(&frame, FRAME_MAX_DEFAULT);
        assert!(matches!(err, Err(FrameError::Invalid(_))), "{err:?}");
    }
}

#[test]
fn key_order_and_integer_encodings_do_not_matter() {
    let mut entries = call_entries();
    entries.reverse();
    // A positive id in a signed encoding, as some encoders write it.
    entries[5].1 = V::Int(7);
    let mut body = map(&entries);
    let at = body
        .windows(3)
        .position(|w| w == [0xa2, b'i', b'd'])
        .expect("the id key")
        + 3;
    body.splice(at..at + 1, [0xd3, 0, 0, 0, 0, 0, 0, 0, 7]);
    let msg = agrees::<ClientMsg>(&body).expect("taken by hand");
    assert!(matches!(msg, ClientMsg::Call { id: 7, .. }));
    // A map16 header and a str8 key are read as well as the compact forms.
    let mut long = vec![0xde, 0x00, 0x02];
    long.extend_from_slice(&[0xd9, 2, b'o', b'p', 0xa6]);
    long.extend_from_slice(b"cancel");
    long.extend_from_slice(&[0xaa]);
    long.extend_from_slice(b"invocation");
    long.push(0x05);
    assert_eq!(
        agrees::<DaemonMsg>(&long),
        Some(DaemonMsg::Cancel { invocation: 5 })
    );
}

#[test]
fn a_truncated_or_overlong_body_is_left_to_serde() {
    let body = body_of(&DaemonMsg::Cancel { invocation: 5 });
    for cut in 0..body.len() {
        assert_eq!(decode::<DaemonMsg>(&body[..cut]), None, "cut at {cut}");
    }
    let mut longer = body.clone();
    longer.push(0xc0);
    assert_eq!(decode::<DaemonMsg>(&longer), None);
}

/// A value of any of the types the fields have, or of none of them.
fn any_value() -> impl Strategy<Value = V> {
    prop_oneof![
        "[a-z_.:0-9]{0,12}".prop_map(V::Str),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(V::Bin),
        any::<u64>().prop_map(V::Uint),
        any::<i64>().prop_map(V::Int),
        any::<bool>().prop_map(V::Bool),
        Just(V::Nil),
        "[a-z]{0,6}".prop_map(V::BinStr),
        (
            "(ok|error|refused|x)",
            prop::collection::vec(any::<u8>(), 0..4)
        )
            .prop_map(|(k, b)| V::Map(vec![(k, V::Bin(b))])),
        "[a-z ]{0,6}".prop_map(|s| V::Map(vec![("error".into(), V::Str(s))])),
    ]
}

/// A key of any of the messages, or another.
fn any_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "op",
        "id",
        "target",
        "function",
        "args",
        "deadline_ms",
        "idempotent",
        "trace",
        "invocation",
        "outcome",
        "data",
        "code",
        "message",
        "caller",
        "peer",
        "other",
    ])
    .prop_map(str::to_owned)
}

/// The entries of a valid message of each kind the hand-written decoders read.
fn valid_messages() -> Vec<Vec<(String, V)>> {
    let own = |entries: Vec<(&str, V)>| {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Vec<_>>()
    };
    let op = |s: &str| ("op", V::Str(s.into()));
    vec![
        own(call_entries()),
        own(vec![
            op("result"),
            ("invocation", V::Uint(3)),
            ("outcome", V::Map(vec![("ok".into(), V::Bin(vec![1]))])),
        ]),
        own(vec![
            op("call_ok"),
            ("id", V::Uint(1)),
            ("data", V::Bin(vec![2])),
        ]),
        own(vec![
            op("failed"),
            ("id", V::Uint(1)),
            ("code", V::Str("overloaded".into())),
            ("message", V::Str("m".into())),
        ]),
        own(vec![
            op("invoke"),
            ("invocation", V::Uint(4)),
            ("function", V::Str("f".into())),
            ("args", V::Bin(vec![])),
            ("caller", V::Str("local".into())),
            ("peer", V::Str("local".into())),
            ("deadline_ms", V::Uint(9)),
        ]),
        own(vec![op("cancel"), ("invocation", V::Uint(5))]),
    ]
}

/// One change to a message's entries.
#[derive(Debug, Clone)]
enum Edit {
    /// Replace the value at this index (modulo the length).
    Value(usize, V),
    /// Repeat the entry at this index with this value.
    Repeat(usize, V),
    /// Drop the entry at this index.
    Drop(usize),
    /// Add this key with this value.
    Add(String, V),
    /// Another `op`.
    Op(String),
}

fn any_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any_value()).prop_map(|(i, v)| Edit::Value(i, v)),
        (any::<usize>(), any_value()).prop_map(|(i, v)| Edit::Repeat(i, v)),
        any::<usize>().prop_map(Edit::Drop),
        (any_key(), any_value()).prop_map(|(k, v)| Edit::Add(k, v)),
        prop::sample::select(vec![
            "call", "result", "call_ok", "failed", "invoke", "cancel", "ping", "",
        ])
        .prop_map(|s| Edit::Op(s.to_owned())),
    ]
}

fn apply(entries: &mut Vec<(String, V)>, edit: Edit) {
    let n = entries.len();
    match edit {
        Edit::Value(i, v) if n > 0 => entries[i % n].1 = v,
        Edit::Repeat(i, v) if n > 0 => {
            let key = entries[i % n].0.clone();
            entries.push((key, v));
        }
        Edit::Drop(i) if n > 0 => {
            entries.remove(i % n);
        }
        Edit::Add(k, v) => entries.push((k, v)),
        Edit::Op(op) => entries.push(("op".into(), V::Str(op))),
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Valid messages of each kind, changed a little (a value of another type, a key
    /// repeated, dropped or added, another op) and shuffled: whatever is taken by hand,
    /// serde reads the same.
    #[test]
    fn whatever_is_read_by_hand_serde_reads_the_same(
        kind in 0usize..6,
        edits in prop::collection::vec(any_edit(), 0..3),
        rotate in 0usize..8,
    ) {
        let mut entries = valid_messages().swap_remove(kind);
        for edit in edits {
            apply(&mut entries, edit);
        }
        // Rotated, so that any key may come first, `op` included.
        let len = entries.len().max(1);
        entries.rotate_left(rotate % len);
        let mut body = Vec::new();
        write(&mut body, &V::Map(entries));
        agrees::<ClientMsg>(&body);
        agrees::<DaemonMsg>(&body);
    }

    /// Every call and result an app may send is read by hand.
    #[test]
    fn every_call_and_result_is_read_by_hand(
        id in any::<u64>(),
        target in ".{0,20}",
        function in ".{0,20}",
        args in prop::collection::vec(any::<u8>(), 0..300),
        deadline_ms in any::<Option<u64>>(),
        idempotent in any::<bool>(),
        trace in any::<bool>(),
        error in any::<Option<String>>(),
    ) {
        let call = ClientMsg::Call {
            id, target, function, args: args.clone().into(), deadline_ms, idempotent, trace,
        };
        prop_assert_eq!(agrees::<ClientMsg>(&body_of(&call)), Some(call));
        let outcome = error.map_or(Outcome::Ok(args), Outcome::Error);
        let result = ClientMsg::Result { invocation: id, outcome };
        prop_assert_eq!(agrees::<ClientMsg>(&body_of(&result)), Some(result));
    }
}

/// The hand-written encoder of a daemon frame, or `None` when it leaves the frame to serde.
fn by_hand(msg: &DaemonMsg) -> Option<Vec<u8>> {
    // Appends after what is there, and takes nothing back of it.
    let mut out = vec![0xee];
    encode_daemon_msg(&mut out, msg).then(|| {
        assert_eq!(out[0], 0xee);
        out.split_off(1)
    })
}

/// An `invoke` written around its arguments ([`encode_invoke_around`]): the part before
/// them, the arguments, the part after them, put together; `None` for any other frame.
fn around(msg: &DaemonMsg) -> Option<Vec<u8>> {
    let DaemonMsg::Invoke {
        invocation,
        function,
        args,
        caller,
        peer,
        deadline_ms,
        credentials: None,
    } = msg
    else {
        return None;
    };
    let fields = InvokeFields {
        invocation: *invocation,
        function,
        caller,
        peer,
        deadline_ms: *deadline_ms,
    };
    let mut out = vec![0xee];
    let at = encode_invoke_around(&mut out, &fields, args.len())?;
    assert_eq!(out[0], 0xee);
    let mut whole = out[1..at].to_vec();
    whole.extend_from_slice(args);
    whole.extend_from_slice(&out[at..]);
    Some(whole)
}

#[test]
fn the_frames_of_a_call_written_by_hand_are_what_serde_writes_at_every_width() {
    let ints = [
        0u64,
        0x7f,
        0x80,
        0xff,
        0x100,
        0xffff,
        0x1_0000,
        0xffff_ffff,
        1 << 32,
        u64::MAX,
    ];
    let lens = [0usize, 31, 32, 255, 256, 65_535, 65_536];
    for &n in &ints {
        for &len in &lens {
            let text = "x".repeat(len);
            let msgs = [
                DaemonMsg::Invoke {
                    invocation: n,
                    function: text.clone(),
                    args: vec![7; len].into(),
                    caller: "127.0.0.1:9".into(),
                    peer: text.clone(),
                    deadline_ms: n ^ 0x80,
                    credentials: None,
                },
                DaemonMsg::CallOk {
                    id: n,
                    data: vec![1; len],
                    trace: None,
                },
                DaemonMsg::Failed {
                    id: n,
                    code: ErrorCode::AppError,
                    message: text,
                    trace: None,
                },
            ];
            for msg in &msgs {
                assert_eq!(by_hand(msg).as_ref(), Some(&body_of(msg)), "{msg:?}");
            }
            // Written around its arguments, the same bytes.
            assert_eq!(around(&msgs[0]), Some(body_of(&msgs[0])), "{:?}", msgs[0]);
        }
    }
}

/// The widths of the arguments' `bin` header, up to the largest (a 4-byte length): the part
/// before the arguments ends with the header of their length, and the frame put together
/// is serde's bytes.
#[test]
fn an_invoke_written_around_its_arguments_is_what_serde_writes() {
    for len in [0usize, 1, 0xff, 0x100, 0xffff, 0x1_0000, 1 << 20] {
        let msg = DaemonMsg::Invoke {
            invocation: 3,
            function: "bulk.digest".into(),
            args: (0..len).map(|i| i as u8).collect(),
            caller: "127.0.0.1:9".into(),
            peer: "b".into(),
            deadline_ms: 30_000,
            credentials: None,
        };
        let body = body_of(&msg);
        assert_eq!(around(&msg).as_ref(), Some(&body), "args of {len} bytes");
        assert_eq!(by_hand(&msg).as_ref(), Some(&body), "args of {len} bytes");
    }
    // Arguments longer than MessagePack can say: nothing written.
    let fields = InvokeFields {
        invocation: 1,
        function: "f",
        caller: "",
        peer: "",
        deadline_ms: 0,
    };
    let mut out = vec![1, 2];
    let too_long = usize::try_from(u64::from(u32::MAX) + 1).unwrap_or(usize::MAX);
    assert_eq!(encode_invoke_around(&mut out, &fields, too_long), None);
    assert_eq!(out, [1, 2], "as it was");
}

#[test]
fn other_daemon_frames_are_left_to_serde() {
    let traced = DaemonMsg::CallOk {
        id: 1,
        data: vec![],
        trace: Some(Box::default()),
    };
    let with_credentials = DaemonMsg::Invoke {
        invocation: 1,
        function: "f".into(),
        args: vec![].into(),
        caller: LOCAL_CALLER.into(),
        peer: LOCAL_CALLER.into(),
        deadline_ms: 5,
        credentials: Some(Credentials::new(2, 3, 1)),
    };
    for msg in [traced, with_credentials, DaemonMsg::Pong { id: 4 }] {
        assert_eq!(by_hand(&msg), None, "{msg:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Any `invoke`, `call_ok` or `failed` the hand-written encoder writes is serde's bytes.
    #[test]
    fn hand_written_daemon_frames_match_serde(
        id in any::<u64>(),
        text in ".{0,40}",
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        deadline_ms in any::<u64>(),
    ) {
        let msgs = [
            DaemonMsg::Invoke {
                invocation: id,
                function: text.clone(),
                args: bytes.clone().into(),
                caller: text.clone(),
                peer: String::new(),
                deadline_ms,
                credentials: None,
            },
            DaemonMsg::CallOk { id, data: bytes, trace: None },
            DaemonMsg::Failed { id, code: ErrorCode::Overloaded, message: text, trace: None },
        ];
        for msg in &msgs {
            prop_assert_eq!(by_hand(msg), Some(body_of(msg)));
        }
        prop_assert_eq!(around(&msgs[0]), Some(body_of(&msgs[0])));
    }
}
