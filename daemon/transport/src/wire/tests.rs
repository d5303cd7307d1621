use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}

pub(super) fn data_sample() -> Datagram<'static> {
    Datagram {
        sender_epoch: 0x0102_0304_0506_0708,
        receiver_epoch: 0x1112_1314_1516_1718,
        kind: Kind::Data,
        seq: Seq(5),
        send_floor: Seq(3),
        msg_floor: 2,
        ack: Some(AckInfo {
            ack: Seq(9),
            sack: 0b101,
            window: 256,
        }),
        ack_now: false,
        fragment: Some(Fragment {
            msg_id: 7,
            index: 1,
            count: 2,
            payload: b"hi",
        }),
        nonce: 0,
        key_id: 0,
    }
}

/// The exact bytes of a data datagram, as documented in docs/wire-protocol.md.
#[test]
fn data_datagram_literal_bytes() {
    let bytes = data_sample().to_vec();
    let expected = hex("5244 02 01 01 00 00 00
         0102030405060708 1112131415161718
         0000000000000005 0000000000000009 0000000000000005
         0000000000000003 0000000000000002
         0000000000000007 00000001 00000002 00000100 0002 0000
         XXXXXXXX 00000000 6869"
        .replace("XXXXXXXX", &format!("{:08x}", crc_of(&bytes)))
        .as_str());
    assert_eq!(bytes, expected);
    assert_eq!(Datagram::parse(&bytes), Ok(data_sample()));
}

#[test]
fn ack_datagram_literal_bytes() {
    let d = Datagram {
        sender_epoch: 1,
        receiver_epoch: 2,
        kind: Kind::Ack,
        seq: Seq(0),
        send_floor: Seq(1),
        msg_floor: 1,
        ack: Some(AckInfo {
            ack: Seq(4),
            sack: 1 << 63,
            window: 64,
        }),
        ack_now: false,
        fragment: None,
        nonce: 0,
        key_id: 0,
    };
    let bytes = d.to_vec();
    assert_eq!(bytes.len(), HEADER_LEN);
    let expected = hex(&format!(
        "5244 02 02 01 00 00 00
         0000000000000001 0000000000000002
         0000000000000000 0000000000000004 8000000000000000
         0000000000000001 0000000000000001
         0000000000000000 00000000 00000000 00000040 0000 0000
         {:08x} 00000000",
        crc_of(&bytes)
    ));
    assert_eq!(bytes, expected);
    assert_eq!(Datagram::parse(&bytes), Ok(d));
}

#[test]
fn probe_datagram_literal_bytes() {
    let d = Datagram {
        sender_epoch: 0xAB,
        receiver_epoch: 0,
        kind: Kind::Probe,
        seq: Seq(0),
        send_floor: Seq(1),
        msg_floor: 1,
        ack: None,
        ack_now: true,
        fragment: None,
        nonce: 0,
        key_id: 0,
    };
    let bytes = d.to_vec();
    let expected = hex(&format!(
        "5244 02 03 02 00 00 00
         00000000000000ab 0000000000000000
         0000000000000000 0000000000000000 0000000000000000
         0000000000000001 0000000000000001
         0000000000000000 00000000 00000000 00000000 0000 0000
         {:08x} 00000000",
        crc_of(&bytes)
    ));
    assert_eq!(bytes, expected);
    assert_eq!(Datagram::parse(&bytes), Ok(d));
}

