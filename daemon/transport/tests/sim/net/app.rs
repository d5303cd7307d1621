//! What an application does besides sending: it cancels messages (its
//! deadline passed) and holds a peer while it waits for a reply, and the
//! promises of `Endpoint::cancel`, `hold` and `release` are checked.
//!
//! - `cancel` returns true exactly when the message has no outcome yet, and
//!   then the message fails at once as `Cancelled` (in the same drain); a
//!   `Cancelled` failure of a message nobody cancelled is a violation.
//!   A cancelled message may still be delivered only if its failure said
//!   `maybe_delivered` (the ledger's general rules).
//! - A held channel is not idle (its peer's liveness is checked), a hold on
//!   a live peer never declares it unreachable (strict seeds), and after
//!   `release` the channel goes idle again: the end-of-run idle check fails
//!   on a hold that was never released.

use rand::Rng;
use rpcd_transport::{FailReason, MsgId};

use super::{us, Sim, What};

impl Sim {
    /// After `send` accepted a message: maybe cancel it a little later.
    pub(super) fn maybe_schedule_cancel(&mut self, from: usize, to: usize, id: MsgId) {
        if self.cancel_p == 0.0 || self.touch_from != usize::MAX {
            return;
        }
        if self.rng.gen_bool(self.cancel_p) {
            let max = (self.cfg.rto_max * 2).as_micros() as u64;
            let at = self.now + us(self.rng.gen_range(0..=max));
            let epoch = self.nodes[from].epoch;
            self.push(
                at,
                What::Cancel {
                    node: from,
                    epoch,
                    peer: to,
                    id,
                },
            );
        }
    }

    /// On an app tick: maybe hold a peer for a while.
    pub(super) fn maybe_hold(&mut self, from: usize, to: usize) {
        if self.hold_p == 0.0 || !self.rng.gen_bool(self.hold_p) {
            return;
        }
        let addr = self.nodes[to].addr;
        let now = self.instant(self.now);
        let epoch = self.nodes[from].epoch;
        let Some(ep) = self.nodes[from].ep.as_mut() else {
            return;
        };
        if ep.peer(addr).is_none() {
            return; // `hold` is for a peer with a channel
        }
        ep.hold(now, addr);
        self.out.holds += 1;
        if ep.is_idle() {
            self.violation(format!("node {from}: holding peer {to}, yet idle"));
        }
        let max = (self.cfg.keepalive_interval * 3).as_micros() as u64;
        let at = self.now + us(self.rng.gen_range(1_000..=max.max(1_000)));
        self.push(
            at,
            What::Release {
                node: from,
                epoch,
                peer: to,
            },
        );
        self.drain(from);
    }

    pub(super) fn release(&mut self, node: usize, epoch: u64, peer: usize) {
        if self.nodes[node].epoch != epoch {
            return; // the hold died with its incarnation
        }
        let addr = self.nodes[peer].addr;
        if let Some(ep) = self.nodes[node].ep.as_mut() {
            ep.release(addr);
            self.drain(node);
        }
    }

    pub(super) fn cancel(&mut self, node: usize, epoch: u64, peer: usize, id: MsgId) {
        if self.nodes[node].epoch != epoch {
            return; // the sender died
        }
        let addr = self.nodes[peer].addr;
        let key = (node, epoch, peer, id);
        let open = self
            .msgs
            .get(&key)
            .is_some_and(|m| !m.acked && m.failed.is_none());
        if let Some(m) = self.msgs.get_mut(&key) {
            m.cancel_requested = true;
        }
        let Some(ep) = self.nodes[node].ep.as_mut() else {
            return;
        };
        let r = ep.cancel(addr, id);
        self.drain(node);
        if r != open {
            self.violation(format!(
                "cancel of {key:?} returned {r}, but the message {}",
                if open { "had no outcome" } else { "had one" }
            ));
        }
        if r {
            self.out.cancelled += 1;
            let failed = self.msgs.get(&key).and_then(|m| m.failed);
            if !matches!(failed, Some((_, FailReason::Cancelled, _))) {
                self.violation(format!(
                    "cancel of {key:?} returned true, but then: {failed:?}"
                ));
            }
        } else {
            self.out.cancels_late += 1;
        }
    }
}
