//! The sending half: queueing messages, cutting them into fragments,
//! transmitting, and settling them when acknowledged or failed.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::congestion::{Controller, DeliveryMark};
use super::liveness::Phase;
use super::pacing::Pacer;
use super::recovery::Recovery;
use super::ring::Ring;
use super::{Channel, Event, FailReason, MsgId, SendError};
use crate::config::Config;
use crate::outgoing::Outgoing;
use crate::seq::Seq;
use crate::wire::{AckInfo, Datagram, Fragment, Kind};

#[derive(Debug)]
pub(super) struct OutMsg {
    pub(super) data: Outgoing,
    pub(super) count: u32,
    /// Fragments transmitted at least once (they are transmitted in order).
    pub(super) started: u32,
    pub(super) acked: u32,
    /// The counters its fragments took, in fragment order.
    pub(super) seqs: Seqs,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    pub(super) msg_id: MsgId,
    pub(super) index: u32,
    /// When it was last transmitted (its key in `SendState::by_time`).
    pub(super) sent_at: Instant,
    /// When it was first transmitted.
    pub(super) first_sent: Instant,
    /// The delivery state at its last transmission (for rate samples).
    pub(super) mark: DeliveryMark,
    pub(super) transmissions: u32,
    pub(super) lost: bool,
    /// Marked lost by a selective-ack gap (counted as a fast
    /// retransmission when it is sent again).
    pub(super) fast: bool,
}

/// The counters a message's fragments took: the first inline, so that a
/// single-fragment message (an RPC) allocates nothing for them.
#[derive(Debug, Default)]
pub(super) struct Seqs {
    first: Option<Seq>,
    rest: Vec<Seq>,
}

impl Seqs {
    fn push(&mut self, q: Seq) {
        if self.first.is_none() {
            self.first = Some(q);
        } else {
            self.rest.push(q);
        }
    }

    fn iter(&self) -> impl Iterator<Item = Seq> + '_ {
        self.first.into_iter().chain(self.rest.iter().copied())
    }
}

/// What the datagrams one acknowledgement covers tell together (see
/// `Channel::on_acked`).
#[derive(Debug, Default)]
struct AckBatch {
    /// The newest sent once: its send time (the RTT sample) and counter.
    sample: Option<(Instant, Seq)>,
    sample_msg: Option<MsgId>,
    /// The newest whose transmission is unambiguous (RACK), as its `by_time` key.
    newest_sent: Option<(Instant, Seq)>,
    oldest_sent: Option<Instant>,
}

#[derive(Debug)]
pub(super) struct SendState {
    pub(super) next_seq: Seq,
    pub(super) next_msg_id: MsgId,
    /// Messages not yet acknowledged or failed, by id (ordered: the first key
    /// is the message floor).
    pub(super) messages: Ring<MsgId, OutMsg>,
    pub(super) queued_bytes: usize,
    /// Single-fragment messages not yet transmitted.
    pub(super) small: VecDeque<MsgId>,
    /// Multi-fragment messages with fragments not yet transmitted; only the
    /// head is in progress, which bounds the peer's reassembly memory.
    pub(super) large: VecDeque<MsgId>,
    pub(super) prefer_large: bool,
    pub(super) in_flight: Ring<Seq, Sent>,
    /// The in-flight datagrams not declared lost, by the time of their last
    /// transmission: time-based loss detection and the probe timeout read
    /// the front, in O(log n).
    pub(super) by_time: Ring<(Instant, Seq), ()>,
    /// Datagrams declared lost, waiting to go again.
    pub(super) lost: BTreeSet<Seq>,
    /// Datagrams below this counter were examined for fast retransmit.
    pub(super) fast_scan: Seq,
    pub(super) highest_acked: Seq,
    pub(super) peer_ack: Seq,
    pub(super) peer_window: u32,
    /// `(peer_ack, next_seq)` when the last window filler went, and when
    /// (see `Channel::wedged`): another goes when either moves, at a
    /// keepalive, or when the peer talks on an RTO after it.
    pub(super) filler_sent: Option<(Seq, Seq, Instant)>,
    pub(super) cc: Controller,
    pub(super) recovery: Recovery,
    pub(super) pacer: Pacer,
}

