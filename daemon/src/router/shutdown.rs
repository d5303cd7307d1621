//! The end of a shutdown: draining (calls and invocations may still finish, until the
//! grace ends), then lingering (the transport delivers what it holds), then finished.

use std::time::Instant;

use rpcd_client::ipc::ErrorCode;
use tracing::info;

use super::types::Failure;
use super::{Router, Shutdown, SHUTDOWN_LINGER_MAX};

impl Router {
    /// Moves the shutdown on when its stage is over: a drained daemon gives up what is
    /// left (calls, name lookups, invocations) and lingers; a lingering one finishes once
    /// the transport is idle or the linger ends.
    pub(super) fn advance_shutdown(&mut self, now: Instant) {
        if let Shutdown::Draining { until } = self.shutdown {
            let quiet = self.calls.is_empty()
                && self.invocations.is_empty()
                && !self.names_lookup_pending();
            if !quiet && now < until {
                return;
            }
            for id in self.calls.ids() {
                self.give_up_call(
                    now,
                    id,
                    Failure::new(ErrorCode::ShuttingDown, "the daemon is shutting down"),
                );
            }
            self.fail_pending_names(now);
            for id in self.invocations.ids() {
                if let Some(i) = self.take_invocation(id) {
                    self.cancel_frame(i.owner, id);
                    self.answer(
                        now,
                        i.origin,
                        Err(Failure::new(
                            ErrorCode::ShuttingDown,
                            "the serving daemon is shutting down",
                        )),
                    );
                }
            }
            let linger = SHUTDOWN_LINGER_MAX.min(self.settings.limits.shutdown_grace);
            self.shutdown = Shutdown::Lingering {
                until: now + linger,
            };
            self.drain_events(now);
        }
        if let Shutdown::Lingering { until } = self.shutdown {
            if self.endpoint.is_idle() || now >= until {
                info!("rpcd stopped");
                self.shutdown = Shutdown::Finished;
            }
        }
    }
}
