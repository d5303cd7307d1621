//! Wire decoder: `Datagram::parse` is total on arbitrary bytes, and what it
//! accepts round-trips exactly: emit(parse(b)) == b and parse(emit(d)) == d.
//! The byte-for-byte half holds because v1 has one encoding per datagram
//! (reserved bytes and unused fields must be zero).
//!
//! Random bytes almost never carry the magic, the version and a matching
//! CRC32C, so each input is tried twice: as it is (the header checks reject
//! it) and structure-aware, with the magic and version written in and a
//! correct CRC patched over it (computed independently, per the documented
//! rule), which lets the fuzzer reach every check behind the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcd_transport::wire::{Datagram, DecodeError};

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

fuzz_target!(|data: &[u8]| {
    let as_is = round_trip(data);
    let mut sealed = data.to_vec();
    if sealed.len() >= rpcd_transport::wire::HEADER_LEN {
        sealed[..2].copy_from_slice(&rpcd_transport::wire::MAGIC);
        sealed[2] = rpcd_transport::wire::VERSION;
    }
    crc::reseal(&mut sealed);
    let resealed = round_trip(&sealed);
    if sealed != data {
        // Only the header checks' fields changed (magic, version, CRC), so the
        // untouched input must have failed on one of them.
        assert!(
            matches!(
                as_is,
                Err(DecodeError::BadChecksum
                    | DecodeError::TooShort(_)
                    | DecodeError::BadMagic
                    | DecodeError::UnsupportedVersion(_))
            ),
            "wrong CRC accepted or misreported: {as_is:?}"
        );
        // The patched input passes those checks: whatever it fails on is later.
        assert!(
            !matches!(
                resealed,
                Err(DecodeError::BadChecksum
                    | DecodeError::BadMagic
                    | DecodeError::UnsupportedVersion(_))
            ),
            "a sealed datagram failed a header check: {resealed:?}"
        );
    } else {
        assert_eq!(as_is, resealed);
    }
});
