//! The per-peer reliable channel: a sans-IO state machine.
//!
//! Inputs: [`Channel::send`], [`Channel::handle_datagram`],
//! [`Channel::handle_timeout`], each with the current time. Outputs:
//! [`Channel::poll_transmit`] (datagrams to put on the wire),
//! [`Channel::poll_event`] (delivered messages, acknowledgements, failures),
//! [`Channel::poll_timeout`] (when to call `handle_timeout` next).
//!
//! Sending: messages are cut into fragments; each fragment, when first
//! transmitted, takes the next sequence counter, and keeps it for every
//! retransmission. Each unacknowledged datagram has its own retransmission
//! deadline in an ordered set, so expiry, acknowledgement and loss detection
//! cost O(log n) per datagram, never a scan of everything in flight.
//!
//! Receiving: the receiver keeps the next expected counter plus the set of
//! counters seen beyond it (bounded by the receive window). A counter below
//! the expected one or already in the set is a duplicate: acknowledged, never
//! delivered again. A message is delivered as soon as its fragments are all
//! in, whatever the order.
//!
//! Epochs: the first datagram from a peer fixes its epoch; a different epoch
//! later is a claim that the peer restarted, which resets the channel once
//! confirmed by a round trip carrying a random challenge (see `challenge`).
//!
//! Liveness: while messages are outstanding, a hold is taken, or receive
//! state waits on the peer (a gap, a partial message), a silent peer is
//! probed every `keepalive_interval` and declared unreachable after
//! `peer_timeout`. Its answers carry its floors, which free whatever it
//! abandoned; after giving up, receive state alone arms no timer until the
//! peer is heard from again.

mod challenge;
mod congestion;
mod control;
mod liveness;
mod pacing;
mod recovery;
pub(crate) mod recv;
mod ring;
mod send;
mod stats;
mod timer;
mod trace;

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;

use crate::config::Config;
use crate::rtt::RttEstimator;
use crate::wire::{Datagram, Kind};

use challenge::Challenges;
use liveness::Liveness;
use recv::RecvState;
use send::SendState;
pub use stats::{Snapshot, Stats};
pub use trace::MessageTrace;

/// How many earlier epochs of a peer are remembered, so that late datagrams
/// from them are recognised and dropped.
pub const RETIRED_EPOCHS_MAX: usize = 8;

/// A sender-assigned message id (unique per channel and daemon run).
///
/// Opaque to the owner, which only stores and compares it; a newtype so
/// that it cannot be mixed up with a sequence counter, an epoch or the
/// owner's own call ids. On the wire it is a plain `u64`: convert with
/// `From` both ways at that boundary only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId(u64);

impl MsgId {
    /// The id of a channel's first message. Zero is never used, so that a
    /// message floor of zero means "nothing sent yet".
    pub(crate) const FIRST: MsgId = MsgId(1);

    /// The id a window filler's fragment carries: never a message.
    pub(crate) const FILLER: MsgId = MsgId(0);

    /// The id after this one.
    pub(crate) fn next(self) -> MsgId {
        MsgId(self.0 + 1)
    }
}

impl From<u64> for MsgId {
    fn from(raw: u64) -> Self {
        MsgId(raw)
    }
}

