//! Waiting for a cancellation: a blocking handler that parks on something else than its
//! own work (a lock, an external event) waits on [`Request::wait_cancelled`] instead of
//! polling [`Request::is_cancelled`] itself.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Request;

/// The longest [`Request::wait_cancelled`] sleeps between two looks at the flag: a bound on
/// how late it notices a cancel.
pub const CANCEL_POLL_MAX: Duration = Duration::from_millis(10);

impl Request<'_> {
    /// Blocks until the invocation is cancelled (the caller cancelled its call or went
    /// away) and returns true, or returns false once `timeout` has passed (`None`: until the
    /// invocation's deadline). The cancel is noticed within [`CANCEL_POLL_MAX`].
    pub fn wait_cancelled(&self, timeout: Option<Duration>) -> bool {
        let until = timeout.map_or(self.deadline, |t| Instant::now() + t);
        let mut nap = Duration::from_micros(200);
        loop {
            if self.cancelled.load(Ordering::Acquire) {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            std::thread::sleep(nap.min(until - now));
            nap = (nap * 2).min(CANCEL_POLL_MAX);
        }
    }
}