/// A challenge probe (§7.1 of the wire document): the challenge rides in the
/// `msg_id` field; no acknowledgement state, no floors. 96 bytes, like any
/// datagram without a payload.
#[test]
fn challenge_probe_and_echo_literal_bytes() {
    let probe = Datagram {
        sender_epoch: 0xAB,
        receiver_epoch: 0xCD,
        kind: Kind::Probe,
        seq: Seq(0),
        send_floor: Seq(0),
        msg_floor: 0,
        ack: None,
        ack_now: true,
        fragment: None,
        nonce: 0x0123_4567_89ab_cdef,
        key_id: 0,
    };
    let bytes = probe.to_vec();
    assert_eq!(bytes.len(), HEADER_LEN);
    let expected = hex(&format!(
        "5244 02 03 02 00 00 00
         00000000000000ab 00000000000000cd
         0000000000000000 0000000000000000 0000000000000000
         0000000000000000 0000000000000000
         0123456789abcdef 00000000 00000000 00000000 0000 0000
         {:08x} 00000000",
        crc_of(&bytes)
    ));
    assert_eq!(bytes, expected);
    assert_eq!(Datagram::parse(&bytes), Ok(probe.clone()));
    // The answer echoes it in the same field of an Ack.
    let echo = Datagram {
        sender_epoch: 0xCD,
        receiver_epoch: 0xAB,
        kind: Kind::Ack,
        ack_now: false,
        ack: Some(AckInfo {
            ack: Seq(1),
            sack: 0,
            window: 64,
        }),
        send_floor: Seq(1),
        msg_floor: 1,
        ..probe
    };
    let bytes = echo.to_vec();
    assert_eq!(be_u64(&bytes, OFF_MSG_ID), 0x0123_4567_89ab_cdef);
    assert_eq!(Datagram::parse(&bytes), Ok(echo));
    // The other fragment fields stay reserved on Ack and Probe.
    let mut b = bytes;
    put_u32(&mut b, OFF_FRAG_COUNT, 1);
    reseal(&mut b);
    assert_eq!(
        Datagram::parse(&b),
        Err(DecodeError::UnexpectedData(Kind::Ack))
    );
}

#[test]
fn crc_of_is_castagnoli_over_the_zeroed_field_whatever_the_payload() {
    for payload_len in [0usize, 1, 7, 8, 9, 64, 1000] {
        let mut bytes: Vec<u8> = (0..HEADER_LEN + payload_len)
            .map(|i| (i * 7 + 3) as u8)
            .collect();
        let of_stored = crc_of(&bytes);
        bytes[OFF_CRC..OFF_CRC + 4].fill(0);
        assert_eq!(
            of_stored,
            crc32c::crc32c(&bytes),
            "payload of {payload_len}"
        );
        assert_eq!(crc_of(&bytes), of_stored, "the field's bytes do not count");
    }
}

#[test]
fn crc_is_castagnoli_over_zeroed_field() {
    // Independent check of the documented rule: CRC32C over the datagram
    // with bytes 88..92 zeroed equals the stored value.
    let mut bytes = data_sample().to_vec();
    let stored = u32::from_be_bytes([bytes[88], bytes[89], bytes[90], bytes[91]]);
    bytes[88..92].fill(0);
    assert_eq!(crc32c::crc32c(&bytes), stored);
}

#[test]
fn rejects_each_kind_of_bad_input() {
    let good = data_sample().to_vec();
    assert_eq!(Datagram::parse(&[]), Err(DecodeError::TooShort(0)));
    assert_eq!(
        Datagram::parse(&good[..HEADER_LEN - 1]),
        Err(DecodeError::TooShort(HEADER_LEN - 1))
    );
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(Datagram::parse(&b), Err(DecodeError::BadMagic));
    let mut b = good.clone();
    b[2] = 9;
    assert_eq!(Datagram::parse(&b), Err(DecodeError::UnsupportedVersion(9)));
    // Any single bit flip past the version byte is caught by the CRC.
    for byte in 3..good.len() {
        for bit in 0..8 {
            let mut b = good.clone();
            b[byte] ^= 1 << bit;
            assert!(Datagram::parse(&b).is_err(), "flip {byte}.{bit} accepted");
        }
    }
    // Truncation is caught (by the CRC or the length field).
    for len in HEADER_LEN..good.len() {
        assert!(Datagram::parse(&good[..len]).is_err());
    }
    // A length field that claims more than is present, with a valid CRC.
    let mut b = good.clone();
    put_u16(&mut b, OFF_PAYLOAD_LEN, 60_000);
    reseal(&mut b);
    assert_eq!(
        Datagram::parse(&b),
        Err(DecodeError::LengthMismatch {
            claimed: 60_000,
            actual: 2
        })
    );
    let mut b = good.clone();
    put_u32(&mut b, OFF_FRAG_INDEX, 2);
    reseal(&mut b);
    assert_eq!(
        Datagram::parse(&b),
        Err(DecodeError::BadFragment { index: 2, count: 2 })
    );
    let mut b = good.clone();
    b[OFF_KIND] = 77;
    reseal(&mut b);
    assert_eq!(Datagram::parse(&b), Err(DecodeError::UnknownKind(77)));
    let mut b = good.clone();
    b[OFF_KEY_ID] = 1;
    reseal(&mut b);
    assert_eq!(Datagram::parse(&b), Err(DecodeError::AuthUnsupported(1)));
    let mut b = good.clone();
    put_u64(&mut b, OFF_SENDER_EPOCH, 0);
    reseal(&mut b);
    assert_eq!(Datagram::parse(&b), Err(DecodeError::ZeroEpoch));
    let mut b = good;
    b[OFF_FLAGS] |= 0x80;
    reseal(&mut b);
    assert_eq!(Datagram::parse(&b), Err(DecodeError::UnknownFlags(0x81)));
}

