//! The bundle: what one UDP datagram carries (or, with keys, what one
//! transport datagram seals): a 4-byte header — magic "RD", the version, the
//! number of channel datagrams — then that many whole channel datagrams back
//! to back, each delimited by its own header's payload length and checked by
//! its own CRC32C. All of them are for the same peer.
//!
//! A bundle is accepted whole or not at all: [`Bundle::parse`] validates
//! every datagram, and that they fill the bytes exactly, before the caller
//! sees any. The count makes truncation at a datagram boundary detectable.

use super::{be_u16, Datagram};
use super::{DecodeError, Kind, HEADER_LEN, MAGIC, OFF_KIND, OFF_PAYLOAD_LEN, VERSION};

/// Size of the bundle header.
pub const BUNDLE_HEADER_LEN: usize = 4;
/// Most channel datagrams one bundle carries (the count is one byte).
pub const BUNDLE_COUNT_MAX: usize = 255;

const OFF_COUNT: usize = 3;
// The largest bundle the endpoint builds (one full fragment's datagram),
// sealed with keys, still fits a UDP datagram.
const _: () = assert!(
    BUNDLE_HEADER_LEN + HEADER_LEN + super::PAYLOAD_MAX + crate::secure::wire::TRANSPORT_OVERHEAD
        <= 65_507
);

/// A validated bundle: the channel datagrams of one UDP datagram, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle<'a> {
    /// At least one, at most [`BUNDLE_COUNT_MAX`].
    pub datagrams: Vec<Datagram<'a>>,
}

impl<'a> Bundle<'a> {
    /// Parse and validate untrusted bytes; the first error found in any
    /// datagram rejects the whole bundle. Never panics; allocates one vector
    /// of at most `count` entries.
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let claimed = check_header(buf)?;
        let mut datagrams = Vec::with_capacity(claimed);
        let mut rest = &buf[BUNDLE_HEADER_LEN..];
        while !rest.is_empty() {
            if datagrams.len() == claimed {
                return Err(DecodeError::BadCount {
                    claimed,
                    found: claimed + 1,
                });
            }
            let (d, len) = Datagram::parse_prefix(rest)?;
            datagrams.push(d);
            rest = &rest[len..];
        }
        if datagrams.len() != claimed {
            return Err(DecodeError::BadCount {
                claimed,
                found: datagrams.len(),
            });
        }
        Ok(Bundle { datagrams })
    }

    /// Encode into a fresh vector (tests and tools; the endpoint builds
    /// bundles with [`BundleBuilder`] from already encoded datagrams).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut b = BundleBuilder::new(usize::MAX);
        for d in &self.datagrams {
            b.push(&d.to_vec());
        }
        b.finish()
    }
}

impl Datagram<'_> {
    /// Encode as a bundle of this datagram alone: the UDP payload a lone
    /// datagram travels in (hand-made datagrams in tests and tools).
    pub fn to_bundle(&self) -> Vec<u8> {
        let mut b = BundleBuilder::new(usize::MAX);
        b.push(&self.to_vec());
        b.finish()
    }
}

/// The count from a bundle header; the header's own checks.
fn check_header(buf: &[u8]) -> Result<usize, DecodeError> {
    if buf.len() < BUNDLE_HEADER_LEN {
        return Err(DecodeError::TooShort(buf.len()));
    }
    if buf[..2] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if buf[2] != VERSION {
        return Err(DecodeError::UnsupportedVersion(buf[2]));
    }
    let claimed = usize::from(buf[OFF_COUNT]);
    if claimed == 0 {
        return Err(DecodeError::BadCount { claimed, found: 0 });
    }
    Ok(claimed)
}

/// Builds a bundle from encoded channel datagrams, up to a size limit.
#[derive(Debug)]
pub struct BundleBuilder {
    bytes: Vec<u8>,
    count: usize,
    limit: usize,
}

impl BundleBuilder {
    /// An empty bundle that [`BundleBuilder::fits`] keeps within `limit`
    /// bytes, header included.
    pub fn new(limit: usize) -> Self {
        Self::with_buffer(Vec::with_capacity(limit.min(2048)), limit)
    }

