//! Who reads the socket: leader/follower among the callers, or one reader thread.
//!
//! A connection that only calls has no reader thread. A caller waiting for its reply reads
//! the socket itself when no other thread does (it takes the read token, `Waiters::reading`),
//! so a lone caller's reply wakes the caller directly, with no hand-off between threads. What
//! it reads is routed like any frame: the replies of one read for other callers go to their
//! cells under one lock, and exactly those callers are unparked; a woken caller takes its
//! reply from its own cell, without the connection-wide lock. When the leader's own reply has come (or it gives up), it puts the token back and
//! unparks one caller still waiting, which leads next. Nobody reads while nobody waits:
//! [`Shared::check_closed`] looks at what came meanwhile (the end of the stream, a `fatal`)
//! without blocking.
//!
//! A connection that serves (it registered a function, takes invocations, or has a sink)
//! needs a reader at all times: [`serve`] runs on its own thread, takes the token once the
//! current leader puts it back, and keeps it; callers then only wait in their slots.

use std::io;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::demux::{ReplyCell, Routed, Shared, Slot, Waiters};
use super::read_half::ReadHalf;
use super::{Closed, RequestError};
use crate::client::lock;
use crate::ipc::{DaemonMsg, ErrorCode};

/// The longest one read by a leading caller blocks (the socket's read timeout) before it
/// looks at its own deadline again; less when its deadline is nearer. Only a caller waiting
/// for its reply reads this way: a serving connection's reader (the reader thread, or the
/// pool's leading worker) blocks until bytes come or the socket is shut down, so an idle
/// serving app does not wake.
pub(super) const LEADER_READ_SLICE: Duration = Duration::from_millis(100);

impl Shared {
    /// Registers a request that is about to be written, unless the connection is closed;
    /// its reply will be delivered to the returned cell.
    pub(super) fn expect_reply(&self, id: u64) -> Result<Arc<ReplyCell>, RequestError> {
        let cell = Arc::new(ReplyCell::default());
        let thread = std::thread::current();
        let mut waiters = self.waiters();
        if let Some(closed) = &waiters.closed {
            return Err(closed.to_error());
        }
        waiters.pending.insert(
            id,
            Slot {
                cell: Arc::clone(&cell),
                thread,
                waiting: false,
            },
        );
        Ok(cell)
    }

    /// Waits up to `wait` for the reply to request `id` (registered by
    /// [`Shared::expect_reply`], which gave `cell`), reading the socket itself while no
    /// other thread does.
    pub(super) fn wait_reply(
        &self,
        id: u64,
        cell: &ReplyCell,
        wait: Duration,
    ) -> Result<DaemonMsg, RequestError> {
        // A submitted call's reply may have come before anyone waited.
        if let Some(reply) = cell.take() {
            return Ok(reply);
        }
        let until = Instant::now().checked_add(wait);
        let mut waiters = self.waiters();
        // The thread waiting may not be the one that sent the request (a submitted call).
        if let Some(slot) = waiters.pending.get_mut(&id) {
            slot.thread = std::thread::current();
            slot.waiting = true;
        }
        // Whether this thread put the token back last, and so owes a hand-off if it leaves.
        let mut owes_hand_off = false;
        loop {
            // Delivery happens under the waiters' lock, held here: an empty cell stays empty
            // until it is dropped.
            if let Some(reply) = cell.take() {
                if owes_hand_off {
                    self.hand_off(&waiters);
                }
                return Ok(reply);
            }
            if let Some(closed) = &waiters.closed {
                // `close` woke everyone: no hand-off owed.
                return Err(closed.to_error());
            }
            let left = match until {
                Some(until) => until.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                waiters.pending.remove(&id);
                if owes_hand_off {
                    self.hand_off(&waiters);
                }
                return Err(RequestError::Local {
                    code: ErrorCode::DeadlineExceeded,
                    message: format!("no reply from rpcd within {wait:?}"),
                });
            }
            if !waiters.serving && !waiters.reading {
                waiters.reading = true;
                drop(waiters);
                let reason = {
                    let mut half = lock(&self.read_half);
                    // The read ends by this caller's deadline if that comes first. Should the
                    // socket refuse, the read keeps the slice it has (a caller's reads are
                    // always bounded: only a serving connection's are not, and callers do
                    // not read one).
                    let _ = half.set_timeout(Some(LEADER_READ_SLICE.min(left)));
                    self.read_some(&mut half)
                };
                if let Some(reason) = reason {
                    self.close(reason);
                }
                waiters = self.waiters();
                waiters.reading = false;
                owes_hand_off = true;
                continue;
            }
            if owes_hand_off {
                // A reader thread started serving while this one led: it takes over.
                self.hand_off(&waiters);
                owes_hand_off = false;
            }
            drop(waiters);
            std::thread::park_timeout(left);
            // The usual wake-up: the reply came. Taken without the connection-wide lock
            // (no hand-off is owed here).
            if let Some(reply) = cell.take() {
                return Ok(reply);
            }
            waiters = self.waiters();
        }
    }