impl SendState {
    pub(super) fn new(cfg: &Config, next_msg_id: MsgId) -> Self {
        SendState {
            next_seq: Seq::FIRST,
            next_msg_id,
            messages: Ring::new(),
            queued_bytes: 0,
            small: VecDeque::new(),
            large: VecDeque::new(),
            prefer_large: false,
            in_flight: Ring::new(),
            by_time: Ring::new(),
            lost: BTreeSet::new(),
            fast_scan: Seq::FIRST,
            highest_acked: Seq(0),
            peer_ack: Seq::FIRST,
            // Until the peer advertises, assume our own window: both sides
            // normally share a configuration, and the first ack corrects it.
            peer_window: cfg.recv_window,
            filler_sent: None,
            cc: Controller::new(cfg.cwnd_initial, cfg.cwnd_min, cfg.cwnd_max),
            recovery: Recovery::default(),
            pacer: Pacer::default(),
        }
    }

    /// Datagrams in flight that are not waiting to be retransmitted.
    pub(super) fn flight(&self) -> u32 {
        (self.in_flight.len() - self.lost.len()) as u32
    }

    pub(super) fn send_floor(&self) -> Seq {
        self.in_flight.first_key().unwrap_or(self.next_seq)
    }

    pub(super) fn msg_floor(&self) -> MsgId {
        self.messages.first_key().unwrap_or(self.next_msg_id)
    }

