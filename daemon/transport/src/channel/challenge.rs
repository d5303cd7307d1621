//! A new epoch of the peer is believed only once confirmed.
//!
//! Without keys nothing authenticates a datagram, and one forged with the
//! peer's address and a fresh epoch would otherwise reset the channel (its
//! messages failed "peer restarted", and every later datagram of the real
//! peer dropped as stale). So a datagram from an epoch of the peer that is
//! neither its current one nor a retired one is only a *claim*: it is
//! dropped, and the channel sends a probe addressed to the claimed epoch
//! carrying a random challenge. Only an Ack from that epoch, addressed to
//! ours and echoing the challenge, proves that the claimed incarnation sits
//! at the peer's address and reads what we send there: then the channel
//! resets (`peer_restarted`). An off-path forger never sees the challenge.
//!
//! Limits: one claim at a time, its challenge sent only in answer to a
//! datagram making the claim, at most once per backed-off RTO, and the claim
//! forgotten `peer_timeout` after it was first heard. A datagram making a
//! claim earns at most one datagram in answer (the challenge, or the echo of
//! a challenge it carries), a bare header, no larger than itself.

use std::time::Instant;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::Channel;
use crate::seq::Seq;
use crate::wire::{Datagram, Kind};

/// The confirmation state of a channel: the pending claim, the challenge
/// to send, the echo owed.
#[derive(Debug)]
pub(super) struct Challenges {
    /// Draws the challenges: seeded by the owner, so that an off-path
    /// forger cannot predict them and a simulation can replay them.
    rng: ChaCha8Rng,
    /// The one epoch claimed and not yet confirmed.
    pub(super) claim: Option<Claim>,
    /// Send the claim's challenge at the next `poll_transmit`.
    pub(super) challenge_now: bool,
    /// A challenge received, to echo at the next `poll_transmit`.
    pub(super) echo: Option<Echo>,
}

/// An epoch the peer is claimed to have now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Claim {
    pub(super) epoch: u64,
    /// Never zero (zero means "no challenge" on the wire).
    pub(super) challenge: u64,
    /// When the claim was first heard: it expires `peer_timeout` later
    /// (checked whenever the claim is consulted; no timer).
    pub(super) since: Instant,
    /// When the challenge last went out, and how many times it has.
    pub(super) sent: Option<(Instant, u32)>,
}

/// A challenge to answer: the epoch that sent it, and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Echo {
    pub(super) to: u64,
    pub(super) challenge: u64,
}

impl Challenges {
    pub(super) fn new(seed: u64) -> Self {
        Challenges {
            rng: ChaCha8Rng::seed_from_u64(seed),
            claim: None,
            challenge_now: false,
            echo: None,
        }
    }

    /// Nothing to send. (A pending claim is a bounded memo that arms no
    /// timer: it expires when next consulted.)
    pub(super) fn is_idle(&self) -> bool {
        !self.challenge_now && self.echo.is_none()
    }
}

impl Channel {
    /// A datagram from `d.sender_epoch`, which is neither the peer's known
    /// epoch `current` nor a retired one. Returns true when it confirms the
    /// claim (the channel was reset to the new epoch, and the datagram is to
    /// be processed as the first of that incarnation); false when it was
    /// dropped as an unconfirmed claim.
    pub(super) fn on_other_epoch(&mut self, now: Instant, current: u64, d: &Datagram<'_>) -> bool {
        if self.confirms(now, d) {
            self.challenges.claim = None;
            self.challenges.challenge_now = false;
            self.peer_restarted(now, current, d.sender_epoch);
            return true;
        }
        self.stats.unconfirmed_epoch += 1;
        let due = self.claim(now, d.sender_epoch);
        if d.kind == Kind::Probe && d.nonce != 0 && d.receiver_epoch == self.local_epoch {
            // It challenges us in turn (it too saw an epoch it does not
            // know: both sides restarted). The echo is the one datagram
            // this one earns; our challenge waits for its next datagram.
            self.challenges.echo = Some(Echo {
                to: d.sender_epoch,
                challenge: d.nonce,
            });
        } else if due {
            self.challenges.challenge_now = true;
        }
        false
    }