impl From<MsgId> for u64 {
    fn from(id: MsgId) -> Self {
        id.0
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Why a message accepted by [`Channel::send`] was not delivered, or may not
/// have been.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// A datagram ran out of retransmissions, the handshake went unanswered,
    /// or the peer was silent for the peer timeout.
    PeerUnreachable,
    /// The peer started with a new epoch while the message was outstanding.
    PeerRestarted,
    /// The local side gave up on the message (see [`Channel::cancel`]).
    Cancelled,
}

/// What the channel tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete message from the peer. Delivered once per message.
    Delivered {
        /// The peer's id for it.
        msg_id: MsgId,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// Every fragment of a message we sent was acknowledged.
    Acked {
        /// The id `send` returned.
        msg_id: MsgId,
    },
    /// A message we sent failed. Exactly one of `Acked` or `Failed` is
    /// reported for every message `send` accepted.
    Failed {
        /// The id `send` returned.
        msg_id: MsgId,
        /// Why.
        reason: FailReason,
        /// Whether every fragment was transmitted at least once, so that the
        /// peer may have received the whole message: the outcome is unknown.
        /// When false, the peer certainly never delivers it.
        maybe_delivered: bool,
    },
    /// The peer restarted (a new epoch, confirmed): the channel was reset.
    PeerRestarted,
    /// The peer was silent for the peer timeout while something was outstanding.
    PeerUnreachable,
}

/// Why [`Channel::send`] refused a message. Nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SendError {
    /// The message is larger than the configured maximum.
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// `Config::message_max`.
        max: usize,
    },
    /// The send queue for this peer is full (messages or bytes).
    #[error("send queue to this peer is full")]
    QueueFull,
}

/// What the next datagram from `poll_transmit` is (see `next_transmit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Our epoch alone, to a peer incarnation we do not know.
    EpochOnly,
    /// An Ack echoing a challenge we received.
    Echo,
    /// A probe challenging an epoch the peer is claimed to have now.
    Challenge,
    /// A handshake probe, first or retried, to learn or confirm the epoch.
    HandshakeProbe,
    /// A probe after a probe timeout: the oldest datagram again, whatever
    /// the congestion window says.
    Probe,
    /// A datagram declared lost, with its original counter.
    Retransmission,
    /// A redundant copy: of the retransmission just sent, or of the
    /// previous new datagram (a thin flight).
    RedundantCopy,
    /// The next fragment not yet transmitted.
    NewFragment,
    /// A window filler to a peer whose window is closed by counters we
    /// abandoned (see `wedged`); it serves as the keepalive too.
    Filler,
    /// A keepalive probe to a silent peer.
    Keepalive,
    /// An acknowledgement alone.
    Ack,
}

/// Where a channel's message buffers may come from and go back to, so that the owner's
/// process reuses its large buffers across messages instead of allocating and freeing each
/// one (the daemon: its pool of large buffers). Without one, the channel allocates and
/// frees as usual; with one, nothing else changes: the same bytes, charges and budgets.
pub trait Buffers: fmt::Debug + Send + Sync {
    /// An empty buffer of a capacity in `min..=max`, if one is at hand: a message being
    /// reassembled takes it when it needs room for the rest of its fragments.
    fn take(&self, min: usize, max: usize) -> Option<Vec<u8>>;
    /// The buffer of a sent message the channel is done with (acknowledged, failed or
    /// cancelled); each of its three buffers for a message sent as [`Outgoing::Split`].
    ///
    /// [`Outgoing::Split`]: crate::Outgoing::Split
    fn give(&self, buf: Vec<u8>);
}

/// The reliable channel to one peer.
#[derive(Debug)]
pub struct Channel {
    cfg: Config,
    local_epoch: u64,
    peer_epoch: Option<u64>,
    retired: VecDeque<u64>,
    stats: Stats,
    events: VecDeque<Event>,
    send: SendState,
    recv: RecvState,
    rtt: RttEstimator,
    live: Liveness,
    /// Send a probe at the next `poll_transmit` (a handshake retry or a
    /// keepalive).
    probe_now: bool,
    /// Send an epoch-only answer (see `handle_datagram`).
    answer_stranger: bool,
    /// A claimed new epoch of the peer, its challenge, and echoes we owe.
    challenges: Challenges,
    /// Reassembly bytes this channel may still take from the endpoint-wide
    /// budget (set by the owner before each datagram; unbounded when alone).
    shared_reassembly_room: usize,
    /// Messages the owner follows (see `trace`).
    traced: trace::Traced,
    /// Where large buffers come from and go back to, if the owner has such a place.
    buffers: Option<Arc<dyn Buffers>>,
}