pub(super) fn reseal(b: &mut [u8]) {
    let c = crc_of(b);
    put_u32(b, OFF_CRC, c);
}

pub(super) fn arb_datagram() -> impl Strategy<Value = (Datagram<'static>, Vec<u8>)> {
    (
        1..u64::MAX,
        any::<u64>(),
        0..3u8,
        1..u64::MAX,
        any::<Option<(u64, u64, u32)>>(),
        any::<bool>(),
        (any::<u64>(), any::<u64>(), any::<u64>()),
        (1..u32::MAX, proptest::collection::vec(any::<u8>(), 0..2000)),
    )
        .prop_map(
            |(se, re, k, seq, ack, ack_now, (sf, mf, mid), (count, payload))| {
                let kind = [Kind::Data, Kind::Ack, Kind::Probe][usize::from(k)];
                let d = Datagram {
                    sender_epoch: se,
                    receiver_epoch: re,
                    kind,
                    seq: Seq(if kind == Kind::Data { seq } else { 0 }),
                    send_floor: Seq(sf),
                    msg_floor: mf,
                    ack: ack.map(|(a, s, w)| AckInfo {
                        ack: Seq(a),
                        sack: s,
                        window: w,
                    }),
                    ack_now,
                    fragment: None,
                    // The msg_id field: the fragment's message on Data, the
                    // challenge or its echo otherwise.
                    nonce: if kind == Kind::Data { 0 } else { mid },
                    key_id: 0,
                };
                let fragment = (kind == Kind::Data).then_some(Fragment {
                    msg_id: mid,
                    index: count - 1,
                    count,
                    payload: &[],
                });
                let payload = if kind == Kind::Data {
                    payload
                } else {
                    Vec::new()
                };
                (Datagram { fragment, ..d }, payload)
            },
        )
}

proptest! {
    #[test]
    fn round_trip((d, payload) in arb_datagram()) {
        let d = Datagram {
            fragment: d.fragment.map(|f| Fragment { payload: &payload[..], ..f }),
            ..d
        };
        let bytes = d.to_vec();
        prop_assert_eq!(bytes.len(), d.encoded_len());
        let back = Datagram::parse(&bytes).expect("round trip");
        prop_assert_eq!(back, d);
    }

    /// Total on near-datagrams, not only on noise: random bytes pass the magic
    /// check once in 65,536 inputs, so most inputs here get the right magic and
    /// version and then a correct CRC, and parsing reaches every later check.
    #[test]
    fn parse_is_total(
        (mut bytes, shape) in (proptest::collection::vec(any::<u8>(), 0..300), 0u8..10)
    ) {
        if shape < 9 && bytes.len() > OFF_VERSION {
            bytes[..2].copy_from_slice(&MAGIC);
            bytes[OFF_VERSION] = VERSION;
        }
        if shape < 7 && bytes.len() >= HEADER_LEN {
            // The checksum covers the extent the header declares, when the
            // bytes hold it (a shorter one fails on the length first).
            let declared = HEADER_LEN
                + usize::from(u16::from_be_bytes([bytes[OFF_PAYLOAD_LEN], bytes[OFF_PAYLOAD_LEN + 1]]))
                + usize::from(bytes[OFF_TAG_LEN]);
            let end = if declared <= bytes.len() { declared } else { bytes.len() };
            let crc = crc_of(&bytes[..end]);
            bytes[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        }
        let parsed = Datagram::parse(&bytes);
        if shape < 7 && bytes.len() >= HEADER_LEN {
            prop_assert!(!matches!(
                parsed,
                Err(DecodeError::BadMagic
                    | DecodeError::UnsupportedVersion(_)
                    | DecodeError::BadChecksum)
            ), "a near-datagram failed a check it passes: {:?}", parsed);
        }
        if let Ok(d) = parsed {
            prop_assert_eq!(d.to_vec(), bytes);
        }
    }
}
