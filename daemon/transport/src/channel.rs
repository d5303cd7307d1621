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
//! later means the peer restarted, and resets the channel.
//!
//! Liveness: while messages are outstanding, a hold is taken, or receive
//! state waits on the peer (a gap, a partial message), a silent peer is
//! probed every `keepalive_interval` and declared unreachable after
//! `peer_timeout`. Its answers carry its floors, which free whatever it
//! abandoned; after giving up, receive state alone arms no timer until the
//! peer is heard from again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::config::Config;
use crate::rtt::RttEstimator;
use crate::seq::Seq;
use crate::wire::{AckInfo, Datagram, Fragment, Kind};

/// How many earlier epochs of a peer are remembered, so that late datagrams
/// from them are recognised and dropped.
pub const RETIRED_EPOCHS_MAX: usize = 8;
/// Sequence distance at which an unacknowledged datagram below an
/// acknowledged one is declared lost (TCP's three duplicate acks).
const REORDER_THRESHOLD: u64 = 3;

/// A sender-assigned message id (unique per channel and daemon run).
pub type MsgId = u64;

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
    /// The peer restarted (new epoch): the channel was reset.
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

/// Counters an operator needs, per channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to `poll_transmit`'s caller.
    pub datagrams_sent: u64,
    /// Datagrams accepted from the peer (any kind).
    pub datagrams_received: u64,
    /// Data datagrams sent again with their original counter.
    pub retransmissions: u64,
    /// Of those, sent because of a selective-ack gap rather than a timeout.
    pub fast_retransmissions: u64,
    /// Data datagrams received again (acknowledged, not delivered).
    pub duplicates: u64,
    /// Datagrams from an old epoch of the peer, or addressed to an old epoch of ours.
    pub stale_epoch: u64,
    /// Data datagrams beyond the receive window or the reassembly budget.
    pub out_of_window: u64,
    /// Data datagrams inconsistent with earlier fragments of their message.
    pub inconsistent: u64,
    /// Messages accepted by `send`.
    pub messages_sent: u64,
    /// Messages delivered to the owner.
    pub messages_delivered: u64,
    /// Messages fully acknowledged by the peer.
    pub messages_acked: u64,
    /// Messages failed.
    pub messages_failed: u64,
    /// Times the peer's epoch changed.
    pub peer_restarts: u64,
}

/// A snapshot of the channel's estimators and windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Counters.
    pub stats: Stats,
    /// Smoothed RTT, once measured.
    pub srtt: Option<Duration>,
    /// The current retransmission timeout (before backoff).
    pub rto: Duration,
    /// Datagrams sent and not yet acknowledged.
    pub in_flight: usize,
    /// Messages accepted and not yet acknowledged or failed.
    pub queued_messages: usize,
    /// Congestion window, in datagrams.
    pub cwnd: u32,
    /// The peer's advertised receive window.
    pub peer_window: u32,
    /// Bytes held in partial reassemblies.
    pub reassembly_bytes: usize,
    /// The peer's epoch, once known.
    pub peer_epoch: Option<u64>,
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
    // Liveness.
    last_heard: Option<Instant>,
    busy_since: Option<Instant>,
    holds: u32,
    probe_due: Option<Instant>,
    probe_now: bool,
    handshake_sent_at: Option<(Instant, u32)>,
    /// The peer has been silent for `revalidate_after` while we had nothing
    /// outstanding: confirm its epoch with a probe before sending data, so
    /// that a restart we slept through costs a round trip, not a failed call.
    revalidate: bool,
    /// The peer was declared unreachable and has not been heard from since:
    /// receive state alone no longer keeps the channel probing it.
    gave_up: bool,
    /// Send an epoch-only answer (see `handle_datagram`).
    answer_stranger: bool,
}

#[derive(Debug)]
struct OutMsg {
    data: Vec<u8>,
    count: u32,
    /// Fragments transmitted at least once (they are transmitted in order).
    started: u32,
    acked: u32,
    /// The counters its fragments took, in fragment order.
    seqs: Vec<Seq>,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    msg_id: MsgId,
    index: u32,
    sent_at: Instant,
    deadline: Instant,
    transmissions: u32,
    lost: bool,
    /// Marked lost by a selective-ack gap (counted as a fast
    /// retransmission when it is sent again).
    fast: bool,
}