impl Channel {
    /// A channel from `local_epoch` to a peer whose epoch is not known yet.
    /// `cfg` must have passed [`Config::validate`]. `seed` feeds the
    /// channel's random choices (the challenges that confirm a peer's new
    /// epoch): the owner draws it from a source an attacker cannot predict.
    pub fn new(cfg: Config, local_epoch: u64, seed: u64) -> Self {
        debug_assert!(cfg.validate().is_ok());
        debug_assert_ne!(local_epoch, 0, "epoch zero means unknown");
        Channel {
            cfg,
            local_epoch,
            peer_epoch: None,
            retired: VecDeque::new(),
            stats: Stats::default(),
            events: VecDeque::new(),
            send: SendState::new(&cfg, MsgId::FIRST),
            recv: RecvState::new(),
            rtt: RttEstimator::new(
                cfg.rto_initial,
                cfg.rto_min,
                cfg.rto_max,
                cfg.min_rtt_window,
            ),
            live: Liveness::new(),
            probe_now: false,
            answer_stranger: false,
            challenges: Challenges::new(seed),
            shared_reassembly_room: usize::MAX,
            traced: trace::Traced::default(),
            buffers: None,
        }
    }

    /// Take reassembly buffers from `buffers` and give sent messages' buffers back to it
    /// (`None`: allocate and free them).
    pub fn set_buffers(&mut self, buffers: Option<Arc<dyn Buffers>>) {
        self.buffers = buffers;
    }

    /// Bytes of the endpoint-wide reassembly budget this channel may still
    /// take: fragments beyond it are not acknowledged (the sender retries).
    pub fn set_shared_reassembly_room(&mut self, room: usize) {
        self.shared_reassembly_room = room;
    }

    /// Bytes of message data per datagram to this peer (the fragment size).
    pub fn payload_max(&self) -> usize {
        self.cfg.payload_max
    }

    /// Follow message `msg_id` (one `send` returned): count the datagrams
    /// carrying it, its retransmissions and RTT samples until
    /// [`Channel::take_message_trace`]. False when too many are followed.
    pub fn trace_message(&mut self, msg_id: MsgId) -> bool {
        self.traced.follow(msg_id)
    }

    /// What was counted for a followed message, and stop following it.
    pub fn take_message_trace(&mut self, msg_id: MsgId) -> Option<MessageTrace> {
        self.traced.take(msg_id)
    }

    /// Bytes charged for partly reassembled messages (payload plus
    /// per-fragment and per-message overhead).
    pub fn reassembly_bytes(&self) -> usize {
        self.recv.partial_bytes
    }

    // ---------------------------------------------------------------- inputs

