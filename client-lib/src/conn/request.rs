//! Sending a request on a connection and waiting for its reply: the one step every request
//! takes (`call`, `submit`, `register`, `stats`, ...).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::demux::ReplyCell;
use super::{Connection, RequestError};
use crate::ipc::{recycle, split_call_frame, try_encode_frame, ClientMsg, DaemonMsg};

impl Connection {
    /// Sends one request and waits up to `wait` for its reply; `Failed` becomes
    /// [`RequestError::Remote`].
    pub(super) fn request(
        &self,
        make: impl FnOnce(u64) -> ClientMsg,
        wait: Duration,
    ) -> Result<DaemonMsg, RequestError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let cell = self.send_request(id, make(id))?;
        match self.shared.wait_reply(id, &cell, wait)? {
            DaemonMsg::Failed { code, message, .. } => Err(RequestError::Remote { code, message }),
            other => Ok(other),
        }
    }

    /// Sends request `id` and returns where its reply will be delivered. A `call` with
    /// large arguments is written around them ([`split_call_frame`]), any other message as
    /// one encoded frame; a request whose frame could not be written is forgotten.
    pub(super) fn send_request(
        &self,
        id: u64,
        msg: ClientMsg,
    ) -> Result<Arc<ReplyCell>, RequestError> {
        let (cell, written) = match split_call_frame(&msg, self.shared.frame_max) {
            Some((head, tail)) => {
                let ClientMsg::Call { args, .. } = msg else {
                    unreachable!("split_call_frame splits calls only")
                };
                let cell = self.shared.expect_reply(id)?;
                // The app's own buffer is freed after, not kept in the pool, where nothing
                // of the caller's would take it again.
                (cell, self.shared.write_parts(&[&head, &args, &tail]))
            }
            None => {
                let frame = try_encode_frame(&msg, self.shared.frame_max)
                    .map_err(RequestError::of_request_frame)?;
                let cell = self.shared.expect_reply(id)?;
                let written = self.shared.write(&frame);
                recycle(frame);
                (cell, written)
            }
        };
        if let Err(err) = written {
            self.shared.forget(id);
            return Err(err);
        }
        Ok(cell)
    }
}
