//! A payload where it lies: the bytes of a call's arguments inside the buffer they arrived
//! in, so that a large argument is neither moved nor copied on its way through: from the
//! frame reader's buffer (a large `call` or `invoke` frame, see [`FrameReader`]) to the
//! transport in the calling daemon, from the transport's reassembly buffer to the serving
//! app's socket in the serving daemon, and to the handler in the serving app.
//!
//! [`FrameReader`]: super::FrameReader
//!
//! A [`Payload`] is a buffer and the offset its bytes start at (they run to its end); it
//! reads as those bytes (`Deref<Target = [u8]>`), compares and serialises as them, and goes
//! back whole to the process's buffer pool ([`Payload::into_buffer`]) once used.

use std::fmt;
use std::ops::{Deref, Range};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes `buf[start..]` of a buffer kept whole.
#[derive(Clone, Default)]
pub struct Payload {
    buf: Vec<u8>,
    start: usize,
}

impl Payload {
    /// The bytes of `buf` in `range`, left where they are: what follows them is cut off,
    /// what precedes them stays until the buffer is given back. A range beyond `buf` is
    /// cut to it.
    pub fn in_place(mut buf: Vec<u8>, range: Range<usize>) -> Payload {
        buf.truncate(range.end);
        let start = range.start.min(buf.len());
        Payload { buf, start }
    }

    /// The bytes in a buffer of their own: the buffer itself, the bytes moved to its front
    /// when they do not start there (for a consumer that needs a `Vec`).
    pub fn into_vec(self) -> Vec<u8> {
        let Payload { mut buf, start } = self;
        if start > 0 {
            buf.drain(..start);
        }
        buf
    }

    /// The whole buffer, whatever it holds: to give back to a pool once the bytes are
    /// written.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Where the bytes start in the buffer.
    pub fn offset(&self) -> usize {
        self.start
    }
}

impl From<Vec<u8>> for Payload {
    fn from(buf: Vec<u8>) -> Payload {
        Payload { buf, start: 0 }
    }
}

impl FromIterator<u8> for Payload {
    fn from_iter<I: IntoIterator<Item = u8>>(bytes: I) -> Payload {
        Payload::from(bytes.into_iter().collect::<Vec<u8>>())
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Equal when the bytes are, wherever they lie.
impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        **self == **other
    }
}

impl Eq for Payload {}

/// As the bytes (a `Vec<u8>` of them would print the same).
impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// As a MessagePack `bin`, like a `Vec<u8>` with `serde_bytes`.
impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Payload, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|b| Payload::from(b.into_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_in_place_reads_as_its_range_and_keeps_its_buffer() {
        let buf: Vec<u8> = (0..100).collect();
        let front = buf.as_ptr();
        let p = Payload::in_place(buf, 10..20);
        assert_eq!(&*p, &(10..20).collect::<Vec<u8>>()[..]);
        assert_eq!(p.offset(), 10);
        assert_eq!(
            p,
            Payload::from((10..20).collect::<Vec<u8>>()),
            "by the bytes"
        );
        assert_eq!(
            format!("{p:?}"),
            format!("{:?}", (10..20).collect::<Vec<u8>>())
        );
        let whole = p.clone().into_buffer();
        assert_eq!(whole.len(), 20, "cut after the range");
        let v = p.into_vec();
        assert_eq!(v, (10..20).collect::<Vec<u8>>());
        assert_eq!(v.as_ptr(), front, "moved to the front of its own buffer");
        assert!(Payload::in_place(vec![1, 2], 5..9).is_empty());
    }

    #[test]
    fn a_payload_serialises_as_bytes() {
        let p = Payload::in_place(vec![9, 9, 1, 2, 3], 2..5);
        let bytes = rmp_serde::to_vec(&p).unwrap();
        assert_eq!(
            bytes,
            rmp_serde::to_vec(&serde_bytes::Bytes::new(&[1, 2, 3])).unwrap()
        );
        assert_eq!(rmp_serde::from_slice::<Payload>(&bytes).unwrap(), p);
    }
}