    /// Feed a datagram received from this peer (already parsed and checked).
    pub fn handle_datagram(&mut self, now: Instant, d: &Datagram<'_>) {
        // Addressed to an earlier incarnation of ours: the sender has not
        // learned we restarted. Never deliver it (that incarnation may have
        // executed it); answer so that the sender learns our epoch.
        if d.receiver_epoch != 0 && d.receiver_epoch != self.local_epoch {
            self.stats.stale_epoch += 1;
            if self.retired.contains(&d.sender_epoch) {
                return;
            }
            if self.peer_epoch.is_none() {
                self.learn_peer_epoch(d.sender_epoch);
            }
            if self.peer_epoch == Some(d.sender_epoch) {
                self.recv.ack_now = true;
            } else {
                // An incarnation of the peer we do not know, which believes
                // in an earlier one of ours: both sides restarted, and each
                // may have learnt the other's previous epoch from a late
                // datagram. Adopting its epoch is unsafe (it may be older
                // than ours to it, and dead); ignoring it deadlocks both.
                // Tell it our epoch, asserting nothing else.
                self.answer_stranger = true;
            }
            return;
        }
        match self.peer_epoch {
            Some(e) if e == d.sender_epoch => {}
            _ if self.retired.contains(&d.sender_epoch) => {
                self.stats.stale_epoch += 1;
                return;
            }
            None => self.learn_peer_epoch(d.sender_epoch),
            Some(current) => {
                // Not believed until confirmed: an off-path forger can send
                // this much (see `challenge`).
                if !self.on_other_epoch(now, current, d) {
                    return;
                }
            }
        }
        self.stats.datagrams_received += 1;
        self.live.last_heard = Some(now);
        self.live.gave_up = false;
        self.live.reset_keepalive();

        // Acknowledgement state refers to our datagrams only if the peer
        // knows which incarnation of ours it is acknowledging.
        if d.receiver_epoch == self.local_epoch {
            // The peer answers as the incarnation we know: confirmed.
            self.live.end_revalidation();
            if let Some((sent_at, attempt)) = self.live.handshake.take() {
                if attempt == 1 {
                    self.rtt.sample(now, now.saturating_duration_since(sent_at));
                }
            }
            if let Some(ack) = d.ack {
                self.on_ack(now, ack);
            }
            self.refill_if_lost(now);
        }
        // A Data datagram's own counter is one the sender certainly used.
        let data_seq =
            (d.kind == Kind::Data && d.receiver_epoch == self.local_epoch).then_some(d.seq);
        self.on_floors(d.send_floor, MsgId::from(d.msg_floor), data_seq);

        match d.kind {
            Kind::Probe => {
                self.recv.ack_now = true;
                if d.nonce != 0 && d.receiver_epoch == self.local_epoch {
                    self.challenges.echo = Some(challenge::Echo {
                        to: d.sender_epoch,
                        challenge: d.nonce,
                    });
                }
            }
            Kind::Ack => {}
            Kind::Data => {
                if d.receiver_epoch != self.local_epoch {
                    // Data before the handshake completed: not addressed to
                    // this incarnation explicitly, so never delivered.
                    self.stats.stale_epoch += 1;
                    self.recv.ack_now = true;
                } else if let Some(f) = &d.fragment {
                    self.on_data(now, d.seq, f);
                }
            }
        }
        if d.ack_now {
            self.recv.ack_now = true;
        }
    }

    // --------------------------------------------------------------- outputs

