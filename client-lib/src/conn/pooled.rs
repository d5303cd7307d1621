//! A serving connection read by the serving app's own threads, one turn at a time
//! (leader/follower): the thread whose turn it is reads until an invocation comes and returns
//! it, to run the handler itself while another thread takes the next turn. So an invocation
//! reaches its handler on the thread that read it, with no hand-off between threads on the
//! way. Which thread reads next is the pool's business (`server/pool.rs`); the connection
//! only makes sure that one turn runs at a time and that callers on it only wait.
//!
//! A turn's read blocks until the daemon sends something or the connection is shut down (a
//! close, or the end of the stream): an idle serving app sleeps in it. To have the reading
//! thread look at something of its own (the pool stopping), have the daemon send it a frame:
//! a `ping`'s answer ends the read.
//!
//! Order: [`Connection::attach_readers`] (before anything registers, so no reader thread
//! starts), then turns ([`Connection::read_turn`]), then [`Connection::detach_readers`] to
//! give the socket back to a reader thread when the pool stops.

use std::io;

use super::demux::{Routed, Shared};
use super::read_half::ReadHalf;
use super::{Closed, Connection, Invocation, RequestError};
use crate::client::lock;
use crate::ipc::DaemonMsg;

/// What one turn at reading found.
#[derive(Debug)]
pub(crate) enum Turn {
    /// An invocation for the reading thread to run, or queue, and answer; a `cancel` for it
    /// reaches it from now on.
    Invocation(Invocation),
    /// Frames other than invocations were routed (a reply, a cancel), or the read was
    /// interrupted: the pool may look at its own state before the next turn.
    Idle,
    /// The connection is closed.
    Closed,
}

impl Connection {
    /// Lets the serving app's threads read this connection in turns ([`Connection::read_turn`])
    /// instead of a reader thread; callers on it only wait from now on. False when a reader
    /// thread reads it already: that thread keeps the socket (the app then takes invocations
    /// through a sink). Harmless when attached already.
    pub(crate) fn attach_readers(&self) -> Result<bool, RequestError> {
        let reader = lock(&self.reader);
        let mut waiters = self.shared.waiters();
        if let Some(closed) = &waiters.closed {
            return Err(closed.to_error());
        }
        if reader.is_some() {
            return Ok(false);
        }
        waiters.serving = true;
        waiters.pooled = true;
        Ok(true)
    }

    /// Gives the socket back to the connection: a reader thread reads it from now on, and
    /// invocations go to the connection's queue (or a sink). Call it between turns.
    pub(crate) fn detach_readers(&self) -> Result<(), RequestError> {
        self.shared.waiters().pooled = false;
        self.serve()
    }

    /// One turn at reading, for one thread of an attached pool at a time: an invocation that
    /// waited in the connection's queue (routed before the pool attached), else the frames
    /// still buffered, else one read, blocking until bytes come or the connection is shut
    /// down, and what it brought. Replies and cancels are routed on the way; frames after
    /// the first invocation stay buffered for the next turn.
    pub(crate) fn read_turn(&self) -> Turn {
        if let Ok(queue) = self.invocations.try_lock() {
            if let Ok(work) = queue.try_recv() {
                return Turn::Invocation(work);
            }
        }
        {
            let mut waiters = self.shared.waiters();
            // A caller leading when the pool attached puts the token back after its read.
            while waiters.reading && waiters.closed.is_none() {
                waiters = self
                    .shared
                    .token_free
                    .wait(waiters)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if waiters.closed.is_some() {
                return Turn::Closed;
            }
            waiters.reading = true;
        }
        let turn = self.shared.turn(&mut lock(&self.shared.read_half));
        self.shared.waiters().reading = false;
        turn
    }
}

impl Shared {
    fn turn(&self, half: &mut ReadHalf) -> Turn {
        if let Some(turn) = self.next_invocation(half) {
            return turn;
        }
        // No read timeout: nothing but the daemon (or the close) has to wake this thread.
        if let Err(err) = half.set_timeout(None) {
            self.close(Closed::Protocol(format!(
                "cannot make the socket's reads blocking: {err}"
            )));
            return Turn::Closed;
        }
        match half.read_more() {
            Ok(0) => {
                self.close(Closed::Disconnected);
                return Turn::Closed;
            }
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                return Turn::Idle
            }
            Err(_) => {
                self.close(Closed::Disconnected);
                return Turn::Closed;
            }
        }
        self.next_invocation(half).unwrap_or(Turn::Idle)
    }

    /// Routes the whole frames buffered up to the first invocation, which it returns; `None`
    /// when none is left.
    fn next_invocation(&self, half: &mut ReadHalf) -> Option<Turn> {
        loop {
            let msg = match half.frames.next_frame::<DaemonMsg>() {
                Ok(Some(msg)) => msg,
                Ok(None) => return None,
                Err(err) => {
                    self.close(Closed::Protocol(format!("bad frame from rpcd: {err}")));
                    return Some(Turn::Closed);
                }
            };
            match self.route(msg) {
                Routed::Done => {}
                Routed::Reply(id, msg) => self.deliver_replies(&mut vec![(id, msg)]),
                Routed::Invocation(work) => match self.track(&work) {
                    Ok(()) => return Some(Turn::Invocation(work)),
                    Err(refusal) => {
                        if let Some(reason) = self.answer(work.invocation, refusal) {
                            self.close(reason);
                            return Some(Turn::Closed);
                        }
                    }
                },
                Routed::Close(reason) => {
                    self.close(reason);
                    return Some(Turn::Closed);
                }
            }
        }
    }
}
