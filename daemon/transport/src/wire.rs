//! Datagram wire format: one fixed header, an optional payload, an optional
//! (reserved) authentication tag. Several such channel datagrams for one
//! peer travel in one UDP datagram as a [`bundle`].
//!
//! `Datagram::parse` turns untrusted bytes into a validated [`Datagram`] or a
//! typed [`DecodeError`]; nothing downstream re-checks. `Datagram::emit`
//! writes the exact inverse. The layout is documented field by field in
//! `docs/wire-protocol.md`; the offsets below are the single source of truth.
//!
//! All integers are big-endian. The CRC32C covers the whole datagram with the
//! CRC field itself set to zero.

use crate::seq::Seq;
use thiserror::Error;

pub mod bundle;

pub use bundle::{Bundle, BundleBuilder, BUNDLE_COUNT_MAX, BUNDLE_HEADER_LEN};

/// First two bytes of every datagram: ASCII "RD".
pub const MAGIC: [u8; 2] = *b"RD";
/// The only wire version this build speaks: 2, the bundle (version 1 sent
/// one channel datagram per UDP datagram; see `docs/wire-protocol.md`).
pub const VERSION: u8 = 2;
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 96;
/// Largest payload a single datagram may carry, whatever the configuration.
/// Keeps a datagram (header + payload + tag) below the 65,507-byte UDP limit.
pub const PAYLOAD_MAX: usize = 65_000;
/// Largest authentication tag the header can announce (reserved for security).
pub const TAG_MAX: usize = 32;

// Field offsets. `const` assertions below keep them consistent.
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 2;
const OFF_KIND: usize = 3;
const OFF_FLAGS: usize = 4;
const OFF_KEY_ID: usize = 5;
const OFF_TAG_LEN: usize = 6;
const OFF_RESERVED: usize = 7;
const OFF_SENDER_EPOCH: usize = 8;
const OFF_RECEIVER_EPOCH: usize = 16;
const OFF_SEQ: usize = 24;
const OFF_ACK: usize = 32;
const OFF_SACK: usize = 40;
const OFF_SEND_FLOOR: usize = 48;
const OFF_MSG_FLOOR: usize = 56;
const OFF_MSG_ID: usize = 64;
const OFF_FRAG_INDEX: usize = 72;
const OFF_FRAG_COUNT: usize = 76;
const OFF_WINDOW: usize = 80;
const OFF_PAYLOAD_LEN: usize = 84;
const OFF_RESERVED2: usize = 86;
const OFF_CRC: usize = 88;
const OFF_RESERVED3: usize = 92;
const _: () = assert!(OFF_RESERVED3 + 4 == HEADER_LEN);
const _: () = assert!(HEADER_LEN + PAYLOAD_MAX + TAG_MAX <= 65_507);

/// Flag bit: the `ack`/`sack`/`window` fields carry acknowledgement state.
pub const FLAG_ACK: u8 = 0b0000_0001;
/// Flag bit: the receiver should acknowledge this datagram at once rather
/// than after its delayed-ack timer (set on probes and on the last datagram
/// the sender can send before its window closes).
pub const FLAG_ACK_NOW: u8 = 0b0000_0010;
const FLAGS_KNOWN: u8 = FLAG_ACK | FLAG_ACK_NOW;

/// What a datagram is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Carries one fragment of a message, plus acknowledgement state.
    Data,
    /// Carries only acknowledgement state, and may echo a probe's
    /// challenge ([`Datagram::nonce`]).
    Ack,
    /// Asks the receiver for an immediate acknowledgement: the handshake that
    /// learns a peer's epoch, keepalives and zero-window probes; with a
    /// challenge ([`Datagram::nonce`]), the confirmation of a peer's new epoch.
    Probe,
}

impl Kind {
    pub(crate) fn code(self) -> u8 {
        match self {
            Kind::Data => 1,
            Kind::Ack => 2,
            Kind::Probe => 3,
        }
    }

