//! A message's bytes as the sender hands them over: one buffer, or three whose
//! concatenation is the message.
//!
//! The three-part form lets a sender put a large buffer it already owns (a call's
//! arguments, maybe after other bytes in the buffer they arrived in) between a small head
//! and tail it encoded, without copying the large buffer into one of the message's size:
//! the transport cuts fragments across the parts. Each fragment's bytes are still copied
//! once into its datagram, as for one buffer.

/// The bytes of one message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// The message is this buffer.
    Whole(Vec<u8>),
    /// The message is `head`, then `body[body_start..]`, then `tail` (the bytes of `body`
    /// before `body_start` are not sent; the buffer is handed back whole).
    Split {
        head: Vec<u8>,
        body: Vec<u8>,
        body_start: usize,
        tail: Vec<u8>,
    },
}

impl From<Vec<u8>> for Outgoing {
    fn from(bytes: Vec<u8>) -> Outgoing {
        Outgoing::Whole(bytes)
    }
}

impl Outgoing {
    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Whole(b) => b.len(),
            Outgoing::Split {
                head,
                body,
                body_start,
                tail,
            } => head.len() + body.len().saturating_sub(*body_start) + tail.len(),
        }
    }

    /// Whether the message has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message's bytes `start..end`: borrowed when they lie in one part, else copied
    /// into `scratch` (only a fragment that straddles two parts is).
    ///
    /// # Panics
    /// If `start..end` is not within the message (the transport cuts fragments from the
    /// message's own length).
    pub fn range<'a>(&'a self, start: usize, end: usize, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        let parts: [&[u8]; 3] = match self {
            Outgoing::Whole(b) => return &b[start..end],
            Outgoing::Split {
                head,
                body,
                body_start,
                tail,
            } => [head, body.get(*body_start..).unwrap_or_default(), tail],
        };
        let mut at = 0;
        for part in parts {
            let part_end = at + part.len();
            if start >= at && end <= part_end {
                return &part[start - at..end - at];
            }
            at = part_end;
        }
        scratch.clear();
        let mut at = 0;
        for part in parts {
            let part_end = at + part.len();
            let (from, to) = (start.max(at), end.min(part_end));
            if from < to {
                scratch.extend_from_slice(&part[from - at..to - at]);
            }
            at = part_end;
        }
        assert_eq!(scratch.len(), end - start, "a range within the message");
        scratch
    }

    /// The buffers the message was made of, for reuse.
    pub fn into_buffers(self) -> impl Iterator<Item = Vec<u8>> {
        let (a, b, c) = match self {
            Outgoing::Whole(b) => (Some(b), None, None),
            Outgoing::Split {
                head, body, tail, ..
            } => (Some(head), Some(body), Some(tail)),
        };
        a.into_iter().chain(b).chain(c)
    }

    /// The message as one buffer (copied together when split).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut scratch = Vec::new();
        self.range(0, self.len(), &mut scratch).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(head: &[u8], body: &[u8], tail: &[u8]) -> Outgoing {
        Outgoing::Split {
            head: head.to_vec(),
            body: body.to_vec(),
            body_start: 0,
            tail: tail.to_vec(),
        }
    }

    /// As [`split`], the body after `skip` bytes that are not the message's.
    fn split_after(head: &[u8], skip: usize, body: &[u8], tail: &[u8]) -> Outgoing {
        let mut buf = vec![0xee; skip];
        buf.extend_from_slice(body);
        Outgoing::Split {
            head: head.to_vec(),
            body: buf,
            body_start: skip,
            tail: tail.to_vec(),
        }
    }

    #[test]
    fn every_range_of_a_split_message_is_the_same_bytes_as_of_the_whole() {
        let whole: Vec<u8> = (0..40u8).collect();
        for (h, b) in [(0, 0), (0, 40), (3, 30), (7, 33), (40, 0), (5, 0), (0, 1)] {
            for skip in [0, 1, 9] {
                let (head, body, tail) = (&whole[..h], &whole[h..h + b], &whole[h + b..]);
                let p = split_after(head, skip, body, tail);
                assert_eq!(p.len(), 40);
                let mut scratch = Vec::new();
                for start in 0..=40 {
                    for end in start..=40 {
                        assert_eq!(
                            p.range(start, end, &mut scratch),
                            &whole[start..end],
                            "head {h}, skip {skip}, body {b}, range {start}..{end}"
                        );
                    }
                }
                assert_eq!(p.to_vec(), whole);
            }
        }
    }

    #[test]
    fn a_range_within_one_part_is_borrowed_not_copied() {
        let p = split(b"head", b"the body", b"tail");
        let mut scratch = Vec::new();
        let r = p.range(4, 12, &mut scratch);
        assert_eq!(r, b"the body");
        assert!(
            scratch.is_empty(),
            "nothing copied for a range inside the body"
        );
        assert_eq!(p.range(2, 6, &mut scratch), b"adth");
        assert_eq!(scratch, b"adth");
    }

    #[test]
    fn the_buffers_come_back_part_by_part() {
        let p = split(b"h", b"body", b"t");
        let back: Vec<Vec<u8>> = p.into_buffers().collect();
        assert_eq!(back, vec![b"h".to_vec(), b"body".to_vec(), b"t".to_vec()]);
        let p = split_after(b"h", 2, b"body", b"t");
        let back: Vec<Vec<u8>> = p.into_buffers().collect();
        assert_eq!(
            back,
            vec![b"h".to_vec(), b"\xee\xeebody".to_vec(), b"t".to_vec()],
            "the body's buffer whole, what precedes the message's bytes too"
        );
        let back: Vec<Vec<u8>> = Outgoing::from(b"w".to_vec()).into_buffers().collect();
        assert_eq!(back, vec![b"w".to_vec()]);
    }
}
