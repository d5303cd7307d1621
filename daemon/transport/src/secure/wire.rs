//! The datagrams of authenticated mode, outside the AEAD.
//!
//! Every one starts with the magic "RS", the version (1) and a type byte;
//! integers are big-endian. Sizes are fixed except for a transport
//! datagram's ciphertext. The layout is documented in
//! `docs/wire-protocol.md` ("Authenticated mode").
//!
//! | type | name | layout after the 4-byte prefix | size |
//! |---|---|---|---|
//! | 1 | initiation | sender index u32, Noise IK message 1 (112), mac1 (16), mac2 (16) | 152 |
//! | 2 | response | sender index u32, receiver index u32, Noise IK message 2 (56), mac1, mac2 | 100 |
//! | 3 | cookie reply | receiver index u32, nonce (24), sealed cookie (32) | 64 |
//! | 4 | transport | receiver index u32, counter u64, ciphertext (inner datagram + 16-byte tag) | 32 + inner |

use thiserror::Error;

/// First two bytes of an authenticated-mode datagram.
pub const MAGIC: [u8; 2] = *b"RS";
/// The version of authenticated mode this build speaks.
pub const VERSION: u8 = 1;
/// Bytes of a MAC (mac1, mac2, a cookie).
pub const MAC_LEN: usize = 16;
/// Bytes of an AEAD tag.
pub const TAG_LEN: usize = 16;
/// Noise IK message 1 with a 16-byte payload: e (32), s sealed (48),
/// payload sealed (32).
pub const NOISE_INIT_LEN: usize = 112;
/// Noise IK message 2 with an 8-byte payload: e (32), payload sealed (24).
pub const NOISE_RESP_LEN: usize = 56;
/// Size of an initiation.
pub const INIT_LEN: usize = 8 + NOISE_INIT_LEN + 2 * MAC_LEN;
/// Size of a response.
pub const RESP_LEN: usize = 12 + NOISE_RESP_LEN + 2 * MAC_LEN;
/// Size of a cookie reply.
pub const COOKIE_LEN: usize = 8 + 24 + MAC_LEN + TAG_LEN;
/// Bytes before a transport datagram's ciphertext (the AEAD's associated data).
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// A transport datagram's overhead over the inner datagram.
pub const TRANSPORT_OVERHEAD: usize = TRANSPORT_HEADER_LEN + TAG_LEN;

const _: () = assert!(RESP_LEN <= INIT_LEN && COOKIE_LEN <= INIT_LEN);

const TYPE_INIT: u8 = 1;
const TYPE_RESP: u8 = 2;
const TYPE_COOKIE: u8 = 3;
const TYPE_TRANSPORT: u8 = 4;

/// Why bytes are not an authenticated-mode datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OuterError {
    /// Not "RS" (a plaintext datagram, or garbage).
    #[error("not an authenticated-mode datagram")]
    BadMagic,
    /// A version this build does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// An unknown type.
    #[error("unknown type {0}")]
    UnknownType(u8),
    /// The size does not fit the type.
    #[error("{0} bytes is the wrong size for its type")]
    BadLength(usize),
}

/// A parsed authenticated-mode datagram, borrowing from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outer<'a> {
    /// Handshake message 1.
    Init {
        /// The initiator's index for the session.
        sender: u32,
        /// The Noise message.
        noise: &'a [u8],
        /// Everything mac1 covers.
        mac1_covered: &'a [u8],
        /// mac1.
        mac1: &'a [u8; MAC_LEN],
        /// Everything mac2 covers.
        mac2_covered: &'a [u8],
        /// mac2 (zero when the initiator has no cookie).
        mac2: &'a [u8; MAC_LEN],
    },
    /// Handshake message 2.
    Resp {
        /// The responder's index for the session.
        sender: u32,
        /// The initiator's index, echoed.
        receiver: u32,
        /// The Noise message.
        noise: &'a [u8],
        /// Everything mac1 covers.
        mac1_covered: &'a [u8],
        /// mac1.
        mac1: &'a [u8; MAC_LEN],
    },
    /// A cookie for the initiator to put in mac2.
    Cookie {
        /// The initiator's index, echoed.
        receiver: u32,
        /// XChaCha20-Poly1305 nonce.
        nonce: &'a [u8; 24],
        /// The sealed cookie.
        sealed: &'a [u8],
    },
    /// Session data.
    Transport {
        /// The receiver's index for the session.
        receiver: u32,
        /// The AEAD nonce; never repeats within a session.
        counter: u64,
        /// The associated data (the 16-byte header).
        header: &'a [u8],
        /// The ciphertext with its tag.
        sealed: &'a [u8],
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn array<const N: usize>(b: &[u8]) -> &[u8; N] {
    b.try_into().expect("length checked by the caller")
}

impl<'a> Outer<'a> {
    /// Parse untrusted bytes. Checks the framing only: nothing is
    /// authenticated yet.
    pub fn parse(b: &'a [u8]) -> Result<Self, OuterError> {
        if b.len() < 4 || b[..2] != MAGIC {
            return Err(OuterError::BadMagic);
        }
        if b[2] != VERSION {
            return Err(OuterError::UnsupportedVersion(b[2]));
        }
        let len_ok = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(OuterError::BadLength(b.len()))
            }
        };
        match b[3] {
            TYPE_INIT => {
                len_ok(b.len() == INIT_LEN)?;
                let m1 = INIT_LEN - 2 * MAC_LEN;
                let m2 = INIT_LEN - MAC_LEN;
                Ok(Outer::Init {
                    sender: u32_at(b, 4),
                    noise: &b[8..m1],
                    mac1_covered: &b[..m1],
                    mac1: array(&b[m1..m2]),
                    mac2_covered: &b[..m2],
                    mac2: array(&b[m2..]),
                })
            }
            TYPE_RESP => {
                len_ok(b.len() == RESP_LEN)?;
                let m1 = RESP_LEN - 2 * MAC_LEN;
                Ok(Outer::Resp {
                    sender: u32_at(b, 4),
                    receiver: u32_at(b, 8),
                    noise: &b[12..m1],
                    mac1_covered: &b[..m1],
                    mac1: array(&b[m1..m1 + MAC_LEN]),
                })
            }
            TYPE_COOKIE => {
                len_ok(b.len() == COOKIE_LEN)?;
                Ok(Outer::Cookie {
                    receiver: u32_at(b, 4),
                    nonce: array(&b[8..32]),
                    sealed: &b[32..],
                })
            }
            TYPE_TRANSPORT => {
                len_ok(b.len() >= TRANSPORT_OVERHEAD)?;
                let mut counter = [0; 8];
                counter.copy_from_slice(&b[8..16]);
                Ok(Outer::Transport {
                    receiver: u32_at(b, 4),
                    counter: u64::from_be_bytes(counter),
                    header: &b[..TRANSPORT_HEADER_LEN],
                    sealed: &b[TRANSPORT_HEADER_LEN..],
                })
            }
            other => Err(OuterError::UnknownType(other)),
        }
    }
}