    fn from_code(code: u8) -> Result<Self, DecodeError> {
        match code {
            1 => Ok(Kind::Data),
            2 => Ok(Kind::Ack),
            3 => Ok(Kind::Probe),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

/// Acknowledgement state carried by any datagram with [`FLAG_ACK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckInfo {
    /// Cumulative: every sequence number below this one was received (or
    /// abandoned by the sender). This is the next counter the receiver expects.
    pub ack: Seq,
    /// Selective: bit `i` set means `ack + 1 + i` was received.
    pub sack: u64,
    /// Receive window: the sender may transmit new sequence numbers below
    /// `ack + window`.
    pub window: u32,
}

/// One fragment of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// Sender-assigned message id, increasing per channel incarnation.
    pub msg_id: u64,
    /// Index of this fragment, `< count`.
    pub index: u32,
    /// Number of fragments in the message, `>= 1`.
    pub count: u32,
    /// Bytes of this fragment.
    pub payload: &'a [u8],
}

/// A validated datagram, borrowing its payload from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// The sender's epoch (random per daemon start, never zero).
    pub sender_epoch: u64,
    /// The epoch the sender believes the receiver has; zero when unknown.
    pub receiver_epoch: u64,
    /// What the datagram carries.
    pub kind: Kind,
    /// The sequence counter; meaningful for `Data` only (zero otherwise).
    pub seq: Seq,
    /// Every sequence number below this one is acknowledged or abandoned by
    /// the sender: it will never be (re)transmitted.
    pub send_floor: Seq,
    /// Every message id below this one is fully acknowledged or abandoned.
    pub msg_floor: u64,
    /// Acknowledgement state, when the sender has any to give.
    pub ack: Option<AckInfo>,
    /// Request an immediate acknowledgement.
    pub ack_now: bool,
    /// The fragment, for `Data` datagrams.
    pub fragment: Option<Fragment<'a>>,
    /// Carried in the `msg_id` field of the datagrams without a fragment:
    /// on a `Probe`, a random challenge that the answering `Ack` must echo;
    /// on an `Ack`, the challenge it echoes. Zero means none; always zero
    /// on `Data` (whose `msg_id` field holds the fragment's message).
    pub nonce: u64,
    /// Key id for authentication; zero means none (the only value accepted
    /// until security is implemented).
    pub key_id: u8,
}

/// Why bytes are not a datagram. Every variant is a reason to drop and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Fewer bytes than the fixed header.
    #[error("datagram of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort(usize),
    /// The first two bytes are not "RD".
    #[error("bad magic")]
    BadMagic,
    /// A version this build does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// The CRC32C does not match the contents.
    #[error("checksum mismatch")]
    BadChecksum,
    /// An unknown datagram type.
    #[error("unknown datagram type {0}")]
    UnknownKind(u8),
    /// Flag bits this version does not define.
    #[error("unknown flags {0:#04x}")]
    UnknownFlags(u8),
    /// Reserved bytes are not zero.
    #[error("reserved field is not zero")]
    ReservedNotZero,
    /// The payload length field disagrees with the datagram's size.
    #[error("payload length {claimed} does not match the {actual} bytes present")]
    LengthMismatch {
        /// What the header claims.
        claimed: usize,
        /// What follows the header (minus the tag).
        actual: usize,
    },
    /// Payload larger than [`PAYLOAD_MAX`].
    #[error("payload of {0} bytes exceeds the maximum")]
    PayloadTooLarge(usize),
    /// A key id or tag before security exists.
    #[error("authentication (key id {0}) is not supported by this version")]
    AuthUnsupported(u8),
    /// Sender epoch zero is reserved for "unknown".
    #[error("sender epoch is zero")]
    ZeroEpoch,
    /// A data datagram with a zero fragment count or an index past the count.
    #[error("fragment {index} of {count} is invalid")]
    BadFragment {
        /// Fragment index from the header.
        index: u32,
        /// Fragment count from the header.
        count: u32,
    },
    /// A non-data datagram with a payload, fragment fields or a sequence.
    #[error("{0:?} datagram carries data fields")]
    UnexpectedData(Kind),
    /// A data datagram with sequence zero (zero is never assigned).
    #[error("data datagram with sequence zero")]
    ZeroSeq,
    /// A bundle whose count is zero, or disagrees with the datagrams its
    /// bytes hold.
    #[error("bundle announces {claimed} datagrams but holds {found}")]
    BadCount {
        /// The count byte.
        claimed: usize,
        /// Datagrams found before the bytes ran out (or the count was passed).
        found: usize,
    },
}

