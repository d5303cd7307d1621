//! A cheap pass over MessagePack before it is decoded: how many values it holds.
//!
//! serde buffers an internally tagged enum's whole map before it knows the variant, at some
//! 30 bytes per value, so 16 MiB of one-byte `nil`s would cost about 500 MiB. Messages a
//! daemon accepts from apps and peers hold a handful of values (their payloads are single
//! `bin` values), so bounding the count first keeps decoding within a small multiple of the
//! input, whatever the input. This pass allocates nothing and reads each byte at most once.

use super::FrameError;

/// The most MessagePack values one message from an app to the daemon (a `ClientMsg`) may
/// hold, counting every map key and value, nested ones included. The largest legitimate one
/// holds about 15.
pub const CLIENT_MSG_VALUES_MAX: usize = 64;

/// Fails with [`FrameError::TooManyValues`] as soon as `body` is seen to hold more than
/// `max` MessagePack values, and with [`FrameError::Malformed`] when an array or map claims
/// more elements than the bytes left could hold (every element takes at least one byte): the
/// decoder preallocates from such claims. Other truncated or malformed input is left to the
/// decoder, which names the problem precisely.
pub fn check_values(body: &[u8], max: usize) -> Result<(), FrameError> {
    walk(body, max).map(|_| ())
}

/// [`check_values`], also telling where the first value ends: `Some(len)` when `body`
/// holds a whole value in its first `len` bytes, `None` when it is truncated or holds the
/// reserved marker (the decoder then names the problem).
pub(crate) fn walk(body: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let mut pos = 0usize;
    // Values still to read: containers add their elements as they are met.
    let mut pending: u64 = 1;
    let mut seen = 0usize;
    while pending > 0 {
        let Some(&marker) = body.get(pos) else {
            return Ok(None);
        };
        pending -= 1;
        seen += 1;
        if seen > max {
            return Err(FrameError::TooManyValues { max });
        }
        pos += 1;
        let be = |n: usize, at: usize| -> Option<u64> {
            let bytes = body.get(at..at + n)?;
            Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
        };
        // (bytes of length field, bytes of fixed payload, elements added, extra type byte)
        let skip: u64 = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0x80..=0x8f => {
                pending += 2 * u64::from(marker & 0x0f);
                0
            }
            0x90..=0x9f => {
                pending += u64::from(marker & 0x0f);
                0
            }
            0xa0..=0xbf => u64::from(marker & 0x1f),
            0xc1 => return Ok(None),
            0xc4 | 0xd9 => with_len(body, &mut pos, 1, &be)?,
            0xc5 | 0xda => with_len(body, &mut pos, 2, &be)?,
            0xc6 | 0xdb => with_len(body, &mut pos, 4, &be)?,
            0xc7 => with_len(body, &mut pos, 1, &be)? + 1,
            0xc8 => with_len(body, &mut pos, 2, &be)? + 1,
            0xc9 => with_len(body, &mut pos, 4, &be)? + 1,
            0xca => 4,
            0xcb => 8,
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xce | 0xd2 => 4,
            0xcf | 0xd3 => 8,
            0xd4 => 2,
            0xd5 => 3,
            0xd6 => 5,
            0xd7 => 9,
            0xd8 => 17,
            0xdc => {
                pending += with_len(body, &mut pos, 2, &be)?;
                0
            }
            0xdd => {
                pending += with_len(body, &mut pos, 4, &be)?;
                0
            }
            0xde => {
                pending += 2 * with_len(body, &mut pos, 2, &be)?;
                0
            }
            0xdf => {
                pending += 2 * with_len(body, &mut pos, 4, &be)?;
                0
            }
        };
        let left = body.len().saturating_sub(pos) as u64;
        if pending > left {
            return Err(FrameError::Malformed(format!(
                "containers claim {pending} more values than the {left} bytes left can hold"
            )));
        }
        pos = match usize::try_from(skip).ok().and_then(|s| pos.checked_add(s)) {
            Some(p) => p,
            None => return Ok(None),
        };
    }
    Ok((pos <= body.len()).then_some(pos))
}

