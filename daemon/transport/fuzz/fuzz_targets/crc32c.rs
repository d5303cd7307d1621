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

/// Offset of the payload length field in a datagram header.
const PAYLOAD_LEN_AT: usize = 84;
/// Offset of the tag length byte.
const TAG_LEN_AT: usize = 6;

/// Shape arbitrary bytes as a bundle (written from the documented layout,
/// independently of the crate): the bundle header's magic and version, and
/// for each datagram that has a full header left, its magic and version, a
/// payload length cut to the bytes left (tag length zero) and a correct CRC;
/// then the count of datagrams found (at most 255). Only those fields
/// change. Returns how many datagrams were shaped.
#[allow(dead_code)]
pub fn reseal_bundle(bytes: &mut [u8]) -> usize {
    use rpcd_transport::wire::{HEADER_LEN, MAGIC, VERSION};
    if bytes.len() < 4 {
        return 0;
    }
    bytes[..2].copy_from_slice(&MAGIC);
    bytes[2] = VERSION;
    let mut at = 4;
    let mut n = 0usize;
    while bytes.len() - at >= HEADER_LEN && n < 255 {
        let d = &mut bytes[at..];
        d[..2].copy_from_slice(&MAGIC);
        d[2] = VERSION;
        d[TAG_LEN_AT] = 0;
        let left = d.len() - HEADER_LEN;
        let claimed = usize::from(u16::from_be_bytes([d[PAYLOAD_LEN_AT], d[PAYLOAD_LEN_AT + 1]]));
        let len = claimed.min(left);
        // `len` <= `claimed`, a u16.
        d[PAYLOAD_LEN_AT..PAYLOAD_LEN_AT + 2].copy_from_slice(&(len as u16).to_be_bytes());
        reseal(&mut d[..HEADER_LEN + len]);
        at += HEADER_LEN + len;
        n += 1;
    }
    // At most 255 by the loop bound.
    bytes[3] = n as u8;
    n
}