fn prefix(kind: u8) -> Vec<u8> {
    vec![MAGIC[0], MAGIC[1], VERSION, kind]
}

/// An initiation without its MACs (the caller appends mac1, then mac2).
pub(crate) fn init_body(sender: u32, noise: &[u8]) -> Vec<u8> {
    debug_assert_eq!(noise.len(), NOISE_INIT_LEN);
    let mut b = prefix(TYPE_INIT);
    b.extend_from_slice(&sender.to_be_bytes());
    b.extend_from_slice(noise);
    b
}

/// A response without its MACs.
pub(crate) fn resp_body(sender: u32, receiver: u32, noise: &[u8]) -> Vec<u8> {
    debug_assert_eq!(noise.len(), NOISE_RESP_LEN);
    let mut b = prefix(TYPE_RESP);
    b.extend_from_slice(&sender.to_be_bytes());
    b.extend_from_slice(&receiver.to_be_bytes());
    b.extend_from_slice(noise);
    b
}

/// A cookie reply.
pub(crate) fn cookie_reply(receiver: u32, nonce: &[u8; 24], sealed: &[u8]) -> Vec<u8> {
    let mut b = prefix(TYPE_COOKIE);
    b.extend_from_slice(&receiver.to_be_bytes());
    b.extend_from_slice(nonce);
    b.extend_from_slice(sealed);
    debug_assert_eq!(b.len(), COOKIE_LEN);
    b
}

/// A transport datagram's header (the AEAD's associated data).
pub(crate) fn transport_header(receiver: u32, counter: u64) -> [u8; TRANSPORT_HEADER_LEN] {
    let mut h = [0; TRANSPORT_HEADER_LEN];
    h[..4].copy_from_slice(&prefix(TYPE_TRANSPORT));
    h[4..8].copy_from_slice(&receiver.to_be_bytes());
    h[8..16].copy_from_slice(&counter.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_back_and_wrong_sizes_are_refused() {
        let mut init = init_body(7, &[1; NOISE_INIT_LEN]);
        init.extend_from_slice(&[2; 2 * MAC_LEN]);
        match Outer::parse(&init) {
            Ok(Outer::Init {
                sender,
                noise,
                mac1,
                mac2,
                ..
            }) => {
                assert_eq!(
                    (sender, noise, mac1, mac2),
                    (7, &[1; NOISE_INIT_LEN][..], &[2; 16], &[2; 16])
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Outer::parse(&init[..INIT_LEN - 1]),
            Err(OuterError::BadLength(INIT_LEN - 1))
        );
        let mut resp = resp_body(8, 9, &[3; NOISE_RESP_LEN]);
        resp.extend_from_slice(&[0; 2 * MAC_LEN]);
        assert!(matches!(
            Outer::parse(&resp),
            Ok(Outer::Resp {
                sender: 8,
                receiver: 9,
                ..
            })
        ));
        let cookie = cookie_reply(5, &[4; 24], &[6; 32]);
        assert!(matches!(
            Outer::parse(&cookie),
            Ok(Outer::Cookie { receiver: 5, .. })
        ));
        let mut t = transport_header(11, 1 << 40).to_vec();
        t.extend_from_slice(&[0; TAG_LEN]);
        assert!(matches!(
            Outer::parse(&t),
            Ok(Outer::Transport {
                receiver: 11,
                counter: 1_099_511_627_776,
                ..
            })
        ));
        assert_eq!(
            Outer::parse(&t[..TRANSPORT_OVERHEAD - 1]),
            Err(OuterError::BadLength(31))
        );
        assert_eq!(Outer::parse(b"RD\x01\x01"), Err(OuterError::BadMagic));
        assert_eq!(
            Outer::parse(b"RS\x02\x01"),
            Err(OuterError::UnsupportedVersion(2))
        );
        assert_eq!(Outer::parse(b"RS\x01\x09"), Err(OuterError::UnknownType(9)));
        assert_eq!(Outer::parse(b"R"), Err(OuterError::BadMagic));
    }
}
