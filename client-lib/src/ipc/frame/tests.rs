//! Tests of the frame codec and of [`FrameReader`].

use proptest::prelude::*;

use super::*;
use crate::ipc::testutil::{decode_client, frame_of};
use crate::ipc::{ClientMsg, DaemonMsg};

// --- incomplete frames -------------------------------------------------------------------

#[test]
fn every_strict_prefix_of_a_frame_is_incomplete() {
    let frame = encode_frame(&ClientMsg::Ping { id: 300 });
    for end in 0..frame.len() {
        assert_eq!(decode_client(&frame[..end]), Ok(None), "prefix of {end}");
    }
}

#[test]
fn two_frames_in_one_buffer_decode_one_at_a_time() {
    let mut buf = encode_frame(&ClientMsg::Ping { id: 1 });
    let first_len = buf.len();
    buf.extend(encode_frame(&ClientMsg::List { id: 2 }));
    let (first, used) = decode_client(&buf).unwrap().unwrap();
    assert_eq!((first, used), (ClientMsg::Ping { id: 1 }, first_len));
    let (second, _) = decode_client(&buf[used..]).unwrap().unwrap();
    assert_eq!(second, ClientMsg::List { id: 2 });
}

// --- one test per FrameError case ----------------------------------------------------------

#[test]
fn oversize_prefix_is_refused_before_the_body_arrives() {
    let prefix = 20_000_000u32.to_be_bytes();
    let err = decode_client(&prefix).unwrap_err();
    assert_eq!(
        err,
        FrameError::TooLarge {
            len: 20_000_000,
            max: FRAME_MAX_DEFAULT
        }
    );
    assert_eq!(
        err.to_string(),
        "frame of 20000000 bytes exceeds the maximum of 16842752"
    );
    assert_eq!(err.code(), ErrorCode::MessageTooLarge);
}

#[test]
fn encoding_over_the_maximum_is_refused() {
    let msg = ClientMsg::Call {
        id: 1,
        target: "t".into(),
        function: "f".into(),
        args: vec![0; 100].into(),
        deadline_ms: None,
        idempotent: false,
        trace: false,
    };
    assert!(matches!(
        try_encode_frame(&msg, 50),
        Err(FrameError::TooLarge { max: 50, .. })
    ));
}

