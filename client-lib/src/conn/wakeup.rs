//! A wake-up that a thread blocks on until an event sends it: what lets a serving app's
//! dispatcher sleep, with no timer, until its connection closes or it is told to stop
//! ([`super::Connection::notify_on_close`]).

use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::client::lock;

/// A sticky signal: [`Wakeup::notify`] sets it and wakes the waiter; [`Wakeup::wait`]
/// returns once it is set, and clears it. A notification sent while nobody waits is kept
/// for the next wait, so none is lost between looking at a state and waiting for it to
/// change.
#[derive(Debug, Default)]
pub(crate) struct Wakeup {
    notified: Mutex<bool>,
    changed: Condvar,
}

impl Wakeup {
    /// Sets the signal and wakes whoever waits.
    pub(crate) fn notify(&self) {
        *lock(&self.notified) = true;
        self.changed.notify_all();
    }

    /// Blocks until the signal is set, or `until` passes (`None`: no limit); clears it and
    /// returns whether it was set.
    pub(crate) fn wait(&self, until: Option<Instant>) -> bool {
        let mut notified = lock(&self.notified);
        while !*notified {
            notified = match until {
                None => self
                    .changed
                    .wait(notified)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.changed
                        .wait_timeout(notified, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
        *notified = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_notification_sent_before_the_wait_is_kept() {
        let wakeup = Wakeup::default();
        wakeup.notify();
        assert!(wakeup.wait(None));
        // Consumed: the next wait times out.
        assert!(!wakeup.wait(Some(Instant::now() + Duration::from_millis(20))));
    }

    #[test]
    fn a_waiter_is_woken_by_a_notification() {
        let wakeup = Arc::new(Wakeup::default());
        let waiter = {
            let wakeup = Arc::clone(&wakeup);
            std::thread::spawn(move || {
                let started = Instant::now();
                let woken = wakeup.wait(Some(started + Duration::from_secs(10)));
                (woken, started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        wakeup.notify();
        let (woken, took) = waiter.join().unwrap();
        assert!(woken);
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}