/// Reads an `n`-byte big-endian length at `pos` and moves past it; truncation ends the
/// check (Ok) through the sentinel error-free path of the caller.
fn with_len(
    body: &[u8],
    pos: &mut usize,
    n: usize,
    be: &impl Fn(usize, usize) -> Option<u64>,
) -> Result<u64, FrameError> {
    match be(n, *pos) {
        Some(v) => {
            *pos += n;
            Ok(v)
        }
        // Truncated: past the end, so the loop's next read ends the pass.
        None => {
            *pos = body.len().saturating_add(1);
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_ok(v: &impl serde::Serialize, max: usize) -> bool {
        let body = rmp_serde::to_vec_named(v).expect("encodes");
        check_values(&body, max).is_ok()
    }

    #[test]
    fn counts_every_key_and_value_nested_ones_included() {
        // {"a": [1, 2, {"b": nil}]} = map, "a", array, 1, 2, map, "b", nil = 8 values.
        let mut inner = std::collections::BTreeMap::new();
        inner.insert("b", ());
        let v = serde_json::json!({"a": [1, 2, {"b": null}]});
        assert!(count_ok(&v, 8));
        assert!(!count_ok(&v, 7));
        let _ = inner;
    }

    #[test]
    fn a_bin_or_str_payload_is_one_value_whatever_its_size() {
        let big = serde_bytes::ByteBuf::from(vec![0xc0u8; 1 << 20]);
        assert!(count_ok(&big, 1));
        assert!(count_ok(&"x".repeat(70_000), 1));
    }

    #[test]
    fn sixteen_mib_of_nils_is_refused_early() {
        let n = 16 * 1024 * 1024;
        let mut body = vec![0xdd];
        body.extend_from_slice(&(n as u32).to_be_bytes());
        body.resize(5 + n, 0xc0);
        assert!(matches!(
            check_values(&body, CLIENT_MSG_VALUES_MAX),
            Err(FrameError::TooManyValues {
                max: CLIENT_MSG_VALUES_MAX
            })
        ));
    }

    #[test]
    fn every_marker_kind_is_skipped_correctly() {
        let v = serde_json::json!([
            0, -1, 200, -200, 70_000, -70_000, 5_000_000_000u64, -5_000_000_000i64,
            1.5f32, 2.5f64, true, false, null, "s", "x".repeat(40), "y".repeat(300),
            {"k": 1}, [1, 2]
        ]);
        // 1 array + 18 elements + 2 (map key, value) + 2 (array items) = 23.
        assert!(count_ok(&v, 23));
        assert!(!count_ok(&v, 22));
        let ext = [0xd4u8, 1, 2]; // fixext1
        assert!(check_values(&ext, 1).is_ok());
        let two = [0x92u8, 0xd4, 1, 2, 0xc7, 1, 5, 9];
        assert!(check_values(&two, 3).is_ok());
        assert!(check_values(&two, 2).is_err());
    }

    #[test]
    fn truncated_or_reserved_input_is_left_to_the_decoder() {
        for body in [&[][..], &[0xdd, 0, 0], &[0xc1], &[0x91, 0xc4]] {
            assert!(check_values(body, 4).is_ok(), "{body:?}");
        }
    }

    #[test]
    fn a_claim_beyond_the_bytes_left_is_refused_before_anything_preallocates() {
        // An array of 2^32 - 1 elements in 5 bytes; maps nested 30 deep each claiming 2^32.
        assert!(matches!(
            check_values(&[0xdd, 0xff, 0xff, 0xff, 0xff], usize::MAX),
            Err(FrameError::Malformed(_))
        ));
        let nested: Vec<u8> = std::iter::repeat_n([0xdfu8, 0xff, 0xff, 0xff, 0xff], 30)
            .flatten()
            .collect();
        assert!(matches!(
            check_values(&nested, usize::MAX),
            Err(FrameError::Malformed(_))
        ));
        // Two elements claimed, two bytes left: fine; one byte left: refused.
        assert!(check_values(&[0x92, 0xc0, 0xc0], usize::MAX).is_ok());
        assert!(check_values(&[0x92, 0xc0], usize::MAX).is_err());
    }
}