#[test]
fn value_truncated_inside_its_frame_is_malformed() {
    // A map announcing 2 entries but holding one.
    let body = [0x82, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g'];
    let err = decode_client(&frame_of(&body)).unwrap_err();
    assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    assert!(err.to_string().starts_with("invalid MessagePack: "));
}

#[test]
fn reserved_marker_is_malformed() {
    let err = decode_client(&frame_of(&[0xc1])).unwrap_err();
    assert!(matches!(err, FrameError::Malformed(_)), "{err}");
}

#[test]
fn empty_body_is_malformed() {
    let err = decode_client(&frame_of(&[])).unwrap_err();
    assert!(matches!(err, FrameError::Malformed(_)), "{err}");
}

#[test]
fn trailing_bytes_inside_the_frame_are_refused() {
    let mut body = encode_frame(&ClientMsg::Ping { id: 7 }).split_off(LENGTH_PREFIX_LEN);
    body.extend_from_slice(&[0xc0, 0xc0, 0xc0]);
    let err = decode_client(&frame_of(&body)).unwrap_err();
    assert_eq!(err, FrameError::TrailingBytes(3));
    assert_eq!(err.to_string(), "trailing 3 bytes after the message");
}

#[test]
fn deep_nesting_is_refused() {
    // {"op":"ping","id":1,"x":[[[[...]]]]} with 10_000 levels: fails on depth, not on
    // the unknown field, and without overflowing the stack.
    let mut body = vec![0x83, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g'];
    body.extend_from_slice(&[0xa1, b'x']);
    body.extend(vec![0x91; 10_000]);
    body.push(0xc0);
    body.extend_from_slice(&[0xa2, b'i', b'd', 0x01]);
    let err = decode_client(&frame_of(&body)).unwrap_err();
    assert_eq!(err, FrameError::TooDeep { max: NESTING_MAX });
}

#[test]
fn nesting_at_the_bound_is_accepted_by_the_decoder() {
    // A value nested exactly NESTING_MAX levels (the frame's map is level 1) decodes as
    // far as the schema: the error is the unknown field, not the depth.
    let mut body = vec![0x83, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g'];
    body.extend_from_slice(&[0xa2, b'i', b'd', 0x01, 0xa1, b'x']);
    body.extend(vec![0x91; NESTING_MAX - 1]);
    body.push(0xc0);
    let err = decode_client(&frame_of(&body)).unwrap_err();
    assert!(matches!(err, FrameError::Invalid(_)), "{err}");
}

#[test]
fn unknown_op_is_invalid() {
    let body = [
        0x82, 0xa2, b'o', b'p', 0xa3, b'z', b'a', b'p', 0xa2, b'i', b'd', 0x01,
    ];
    let err = decode_client(&frame_of(&body)).unwrap_err();
    assert!(matches!(err, FrameError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("zap"), "{err}");
}

#[test]
fn missing_op_is_invalid() {
    let body = [0x81, 0xa2, b'i', b'd', 0x01];
    let err = decode_client(&frame_of(&body)).unwrap_err();
    assert!(matches!(err, FrameError::Invalid(_)), "{err}");
}

#[test]
fn unknown_field_is_invalid() {
    #[rustfmt::skip]
    let body = [
        0x83, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g',
        0xa2, b'i', b'd', 0x01, 0xa3, b'e', b'x', b't', 0x01,
    ];
    let err = decode_client(&frame_of(&body)).unwrap_err();
    assert!(matches!(err, FrameError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("ext"), "{err}");
}

#[test]
fn wrong_field_type_is_invalid() {
    // id as a string
    #[rustfmt::skip]
    let body = [0x82, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g', 0xa2, b'i', b'd', 0xa1, b'7'];
    let err = decode_client(&frame_of(&body)).unwrap_err();
    assert!(matches!(err, FrameError::Invalid(_)), "{err}");
    // a negative id
    #[rustfmt::skip]
    let body = [0x82, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g', 0xa2, b'i', b'd', 0xff];
    let err = decode_client(&frame_of(&body)).unwrap_err();
    assert!(matches!(err, FrameError::Invalid(_)), "{err}");
    // a top-level array instead of a map
    let err = decode_client(&frame_of(&[0x91, 0x01])).unwrap_err();
    assert!(matches!(err, FrameError::Invalid(_)), "{err}");
}

#[test]
fn missing_field_is_invalid() {
    let body = [0x81, 0xa2, b'o', b'p', 0xa4, b'p', b'i', b'n', b'g'];
    let err = decode_client(&frame_of(&body)).unwrap_err();
    assert!(matches!(err, FrameError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("id"), "{err}");
}

#[test]
fn missing_deadline_decodes_as_none() {
    // Option fields may be omitted; clients in other languages may do so.
    #[rustfmt::skip]
    let body = [
        0x86,
        0xa2, b'o', b'p', 0xa4, b'c', b'a', b'l', b'l',
        0xa2, b'i', b'd', 0x02,
        0xa6, b't', b'a', b'r', b'g', b'e', b't', 0xa1, b'h',
        0xa8, b'f', b'u', b'n', b'c', b't', b'i', b'o', b'n', 0xa1, b'f',
        0xa4, b'a', b'r', b'g', b's', 0xc4, 0x00,
        0xaa, b'i', b'd', b'e', b'm', b'p', b'o', b't', b'e', b'n', b't', 0xc2,
    ];
    let (msg, _) = decode_client(&frame_of(&body)).unwrap().unwrap();
    assert!(matches!(
        msg,
        ClientMsg::Call {
            deadline_ms: None,
            ..
        }
    ));
}

proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_frame::<ClientMsg>(&bytes, 1024);
            let _ = decode_frame::<DaemonMsg>(&frame_of(&bytes), 1024);
        }
}

// --- FrameReader -------------------------------------------------------------------------

/// A stream that hands out its bytes in pieces ending at the given offsets (and in reads of
/// at most `max_read` bytes), then reports end of stream.
struct Pieces {
    data: Vec<u8>,
    pos: usize,
    cuts: Vec<usize>,
    max_read: usize,
}

impl Pieces {
    fn new(data: Vec<u8>, cuts: &[usize]) -> Pieces {
        Pieces {
            data,
            pos: 0,
            cuts: cuts.to_vec(),
            max_read: usize::MAX,
        }
    }
}

impl std::io::Read for Pieces {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let cut = self
            .cuts
            .iter()
            .copied()
            .find(|&c| c > self.pos)
            .unwrap_or(self.data.len());
        let n = (cut - self.pos).min(out.len()).min(self.max_read);
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads `stream` to its end through `reader`, taking every frame after each read.
fn drain(reader: &mut FrameReader, stream: &mut impl std::io::Read) -> Vec<ClientMsg> {
    drain_then(reader, stream, |_| {})
}

/// As [`drain`], calling `each` on every message as it is taken.
fn drain_then(
    reader: &mut FrameReader,
    stream: &mut impl std::io::Read,
    mut each: impl FnMut(&ClientMsg),
) -> Vec<ClientMsg> {
    let mut msgs = Vec::new();
    loop {
        while let Some(msg) = reader.next_frame().unwrap() {
            each(&msg);
            msgs.push(msg);
        }
        assert!(reader.buf.len() <= reader.limit(), "{}", reader.buf.len());
        if reader.read_from(stream).unwrap() == 0 {
            return msgs;
        }
    }
}

fn sample_msgs() -> Vec<ClientMsg> {
    vec![
        ClientMsg::Ping { id: 1 },
        ClientMsg::Call {
            id: 2,
            target: "h:1".into(),
            function: "f".into(),
            args: vec![7; 300].into(),
            deadline_ms: Some(5),
            idempotent: true,
            trace: false,
        },
        ClientMsg::List { id: 3 },
    ]
}

#[test]
fn reader_reassembles_frames_split_at_every_byte_boundary() {
    let msgs = sample_msgs();
    let stream: Vec<u8> = msgs.iter().flat_map(encode_frame).collect();
    for cut in 0..=stream.len() {
        let mut reader = FrameReader::new(FRAME_MAX_DEFAULT);
        let got = drain(&mut reader, &mut Pieces::new(stream.clone(), &[cut]));
        assert_eq!(got, msgs, "cut at {cut}");
        assert_eq!(reader.buffered(), 0);
    }
    // And one byte per read.
    let mut reader = FrameReader::new(FRAME_MAX_DEFAULT);
    let cuts: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(drain(&mut reader, &mut Pieces::new(stream, &cuts)), msgs);
}

#[test]
fn reader_takes_many_frames_from_one_read_without_moving_bytes() {
    let msgs: Vec<ClientMsg> = (0..2000).map(|id| ClientMsg::Ping { id }).collect();
    let stream: Vec<u8> = msgs.iter().flat_map(encode_frame).collect();
    assert!(stream.len() < READ_CHUNK);
    let mut reader = FrameReader::new(FRAME_MAX_DEFAULT);
    let mut source = Pieces::new(stream.clone(), &[]);
    assert_eq!(reader.read_from(&mut source).unwrap(), stream.len());
    assert_eq!(reader.buffered(), stream.len());
    let front = reader.buf.as_ptr();
    for (i, want) in msgs.iter().enumerate() {
        let before = reader.start;
        assert_eq!(
            reader.next_frame::<ClientMsg>().unwrap().as_ref(),
            Some(want)
        );
        // Taking a frame only advances the start offset (or resets it when drained).
        assert!(reader.start > before || reader.start == 0, "frame {i}");
        assert_eq!(reader.buf.as_ptr(), front);
    }
    assert_eq!(reader.next_frame::<ClientMsg>().unwrap(), None);
    assert_eq!(reader.buffered(), 0);
    assert_eq!(reader.buf.len(), READ_CHUNK);
    assert_eq!(reader.read_from(&mut source).unwrap(), 0);
}

#[test]
fn reader_compacts_a_partial_tail_only_when_the_consumed_prefix_is_large() {
    let frame = encode_frame(&ClientMsg::Ping { id: 1 });
    // A read ending mid-frame, leaving the first half of a frame behind 10 whole ones.
    let mut stream: Vec<u8> = (0..11).flat_map(|_| frame.clone()).collect();
    stream.truncate(10 * frame.len() + 5);
    let mut reader = FrameReader::new(FRAME_MAX_DEFAULT);
    reader.read_from(&mut Pieces::new(stream, &[])).unwrap();
    for _ in 0..10 {
        assert!(reader.next_frame::<ClientMsg>().unwrap().is_some());
    }
    assert_eq!(reader.next_frame::<ClientMsg>().unwrap(), None);
    assert_eq!((reader.start, reader.buffered()), (10 * frame.len(), 5));
    // The consumed prefix is small and there is room: the next read appends in place.
    let rest = frame[5..].to_vec();
    reader.read_from(&mut Pieces::new(rest, &[])).unwrap();
    assert_eq!(reader.start, 10 * frame.len());
    assert_eq!(
        reader.next_frame::<ClientMsg>().unwrap(),
        Some(ClientMsg::Ping { id: 1 })
    );
    assert_eq!((reader.start, reader.end), (0, 0));
}

#[test]
fn reader_refuses_an_oversize_prefix_before_the_body() {
    let mut reader = FrameReader::new(100);
    let mut source = Pieces::new(101u32.to_be_bytes().to_vec(), &[]);
    assert_eq!(reader.read_from(&mut source).unwrap(), 4);
    let err = reader.next_frame::<ClientMsg>().unwrap_err();
    assert_eq!(err, FrameError::TooLarge { len: 101, max: 100 });
    // The stream is out of sync: the error stays.
    assert_eq!(reader.next_frame::<ClientMsg>().unwrap_err(), err);
    // A body of exactly the maximum is fine.
    let mut reader = FrameReader::new(13);
    let frame = encode_frame(&ClientMsg::Ping { id: 7 });
    assert_eq!(frame.len(), 4 + 13);
    reader.read_from(&mut Pieces::new(frame, &[])).unwrap();
    assert_eq!(
        reader.next_frame::<ClientMsg>().unwrap(),
        Some(ClientMsg::Ping { id: 7 })
    );
}

#[test]
fn reader_memory_stays_within_one_frame_plus_one_read() {
    // Frames larger than a read chunk, between small ones, arriving in odd-sized reads.
    let frame_max = 3 * READ_CHUNK;
    let big = |id| ClientMsg::Call {
        id,
        target: "t".into(),
        function: "f".into(),
        args: vec![id as u8; 2 * READ_CHUNK + 1000].into(),
        deadline_ms: None,
        idempotent: false,
        trace: false,
    };
    let msgs = vec![
        big(1),
        ClientMsg::Ping { id: 2 },
        big(3),
        big(4),
        ClientMsg::Ping { id: 5 },
    ];
    let stream: Vec<u8> = msgs.iter().flat_map(encode_frame).collect();
    let mut reader = FrameReader::new(frame_max);
    let mut source = Pieces::new(stream, &[]);
    source.max_read = 40_000;
    assert_eq!(drain(&mut reader, &mut source), msgs);
    // Drained after a large frame: its memory is given back.
    assert!(reader.buf.len() <= READ_CHUNK, "{}", reader.buf.len());
}

#[test]
fn reader_that_is_not_drained_stops_at_its_bound() {
    let frame_max = 1000;
    let stream: Vec<u8> = (0..10_000)
        .flat_map(|id| encode_frame(&ClientMsg::Ping { id }))
        .collect();
    let mut reader = FrameReader::new(frame_max);
    let mut source = Pieces::new(stream, &[]);
    let err = loop {
        match reader.read_from(&mut source) {
            Ok(n) => assert!(n > 0, "the source is longer than the bound"),
            Err(err) => break err,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::OutOfMemory);
    assert_eq!(reader.buffered(), reader.limit());
    assert_eq!(reader.limit(), LENGTH_PREFIX_LEN + frame_max + READ_CHUNK);
    assert_eq!(
        reader.next_frame::<ClientMsg>().unwrap(),
        Some(ClientMsg::Ping { id: 0 })
    );
}

#[test]
fn reader_passes_would_block_and_end_of_stream_through() {
    struct Blocked;
    impl std::io::Read for Blocked {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
    }
    let mut reader = FrameReader::new(FRAME_MAX_DEFAULT);
    let err = reader.read_from(&mut Blocked).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    assert_eq!(reader.read_from(&mut std::io::empty()).unwrap(), 0);
    assert_eq!(reader.next_frame::<DaemonMsg>().unwrap(), None);
}

#[test]
fn reader_grows_towards_a_large_frame_in_few_steps_and_reads_it_in_few_reads() {
    // A 1 MiB call arriving in reads of at most 300,000 bytes (what a socket may hold).
    let msg = ClientMsg::Call {
        id: 9,
        target: "t".into(),
        function: "f".into(),
        args: vec![7; 1 << 20].into(),
        deadline_ms: None,
        idempotent: false,
        trace: false,
    };
    let frame = encode_frame(&msg);
    // An empty pool of its own: a buffer kept by another test would skip the steps.
    let mut reader = FrameReader::new(FRAME_MAX_DEFAULT).with_pool(private_pool(0));
    let mut source = Pieces::new(frame.clone(), &[]);
    source.max_read = 300_000;
    // Before the prefix is in, one read chunk.
    assert_eq!(reader.read_from(&mut source).unwrap(), READ_CHUNK);
    let (mut reads, mut moves, mut front) = (1, 0, reader.buf.as_ptr());
    let got = loop {
        if let Some(got) = reader.next_frame::<ClientMsg>().unwrap() {
            break got;
        }
        assert!(reader.read_from(&mut source).unwrap() > 0);
        reads += 1;
        if reader.buf.as_ptr() != front {
            moves += 1;
            front = reader.buf.as_ptr();
        }
        // Never more than 8 times what it holds, nor more than the frame.
        assert!(reader.buf.len() <= (8 * reader.end).max(2 * READ_CHUNK));
        assert!(reader.buf.len() <= frame.len());
    };
    assert_eq!(got, msg);
    // Grown to 8 x 64 KiB, then to the whole frame: two moves, not one per read.
    assert_eq!(moves, 2);
    // Each read takes what the source has of the frame, up to the room: one read chunk at
    // a time would take 17.
    assert!(
        reads <= 1 + (frame.len() - READ_CHUNK).div_ceil(300_000) + 2,
        "{reads}"
    );
}

/// A pool for one test (the process's is shared by the tests running at once).
fn private_pool(max: usize) -> &'static BufferPool {
    Box::leak(Box::new(BufferPool::new(max)))
}

/// A call frame of `len` bytes of `byte` as arguments.
fn call_of(id: u64, len: usize, byte: u8) -> ClientMsg {
    ClientMsg::Call {
        id,
        target: "t".into(),
        function: "f".into(),
        args: vec![byte; len].into(),
        deadline_ms: None,
        idempotent: false,
        trace: false,
    }
}

#[test]
fn a_large_frame_buffer_goes_back_to_the_pool_and_takes_the_next_frame_whole() {
    const MIB: usize = 1024 * 1024;
    let pool = private_pool(64 * MIB);
    let mut reader = FrameReader::new(FRAME_MAX_DEFAULT).with_pool(pool);
    let first = call_of(1, 3 * MIB, 0xaa);
    let mut source = Pieces::new(encode_frame(&first), &[]);
    source.max_read = 200_000;
    let got = loop {
        reader.read_from(&mut source).unwrap();
        if let Some(got) = reader.next_frame::<ClientMsg>().unwrap() {
            break got;
        }
    };
    assert_eq!(got, first);
    // Taken and drained: the frame's buffer went with the frame's arguments, left where they
    // were read (after the frame's head), not copied; the connection keeps nothing of it.
    assert!(reader.buf.is_empty(), "{}", reader.buf.len());
    let ClientMsg::Call { args, .. } = got else {
        unreachable!()
    };
    assert!(
        args.offset() > LENGTH_PREFIX_LEN,
        "in place: {}",
        args.offset()
    );
    assert_eq!(pool.stats().buffers, 0);
    // Given back once used, it serves the next large frame.
    pool.give(args.into_buffer());
    let kept = pool.stats();
    assert!(kept.buffers >= 1 && kept.bytes >= 3 * MIB, "{kept:?}");
    // The next large frame: once its prefix is in, the reader takes a pooled buffer of the
    // whole frame at once instead of growing towards it step by step.
    let second = call_of(2, 3 * MIB - 1000, 0xbb);
    let frame = encode_frame(&second);
    let mut source = Pieces::new(frame.clone(), &[]);
    source.max_read = 200_000;
    reader.read_from(&mut source).unwrap();
    assert_eq!(reader.next_frame::<ClientMsg>().unwrap(), None);
    reader.read_from(&mut source).unwrap();
    assert_eq!(reader.buf.len(), frame.len());
    assert_eq!(pool.stats().reused, kept.reused + 1);
    assert_eq!(drain(&mut reader, &mut source), [second]);
}

#[test]
fn a_large_frames_last_bytes_are_read_into_the_buffer_taken_for_it() {
    const MIB: usize = 1024 * 1024;
    let pool = private_pool(64 * MIB);
    let msg = call_of(1, 3 * MIB, 0xcc);
    let frame = encode_frame(&msg);
    pool.give(Vec::with_capacity(pooled_capacity(frame.len())));
    let before = pool.stats();
    let mut reader = FrameReader::new(FRAME_MAX_DEFAULT).with_pool(pool);
    // The frame's last bytes, fewer than `ROOM_MIN`, come in a read of their own (as the
    // writer's last write may reach the socket after the reader emptied it).
    let mut source = Pieces::new(frame.clone(), &[frame.len() - 3000]);
    source.max_read = 200_000;
    let mut taken = None;
    let got = loop {
        reader.read_from(&mut source).unwrap();
        if reader.buf.len() >= frame.len() {
            // Once taken, the frame's buffer is the one it is read to the end in.
            assert_eq!(
                *taken.get_or_insert(reader.buf.as_ptr()),
                reader.buf.as_ptr()
            );
        }
        if let Some(got) = reader.next_frame::<ClientMsg>().unwrap() {
            break got;
        }
    };
    assert_eq!(got, msg);
    let after = pool.stats();
    assert_eq!(
        (after.reused, after.missed),
        (before.reused + 1, before.missed),
        "the pool's one buffer, and no other: {after:?}"
    );
}

#[test]
fn frames_after_a_longer_one_decode_from_its_reused_buffer_with_nothing_stale() {
    const MIB: usize = 1024 * 1024;
    let pool = private_pool(64 * MIB);
    // Long, shorter, small, long again: each read from a buffer the one before used, in
    // one stream and in reads that end mid-frame.
    let msgs = vec![
        call_of(1, 3 * MIB, 0x11),
        call_of(2, 2 * MIB, 0x22),
        ClientMsg::Ping { id: 3 },
        call_of(4, 1536 * 1024, 0x44),
        call_of(5, 3 * MIB, 0x55),
    ];
    let stream: Vec<u8> = msgs.iter().flat_map(encode_frame).collect();
    for max_read in [100_003, 1 << 20, usize::MAX] {
        let mut reader = FrameReader::new(FRAME_MAX_DEFAULT).with_pool(pool);
        let mut source = Pieces::new(stream.clone(), &[]);
        source.max_read = max_read;
        // Each large frame's buffer given back once its arguments are used.
        let got = drain_then(&mut reader, &mut source, |msg| {
            if let ClientMsg::Call { args, .. } = msg {
                pool.give(args.clone().into_buffer());
            }
        });
        assert!(got == msgs, "reads of {max_read}");
    }
    assert!(pool.stats().reused >= 3, "{:?}", pool.stats());
}

#[test]
fn a_dropped_reader_gives_its_large_buffer_back() {
    const MIB: usize = 1024 * 1024;
    let pool = private_pool(64 * MIB);
    let mut reader = FrameReader::new(FRAME_MAX_DEFAULT).with_pool(pool);
    // Half of a large frame: the connection closes with it buffered.
    let frame = encode_frame(&call_of(1, 2 * MIB, 1));
    let mut source = Pieces::new(frame[..frame.len() / 2].to_vec(), &[]);
    while reader.read_from(&mut source).unwrap() > 0 {}
    assert_eq!(pool.stats().buffers, 0);
    drop(reader);
    assert!(pool.stats().bytes >= 2 * MIB, "{:?}", pool.stats());
}

#[test]
fn an_encoded_frame_is_allocated_at_its_exact_size() {
    let big = ClientMsg::Call {
        id: 1,
        target: "t".into(),
        function: "f".into(),
        args: vec![1; 3 * READ_CHUNK + 5].into(),
        deadline_ms: Some(5),
        idempotent: true,
        trace: false,
    };
    for msg in [ClientMsg::Ping { id: 1 }, big] {
        let frame = encode_frame(&msg);
        assert_eq!(frame.capacity(), frame.len(), "{}", frame.len());
        assert_eq!(decode_client(&frame), Ok(Some((msg, frame.len()))));
    }
}

#[test]
fn a_large_invokes_arguments_stay_in_the_buffer_they_were_read_into() {
    const MIB: usize = 1024 * 1024;
    let pool = private_pool(64 * MIB);
    let invoke = |invocation: u64, len: usize| DaemonMsg::Invoke {
        invocation,
        function: "bulk.digest".into(),
        args: (0..len).map(|i| (i % 251) as u8).collect(),
        caller: "10.0.0.1:7400".into(),
        peer: String::new(),
        deadline_ms: 5_000,
        credentials: None,
    };
    // Below the bound, at it, above it; each followed in the same reads by a small frame.
    for len in [IN_PLACE_MIN - 1, IN_PLACE_MIN, 2 * MIB + 3] {
        let msgs = [invoke(1, len), DaemonMsg::Pong { id: 2 }, invoke(3, 10)];
        let stream: Vec<u8> = msgs.iter().flat_map(encode_frame).collect();
        let mut reader = FrameReader::new(FRAME_MAX_DEFAULT).with_pool(pool);
        let mut source = Pieces::new(stream, &[]);
        source.max_read = usize::MAX;
        let mut got = Vec::new();
        while reader.read_from(&mut source).unwrap() > 0 {
            while let Some(msg) = reader.next_frame::<DaemonMsg>().unwrap() {
                got.push(msg);
            }
        }
        assert!(got == msgs, "{len} bytes");
        let DaemonMsg::Invoke { args, .. } = &got[0] else {
            unreachable!()
        };
        if len >= IN_PLACE_MIN {
            assert!(args.offset() > LENGTH_PREFIX_LEN, "{len}: left in place");
        } else {
            assert_eq!(args.offset(), 0, "{len}: copied out");
        }
        let DaemonMsg::Invoke { args, .. } = &got[2] else {
            unreachable!()
        };
        assert_eq!(args.offset(), 0, "a small frame after a large one: copied");
    }
}