    /// Drop ids of failed messages from the fronts of the new-data queues,
    /// so that a non-empty queue always starts with a live message.
    /// Amortised O(1) per message.
    pub(super) fn prune_queues(&mut self) {
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

    pub(super) fn has_new_data(&self) -> bool {
        !self.small.is_empty() || !self.large.is_empty()
    }
}

impl Channel {
    /// Queue a message for reliable delivery.
    pub fn send(&mut self, now: Instant, data: impl Into<Outgoing>) -> Result<MsgId, SendError> {
        let data = data.into();
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
            .live
            .last_heard
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.revalidate_after);
        if self.peer_epoch.is_some() && idle && quiet {
            // A keepalive schedule has nothing to keep while nothing is
            // outstanding, and the next answer restarts it anyway.
            self.live.phase = Phase::Revalidating;
        }
        self.mark_busy(now);
        let id = self.send.next_msg_id;
        self.send.next_msg_id = id.next();
        let count = self.cfg.fragments_for(data.len());
        self.send.queued_bytes += data.len();
        self.send.messages.insert(
            id,
            OutMsg {
                data,
                count,
                started: 0,
                acked: 0,
                seqs: Seqs::default(),
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

    pub(super) fn fail_message(&mut self, msg_id: MsgId, reason: FailReason) {
        let Some(m) = self.send.messages.remove(&msg_id) else {
            return;
        };
        self.send.queued_bytes -= m.data.len();
        if let Some(buffers) = &self.buffers {
            m.data.into_buffers().for_each(|b| buffers.give(b));
        }
        // Its datagrams in flight are abandoned: the send floor moves past
        // them once they are the lowest, telling the receiver to skip them.
        for q in m.seqs.iter() {
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

    pub(super) fn forget_sent(&mut self, seq: Seq) -> Option<Sent> {
        let s = self.send.in_flight.remove(&seq)?;
        if s.lost {
            self.send.lost.remove(&seq);
        } else {
            self.send.by_time.remove(&(s.sent_at, seq));
        }
        if self.send.in_flight.is_empty() {
            // Nothing left to probe with.
            self.send.recovery.probes = 0;
        }
        Some(s)
    }

    pub(super) fn on_ack(&mut self, now: Instant, a: AckInfo) {
        if a.ack > self.send.next_seq {
            // Acknowledges counters never sent: a confused or hostile peer.
            self.stats.inconsistent += 1;
            return;
        }
        if a.ack >= self.send.peer_ack {
            self.send.peer_ack = a.ack;
            self.send.peer_window = a.window;
        }
        // The window limited the sender if the flight filled at least half
        // of it; otherwise the application did, and the window stays.
        let window_limited = self.send.flight() * 2 >= self.send.cc.window();
        let min_rtt = self.rtt.min_rtt();
        let mut batch = AckBatch::default();
        // Everything below the cumulative ack is the front of the flight,
        // then the selectively acknowledged counters above it, in order.
        while let Some(q) = self.send.in_flight.first_key().filter(|&q| q < a.ack) {
            self.on_acked(now, q, min_rtt, window_limited, &mut batch);
        }
        let mut bits = a.sack;
        while bits != 0 {
            let i = u64::from(bits.trailing_zeros());
            bits &= bits - 1;
            self.on_acked(now, a.ack.plus(1 + i), min_rtt, window_limited, &mut batch);
        }
        let AckBatch {
            sample,
            sample_msg,
            newest_sent,
            oldest_sent,
        } = batch;
        if let Some((t, _)) = sample {
            let rtt = now.saturating_duration_since(t);
            self.rtt.sample(now, rtt);
            if let (false, Some(m)) = (self.traced.is_empty(), sample_msg) {
                self.traced.on_rtt_sample(m, rtt);
            }
        }
        if oldest_sent.is_some() {
            self.on_new_ack(newest_sent, oldest_sent);
        }
        self.detect_losses(now);
    }

    /// In-flight datagram `q` was acknowledged (nothing happens if it is
    /// not in flight): settle it, its message if that was its last
    /// fragment, and the congestion controller; gather into `batch` what
    /// the acknowledgement as a whole tells.
    fn on_acked(
        &mut self,
        now: Instant,
        q: Seq,
        min_rtt: Option<Duration>,
        window_limited: bool,
        batch: &mut AckBatch,
    ) {
        let Some(s) = self.forget_sent(q) else {
            return;
        };
        if q > self.send.highest_acked {
            self.send.highest_acked = q;
        } else if s.transmissions == 1 {
            // Sent once and acknowledged after a later counter.
            self.send.recovery.reordering_seen = true;
        }
        // Karn's rule: only a datagram sent once gives an unambiguous sample.
        if s.transmissions == 1 && batch.sample.is_none_or(|(t, _)| s.sent_at > t) {
            batch.sample = Some((s.sent_at, q));
            batch.sample_msg = Some(s.msg_id);
        }
        // RACK's "most recently sent datagram delivered": a
        // retransmitted one counts only if the answer cannot be to an
        // earlier transmission (it came back no faster than the path can).
        let unambiguous = s.transmissions == 1
            || min_rtt.is_some_and(|m| now.saturating_duration_since(s.sent_at) >= m);
        if unambiguous {
            batch.newest_sent = batch.newest_sent.max(Some((s.sent_at, q)));
        }
        batch.oldest_sent = Some(batch.oldest_sent.map_or(s.sent_at, |o| o.min(s.sent_at)));
        self.send
            .cc
            .on_ack(now, s.sent_at, s.mark, min_rtt, window_limited);
        if let Some(m) = self.send.messages.get_mut(&s.msg_id) {
            m.acked += 1;
            if m.acked == m.count {
                let m = self.send.messages.remove(&s.msg_id).expect("present");
                self.send.queued_bytes -= m.data.len();
                if let Some(buffers) = &self.buffers {
                    m.data.into_buffers().for_each(|b| buffers.give(b));
                }
                self.stats.messages_acked += 1;
                if !self.traced.is_empty() {
                    self.traced.on_acked(s.msg_id, now);
                }
                self.events.push_back(Event::Acked { msg_id: s.msg_id });
            }
        }
    }

    /// Take the next fragment not yet transmitted and give it the next
    /// counter. The caller checked that the windows allow it.
    pub(super) fn next_new_fragment(&mut self, now: Instant) -> Seq {
        debug_assert!(self.send.has_new_data() && self.can_send_new());
        // Alternate between single-fragment messages and the large message
        // in progress, so neither starves the other.
        let use_large = match (self.send.small.is_empty(), self.send.large.is_empty()) {
            (false, false) => self.send.prefer_large,
            (true, _) => true,
            (false, true) => false,
        };
        self.send.prefer_large = !use_large;
        // Both queues are pruned: a non-empty one starts with a live message.
        let msg_id = if use_large {
            *self.send.large.front().expect("has new data")
        } else {
            self.send.small.pop_front().expect("has new data")
        };
        let m = self
            .send
            .messages
            .get_mut(&msg_id)
            .expect("queue fronts are live messages");
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
                first_sent: now,
                mark: self.send.cc.on_sent(now),
                transmissions: 0,
                lost: false,
                fast: false,
            },
        );
        seq
    }

    /// (Re)transmit in-flight datagram `seq`: record it and append its
    /// bytes to `out`.
    pub(super) fn transmit(
        &mut self,
        now: Instant,
        seq: Seq,
        retransmission: bool,
        out: &mut Vec<u8>,
    ) {
        let mark = self.send.cc.on_sent(now);
        let s = self
            .send
            .in_flight
            .get_mut(&seq)
            .expect("caller picked an in-flight counter");
        let msg_id = s.msg_id;
        if s.lost {
            self.send.lost.remove(&seq);
        } else if s.transmissions > 0 {
            self.send.by_time.remove(&(s.sent_at, seq));
        }
        if s.transmissions == 0 {
            s.first_sent = now;
        }
        s.transmissions += 1;
        s.sent_at = now;
        s.mark = mark;
        s.lost = false;
        if retransmission && s.fast {
            self.stats.fast_retransmissions += 1;
        }
        s.fast = false;
        self.send.by_time.insert((now, seq), ());
        self.send.recovery.last_sent = Some(now);
        if retransmission {
            self.stats.retransmissions += 1;
        }
        if !self.traced.is_empty() {
            self.traced.on_transmit(msg_id, now, retransmission);
        }
        // Ask for an immediate ack when this datagram fills the window.
        let ack_now = !self.can_send_new() && self.send.lost.is_empty();
        self.emit_data(seq, ack_now, out);
        self.ack_sent();
        self.stats.datagrams_sent += 1;
    }

    /// A window filler (see `Channel::wedged`): a Data datagram with the
    /// highest counter used, which is acknowledged or abandoned, carrying the
    /// floors and a fragment of message 0 (never a real message: receivers
    /// accept the counter and drop the fragment). Its counter lets the
    /// receiver believe our send floor up to one past it.
    pub(super) fn filler_datagram(&mut self, now: Instant) -> Vec<u8> {
        let seq = Seq(self.send.next_seq.0 - 1);
        self.send.filler_sent = Some((self.send.peer_ack, self.send.next_seq, now));
        self.stats.window_fillers += 1;
        let filler = Fragment {
            msg_id: MsgId::FILLER.into(),
            index: 0,
            count: 1,
            payload: &[],
        };
        let bytes = self.data_with(seq, true, filler).to_vec();
        self.ack_sent();
        self.stats.datagrams_sent += 1;
        bytes
    }

    /// A Data datagram carrying `fragment` as counter `seq`, with the
    /// current acknowledgement state and floors.
    fn data_with<'a>(&self, seq: Seq, ack_now: bool, fragment: Fragment<'a>) -> Datagram<'a> {
        Datagram {
            sender_epoch: self.local_epoch,
            receiver_epoch: self.peer_epoch.unwrap_or(0),
            kind: Kind::Data,
            seq,
            send_floor: self.send.send_floor(),
            msg_floor: self.send.msg_floor().into(),
            ack: Some(self.ack_info()),
            ack_now,
            fragment: Some(fragment),
            nonce: 0,
            key_id: 0,
        }
    }

