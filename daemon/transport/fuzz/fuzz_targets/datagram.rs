//! Wire decoder: `Bundle::parse` (what every UDP datagram is) and
//! `Datagram::parse` are total on arbitrary bytes, and what they accept
//! round-trips exactly: emit(parse(b)) == b and parse(emit(d)) == d. The
//! byte-for-byte half holds because v2 has one encoding per datagram and per
//! bundle (reserved bytes and unused fields must be zero, the count is exact).
//!
//! Random bytes almost never carry the magic, the version and a matching
//! CRC32C, so each input is tried as it is (the header checks reject it) and
//! structure-aware: shaped as a bundle (`crc32c.rs`: magic and version
//! written in, each datagram's length cut to what is left and a correct CRC
//! patched over it, the count set, per the documented rule, computed
//! independently), which lets the fuzzer reach every check behind the
//! checksums, in every datagram of a bundle. The input is also tried as one
//! bare datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcd_transport::wire::{Bundle, Datagram, DecodeError};

#[path = "crc32c.rs"]
mod crc;

fn round_trip(data: &[u8]) -> Result<(), DecodeError> {
    let d = Datagram::parse(data)?;
    let bytes = d.to_vec();
    assert_eq!(bytes.len(), d.encoded_len());
    assert_eq!(
        bytes.as_slice(),
        data,
        "re-emitted bytes differ from the input"
    );
    let back = Datagram::parse(&bytes).expect("a re-emitted datagram parses");
    assert_eq!(back, d);
    Ok(())
}

fn bundle_round_trip(data: &[u8]) -> Result<usize, DecodeError> {
    let b = Bundle::parse(data)?;
    let bytes = b.to_vec();
    assert_eq!(bytes.as_slice(), data, "re-emitted bundle differs from the input");
    let back = Bundle::parse(&bytes).expect("a re-emitted bundle parses");
    assert_eq!(back, b);
    // Every datagram of it parses alone, the same.
    for d in &b.datagrams {
        assert_eq!(Datagram::parse(&d.to_vec()).as_ref(), Ok(d));
    }
    Ok(b.datagrams.len())
}

fuzz_target!(|data: &[u8]| {
    let _ = round_trip(data);
    let as_is = bundle_round_trip(data);
    let mut shaped = data.to_vec();
    let n = crc::reseal_bundle(&mut shaped);
    let reshaped = bundle_round_trip(&shaped);
    if shaped != data {
        // Shaping is the identity on a valid bundle: the input was not one.
        assert!(as_is.is_err(), "shaping changed a valid bundle");
    } else {
        assert_eq!(as_is, reshaped);
    }
    // The shaped input passes those checks: whatever it fails on is later
    // (or the bytes left after its datagrams were too few for a header).
    assert!(
        !matches!(
            reshaped,
            Err(DecodeError::BadChecksum
                | DecodeError::BadMagic
                | DecodeError::UnsupportedVersion(_)
                | DecodeError::LengthMismatch { .. })
        ),
        "a shaped bundle failed a header check: {reshaped:?}"
    );
    if let Ok(count) = reshaped {
        assert_eq!(count, n);
    }
    // A bare datagram shaped alone parses as one or fails past the checksum.
    let mut one = data.to_vec();
    if one.len() >= rpcd_transport::wire::HEADER_LEN {
        one[..2].copy_from_slice(&rpcd_transport::wire::MAGIC);
        one[2] = rpcd_transport::wire::VERSION;
        one[6] = 0;
        let len = (one.len() - rpcd_transport::wire::HEADER_LEN).min(usize::from(u16::MAX));
        one.truncate(rpcd_transport::wire::HEADER_LEN + len);
        one[84..86].copy_from_slice(&(len as u16).to_be_bytes());
        crc::reseal(&mut one);
        assert!(
            !matches!(
                round_trip(&one),
                Err(DecodeError::BadChecksum
                    | DecodeError::BadMagic
                    | DecodeError::UnsupportedVersion(_)
                    | DecodeError::LengthMismatch { .. })
            ),
            "a shaped datagram failed a header check"
        );
    }
});
