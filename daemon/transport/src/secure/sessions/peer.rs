//! Per-peer session state: keypairs, the initiation in flight, and what
//! is known of the peer's silence.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::super::crypto::{Initiator, SessionKeys, INIT_PAYLOAD_LEN};
use super::super::keys::PublicKey;
use super::super::replay::ReplayWindow;
use super::super::wire::{self, MAC_LEN, TAG_LEN, TRANSPORT_HEADER_LEN};
use crate::config::Config;

pub(super) struct Keypair {
    pub(super) keys: SessionKeys,
    pub(super) local: u32,
    pub(super) remote: u32,
    pub(super) send_counter: u64,
    pub(super) replay: ReplayWindow,
    pub(super) born: Instant,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("send_counter", &self.send_counter)
            .finish()
    }
}

impl Keypair {
    pub(super) fn new(keys: SessionKeys, local: u32, remote: u32, now: Instant) -> Self {
        Keypair {
            keys,
            local,
            remote,
            send_counter: 0,
            replay: ReplayWindow::new(),
            born: now,
        }
    }

    pub(super) fn seal(&mut self, inner: &[u8]) -> Vec<u8> {
        let counter = self.send_counter;
        self.send_counter += 1;
        let header = wire::transport_header(self.remote, counter);
        let mut out = Vec::with_capacity(TRANSPORT_HEADER_LEN + inner.len() + TAG_LEN);
        out.extend_from_slice(&header);
        out.extend_from_slice(inner);
        let tag = self
            .keys
            .send
            .seal(counter, &header, &mut out[TRANSPORT_HEADER_LEN..]);
        out.extend_from_slice(&tag);
        out
    }
}

/// An initiation in flight.
#[derive(Debug)]
pub(super) struct Pending {
    /// `None` after forged responses used up `FORGED_RESPONSES_MAX`
    /// rebuilds: the next retry starts afresh.
    pub(super) initiator: Option<Initiator>,
    /// What made the initiator, to rebuild it after a forged response
    /// consumed it (snow's handshake state cannot be copied).
    pub(super) seed: [u8; 32],
    pub(super) payload: [u8; INIT_PAYLOAD_LEN],
    pub(super) rebuilds: u32,
    pub(super) index: u32,
    /// When the latest attempt went out, and which attempt it was.
    pub(super) sent_at: Instant,
    pub(super) attempt: u32,
    pub(super) started: Instant,
    /// The mac1 of the latest attempt (a cookie reply is bound to it).
    pub(super) mac1: [u8; MAC_LEN],
    pub(super) cookie_taken: bool,
}

/// Everything about one peer address.
#[derive(Debug)]
pub(super) struct PeerSession {
    /// The configured peer's key (authenticated, or chosen by us).
    pub(super) peer: PublicKey,
    pub(super) current: Option<Keypair>,
    pub(super) previous: Option<Keypair>,
    pub(super) next: Option<Keypair>,
    pub(super) pending: Option<Pending>,
    /// A cookie from the responder, with when it came.
    pub(super) cookie: Option<([u8; MAC_LEN], Instant)>,
    pub(super) queued: VecDeque<Vec<u8>>,
    /// The mac1 of the last initiation we answered, and our response: a
    /// duplicate of it gets the same response again.
    pub(super) answered: Option<([u8; MAC_LEN], Vec<u8>)>,
    /// When an authentic datagram last came.
    pub(super) last_heard: Option<Instant>,
    /// The first send since then: a peer silent since long after we spoke
    /// may have restarted and lost the session, so we start a new one.
    pub(super) unanswered_since: Option<Instant>,
    /// The round trip of our last completed initiation.
    pub(super) handshake_rtt: Option<Duration>,
    pub(super) scheduled: Option<Instant>,
}

impl PeerSession {
    pub(super) fn new(peer: PublicKey) -> Self {
        PeerSession {
            peer,
            current: None,
            previous: None,
            next: None,
            pending: None,
            cookie: None,
            queued: VecDeque::new(),
            answered: None,
            last_heard: None,
            unanswered_since: None,
            handshake_rtt: None,
            scheduled: None,
        }
    }

    /// How long the peer may stay silent after we sent it something it
    /// answers before we suspect it restarted and lost the session: four
    /// handshake round trips (the initial RTO until one is measured), at
    /// least two initial RTOs, at most a quarter of the peer timeout. A
    /// wrong suspicion costs one handshake; the old session keeps working.
    pub(super) fn stale_after(&self, cfg: &Config) -> Duration {
        let rtt = self.handshake_rtt.unwrap_or(cfg.rto_initial);
        rtt.saturating_mul(4)
            .max(cfg.rto_initial.saturating_mul(2))
            .min(cfg.peer_timeout / 4)
    }

    /// The peer has been silent too long after we spoke (see `stale_after`).
    pub(super) fn stale(&self, cfg: &Config, now: Instant) -> bool {
        self.unanswered_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.stale_after(cfg))
    }

    pub(super) fn keypairs_mut(&mut self) -> impl Iterator<Item = &mut Option<Keypair>> {
        [&mut self.current, &mut self.previous, &mut self.next].into_iter()
    }

    /// The next moment something is due: a handshake retry, a suspected
    /// restart of the peer, or a keypair's expiry.
    pub(super) fn deadline(&self, cfg: &Config) -> Option<Instant> {
        let retry = match &self.pending {
            Some(p) => Some(p.sent_at + retry_delay(cfg, p.attempt)),
            None => self
                .unanswered_since
                .filter(|_| self.current.is_some())
                .map(|t| t + self.stale_after(cfg)),
        };
        let expiry = [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
            .map(|k| k.born + cfg.reject_after)
            .min();
        retry.into_iter().chain(expiry).min()
    }
}

pub(super) fn retry_delay(cfg: &Config, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    cfg.rto_initial.saturating_mul(factor).min(cfg.rto_max)
}