    /// The token was put back: wake whoever reads next (the reader thread if one serves,
    /// else one caller still waiting for its reply).
    fn hand_off(&self, waiters: &MutexGuard<'_, Waiters>) {
        if waiters.reading {
            return;
        }
        if waiters.serving {
            self.token_free.notify_all();
            return;
        }
        if let Some(next) = waiters.pending.values().find(|slot| slot.waiting) {
            next.thread.unpark();
        }
    }

    /// True once the connection is closed. While nobody reads, first looks at what the
    /// daemon sent meanwhile, without blocking: the end of the stream or a `fatal` closes
    /// it now rather than at the next request.
    pub(super) fn check_closed(&self) -> bool {
        let mut waiters = self.waiters();
        if waiters.closed.is_some() {
            return true;
        }
        if waiters.serving || waiters.reading {
            return false;
        }
        waiters.reading = true;
        drop(waiters);
        let reason = {
            let mut half = lock(&self.read_half);
            if half.readable_now() {
                self.read_some(&mut half)
            } else {
                None
            }
        };
        if let Some(reason) = reason {
            self.close(reason);
        }
        let mut waiters = self.waiters();
        waiters.reading = false;
        self.hand_off(&waiters);
        waiters.closed.is_some()
    }

    /// One read from the socket (bounded by its read timeout, if it has one), then every
    /// whole frame routed; returns why to close, if the stream ended or said so.
    fn read_some(&self, half: &mut ReadHalf) -> Option<Closed> {
        match half.read_more() {
            Ok(0) => return Some(Closed::Disconnected),
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return Some(Closed::Disconnected),
        }
        self.route_buffered(half)
    }

    /// Routes every whole frame buffered; returns why to close, if one said so or was bad.
    /// Taking every whole frame before reading more keeps the reader within its bound.
    /// Replies are delivered together, before anything that ends the read.
    fn route_buffered(&self, half: &mut ReadHalf) -> Option<Closed> {
        let mut replies = Vec::new();
        let reason = loop {
            match half.frames.next_frame::<DaemonMsg>() {
                Ok(Some(msg)) => match self.route(msg) {
                    Routed::Done => {}
                    Routed::Reply(id, msg) => replies.push((id, msg)),
                    Routed::Invocation(work) => {
                        if let Some(reason) = self.deliver(work) {
                            break Some(reason);
                        }
                    }
                    Routed::Close(reason) => break Some(reason),
                },
                Ok(None) => break None,
                Err(err) => break Some(Closed::Protocol(format!("bad frame from rpcd: {err}"))),
            }
        };
        self.deliver_replies(&mut replies);
        reason
    }
}

/// The reader thread of a serving connection: takes the read token once the leading caller
/// (if any) puts it back, keeps it, and routes frames until the connection closes.
pub(super) fn serve(shared: Arc<Shared>) {
    {
        let mut waiters = shared.waiters();
        while waiters.reading && waiters.closed.is_none() {
            waiters = shared
                .token_free
                .wait(waiters)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if waiters.closed.is_some() {
            return;
        }
        waiters.reading = true;
    }
    let mut half = lock(&shared.read_half);
    // Blocking reads from now on: nobody else reads, and a close shuts the socket down. What
    // the serving app's pool read and left buffered (when it handed the socket back) is
    // routed first: it may be the reply someone waits for, with nothing more to come.
    let reason = match half.set_timeout(None) {
        Ok(()) => shared.route_buffered(&mut half).unwrap_or_else(|| loop {
            if let Some(reason) = shared.read_some(&mut half) {
                break reason;
            }
        }),
        Err(err) => Closed::Protocol(format!("cannot make the socket's reads blocking: {err}")),
    };
    drop(half);
    shared.close(reason);
}
