//! The router's call and invocation deadlines: arming them in the shared heap
//! and firing those that are due.

use std::time::Instant;

use rpcd_client::ipc::ErrorCode;

use super::calls::Calls;
use super::invocations::Invocations;
use super::types::Failure;
use super::{Deadline, Router};

impl Router {
    /// Arm a deadline.
    pub(super) fn arm(&mut self, at: Instant, d: Deadline) {
        let (calls, invocations) = (&self.calls, &self.invocations);
        let live = calls.len() + invocations.len();
        self.deadlines.push(at, d, live, || {
            calls
                .deadlines()
                .map(|(id, at)| (at, Deadline::Call(id)))
                .chain(
                    invocations
                        .deadlines()
                        .map(|(id, at)| (at, Deadline::Invocation(id))),
                )
                .collect::<Vec<_>>()
                .into_iter()
        });
    }

    /// Fire every call and invocation deadline due at `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        loop {
            let due = self
                .deadlines
                .pop_expired(now, still_armed(&self.calls, &self.invocations));
            match due {
                None => return,
                Some(Deadline::Call(id)) => self.give_up_call(
                    now,
                    id,
                    Failure::new(
                        ErrorCode::DeadlineExceeded,
                        "the call's deadline passed before a reply arrived",
                    ),
                ),
                // The caller has given up by now: the app is told to stop,
                // and a late result from it is dropped and counted.
                Some(Deadline::Invocation(id)) => self.withdraw(id),
            }
        }
    }
}

/// Whether a heap entry is still its call's or invocation's deadline (the
/// work may have ended, or its entry be superseded).
pub(super) fn still_armed<'a>(
    calls: &'a Calls,
    invocations: &'a Invocations,
) -> impl Fn(Deadline, Instant) -> bool + 'a {
    move |d, at| match d {
        Deadline::Call(id) => calls.deadline(id) == Some(at),
        Deadline::Invocation(id) => invocations.deadline(id) == Some(at),
    }
}