    /// The next datagram to send, if any. Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.poll_transmit_into(now, &mut out).then_some(out)
    }

    /// [`Channel::poll_transmit`], appending the datagram to `out` (the
    /// owner's outgoing buffer) instead: a data datagram's fragment is
    /// written there straight from the message, with no buffer of its own.
    /// False when there is nothing to send (`out` is untouched).
    pub fn poll_transmit_into(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        self.debug_check_liveness();
        debug_assert_eq!(
            self.send.by_time.len() + self.send.lost.len(),
            self.send.in_flight.len(),
            "each datagram in flight is either timed (by_time) or lost"
        );
        let next = self.next_transmit();
        if self.live.established()
            && self.send.has_new_data()
            && self.send.flight() >= self.send.cc.window()
        {
            self.send.cc.on_window_full();
        }
        let Some(next) = next else {
            return false;
        };
        let start = out.len();
        let small = match next {
            Next::EpochOnly => {
                self.answer_stranger = false;
                self.epoch_only_answer()
            }
            Next::Echo => self.echo_ack(),
            Next::Challenge => self.challenge_probe(now),
            Next::HandshakeProbe => {
                self.probe_now = false;
                let attempt = self.live.handshake.map_or(1, |(_, a)| a + 1);
                self.live.handshake = Some((now, attempt));
                self.control(Kind::Probe, true, 0)
            }
            Next::Probe => {
                self.send.recovery.probes -= 1;
                self.stats.probes += 1;
                let seq = self.probe_target().expect("a datagram to probe with");
                self.transmit(now, seq, true, out);
                return true;
            }
            Next::Retransmission => {
                let seq = self.send.lost.pop_first().expect("a datagram is lost");
                let thin = self.thin_flight(seq);
                self.transmit(now, seq, true, out);
                self.on_paced_send(now);
                if thin {
                    let copy = out[start..].to_vec();
                    self.send.recovery.copies.push_back((copy, true));
                }
                return true;
            }
            Next::RedundantCopy => {
                let (bytes, repair) = self
                    .send
                    .recovery
                    .copies
                    .pop_front()
                    .expect("a copy is due");
                if repair {
                    self.stats.retransmissions += 1;
                    self.stats.redundant_copies += 1;
                } else {
                    self.stats.forward_copies += 1;
                }
                self.stats.datagrams_sent += 1;
                bytes
            }
            Next::NewFragment => {
                let seq = self.next_new_fragment(now);
                self.transmit(now, seq, false, out);
                self.on_paced_send(now);
                self.queue_forward_copy(now, seq);
                return true;
            }
            Next::Filler => {
                self.probe_now = false;
                self.filler_datagram(now)
            }
            Next::Keepalive => {
                self.probe_now = false;
                self.control(Kind::Probe, true, 0)
            }
            Next::Ack => self.control(Kind::Ack, false, 0),
        };
        out.extend_from_slice(&small);
        true
    }

    /// This side's epoch on the channel and the peer's, once known: what
    /// each side knows the other by.
    pub fn epochs(&self) -> (u64, Option<u64>) {
        (self.local_epoch, self.peer_epoch)
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether `poll_transmit` has something to send right now (used by the
    /// endpoint to skip idle channels).
    pub fn wants_transmit(&self) -> bool {
        self.next_transmit().is_some()
    }

    /// Nothing is owed to the peer or awaited from it by the owner: no
    /// message queued or in flight, no hold, no event undelivered. Receive
    /// state does not count (a peer that never completes a message must not
    /// pin its channel).
    pub fn evictable(&self) -> bool {
        self.send.messages.is_empty()
            && self.send.in_flight.is_empty()
            && self.live.holds == 0
            && self.events.is_empty()
    }

    /// True when nothing is outstanding in either direction and no timer is
    /// armed: the channel holds only its counters and the peer's epoch.
    pub fn is_idle(&self) -> bool {
        self.send.messages.is_empty()
            && self.send.in_flight.is_empty()
            && self.send.by_time.is_empty()
            && self.recv.partials.is_empty()
            && self.recv.seen.is_empty()
            && self.recv.partial_bytes == 0
            && self.recv.ack_deadline.is_none()
            && !self.recv.ack_now
            && self.live.holds == 0
            && self.events.is_empty()
            && self.challenges.is_idle()
    }

    // ------------------------------------------------------------ internals

    /// What `poll_transmit` sends next, in priority order. The only place
    /// the "may I send now" decision is made: `wants_transmit` asks it too,
    /// so the endpoint never skips a channel with something to send (a
    /// stall) nor keeps polling one with nothing (a spin).
    fn next_transmit(&self) -> Option<Next> {
        if self.answer_stranger {
            return Some(Next::EpochOnly);
        }
        // Before anything else: an echo lets the peer confirm our epoch
        // before it reads what follows; a challenge goes out once per claim.
        if self.challenges.echo.is_some() {
            return Some(Next::Echo);
        }
        if self.challenges.challenge_now {
            return Some(Next::Challenge);
        }
        if !self.live.established() {
            // Nothing goes out as data until the peer's epoch is known (and,
            // after a quiet spell, confirmed): data must name the receiver's
            // incarnation, or a restarted receiver could execute a request
            // its previous incarnation already ran.
            let start = self.send.has_new_data() && self.live.handshake.is_none();
            if self.probe_now || start {
                return Some(Next::HandshakeProbe);
            }
        } else if !self.send.recovery.copies.is_empty() {
            return Some(Next::RedundantCopy);
        } else if self.send.recovery.probes > 0 && self.probe_target().is_some() {
            return Some(Next::Probe);
        } else if self.can_retransmit() {
            return Some(Next::Retransmission);
        } else if self.send.has_new_data() && self.can_send_new() {
            return Some(Next::NewFragment);
        } else if self.filler_due() {
            return Some(Next::Filler);
        } else if self.probe_now {
            return Some(Next::Keepalive);
        }
        self.recv.ack_now.then_some(Next::Ack)
    }
}

#[cfg(test)]
mod tests;
