//! The writer task of an async connection and what it writes: whole frames, batched while
//! they are small, and a call's frame around its large arguments; the room each frame held
//! in the write queue is given back once it is written.

use std::io::{self, IoSlice};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::socket::WriteSide;
use super::Closed;
use crate::conn::RequestError;
use crate::ipc::{recycle, split_call_frame, try_encode_frame, ClientMsg, Payload};

/// Frames queued for the writer are written together up to about this many bytes; a frame
/// of this size or more is written from its own buffer, not copied into a batch.
const WRITE_BATCH_MAX: usize = 64 * 1024;

/// One frame queued for the writer task, with the room it holds in the write queue.
#[derive(Debug)]
pub(super) struct Queued {
    pub out: Outgoing,
    pub room: Room,
}

/// What a queued frame holds of the write queue: its length (counted in the queued bytes)
/// and the permits it took of the queue's room (its length, less for a frame larger than
/// the queue or one sent without waiting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Room {
    pub len: usize,
    pub permits: u32,
}

impl Room {
    fn add(&mut self, other: Room) {
        self.len += other.len;
        self.permits += other.permits;
    }
}

/// One frame for the writer task.
#[derive(Debug)]
pub(super) enum Outgoing {
    /// A whole encoded frame.
    Frame(Vec<u8>),
    /// A call's frame around its large arguments ([`split_call_frame`]): `head`, the
    /// caller's own `args`, then `tail`, written together, never with another frame between.
    Split {
        head: Vec<u8>,
        args: Payload,
        tail: Vec<u8>,
    },
}

impl Outgoing {
    /// `msg` as the writer takes it: a call with large arguments around them, anything
    /// else as one encoded frame, which also refuses a frame over `frame_max`.
    pub(super) fn of(msg: ClientMsg, frame_max: usize) -> Result<Outgoing, RequestError> {
        if let Some((head, tail)) = split_call_frame(&msg, frame_max) {
            let ClientMsg::Call { args, .. } = msg else {
                unreachable!("split_call_frame splits calls only")
            };
            return Ok(Outgoing::Split { head, args, tail });
        }
        try_encode_frame(&msg, frame_max)
            .map(Outgoing::Frame)
            .map_err(RequestError::of_request_frame)
    }

    /// The frame's length in bytes, all its parts.
    pub(super) fn len(&self) -> usize {
        match self {
            Outgoing::Frame(frame) => frame.len(),
            Outgoing::Split { head, args, tail } => head.len() + args.len() + tail.len(),
        }
    }
}

/// The writer task: writes queued frames, batching the small ones that queued meanwhile,
/// until the connection is dropped or a write fails (which closes it: a partial frame leaves
/// the stream out of sync).
///
/// One round writes a batch of small whole frames, then at most one large item (a large
/// frame, or a call's frame in its three parts) from its own buffers, in one vectored write
/// where the socket takes it all: nothing is written between the parts of a frame. The
/// round's frames keep their room in the write queue until the write has returned.
pub(super) async fn write_loop(
    shared: Arc<super::Shared>,
    mut stream: WriteSide,
    mut queue: mpsc::UnboundedReceiver<Queued>,
) {
    while let Some(first) = queue.recv().await {
        let mut room = first.room;
        let (mut batch, mut large) = match first.out {
            Outgoing::Frame(frame) if frame.len() < WRITE_BATCH_MAX => (frame, None),
            other => (Vec::new(), Some(other)),
        };
        while large.is_none() && batch.len() < WRITE_BATCH_MAX {
            let Ok(next) = queue.try_recv() else {
                break;
            };
            room.add(next.room);
            match next.out {
                Outgoing::Frame(more) if more.len() < WRITE_BATCH_MAX => {
                    batch.extend_from_slice(&more);
                    recycle(more);
                }
                other => large = Some(other),
            }
        }
        let written = match &large {
            None => write_all_parts(&mut stream, &[&batch]).await,
            Some(Outgoing::Frame(frame)) => write_all_parts(&mut stream, &[&batch, frame]).await,
            Some(Outgoing::Split { head, args, tail }) => {
                write_all_parts(&mut stream, &[&batch, head, args, tail]).await
            }
        };
        // A large frame's buffer serves the next large frame. A call's arguments are the
        // caller's own buffer: freed, not kept in the pool, where nothing of the caller's
        // would take it again.
        recycle(batch);
        if let Some(Outgoing::Frame(frame)) = large {
            recycle(frame);
        }
        if written.is_err() {
            // Closing fails the requests waiting for room: the room is not given back.
            shared.close(Closed::Disconnected);
            return;
        }
        shared.release(room);
    }
}

/// Writes `parts` in order as one stream of bytes, with vectored writes, however little
/// each write takes.
async fn write_all_parts(stream: &mut WriteSide, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|part| IoSlice::new(part)).collect();
    let mut left = &mut slices[..];
    // Empty parts (an empty batch) are dropped here, not sent to `writev`.
    IoSlice::advance_slices(&mut left, 0);
    while !left.is_empty() {
        match stream.write_vectored(left).await {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
