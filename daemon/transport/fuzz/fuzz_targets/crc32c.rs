//! CRC32C (Castagnoli, reflected polynomial 0x82F63B78), written here from
//! the definition so the targets check the wire rule independently of the
//! crate under test. Shared by the targets through `#[path]`.

const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Offset and size of the CRC field in the header.
pub const CRC_AT: std::ops::Range<usize> = 88..92;

pub fn crc32c(bytes: &[u8]) -> u32 {
    !bytes
        .iter()
        .fold(!0u32, |c, &b| (c >> 8) ^ TABLE[usize::from((c as u8) ^ b)])
}

/// Write the CRC the wire rule asks for: over the whole datagram with the
/// CRC field zeroed. No-op on anything shorter than the header.
pub fn reseal(bytes: &mut [u8]) {
    if bytes.len() >= rpcd_transport::wire::HEADER_LEN {
        bytes[CRC_AT].fill(0);
        let crc = crc32c(bytes);
        bytes[CRC_AT].copy_from_slice(&crc.to_be_bytes());
    }
}

#[allow(dead_code)]
pub fn check_vector() {
    // RFC 3720 B.4: 32 bytes of zeros.
    assert_eq!(crc32c(&[0; 32]), 0x8A91_36AA);
}