#[derive(Debug)]
struct SendState {
    next_seq: Seq,
    next_msg_id: MsgId,
    /// Messages not yet acknowledged or failed, by id (ordered: the first key
    /// is the message floor).
    messages: BTreeMap<MsgId, OutMsg>,
    queued_bytes: usize,
    /// Single-fragment messages not yet transmitted.
    small: VecDeque<MsgId>,
    /// Multi-fragment messages with fragments not yet transmitted; only the
    /// head is in progress, which bounds the peer's reassembly memory.
    large: VecDeque<MsgId>,
    prefer_large: bool,
    in_flight: BTreeMap<Seq, Sent>,
    deadlines: BTreeSet<(Instant, Seq)>,
    lost: BTreeSet<Seq>,
    /// Datagrams below this counter were examined for fast retransmit.
    fast_scan: Seq,
    highest_acked: Seq,
    peer_ack: Seq,
    peer_window: u32,
    cwnd: u32,
    cwnd_credit: u32,
    ssthresh: u32,
    /// Losses of counters below this one belong to a window already reduced.
    recovery_until: Seq,
}

#[derive(Debug)]
struct Partial {
    count: u32,
    fragments: BTreeMap<u32, Vec<u8>>,
    bytes: usize,
    /// Set when the message broke a rule (too large, inconsistent): later
    /// fragments are acknowledged and discarded.
    poisoned: bool,
}

#[derive(Debug)]
struct RecvState {
    expected: Seq,
    seen: BTreeSet<Seq>,
    partials: BTreeMap<MsgId, Partial>,
    partial_bytes: usize,
    /// The peer's message floor: messages below it are done or abandoned.
    msg_floor: MsgId,
    ack_pending: bool,
    ack_now: bool,
    unacked: u32,
    ack_deadline: Option<Instant>,
}

impl RecvState {
    fn new() -> Self {
        RecvState {
            expected: Seq::FIRST,
            seen: BTreeSet::new(),
            partials: BTreeMap::new(),
            partial_bytes: 0,
            msg_floor: 0,
            ack_pending: false,
            ack_now: false,
            unacked: 0,
            ack_deadline: None,
        }
    }
}

impl SendState {
    fn new(cfg: &Config, next_msg_id: MsgId) -> Self {
        SendState {
            next_seq: Seq::FIRST,
            next_msg_id,
            messages: BTreeMap::new(),
            queued_bytes: 0,
            small: VecDeque::new(),
            large: VecDeque::new(),
            prefer_large: false,
            in_flight: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            lost: BTreeSet::new(),
            fast_scan: Seq::FIRST,
            highest_acked: Seq(0),
            peer_ack: Seq::FIRST,
            // Until the peer advertises, assume our own window: both sides
            // normally share a configuration, and the first ack corrects it.
            peer_window: cfg.recv_window,
            cwnd: cfg.cwnd_initial,
            cwnd_credit: 0,
            ssthresh: cfg.cwnd_max,
            recovery_until: Seq::FIRST,
        }
    }

    /// Datagrams in flight that are not waiting to be retransmitted.
    fn flight(&self) -> u32 {
        (self.in_flight.len() - self.lost.len()) as u32
    }

    fn send_floor(&self) -> Seq {
        self.in_flight
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_seq)
    }

    fn msg_floor(&self) -> MsgId {
        self.messages
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_msg_id)
    }

    /// Drop ids of failed messages from the fronts of the new-data queues,
    /// so that a non-empty queue always starts with a live message.
    /// Amortised O(1) per message.
    fn prune_queues(&mut self) {
        while self
            .small
            .front()
            .is_some_and(|id| !self.messages.contains_key(id))
        {
            self.small.pop_front();
        }
        while self
            .large
            .front()
            .is_some_and(|id| !self.messages.contains_key(id))
        {
            self.large.pop_front();
        }
    }

    fn has_new_data(&self) -> bool {
        !self.small.is_empty() || !self.large.is_empty()
    }
}

impl Channel {
    /// A channel from `local_epoch` to a peer whose epoch is not known yet.
    /// `cfg` must have passed [`Config::validate`].
    pub fn new(cfg: Config, local_epoch: u64) -> Self {
        debug_assert!(cfg.validate().is_ok());
        debug_assert_ne!(local_epoch, 0, "epoch zero means unknown");
        Channel {
            cfg,
            local_epoch,
            peer_epoch: None,
            retired: VecDeque::new(),
            stats: Stats::default(),
            events: VecDeque::new(),
            send: SendState::new(&cfg, 1),
            recv: RecvState::new(),
            rtt: RttEstimator::new(cfg.rto_initial, cfg.rto_min, cfg.rto_max),
            last_heard: None,
            busy_since: None,
            holds: 0,
            probe_due: None,
            probe_now: false,
            handshake_sent_at: None,
            revalidate: false,
            gave_up: false,
            answer_stranger: false,
        }
    }

