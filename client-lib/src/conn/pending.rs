//! A call sent and not waited for yet: [`Connection::submit`] returns a [`PendingReply`],
//! which the caller waits on ([`PendingReply::wait`]) or cancels ([`PendingReply::cancel`],
//! or by dropping it unwaited).
//!
//! Cancelling sends `cancel_call {id}` (`docs/ipc-protocol.md` §5): the daemon ends the call
//! with `failed` / `cancelled`, which `wait` then returns, unless the reply came first.

use std::sync::Arc;
use std::time::Duration;

use super::demux::{ReplyCell, Shared};
use super::{millis_ceil, unexpected, CallOptions, Connection, RequestError};
use super::{CALL_WAIT_MAX, REPLY_GRACE};
use crate::ipc::{try_encode_frame, ClientMsg, DaemonMsg};

/// A call in flight whose reply nobody waits for yet. Dropping it without [`wait`]ing
/// cancels the call.
///
/// [`wait`]: PendingReply::wait
#[derive(Debug)]
pub struct PendingReply {
    shared: Arc<Shared>,
    id: u64,
    /// Where the reply is delivered.
    cell: Arc<ReplyCell>,
    wait: Duration,
    /// Set once the reply was taken or the call cancelled: nothing left to cancel on drop.
    done: bool,
}

impl Connection {
    /// Sends a call like [`Connection::call`] and returns without waiting for its reply.
    pub fn submit(
        &self,
        target: &str,
        function: &str,
        args: Vec<u8>,
        opts: CallOptions,
    ) -> Result<PendingReply, RequestError> {
        let id = self
            .shared
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let msg = ClientMsg::Call {
            id,
            target: target.to_owned(),
            function: function.to_owned(),
            args: args.into(),
            deadline_ms: opts.deadline.map(millis_ceil),
            idempotent: opts.idempotent,
            trace: false,
        };
        let cell = self.send_request(id, msg)?;
        Ok(PendingReply {
            shared: Arc::clone(&self.shared),
            id,
            cell,
            wait: opts
                .deadline
                .unwrap_or(CALL_WAIT_MAX)
                .saturating_add(REPLY_GRACE),
            done: false,
        })
    }
}

impl PendingReply {
    /// The request id of the call on its connection.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the call's reply bytes, as [`Connection::call`] does. After
    /// [`PendingReply::cancel`], a call still pending fails with code `cancelled`.
    pub fn wait(mut self) -> Result<Vec<u8>, RequestError> {
        self.done = true;
        let reply = self.shared.wait_reply(self.id, &self.cell, self.wait)?;
        match reply {
            DaemonMsg::CallOk { data, .. } => Ok(data),
            DaemonMsg::Failed { code, message, .. } => Err(RequestError::Remote { code, message }),
            other => Err(unexpected("call_ok", &other)),
        }
    }

    /// Asks the daemon to cancel the call (`cancel_call`): it ends the call with
    /// `cancelled`, tells the serving app, and frees the call's slot. Harmless when the
    /// call has ended already. Call [`PendingReply::wait`] afterwards for the outcome.
    pub fn cancel(&self) -> Result<(), RequestError> {
        let frame = try_encode_frame(
            &ClientMsg::CancelCall { id: self.id },
            self.shared.frame_max,
        )
        .map_err(|err| RequestError::Protocol(err.to_string()))?;
        self.shared.write(&frame)
    }
}

impl Drop for PendingReply {
    /// Nobody will wait for the reply: cancel the call so its work and slot are freed.
    fn drop(&mut self) {
        if !self.done {
            // A connection that is closed has no call left to cancel.
            let _ = self.cancel();
            self.shared.forget(self.id);
        }
    }
}
