use super::*;
use crate::seq::Seq;
use crate::wire::tests::{arb_datagram, data_sample, reseal};
use crate::wire::{AckInfo, Fragment, OFF_CRC, OFF_VERSION};
use proptest::prelude::*;

fn ack_sample() -> Datagram<'static> {
    Datagram {
        sender_epoch: 0x1112_1314_1516_1718,
        receiver_epoch: 0x0102_0304_0506_0708,
        kind: Kind::Ack,
        seq: Seq(0),
        send_floor: Seq(1),
        msg_floor: 1,
        ack: Some(AckInfo {
            ack: Seq(6),
            sack: 0,
            window: 1024,
        }),
        ack_now: false,
        fragment: None,
        nonce: 0,
        key_id: 0,
    }
}

fn probe_sample() -> Datagram<'static> {
    Datagram {
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
    }
}

fn three() -> Bundle<'static> {
    Bundle {
        datagrams: vec![data_sample(), ack_sample(), probe_sample()],
    }
}

/// The layout of docs/wire-protocol.md: a 4-byte header, then the encoded
/// datagrams back to back, nothing between or after them.
#[test]
fn bundle_literal_bytes_and_fuzz_seeds() {
    let b = three();
    let bytes = b.to_vec();
    let mut expected = b"RD\x02\x03".to_vec();
    for d in &b.datagrams {
        expected.extend_from_slice(&d.to_vec());
    }
    assert_eq!(bytes, expected);
    assert_eq!(bytes.len(), BUNDLE_HEADER_LEN + 3 * HEADER_LEN + 2);
    assert_eq!(Bundle::parse(&bytes), Ok(b));
    // The datagram fuzz target's seeds are bundles of these samples:
    // `RPCD_WRITE_SEEDS=1` rewrites them after a format change.
    let seeds = [
        ("data", vec![data_sample()]),
        ("ack", vec![ack_sample()]),
        ("challenge-probe", vec![probe_sample()]),
        ("bundle", three().datagrams),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/datagram");
    for (name, datagrams) in seeds {
        let bytes = Bundle { datagrams }.to_vec();
        let path = dir.join(name);
        if std::env::var_os("RPCD_WRITE_SEEDS").is_some() {
            std::fs::write(&path, &bytes).expect("write seed");
        }
        let seed = std::fs::read(&path).expect("seed file");
        assert_eq!(seed, bytes, "seeds/datagram/{name} is stale");
    }
}

#[test]
fn rejects_each_kind_of_bad_bundle() {
    let good = three().to_vec();
    let first = BUNDLE_HEADER_LEN + data_sample().encoded_len();
    let second = first + HEADER_LEN;
    assert_eq!(Bundle::parse(&[]), Err(DecodeError::TooShort(0)));
    assert_eq!(Bundle::parse(b"RD\x02"), Err(DecodeError::TooShort(3)));
    let mut b = good.clone();
    b[1] = b'S';
    assert_eq!(Bundle::parse(&b), Err(DecodeError::BadMagic));
    // Version 1 (one datagram per UDP datagram, no bundle header) is
    // refused by its version byte, never misread.
    let v1 = {
        let mut d = data_sample().to_vec();
        d[OFF_VERSION] = 1;
        reseal(&mut d);
        d
    };
    assert_eq!(Bundle::parse(&v1), Err(DecodeError::UnsupportedVersion(1)));
    // A header alone, or a zero count.
    assert_eq!(
        Bundle::parse(b"RD\x02\x00"),
        Err(DecodeError::BadCount {
            claimed: 0,
            found: 0
        })
    );
    assert_eq!(
        Bundle::parse(b"RD\x02\x01"),
        Err(DecodeError::BadCount {
            claimed: 1,
            found: 0
        })
    );
    // Truncated at a datagram boundary: the count gives it away.
    assert_eq!(
        Bundle::parse(&good[..second]),
        Err(DecodeError::BadCount {
            claimed: 3,
            found: 2
        })
    );
    // A count short of the datagrams present.
    let mut b = good.clone();
    b[3] = 2;
    assert_eq!(
        Bundle::parse(&b),
        Err(DecodeError::BadCount {
            claimed: 2,
            found: 3
        })
    );
    // Truncated inside a datagram, or trailing bytes: a length error.
    assert_eq!(
        Bundle::parse(&good[..good.len() - 1]),
        Err(DecodeError::TooShort(HEADER_LEN - 1))
    );
    assert!(matches!(
        Bundle::parse(&good[..first - 1]),
        Err(DecodeError::LengthMismatch { .. })
    ));
    let mut b = good.clone();
    b.extend_from_slice(&[0; 10]);
    b[3] = 4;
    assert_eq!(Bundle::parse(&b), Err(DecodeError::TooShort(10)));
    // One bad datagram rejects all of them, wherever it is.
    for at in [BUNDLE_HEADER_LEN, first, second] {
        let mut b = good.clone();
        b[at + OFF_CRC] ^= 1;
        assert_eq!(Bundle::parse(&b), Err(DecodeError::BadChecksum), "at {at}");
        let mut b = good.clone();
        b[at + OFF_VERSION] = 1;
        assert_eq!(
            Bundle::parse(&b),
            Err(DecodeError::UnsupportedVersion(1)),
            "at {at}"
        );
    }
    // Any single bit flip anywhere is caught.
    for byte in 0..good.len() {
        for bit in 0..8 {
            let mut b = good.clone();
            b[byte] ^= 1 << bit;
            assert!(Bundle::parse(&b).is_err(), "flip {byte}.{bit} accepted");
        }
    }
    // Truncation anywhere is caught.
    for len in 0..good.len() {
        assert!(Bundle::parse(&good[..len]).is_err(), "truncated to {len}");
    }
}

#[test]
fn builder_keeps_the_limit_but_never_refuses_a_lone_datagram() {
    let d = data_sample().to_vec(); // 98 bytes
    let mut b = BundleBuilder::new(BUNDLE_HEADER_LEN + 2 * d.len());
    assert!(b.fits(10_000), "the first datagram always fits");
    b.push(&d);
    assert!(b.fits(d.len()));
    assert!(!b.fits(d.len() + 1));
    b.push(&d);
    assert!(!b.fits(1));
    assert_eq!(b.count(), 2);
    let bytes = b.finish();
    assert_eq!(bytes.len(), BUNDLE_HEADER_LEN + 2 * d.len());
    assert_eq!(Bundle::parse(&bytes).map(|b| b.datagrams.len()), Ok(2));
    // The count byte caps a bundle however large the limit.
    let ack = ack_sample().to_vec();
    let mut b = BundleBuilder::new(usize::MAX);
    while b.fits(ack.len()) {
        b.push(&ack);
    }
    assert_eq!(b.count(), BUNDLE_COUNT_MAX);
    let bytes = b.finish();
    assert_eq!(bytes[3], 255);
    assert!(is_ack_only(&bytes));
}

#[test]
fn ack_only_means_every_datagram_is_an_ack() {
    let acks = Bundle {
        datagrams: vec![ack_sample(), ack_sample()],
    };
    assert!(is_ack_only(&acks.to_vec()));
    let mixed = Bundle {
        datagrams: vec![ack_sample(), data_sample()],
    };
    assert!(!is_ack_only(&mixed.to_vec()));
    let probe = Bundle {
        datagrams: vec![probe_sample()],
    };
    assert!(!is_ack_only(&probe.to_vec()));
    assert!(!is_ack_only(b""));
    assert!(!is_ack_only(&acks.to_vec()[..BUNDLE_HEADER_LEN + 10]));
}

proptest! {
    /// What is built parses back to the same datagrams, in order.
    #[test]
    fn round_trip(ds in proptest::collection::vec(arb_datagram(), 1..6)) {
        let datagrams: Vec<Datagram<'_>> = ds
            .iter()
            .map(|(d, payload)| Datagram {
                fragment: d.fragment.as_ref().map(|f| Fragment {
                    payload,
                    ..f.clone()
                }),
                ..d.clone()
            })
            .collect();
        let b = Bundle { datagrams };
        let bytes = b.to_vec();
        prop_assert_eq!(Bundle::parse(&bytes), Ok(b));
    }

    /// Total on arbitrary bytes behind a valid header.
    #[test]
    fn parse_is_total(count in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut b = vec![b'R', b'D', VERSION, count];
        b.extend_from_slice(&body);
        let _ = Bundle::parse(&b);
        let _ = is_ack_only(&b);
    }
}