    /// Note that the peer is claimed to have `epoch`. Returns whether the
    /// pending claim's challenge is to be sent now: none is awaiting an
    /// answer.
    fn claim(&mut self, now: Instant, epoch: u64) -> bool {
        let awaiting = |c: &Claim| {
            c.sent
                .is_some_and(|(at, n)| now < at + self.rtt.backed_off(n))
        };
        let peer_timeout = self.cfg.peer_timeout;
        let c = &mut self.challenges;
        if c.claim.is_some_and(|k| now >= k.since + peer_timeout) {
            // Unconfirmed for `peer_timeout`: forgotten.
            c.claim = None;
        }
        match c.claim {
            Some(k) if awaiting(&k) => {
                // The challenge is out and its answer not yet overdue: a
                // repeat of the claim is expected (the peer retransmits),
                // and another claim must not displace the one being checked.
                false
            }
            Some(k) if k.epoch == epoch => true,
            _ => {
                // No claim, or one whose challenge went unanswered: this one
                // replaces it, with a fresh challenge.
                c.claim = Some(Claim {
                    epoch,
                    challenge: c.rng.next_u64().max(1),
                    since: now,
                    sent: None,
                });
                true
            }
        }
    }

    /// `d` answers the pending challenge: an Ack from the claimed epoch,
    /// addressed to ours, echoing the challenge we sent, within
    /// `peer_timeout` of the claim.
    fn confirms(&self, now: Instant, d: &Datagram<'_>) -> bool {
        d.kind == Kind::Ack
            && d.receiver_epoch == self.local_epoch
            && self.challenges.claim.is_some_and(|c| {
                c.sent.is_some()
                    && c.epoch == d.sender_epoch
                    && c.challenge == d.nonce
                    && now < c.since + self.cfg.peer_timeout
            })
    }

    /// The probe that challenges the claimed epoch. A bare header: no
    /// acknowledgement state and no floors, which refer to the counters of
    /// the incarnation we know, not of the one claimed.
    pub(super) fn challenge_probe(&mut self, now: Instant) -> Vec<u8> {
        self.challenges.challenge_now = false;
        let c = self
            .challenges
            .claim
            .as_mut()
            .expect("a challenge is due only with a claim");
        c.sent = Some((now, c.sent.map_or(1, |(_, n)| n + 1)));
        let d = Datagram {
            sender_epoch: self.local_epoch,
            receiver_epoch: c.epoch,
            kind: Kind::Probe,
            seq: Seq(0),
            send_floor: Seq(0),
            msg_floor: 0,
            ack: None,
            ack_now: true,
            fragment: None,
            nonce: c.challenge,
            key_id: 0,
        };
        self.stats.epoch_challenges += 1;
        self.stats.datagrams_sent += 1;
        d.to_vec()
    }

    /// The Ack that echoes a challenge. To the peer's current epoch it
    /// carries our acknowledgement state as any Ack does; to an epoch we
    /// have not confirmed (it challenged us while we challenge it), it is a
    /// bare header naming that epoch.
    pub(super) fn echo_ack(&mut self) -> Vec<u8> {
        let e = self.challenges.echo.take().expect("an echo is owed");
        if self.peer_epoch == Some(e.to) {
            return self.control(Kind::Ack, false, e.challenge);
        }
        let d = Datagram {
            sender_epoch: self.local_epoch,
            receiver_epoch: e.to,
            kind: Kind::Ack,
            seq: Seq(0),
            send_floor: Seq(0),
            msg_floor: 0,
            ack: None,
            ack_now: false,
            fragment: None,
            nonce: e.challenge,
            key_id: 0,
        };
        self.stats.datagrams_sent += 1;
        d.to_vec()
    }
}