    // ---------------------------------------------------------------- inputs

    /// Queue a message for reliable delivery.
    pub fn send(&mut self, now: Instant, data: Vec<u8>) -> Result<MsgId, SendError> {
        if data.len() > self.cfg.message_max {
            return Err(SendError::TooLarge {
                size: data.len(),
                max: self.cfg.message_max,
            });
        }
        if self.send.messages.len() >= self.cfg.send_queue_max
            || self.send.queued_bytes + data.len() > self.cfg.send_queue_bytes_max
        {
            return Err(SendError::QueueFull);
        }
        let idle = self.send.messages.is_empty() && self.send.in_flight.is_empty();
        let quiet = self
            .last_heard
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.revalidate_after);
        if self.peer_epoch.is_some() && idle && quiet {
            self.revalidate = true;
        }
        self.mark_busy(now);
        let id = self.send.next_msg_id;
        self.send.next_msg_id += 1;
        let count = self.cfg.fragments_for(data.len());
        self.send.queued_bytes += data.len();
        self.send.messages.insert(
            id,
            OutMsg {
                data,
                count,
                started: 0,
                acked: 0,
                seqs: Vec::new(),
            },
        );
        if count == 1 {
            self.send.small.push_back(id);
        } else {
            self.send.large.push_back(id);
        }
        self.stats.messages_sent += 1;
        Ok(id)
    }

    /// Give up on a message not yet acknowledged (the caller's deadline
    /// passed): stop (re)transmitting it and report it `Cancelled`. Returns
    /// false if the message is unknown (already acknowledged or failed).
    pub fn cancel(&mut self, msg_id: MsgId) -> bool {
        if !self.send.messages.contains_key(&msg_id) {
            return false;
        }
        self.fail_message(msg_id, FailReason::Cancelled);
        true
    }

    /// Keep the peer's liveness checked while the owner waits for something
    /// from it (a reply) although nothing is in flight. Balanced by `release`.
    pub fn hold(&mut self, now: Instant) {
        self.mark_busy(now);
        self.holds += 1;
    }

    /// End one `hold`.
    pub fn release(&mut self) {
        self.holds = self.holds.saturating_sub(1);
    }

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
                self.peer_epoch = Some(d.sender_epoch);
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
            None => self.peer_epoch = Some(d.sender_epoch),
            Some(old) => self.peer_restarted(now, old, d.sender_epoch),
        }
        self.stats.datagrams_received += 1;
        self.last_heard = Some(now);
        self.gave_up = false;
        self.probe_due = None;

        // Acknowledgement state refers to our datagrams only if the peer
        // knows which incarnation of ours it is acknowledging.
        if d.receiver_epoch == self.local_epoch {
            // The peer answers as the incarnation we know: confirmed.
            self.revalidate = false;
            if let Some((sent_at, attempt)) = self.handshake_sent_at.take() {
                if attempt == 1 {
                    self.rtt.sample(now.saturating_duration_since(sent_at));
                }
            }
            if let Some(ack) = d.ack {
                self.on_ack(now, ack);
            }
        }
        self.on_floors(d.send_floor, d.msg_floor);

        match d.kind {
            Kind::Probe => self.recv.ack_now = true,
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

    /// Run the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Retransmission deadlines, oldest first.
        while let Some(&(deadline, seq)) = self.send.deadlines.first() {
            if deadline > now {
                break;
            }
            self.send.deadlines.pop_first();
            self.on_rto(seq);
        }
        if let Some(t) = self.recv.ack_deadline {
            if t <= now {
                self.recv.ack_now = true;
                self.recv.ack_deadline = None;
            }
        }
        if self.peer_epoch.is_some() && !self.revalidate {
            // The peer's epoch was learnt from a datagram of its own (it
            // opened at the same time): no handshake left to retry.
            self.handshake_sent_at = None;
        }
        if let Some((sent_at, attempt)) = self.handshake_sent_at {
            if sent_at + self.rtt.backed_off(attempt) <= now {
                if attempt > self.cfg.retransmits_max {
                    self.handshake_sent_at = None;
                    self.declare_unreachable(now);
                } else {
                    self.probe_now = true;
                }
            }
        }
        if let Some(since) = self.silent_since() {
            if now.saturating_duration_since(since) >= self.cfg.peer_timeout {
                self.declare_unreachable(now);
            } else if self.peer_epoch.is_some()
                && !self.revalidate
                && (self.probe_due.is_some_and(|t| t <= now)
                    || (self.probe_due.is_none()
                        && now.saturating_duration_since(since) >= self.cfg.keepalive_interval))
            {
                // (Before the peer's epoch is known the handshake's own
                // retries probe it; a keepalive there would reset their
                // backoff and their count.)
                self.probe_now = true;
                self.probe_due = Some(now + self.cfg.keepalive_interval);
            }
        }
    }

    // --------------------------------------------------------------- outputs

    /// The next datagram to send, if any. Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.answer_stranger {
            self.answer_stranger = false;
            return Some(self.epoch_only_answer());
        }
        if self.peer_epoch.is_none() || self.revalidate {
            // Nothing goes out as data until the peer's epoch is known (and,
            // after a quiet spell, confirmed): data must name the receiver's
            // incarnation, or a restarted receiver could execute a request
            // its previous incarnation already ran.
            if self.send.has_new_data() && self.handshake_sent_at.is_none() {
                self.probe_now = true;
            }
            if self.probe_now {
                self.probe_now = false;
                let attempt = self.handshake_sent_at.map_or(1, |(_, a)| a + 1);
                self.handshake_sent_at = Some((now, attempt));
                return Some(self.control(Kind::Probe, true));
            }
            return self.take_ack();
        }
        if let Some(seq) = self.next_retransmission() {
            return Some(self.transmit(now, seq, true));
        }
        if let Some(seq) = self.next_new_fragment(now) {
            return Some(self.transmit(now, seq, false));
        }
        if self.probe_now {
            self.probe_now = false;
            return Some(self.control(Kind::Probe, true));
        }
        self.take_ack()
    }

    /// The next event for the owner.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.send.deadlines.first().map(|&(d, _)| d);
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        consider(self.recv.ack_deadline);
        if !self.probe_now {
            // While the retry is pending the deadline has passed already;
            // poll_transmit re-arms it.
            consider(
                self.handshake_sent_at
                    .map(|(at, attempt)| at + self.rtt.backed_off(attempt)),
            );
        }
        if let Some(since) = self.silent_since() {
            consider(Some(since + self.cfg.peer_timeout));
            if self.peer_epoch.is_some() && !self.revalidate {
                consider(Some(
                    self.probe_due
                        .unwrap_or(since + self.cfg.keepalive_interval),
                ));
            }
        }
        t
    }

    /// Whether `poll_transmit` has something to send right now (used by the
    /// endpoint to skip idle channels).
    pub fn wants_transmit(&self) -> bool {
        self.answer_stranger
            || self.probe_now
            || self.recv.ack_now
            || !self.send.lost.is_empty()
            || (self.send.has_new_data() && self.can_send_new())
            || ((self.peer_epoch.is_none() || self.revalidate)
                && self.send.has_new_data()
                && self.handshake_sent_at.is_none())
    }

    /// Counters and estimators.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            stats: self.stats,
            srtt: self.rtt.srtt(),
            rto: self.rtt.rto(),
            in_flight: self.send.in_flight.len(),
            queued_messages: self.send.messages.len(),
            cwnd: self.send.cwnd,
            peer_window: self.send.peer_window,
            reassembly_bytes: self.recv.partial_bytes,
            peer_epoch: self.peer_epoch,
        }
    }

    /// True when nothing is outstanding in either direction and no timer is
    /// armed: the channel holds only its counters and the peer's epoch.
    pub fn is_idle(&self) -> bool {
        self.send.messages.is_empty()
            && self.send.in_flight.is_empty()
            && self.send.deadlines.is_empty()
            && self.recv.partials.is_empty()
            && self.recv.seen.is_empty()
            && self.recv.partial_bytes == 0
            && self.recv.ack_deadline.is_none()
            && !self.recv.ack_now
            && self.holds == 0
            && self.events.is_empty()
    }

    // ------------------------------------------------------------ internals

    fn mark_busy(&mut self, now: Instant) {
        if self.silent_since().is_none() {
            self.busy_since = Some(now);
            self.probe_due = None;
        }
    }

    /// Busy: something is owed to us or by us, so the peer's silence is
    /// measured (keepalive probes, then "unreachable"). Receive state counts:
    /// a gap or a partial message waits on the peer, and the peer's answer
    /// to a probe carries its floors, which free what it abandoned.
    fn is_busy(&self) -> bool {
        !self.send.messages.is_empty() || self.holds > 0 || (self.recv_pending() && !self.gave_up)
    }

    /// Counters seen beyond a gap, or fragments of incomplete messages.
    fn recv_pending(&self) -> bool {
        !self.recv.seen.is_empty() || !self.recv.partials.is_empty()
    }

    /// While busy: the instant from which the peer's silence is measured.
    fn silent_since(&self) -> Option<Instant> {
        if !self.is_busy() {
            return None;
        }
        match (self.last_heard, self.busy_since) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn declare_unreachable(&mut self, now: Instant) {
        let ids: Vec<MsgId> = self.send.messages.keys().copied().collect();
        for id in ids {
            self.fail_message(id, FailReason::PeerUnreachable);
        }
        self.events.push_back(Event::PeerUnreachable);
        self.gave_up = true;
        self.revalidate = false;
        self.handshake_sent_at = None;
        // Measure silence afresh for whatever the owner does next.
        self.busy_since = Some(now);
        self.last_heard = None;
        self.probe_due = None;
    }

    fn peer_restarted(&mut self, now: Instant, old: u64, new: u64) {
        self.stats.peer_restarts += 1;
        if self.retired.len() == RETIRED_EPOCHS_MAX {
            self.retired.pop_front();
        }
        self.retired.push_back(old);
        self.peer_epoch = Some(new);
        // Every message with a fragment on the wire went to the old
        // incarnation: its outcome is unknown, so it fails. Messages never
        // transmitted are kept and go to the new incarnation.
        let started: Vec<MsgId> = self
            .send
            .messages
            .iter()
            .filter(|(_, m)| m.started > 0)
            .map(|(&id, _)| id)
            .collect();
        for id in started {
            self.fail_message(id, FailReason::PeerRestarted);
        }
        debug_assert!(self.send.in_flight.is_empty());
        let mut fresh = SendState::new(&self.cfg, self.send.next_msg_id);
        fresh.messages = std::mem::take(&mut self.send.messages);
        fresh.queued_bytes = self.send.queued_bytes;
        fresh.small = std::mem::take(&mut self.send.small);
        fresh.large = std::mem::take(&mut self.send.large);
        fresh.prune_queues();
        self.send = fresh;
        self.recv = RecvState::new();
        self.handshake_sent_at = None;
        self.probe_due = None;
        if self.is_busy() {
            self.busy_since = Some(now);
        }
        self.events.push_back(Event::PeerRestarted);
    }

    fn fail_message(&mut self, msg_id: MsgId, reason: FailReason) {
        let Some(m) = self.send.messages.remove(&msg_id) else {
            return;
        };
        self.send.queued_bytes -= m.data.len();
        // Its datagrams in flight are abandoned: the send floor moves past
        // them once they are the lowest, telling the receiver to skip them.
        for &q in &m.seqs {
            self.forget_sent(q);
        }
        // Its id may still wait in a queue of new data: dropped lazily when
        // it reaches the front (a scan of the queue here would be O(n)).
        self.send.prune_queues();
        self.stats.messages_failed += 1;
        self.events.push_back(Event::Failed {
            msg_id,
            reason,
            maybe_delivered: m.started == m.count,
        });
    }

    fn forget_sent(&mut self, seq: Seq) -> Option<Sent> {
        let s = self.send.in_flight.remove(&seq)?;
        self.send.deadlines.remove(&(s.deadline, seq));
        self.send.lost.remove(&seq);
        Some(s)
    }

    fn on_rto(&mut self, seq: Seq) {
        let Some(s) = self.send.in_flight.get_mut(&seq) else {
            return;
        };
        if s.transmissions > self.cfg.retransmits_max {
            let id = s.msg_id;
            self.fail_message(id, FailReason::PeerUnreachable);
            return;
        }
        s.lost = true;
        self.send.lost.insert(seq);
        // A timeout always collapses the window to one datagram (RFC 5681
        // 3.1), even inside a window already reduced by a fast retransmit:
        // the path is not delivering. ssthresh is halved once per window.
        if seq >= self.send.recovery_until {
            self.send.ssthresh = (self.send.cwnd / 2).max(2);
            self.send.recovery_until = self.send.next_seq;
        }
        self.send.cwnd = 1;
        self.send.cwnd_credit = 0;
    }

    fn on_ack(&mut self, now: Instant, a: AckInfo) {
        if a.ack > self.send.next_seq {
            // Acknowledges counters never sent: a confused or hostile peer.
            self.stats.inconsistent += 1;
            return;
        }
        if a.ack >= self.send.peer_ack {
            self.send.peer_ack = a.ack;
            self.send.peer_window = a.window;
        }
        let mut newly: Vec<Seq> = self
            .send
            .in_flight
            .range(..a.ack)
            .map(|(&q, _)| q)
            .collect();
        let mut bits = a.sack;
        while bits != 0 {
            let i = u64::from(bits.trailing_zeros());
            bits &= bits - 1;
            let q = a.ack.plus(1 + i);
            if self.send.in_flight.contains_key(&q) {
                newly.push(q);
            }
        }
        let mut sample: Option<(Instant, Seq)> = None;
        for q in newly {
            let Some(s) = self.forget_sent(q) else {
                continue;
            };
            if q > self.send.highest_acked {
                self.send.highest_acked = q;
            }
            // Karn's rule: only a datagram sent once gives an unambiguous sample.
            if s.transmissions == 1 && sample.is_none_or(|(t, _)| s.sent_at > t) {
                sample = Some((s.sent_at, q));
            }
            self.grow_cwnd();
            if let Some(m) = self.send.messages.get_mut(&s.msg_id) {
                m.acked += 1;
                if m.acked == m.count {
                    let m = self.send.messages.remove(&s.msg_id).expect("present");
                    self.send.queued_bytes -= m.data.len();
                    self.stats.messages_acked += 1;
                    self.events.push_back(Event::Acked { msg_id: s.msg_id });
                }
            }
        }
        if let Some((t, _)) = sample {
            self.rtt.sample(now.saturating_duration_since(t));
        }
        self.detect_losses();
    }

    fn grow_cwnd(&mut self) {
        let s = &mut self.send;
        if s.cwnd < s.ssthresh {
            s.cwnd += 1;
        } else {
            s.cwnd_credit += 1;
            if s.cwnd_credit >= s.cwnd {
                s.cwnd_credit = 0;
                s.cwnd += 1;
            }
        }
        s.cwnd = s.cwnd.min(self.cfg.cwnd_max);
    }

    /// Fast retransmit: an unacknowledged datagram at least
    /// `REORDER_THRESHOLD` counters below an acknowledged one is lost. The
    /// scan cursor only moves forward, so each datagram is examined once.
    fn detect_losses(&mut self) {
        let limit = self.send.highest_acked;
        let mut found = Vec::new();
        for (&q, s) in self.send.in_flight.range(self.send.fast_scan..) {
            if q.plus(REORDER_THRESHOLD) > limit {
                break;
            }
            if !s.lost {
                found.push(q);
            }
        }
        if limit.0 >= REORDER_THRESHOLD {
            let next = Seq(limit.0 - REORDER_THRESHOLD + 1);
            if next > self.send.fast_scan {
                self.send.fast_scan = next;
            }
        }
        for q in found {
            if let Some(s) = self.send.in_flight.get_mut(&q) {
                s.lost = true;
                self.send.deadlines.remove(&(s.deadline, q));
                self.send.lost.insert(q);
                s.fast = true;
                if q >= self.send.recovery_until {
                    self.send.ssthresh = (self.send.cwnd / 2).max(2);
                    self.send.cwnd = self.send.ssthresh;
                    self.send.cwnd_credit = 0;
                    self.send.recovery_until = self.send.next_seq;
                }
            }
        }
    }

    fn can_send_new(&self) -> bool {
        let window_end = self.send.peer_ack.plus(u64::from(self.send.peer_window));
        self.send.flight() < self.send.cwnd && self.send.next_seq < window_end
    }

    fn next_retransmission(&mut self) -> Option<Seq> {
        if self.send.lost.is_empty() {
            return None;
        }
        // A retransmission is allowed while the window has room, and always
        // when nothing else is in flight (so one datagram probes the path).
        if self.send.flight() >= self.send.cwnd && self.send.flight() > 0 {
            return None;
        }
        self.send.lost.pop_first()
    }

    fn next_new_fragment(&mut self, now: Instant) -> Option<Seq> {
        if !self.send.has_new_data() || !self.can_send_new() {
            return None;
        }
        // Alternate between single-fragment messages and the large message
        // in progress, so neither starves the other.
        let use_large = match (self.send.small.is_empty(), self.send.large.is_empty()) {
            (false, false) => self.send.prefer_large,
            (true, _) => true,
            (false, true) => false,
        };
        self.send.prefer_large = !use_large;
        let msg_id = if use_large {
            *self.send.large.front()?
        } else {
            self.send.small.pop_front()?
        };
        let m = self.send.messages.get_mut(&msg_id)?;
        let index = m.started;
        m.started += 1;
        m.seqs.push(self.send.next_seq);
        if use_large && m.started == m.count {
            self.send.large.pop_front();
        }
        self.send.prune_queues();
        let seq = self.send.next_seq;
        self.send.next_seq = seq.plus(1);
        self.send.in_flight.insert(
            seq,
            Sent {
                msg_id,
                index,
                sent_at: now,
                deadline: now,
                transmissions: 0,
                lost: false,
                fast: false,
            },
        );
        Some(seq)
    }

    fn transmit(&mut self, now: Instant, seq: Seq, retransmission: bool) -> Vec<u8> {
        let rto = {
            let s = self
                .send
                .in_flight
                .get(&seq)
                .expect("caller picked an in-flight counter");
            self.rtt.backed_off(s.transmissions + 1)
        };
        let s = self
            .send
            .in_flight
            .get_mut(&seq)
            .expect("caller picked an in-flight counter");
        if s.transmissions > 0 {
            self.send.deadlines.remove(&(s.deadline, seq));
        }
        s.transmissions += 1;
        s.sent_at = now;
        s.lost = false;
        if retransmission && s.fast {
            self.stats.fast_retransmissions += 1;
        }
        s.fast = false;
        s.deadline = now + rto;
        let (msg_id, index) = (s.msg_id, s.index);
        self.send.deadlines.insert((s.deadline, seq));
        if retransmission {
            self.stats.retransmissions += 1;
        }
        let m = self
            .send
            .messages
            .get(&msg_id)
            .expect("in-flight datagram's message is live");
        let start = index as usize * self.cfg.payload_max;
        let end = (start + self.cfg.payload_max).min(m.data.len());
        let count = m.count;
        // Ask for an immediate ack when this datagram fills the window.
        let ack_now = !self.can_send_new() && self.send.lost.is_empty();
        let d = Datagram {
            sender_epoch: self.local_epoch,
            receiver_epoch: self.peer_epoch.unwrap_or(0),
            kind: Kind::Data,
            seq,
            send_floor: self.send.send_floor(),
            msg_floor: self.send.msg_floor(),
            ack: Some(self.ack_info()),
            ack_now,
            fragment: Some(Fragment {
                msg_id,
                index,
                count,
                payload: &m.data[start..end],
            }),
            key_id: 0,
        };
        let bytes = d.to_vec();
        self.ack_sent();
        self.stats.datagrams_sent += 1;
        bytes
    }

    fn control(&mut self, kind: Kind, ack_now: bool) -> Vec<u8> {
        let d = Datagram {
            sender_epoch: self.local_epoch,
            receiver_epoch: self.peer_epoch.unwrap_or(0),
            kind,
            seq: Seq(0),
            send_floor: self.send.send_floor(),
            msg_floor: self.send.msg_floor(),
            ack: Some(self.ack_info()),
            ack_now,
            fragment: None,
            key_id: 0,
        };
        self.ack_sent();
        self.stats.datagrams_sent += 1;
        d.to_vec()
    }

    /// Our epoch and nothing else: no receiver epoch (we do not know which
    /// incarnation will read it), no acknowledgement, no floors (ours refer
    /// to a counter space the reader may not share).
    fn epoch_only_answer(&mut self) -> Vec<u8> {
        let d = Datagram {
            sender_epoch: self.local_epoch,
            receiver_epoch: 0,
            kind: Kind::Ack,
            seq: Seq(0),
            send_floor: Seq(0),
            msg_floor: 0,
            ack: None,
            ack_now: false,
            fragment: None,
            key_id: 0,
        };
        self.stats.datagrams_sent += 1;
        d.to_vec()
    }

    fn take_ack(&mut self) -> Option<Vec<u8>> {
        if self.recv.ack_now {
            Some(self.control(Kind::Ack, false))
        } else {
            None
        }
    }

    fn ack_sent(&mut self) {
        self.recv.ack_now = false;
        self.recv.ack_pending = false;
        self.recv.unacked = 0;
        self.recv.ack_deadline = None;
    }

    fn ack_info(&self) -> AckInfo {
        let r = &self.recv;
        let mut sack = 0u64;
        for q in r.seen.range(r.expected.plus(1)..r.expected.plus(65)) {
            sack |= 1 << (q.distance_from(r.expected) - 1);
        }
        // Advertise no more than the reassembly budget can take, counted in
        // datagrams of our own payload size.
        let free = self
            .cfg
            .reassembly_bytes_max
            .saturating_sub(r.partial_bytes);
        let budget = (free / self.cfg.payload_max).min(u32::MAX as usize) as u32;
        AckInfo {
            ack: r.expected,
            sack,
            window: self.cfg.recv_window.min(budget),
        }
    }

    /// The peer's floors: counters below `send_floor` will never arrive (acked
    /// or abandoned); messages below `msg_floor` will never complete.
    fn on_floors(&mut self, send_floor: Seq, msg_floor: MsgId) {
        let r = &mut self.recv;
        if send_floor > r.expected {
            // Never jump further than the window: a bogus floor must not make
            // us forget duplicates we could still receive.
            let limit = r.expected.plus(u64::from(self.cfg.recv_window));
            r.expected = send_floor.min(limit);
            while r.seen.first().is_some_and(|&q| q < r.expected) {
                r.seen.pop_first();
            }
            while r.seen.first() == Some(&r.expected) {
                r.seen.pop_first();
                r.expected = r.expected.plus(1);
            }
        }
        if msg_floor > r.msg_floor {
            r.msg_floor = msg_floor;
            while let Some(entry) = r.partials.first_entry() {
                if *entry.key() >= msg_floor {
                    break;
                }
                r.partial_bytes -= entry.remove().bytes;
            }
        }
    }

    fn on_data(&mut self, now: Instant, seq: Seq, f: &Fragment<'_>) {
        let r = &mut self.recv;
        if seq < r.expected || r.seen.contains(&seq) {
            self.stats.duplicates += 1;
            r.ack_now = true;
            return;
        }
        if seq >= r.expected.plus(u64::from(self.cfg.recv_window)) {
            self.stats.out_of_window += 1;
            r.ack_now = true;
            return;
        }
        let complete = if f.msg_id < r.msg_floor {
            // The sender abandoned this message: accept the counter, drop the bytes.
            None
        } else if f.count == 1 {
            if f.payload.len() > self.cfg.message_max {
                self.stats.inconsistent += 1;
                None
            } else {
                Some(f.payload.to_vec())
            }
        } else {
            if r.partial_bytes + f.payload.len() > self.cfg.reassembly_bytes_max {
                // No room: do not acknowledge, the sender retransmits later.
                self.stats.out_of_window += 1;
                return;
            }
            match Self::reassemble(&self.cfg, r, f) {
                Ok(done) => done,
                Err(()) => {
                    self.stats.inconsistent += 1;
                    None
                }
            }
        };
        let in_order = seq == r.expected;
        r.seen.insert(seq);
        while r.seen.first() == Some(&r.expected) {
            r.seen.pop_first();
            r.expected = r.expected.plus(1);
        }
        if !in_order {
            r.ack_now = true;
        }
        r.unacked += 1;
        r.ack_pending = true;
        if r.unacked >= self.cfg.ack_every {
            r.ack_now = true;
        } else if r.ack_deadline.is_none() {
            r.ack_deadline = Some(now + self.cfg.ack_delay);
        }
        if let Some(data) = complete {
            self.stats.messages_delivered += 1;
            self.events.push_back(Event::Delivered {
                msg_id: f.msg_id,
                data,
            });
        }
    }

    /// Add a fragment of a multi-fragment message; `Ok(Some(bytes))` when it
    /// completed the message, `Err` when it contradicts earlier fragments or
    /// the size limit (the message is then poisoned and discarded).
    fn reassemble(
        cfg: &Config,
        r: &mut RecvState,
        f: &Fragment<'_>,
    ) -> Result<Option<Vec<u8>>, ()> {
        let p = r.partials.entry(f.msg_id).or_insert_with(|| Partial {
            count: f.count,
            fragments: BTreeMap::new(),
            bytes: 0,
            poisoned: false,
        });
        if p.poisoned {
            return Ok(None);
        }
        let fits = p.bytes + f.payload.len() <= cfg.message_max;
        if p.count != f.count || p.fragments.contains_key(&f.index) || !fits {
            r.partial_bytes -= p.bytes;
            p.fragments.clear();
            p.bytes = 0;
            p.poisoned = true;
            return Err(());
        }
        p.fragments.insert(f.index, f.payload.to_vec());
        p.bytes += f.payload.len();
        r.partial_bytes += f.payload.len();
        if p.fragments.len() as u64 != u64::from(p.count) {
            return Ok(None);
        }
        // Fragments may arrive in any order: nothing relates `seq` to the
        // counters of the fragments before it.
        let p = r.partials.remove(&f.msg_id).expect("entry just used");
        r.partial_bytes -= p.bytes;
        let mut out = Vec::with_capacity(p.bytes);
        for (_, part) in p.fragments {
            out.extend_from_slice(&part);
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests;
