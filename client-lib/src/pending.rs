//! Cancellable blocking calls: [`Client::submit`] sends a call and returns a
//! [`PendingCall`], to [`wait`](PendingCall::wait) on or [`cancel`](PendingCall::cancel).
//!
//! ```no_run
//! # fn main() -> Result<(), rpcd_client::CallError> {
//! let client = rpcd_client::Client::connect()?;
//! let pending = client.submit::<_, String>("127.0.0.1:7400", "kv.slow", &("k",))?;
//! pending.cancel()?; // the daemon ends the call with `cancelled` and tells the handler
//! assert!(matches!(pending.wait(), Err(rpcd_client::CallError::Cancelled(_))));
//! # Ok(()) }
//! ```

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::conn::{CallOptions, PendingReply};
use crate::{CallError, Client, Target};

/// A call sent through a [`Client`] whose typed reply nobody waits for yet. Dropping it
/// without waiting cancels the call, like dropping an async call's future.
#[derive(Debug)]
pub struct PendingCall<R> {
    reply: PendingReply,
    function: String,
    _reply: PhantomData<fn() -> R>,
}

impl Client {
    /// Sends `function(args)` to `target` with the client's default options and returns
    /// at once; [`PendingCall::wait`] gets the reply, [`PendingCall::cancel`] cancels it.
    pub fn submit<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        target: impl Into<Target>,
        function: &str,
        args: &A,
    ) -> Result<PendingCall<R>, CallError> {
        self.submit_with(target, function, args, self.default_options())
    }

    /// [`Client::submit`] with explicit per-call options.
    pub fn submit_with<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        target: impl Into<Target>,
        function: &str,
        args: &A,
        options: CallOptions,
    ) -> Result<PendingCall<R>, CallError> {
        let args = rmp_serde::to_vec_named(args).map_err(|e| CallError::Encode(e.to_string()))?;
        let target = target.into().to_wire();
        let (conn, _) = self.connection()?;
        let reply = conn.submit(&target, function, args, options)?;
        Ok(PendingCall {
            reply,
            function: function.to_owned(),
            _reply: PhantomData,
        })
    }
}

impl<R: DeserializeOwned> PendingCall<R> {
    /// Waits for the reply and decodes it. After [`PendingCall::cancel`] a call that had
    /// not ended fails with [`CallError::Cancelled`] (its outcome is unknown: the handler
    /// may have run).
    pub fn wait(self) -> Result<R, CallError> {
        let bytes = self.reply.wait()?;
        rmp_serde::from_slice(&bytes)
            .map_err(|e| CallError::Decode(format!("{} replied: {e}", self.function)))
    }

    /// Cancels the call: the daemon ends it with `cancelled`, frees its in-flight slot and
    /// tells the serving app (its handler sees [`crate::Request::is_cancelled`]). A call
    /// that already ended keeps its outcome. Fails only when the connection is gone.
    pub fn cancel(&self) -> Result<(), CallError> {
        Ok(self.reply.cancel()?)
    }
}
