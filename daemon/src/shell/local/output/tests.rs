use rpcd_client::ipc::{encode_frame, ErrorCode};

use super::*;

const MIB: usize = 1024 * 1024;

fn private_pool(max: usize) -> &'static BufferPool {
    Box::leak(Box::new(BufferPool::new(max)))
}

/// A socket that takes the next of `sizes` bytes at most per write (round and round),
/// across the pieces of a vectored write as the kernel does.
struct Socket {
    sizes: Vec<usize>,
    writes: usize,
    got: Vec<u8>,
}

impl Socket {
    fn taking(sizes: &[usize]) -> Socket {
        Socket {
            sizes: sizes.to_vec(),
            writes: 0,
            got: Vec::new(),
        }
    }

    /// Writes `out` until it is empty.
    fn drain(&mut self, out: &mut Output) {
        while !out.is_empty() {
            assert!(out.write_to(self).unwrap() > 0);
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut left = self.sizes[self.writes % self.sizes.len()];
        self.writes += 1;
        let start = self.got.len();
        for b in bufs {
            let n = left.min(b.len());
            self.got.extend_from_slice(&b[..n]);
            left -= n;
        }
        Ok(self.got.len() - start)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn invoke(invocation: u64, args: Vec<u8>) -> DaemonMsg {
    DaemonMsg::Invoke {
        invocation,
        function: "bulk.digest".into(),
        args: args.into(),
        caller: "127.0.0.1:7000".into(),
        peer: "a".into(),
        deadline_ms: 30_000,
        credentials: None,
    }
}

/// `msg`, an `invoke` without credentials, given to [`Output::push_invoke`], its
/// arguments in place behind `junk` bytes of something else (as in a delivered envelope).
fn push_invoke(out: &mut Output, msg: &DaemonMsg, junk: usize) -> Result<usize, Unqueued> {
    let DaemonMsg::Invoke {
        invocation,
        function,
        args,
        caller,
        peer,
        deadline_ms,
        credentials: None,
    } = msg
    else {
        panic!("an invoke without credentials");
    };
    let fields = InvokeFields {
        invocation: *invocation,
        function,
        caller,
        peer,
        deadline_ms: *deadline_ms,
    };
    let mut buf = vec![0xee; junk];
    buf.extend_from_slice(args);
    buf.extend_from_slice(&[0xdd; 9]);
    let payload = Payload::in_place(buf, junk..junk + args.len());
    out.push_invoke(&fields, payload, usize::MAX)
}

/// Two large `invoke`s, their arguments queued apart, with small frames before, between
/// and after them (some queued while the first is half written, so the written prefix
/// is dropped under a payload queued apart): what the app reads is every frame as serde
/// writes it in one piece, in order, whatever the socket takes at a time.
#[test]
fn large_invokes_between_small_frames_come_out_as_serde_writes_them() {
    let large = |seed: usize| -> Vec<u8> {
        (0..APART_MIN + seed)
            .map(|i| (i * 7 + seed) as u8)
            .collect()
    };
    let small = |id| DaemonMsg::CallOk {
        id,
        data: vec![1, 2, 3],
        trace: None,
    };
    let failed = DaemonMsg::Failed {
        id: 4,
        code: ErrorCode::AppError,
        message: "no".into(),
        trace: None,
    };
    let (first, second) = (invoke(1, large(3)), invoke(2, large(70_001)));
    let small_invoke = invoke(3, vec![5; 100]);
    let before = [small(1), failed.clone()];
    let after = [small(2), small_invoke.clone(), failed];
    let mut expected = Vec::new();
    for msg in before
        .iter()
        .chain([&first])
        .chain(&after)
        .chain([&second, &small(9)])
    {
        expected.extend_from_slice(&encode_frame(msg));
    }
    for sizes in [&[1][..], &[7], &[4096], &[1, 7, 4096, 200_000, 3, 65_536]] {
        let pool = private_pool(64 * MIB);
        let mut out = Output::with_pool(pool);
        let mut socket = Socket::taking(sizes);
        for msg in &before {
            out.push_frame(msg, usize::MAX).unwrap();
        }
        let len = push_invoke(&mut out, &first, 40).unwrap();
        assert_eq!(len, encode_frame(&first).len());
        assert_eq!(out.apart.len(), 1, "queued apart");
        // Into the first one's arguments.
        let mid = out.buf.len() + APART_MIN / 2;
        while socket.got.len() < mid {
            out.write_to(&mut socket).unwrap();
        }
        for msg in &after {
            match msg {
                DaemonMsg::Invoke { .. } => push_invoke(&mut out, msg, 3),
                _ => out.push_frame(msg, usize::MAX),
            }
            .unwrap();
        }
        assert_eq!(out.apart.len(), 1, "small arguments are copied in");
        push_invoke(&mut out, &second, 0).unwrap();
        out.push_frame(&small(9), usize::MAX).unwrap();
        assert_eq!(out.len() + socket.got.len(), expected.len());
        socket.drain(&mut out);
        assert!(
            socket.got == expected,
            "sizes {sizes:?}: the bytes serde writes"
        );
        assert!(out.apart.is_empty() && out.buf.is_empty());
        assert_eq!(pool.stats().kept, 2, "both payloads given back");
    }
}

/// `len()` counts the arguments queued apart; a small frame and a large `invoke` go in one
/// write when the socket takes them; the arguments' buffer goes back to the pool as their
/// last byte is written, not before.
#[test]
fn arguments_queued_apart_count_in_len_and_go_back_to_the_pool_once_written() {
    let pool = private_pool(64 * MIB);
    let mut out = Output::with_pool(pool);
    let msg = invoke(1, vec![0x11; APART_MIN + 1]);
    let frame = encode_frame(&msg);
    let pong = encode_frame(&DaemonMsg::Pong { id: 1 });
    out.push_frame(&DaemonMsg::Pong { id: 1 }, usize::MAX)
        .unwrap();
    assert_eq!(push_invoke(&mut out, &msg, 0), Ok(frame.len()));
    assert_eq!(out.len(), pong.len() + frame.len(), "the arguments counted");
    assert!(out.buf.len() < 200, "and not copied");
    let mut socket = Socket::taking(&[usize::MAX]);
    assert_eq!(
        out.write_to(&mut socket).unwrap(),
        pong.len() + frame.len(),
        "one write"
    );
    assert!(out.is_empty());
    assert_eq!(pool.stats().kept, 1);

    // Written up to the arguments' last byte, then that byte.
    push_invoke(&mut out, &msg, 0).unwrap();
    let tail = out.buf.len() - out.apart[0].at;
    let to_last = frame.len() - tail - 1;
    let mut socket = Socket::taking(&[to_last, 1, tail]);
    out.write_to(&mut socket).unwrap();
    assert_eq!(out.len(), tail + 1);
    assert_eq!(pool.stats().kept, 1, "still being written");
    out.write_to(&mut socket).unwrap();
    assert_eq!(out.len(), tail);
    assert_eq!(pool.stats().kept, 2, "given back once written");
    out.write_to(&mut socket).unwrap();
    assert!(out.is_empty());
    assert!(socket.got == frame);

    // Not queued (no room): nothing of it stays, its buffer goes back; the same for a
    // connection gone with one queued.
    let before = out.len();
    let fields = InvokeFields {
        invocation: 1,
        function: "f",
        caller: "",
        peer: "",
        deadline_ms: 0,
    };
    let args = Payload::from(vec![0; APART_MIN]);
    let refused = out.push_invoke(&fields, args.clone(), APART_MIN);
    assert!(matches!(refused, Err(Unqueued::OverRoom(n)) if n > APART_MIN));
    assert_eq!(out.len(), before);
    assert_eq!(pool.stats().kept, 3);
    out.push_invoke(&fields, args, usize::MAX).unwrap();
    out.discard();
    assert_eq!(pool.stats().kept, 4);
    assert_eq!(out.len(), 0);
}

/// A 16 MiB frame written in pieces of 200,000 bytes (a Unix socket's buffer), a small
/// frame queued after each piece: the bytes moved to the front stay within the bytes
/// written, and every frame comes out whole and in order.
#[test]
fn a_large_frame_written_in_pieces_is_moved_at_most_once_over() {
    let mut out = Output::with_pool(private_pool(0));
    let large: Vec<u8> = (0..16 * MIB).map(|i| (i % 251) as u8).collect();
    out.for_append(large.len()).extend_from_slice(&large);
    let mut expected = large.clone();
    let (mut written, mut moved) = (0usize, 0usize);
    let mut socket = Socket::taking(&[200_000]);
    for i in 0u32.. {
        if out.is_empty() {
            break;
        }
        written += out.write_to(&mut socket).unwrap();
        if written >= large.len() {
            continue;
        }
        let small = i.to_be_bytes();
        let (pos, len) = (out.pos, out.buf.len());
        out.for_append(small.len()).extend_from_slice(&small);
        if out.pos == 0 && pos > 0 && len > 0 {
            moved += len - pos;
        }
        expected.extend_from_slice(&small);
    }
    assert!(socket.got == expected, "the frames in order");
    // Dropping the written prefix whenever it passed 1 MiB, as before, moved some
    // 120 MiB here.
    assert!(moved <= written, "moved {moved} for {written} written");
}

#[test]
fn a_large_output_buffer_comes_from_the_pool_and_goes_back_once_written() {
    let pool = private_pool(64 * MIB);
    pool.give(vec![0u8; 4 * MIB]);
    let mut out = Output::with_pool(pool);
    out.for_append(3 * MIB).extend_from_slice(&[7; 3 * MIB]);
    assert_eq!(out.buf.capacity(), 4 * MIB, "the pooled buffer");
    assert_eq!(pool.stats().buffers, 0);
    out.advance(MIB);
    assert_eq!(pool.stats().buffers, 0, "still being written");
    out.advance(2 * MIB);
    assert!(out.is_empty());
    assert_eq!(pool.stats().bytes, 4 * MIB, "given back");
    // A small frame does not take a large buffer.
    out.for_append(10).extend_from_slice(b"0123456789");
    assert_eq!(pool.stats().bytes, 4 * MIB);
    let mut socket = Socket::taking(&[4]);
    out.write_to(&mut socket).unwrap();
    assert_eq!(socket.got, b"0123");
    out.discard();
    assert_eq!(pool.stats().bytes, 4 * MIB);
}