    /// The bytes of in-flight datagram `seq` with the current
    /// acknowledgement state and floors. Changes nothing: `transmit` records
    /// the transmission, a forward copy (`queue_forward_copy`) records none.
    pub(super) fn data_datagram(&self, seq: Seq, ack_now: bool) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit_data(seq, ack_now, &mut out);
        out
    }

    /// `data_datagram`, appended to `out`.
    fn emit_data(&self, seq: Seq, ack_now: bool, out: &mut Vec<u8>) {
        let s = self
            .send
            .in_flight
            .get(&seq)
            .expect("caller picked an in-flight counter");
        let (msg_id, index) = (s.msg_id, s.index);
        let m = self
            .send
            .messages
            .get(&msg_id)
            .expect("in-flight datagram's message is live");
        let start = index as usize * self.cfg.payload_max;
        let end = (start + self.cfg.payload_max).min(m.data.len());
        let mut straddling = Vec::new();
        let fragment = Fragment {
            msg_id: msg_id.into(),
            index,
            count: m.count,
            payload: m.data.range(start, end, &mut straddling),
        };
        self.data_with(seq, ack_now, fragment).emit(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_keep_every_counter_in_fragment_order() {
        let mut s = Seqs::default();
        assert_eq!(s.iter().count(), 0, "empty");
        s.push(Seq(7));
        assert_eq!(s.iter().collect::<Vec<_>>(), [Seq(7)]);
        assert_eq!(s.rest.capacity(), 0, "one counter allocates nothing");
        for q in [9, 12, 13] {
            s.push(Seq(q));
        }
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [Seq(7), Seq(9), Seq(12), Seq(13)]
        );
    }
}