    /// [`BundleBuilder::new`], written into `bytes` (emptied first): the
    /// buffer of a bundle already sent, so that the next takes no new memory.
    pub fn with_buffer(mut bytes: Vec<u8>, limit: usize) -> Self {
        bytes.clear();
        bytes.extend_from_slice(&MAGIC);
        bytes.push(VERSION);
        bytes.push(0);
        BundleBuilder {
            bytes,
            count: 0,
            limit,
        }
    }

    /// Whether a datagram of `len` bytes may join: always for the first
    /// (a datagram alone is never refused, whatever its size), then while
    /// the bundle stays within the limit and the count fits its byte.
    pub fn fits(&self, len: usize) -> bool {
        self.count == 0 || (self.count < BUNDLE_COUNT_MAX && self.bytes.len() + len <= self.limit)
    }

    /// Append one encoded channel datagram (as [`Datagram::emit`] wrote it).
    pub fn push(&mut self, datagram: &[u8]) {
        debug_assert!(self.count < BUNDLE_COUNT_MAX);
        self.bytes.extend_from_slice(datagram);
        self.count += 1;
    }

    /// Append one channel datagram that `write` encodes straight into the
    /// bundle's buffer (no copy), if it writes one (returns true). Unlike
    /// [`BundleBuilder::push`] this cannot ask [`BundleBuilder::fits`] first:
    /// the caller checks [`BundleBuilder::overfull`] after, and takes a
    /// datagram that does not belong back with [`BundleBuilder::pop_last`].
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        debug_assert!(self.count < BUNDLE_COUNT_MAX);
        let written = write(&mut self.bytes);
        if written {
            self.count += 1;
        }
        written
    }

    /// The last datagram pushed went past what `fits` allows (the first
    /// never does).
    pub fn overfull(&self) -> bool {
        self.count > 1 && self.bytes.len() > self.limit
    }

    /// Whether no further datagram could join: the count is at its maximum
    /// or not even a bare header fits.
    pub fn full(&self) -> bool {
        self.count == BUNDLE_COUNT_MAX || self.bytes.len() + HEADER_LEN > self.limit
    }

    /// Remove the last datagram pushed, which starts at byte `start` (the
    /// bundle's length before it was pushed), and return its bytes.
    pub fn pop_last(&mut self, start: usize) -> Vec<u8> {
        debug_assert!(self.count > 0 && start >= BUNDLE_HEADER_LEN);
        self.count -= 1;
        self.bytes.split_off(start)
    }

    /// The encoded bytes so far, header included (the header's count is set by `finish`).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Channel datagrams so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The buffer, for another bundle: this one is not sent.
    pub fn into_buffer(self) -> Vec<u8> {
        self.bytes
    }

    /// The encoded bundle. At least one datagram must have been pushed.
    pub fn finish(mut self) -> Vec<u8> {
        debug_assert!((1..=BUNDLE_COUNT_MAX).contains(&self.count));
        // Bounded by BUNDLE_COUNT_MAX (255), asserted above.
        self.bytes[OFF_COUNT] = self.count as u8;
        debug_assert!(
            Bundle::parse(&self.bytes).is_ok(),
            "built an invalid bundle"
        );
        self.bytes
    }
}

/// Whether an encoded bundle carries acknowledgements alone (nothing the
/// peer answers). Reads the kind and length fields of bytes this endpoint
/// built, without validating them; anything unreadable is not ack-only.
pub(crate) fn is_ack_only(bundle: &[u8]) -> bool {
    let Ok(count) = check_header(bundle) else {
        return false;
    };
    let mut rest = &bundle[BUNDLE_HEADER_LEN..];
    for _ in 0..count {
        if rest.len() < HEADER_LEN || rest[OFF_KIND] != Kind::Ack.code() {
            return false;
        }
        let len = HEADER_LEN + usize::from(be_u16(rest, OFF_PAYLOAD_LEN));
        rest = rest.get(len..).unwrap_or_default();
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests;