impl<'a> Datagram<'a> {
    /// Parse and validate untrusted bytes. Total: never panics, never
    /// allocates.
    ///
    /// `buf` must hold exactly one datagram; [`Bundle::parse`] reads several.
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let (d, len) = Self::parse_prefix(buf)?;
        if len != buf.len() {
            return Err(DecodeError::LengthMismatch {
                claimed: len - HEADER_LEN,
                actual: buf.len() - HEADER_LEN,
            });
        }
        Ok(d)
    }

    /// Parse the datagram at the start of `buf`; returns it and its length
    /// (the header's payload length says where it ends).
    pub(crate) fn parse_prefix(buf: &'a [u8]) -> Result<(Self, usize), DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(buf.len()));
        }
        if buf[OFF_MAGIC..OFF_MAGIC + 2] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if buf[OFF_VERSION] != VERSION {
            return Err(DecodeError::UnsupportedVersion(buf[OFF_VERSION]));
        }
        // Where the datagram ends is all that is read before the checksum,
        // and only to bound what the checksum covers.
        let payload_len = usize::from(be_u16(buf, OFF_PAYLOAD_LEN));
        let tag_len = usize::from(buf[OFF_TAG_LEN]);
        let len = HEADER_LEN + payload_len + tag_len;
        if len > buf.len() {
            return Err(DecodeError::LengthMismatch {
                claimed: payload_len,
                actual: buf.len() - HEADER_LEN,
            });
        }
        let buf = &buf[..len];
        // The checksum is checked before any other field is trusted.
        let claimed_crc = be_u32(buf, OFF_CRC);
        if crc_of(buf) != claimed_crc {
            return Err(DecodeError::BadChecksum);
        }
        let kind = Kind::from_code(buf[OFF_KIND])?;
        let flags = buf[OFF_FLAGS];
        if flags & !FLAGS_KNOWN != 0 {
            return Err(DecodeError::UnknownFlags(flags));
        }
        let key_id = buf[OFF_KEY_ID];
        if key_id != 0 || tag_len != 0 {
            return Err(DecodeError::AuthUnsupported(key_id));
        }
        if buf[OFF_RESERVED] != 0
            || be_u16(buf, OFF_RESERVED2) != 0
            || be_u32(buf, OFF_RESERVED3) != 0
        {
            return Err(DecodeError::ReservedNotZero);
        }
        if payload_len > PAYLOAD_MAX {
            return Err(DecodeError::PayloadTooLarge(payload_len));
        }
        let sender_epoch = be_u64(buf, OFF_SENDER_EPOCH);
        if sender_epoch == 0 {
            return Err(DecodeError::ZeroEpoch);
        }
        let seq = Seq(be_u64(buf, OFF_SEQ));
        let msg_id = be_u64(buf, OFF_MSG_ID);
        let index = be_u32(buf, OFF_FRAG_INDEX);
        let count = be_u32(buf, OFF_FRAG_COUNT);
        let payload = &buf[HEADER_LEN..HEADER_LEN + payload_len];
        let (fragment, nonce) = match kind {
            Kind::Data => {
                if seq.0 == 0 {
                    return Err(DecodeError::ZeroSeq);
                }
                if count == 0 || index >= count {
                    return Err(DecodeError::BadFragment { index, count });
                }
                let fragment = Fragment {
                    msg_id,
                    index,
                    count,
                    payload,
                };
                (Some(fragment), 0)
            }
            Kind::Ack | Kind::Probe => {
                // The `msg_id` field is the challenge (Probe) or its echo (Ack).
                if payload_len != 0 || seq.0 != 0 || index != 0 || count != 0 {
                    return Err(DecodeError::UnexpectedData(kind));
                }
                (None, msg_id)
            }
        };
        let ack = (flags & FLAG_ACK != 0).then(|| AckInfo {
            ack: Seq(be_u64(buf, OFF_ACK)),
            sack: be_u64(buf, OFF_SACK),
            window: be_u32(buf, OFF_WINDOW),
        });
        if ack.is_none()
            && (be_u64(buf, OFF_ACK) != 0
                || be_u64(buf, OFF_SACK) != 0
                || be_u32(buf, OFF_WINDOW) != 0)
        {
            return Err(DecodeError::ReservedNotZero);
        }
        let d = Datagram {
            sender_epoch,
            receiver_epoch: be_u64(buf, OFF_RECEIVER_EPOCH),
            kind,
            seq,
            send_floor: Seq(be_u64(buf, OFF_SEND_FLOOR)),
            msg_floor: be_u64(buf, OFF_MSG_FLOOR),
            ack,
            ack_now: flags & FLAG_ACK_NOW != 0,
            fragment,
            nonce,
            key_id,
        };
        Ok((d, len))
    }

    /// Number of bytes [`Datagram::emit`] writes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.fragment.as_ref().map_or(0, |f| f.payload.len())
    }

    /// Append the encoded datagram to `out`.
    ///
    /// The datagram must be well-formed (as `parse` would accept it); the
    /// channel only builds such datagrams, and debug builds assert it.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        let start = out.len();
        out.resize(start + HEADER_LEN, 0);
        let h = &mut out[start..];
        h[OFF_MAGIC..OFF_MAGIC + 2].copy_from_slice(&MAGIC);
        h[OFF_VERSION] = VERSION;
        h[OFF_KIND] = self.kind.code();
        let mut flags = 0;
        if self.ack.is_some() {
            flags |= FLAG_ACK;
        }
        if self.ack_now {
            flags |= FLAG_ACK_NOW;
        }
        h[OFF_FLAGS] = flags;
        h[OFF_KEY_ID] = self.key_id;
        put_u64(h, OFF_SENDER_EPOCH, self.sender_epoch);
        put_u64(h, OFF_RECEIVER_EPOCH, self.receiver_epoch);
        put_u64(h, OFF_SEQ, self.seq.0);
        if let Some(a) = self.ack {
            put_u64(h, OFF_ACK, a.ack.0);
            put_u64(h, OFF_SACK, a.sack);
            put_u32(h, OFF_WINDOW, a.window);
        }
        put_u64(h, OFF_SEND_FLOOR, self.send_floor.0);
        put_u64(h, OFF_MSG_FLOOR, self.msg_floor);
        if let Some(f) = &self.fragment {
            debug_assert!(f.payload.len() <= PAYLOAD_MAX);
            put_u64(h, OFF_MSG_ID, f.msg_id);
            put_u32(h, OFF_FRAG_INDEX, f.index);
            put_u32(h, OFF_FRAG_COUNT, f.count);
            // Bounded by PAYLOAD_MAX (< u16::MAX), asserted above.
            put_u16(h, OFF_PAYLOAD_LEN, f.payload.len() as u16);
            out.extend_from_slice(f.payload);
        } else {
            put_u64(h, OFF_MSG_ID, self.nonce);
        }
        debug_assert!(
            self.fragment.is_none() || self.nonce == 0,
            "a nonce travels only on datagrams without a fragment"
        );
        // The CRC field is still zero (`resize` wrote it): one pass over
        // the datagram as it stands is the checksum.
        let crc = crc32c::crc32c(&out[start..]);
        put_u32(&mut out[start..], OFF_CRC, crc);
        debug_assert!(
            Datagram::parse(&out[start..]).is_ok(),
            "emitted an invalid datagram"
        );
    }

    /// Encode into a fresh vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.emit(&mut v);
        v
    }
}

/// CRC32C of the whole datagram with the CRC field read as zero. `buf`
/// holds at least the header.
///
/// A copy of the header with the field zeroed, then the payload: two calls
/// into the CRC (one when there is no payload) where the pieces around the
/// field took three, each with a fixed cost that outweighs a header's bytes.
fn crc_of(buf: &[u8]) -> u32 {
    let mut header = [0; HEADER_LEN];
    header.copy_from_slice(&buf[..HEADER_LEN]);
    header[OFF_CRC..OFF_CRC + 4].fill(0);
    let c = crc32c::crc32c(&header);
    match &buf[HEADER_LEN..] {
        [] => c,
        rest => crc32c::crc32c_append(c, rest),
    }
}

// Accessors on a buffer already checked to hold the whole header.
fn be_u16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}
fn be_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_be_bytes(a)
}
fn be_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}
fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests;
