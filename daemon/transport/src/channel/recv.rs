//! The receiving half: duplicate detection, the receive window,
//! reassembly, the peer's floors, and acknowledgements.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::{Channel, Event, MsgId};
use crate::config::Config;
use crate::seq::Seq;
use crate::wire::{AckInfo, Fragment};

/// Memory a partial message costs besides its fragments (its map and entry),
/// charged from its first fragment until it completes or is abandoned.
pub const PARTIAL_OVERHEAD: usize = 512;
/// Memory a held fragment costs besides its payload (its map slot and the
/// allocation's header and rounding): an empty or 1-byte fragment is not free.
pub const FRAGMENT_OVERHEAD: usize = 64;

/// What holding a fragment of `payload` bytes is charged.
pub fn charge(payload: usize) -> usize {
    FRAGMENT_OVERHEAD + payload
}

#[derive(Debug)]
pub(super) struct Partial {
    pub(super) count: u32,
    pub(super) fragments: BTreeMap<u32, Vec<u8>>,
    /// Payload bytes held.
    pub(super) bytes: usize,
    /// What this partial is charged against the reassembly budgets: its own
    /// overhead plus each fragment's overhead and payload (see [`charge`]).
    pub(super) charged: usize,
    /// Set when the message broke a rule (too large, inconsistent): later
    /// fragments are acknowledged and discarded.
    pub(super) poisoned: bool,
}

#[derive(Debug)]
pub(super) struct RecvState {
    pub(super) expected: Seq,
    pub(super) seen: BTreeSet<Seq>,
    pub(super) partials: BTreeMap<MsgId, Partial>,
    pub(super) partial_bytes: usize,
    /// The peer's message floor: messages below it are done or abandoned.
    pub(super) msg_floor: MsgId,
    /// The highest message id a fragment of which arrived.
    pub(super) msg_seen_max: MsgId,
    pub(super) ack_pending: bool,
    pub(super) ack_now: bool,
    pub(super) unacked: u32,
    pub(super) ack_deadline: Option<Instant>,
}

impl RecvState {
    pub(super) fn new() -> Self {
        RecvState {
            expected: Seq::FIRST,
            seen: BTreeSet::new(),
            partials: BTreeMap::new(),
            partial_bytes: 0,
            msg_floor: MsgId(0),
            msg_seen_max: MsgId(0),
            ack_pending: false,
            ack_now: false,
            unacked: 0,
            ack_deadline: None,
        }
    }
}

impl Channel {
    pub(super) fn ack_sent(&mut self) {
        self.recv.ack_now = false;
        self.recv.ack_pending = false;
        self.recv.unacked = 0;
        self.recv.ack_deadline = None;
    }

    pub(super) fn ack_info(&self) -> AckInfo {
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
            .saturating_sub(r.partial_bytes)
            .min(self.shared_reassembly_room);
        let budget = (free / charge(self.cfg.payload_max)).min(u32::MAX as usize) as u32;
        AckInfo {
            ack: r.expected,
            sack,
            window: self.cfg.recv_window.min(budget),
        }
    }

    /// The peer's floors: counters below `send_floor` will never arrive (acked
    /// or abandoned); messages below `msg_floor` will never complete.
    /// `data_seq` is the counter of the Data datagram carrying them, if it is
    /// addressed to this incarnation (it is about to be received).
    pub(super) fn on_floors(&mut self, send_floor: Seq, msg_floor: MsgId, data_seq: Option<Seq>) {
        let window_end = self.recv.expected.plus(u64::from(self.cfg.recv_window));
        let r = &mut self.recv;
        if send_floor > r.expected {
            // Never past the counters received (counting this datagram's
            // own): the floor only lets us skip gaps below them. A bogus one
            // (2^64 - 1, however often) thus never makes us take later
            // counters for duplicates, which would be acknowledged and never
            // delivered, and never passes the window, where every received
            // counter lies. A real floor never exceeds the counter of the
            // Data datagram carrying it; counters abandoned above all we
            // received are skipped when the sender's next Data arrives.
            let mut limit = r.seen.last().map_or(r.expected, |q| q.plus(1));
            if let Some(seq) = data_seq.filter(|&q| q >= r.expected && q < window_end) {
                limit = limit.max(seq.plus(1));
            }
            debug_assert!(limit <= window_end, "recorded counters lie in the window");
            r.expected = send_floor.min(limit);
            while r.seen.first().is_some_and(|&q| q < r.expected) {
                r.seen.pop_first();
            }
            while r.seen.first() == Some(&r.expected) {
                r.seen.pop_first();
                r.expected = r.expected.plus(1);
            }
        }
        // Never past the messages seen: a message above every id we have seen
        // has not reached us, so nothing is gained by believing a higher floor,
        // and a bogus one (2^64 - 1) must not make us drop every later message.
        let msg_floor = msg_floor.min(MsgId::from(u64::from(r.msg_seen_max).saturating_add(1)));
        if msg_floor > r.msg_floor {
            r.msg_floor = msg_floor;
            while let Some(entry) = r.partials.first_entry() {
                if *entry.key() >= msg_floor {
                    break;
                }
                r.partial_bytes -= entry.remove().charged;
            }
        }
    }

    pub(super) fn on_data(&mut self, now: Instant, seq: Seq, f: &Fragment<'_>) {
        let msg_id = MsgId::from(f.msg_id);
        let r = &mut self.recv;
        if seq >= r.expected && seq < r.expected.plus(u64::from(self.cfg.recv_window)) {
            r.msg_seen_max = r.msg_seen_max.max(msg_id);
        }
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
        let complete = if msg_id < r.msg_floor || msg_id == MsgId::FILLER {
            // The sender abandoned this message, or this is a window filler
            // (message 0): accept the counter, drop the bytes.
            None
        } else if f.count == 1 {
            if f.payload.len() > self.cfg.message_max {
                self.stats.inconsistent += 1;
                None
            } else {
                Some(f.payload.to_vec())
            }
        } else {
            let new_partial = !r.partials.contains_key(&msg_id);
            let cost = charge(f.payload.len()) + if new_partial { PARTIAL_OVERHEAD } else { 0 };
            let free = self
                .cfg
                .reassembly_bytes_max
                .saturating_sub(r.partial_bytes)
                .min(self.shared_reassembly_room);
            if cost > free {
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
            self.events.push_back(Event::Delivered { msg_id, data });
        }
    }

    /// Add a fragment of a multi-fragment message; `Ok(Some(bytes))` when it
    /// completed the message, `Err` when it contradicts earlier fragments or
    /// the size limit (the message is then poisoned and discarded).
    pub(super) fn reassemble(
        cfg: &Config,
        r: &mut RecvState,
        f: &Fragment<'_>,
    ) -> Result<Option<Vec<u8>>, ()> {
        let msg_id = MsgId::from(f.msg_id);
        let p = r.partials.entry(msg_id).or_insert_with(|| {
            r.partial_bytes += PARTIAL_OVERHEAD;
            Partial {
                count: f.count,
                fragments: BTreeMap::new(),
                bytes: 0,
                charged: PARTIAL_OVERHEAD,
                poisoned: false,
            }
        });
        if p.poisoned {
            return Ok(None);
        }
        let fits = p.bytes + f.payload.len() <= cfg.message_max;
        if p.count != f.count || p.fragments.contains_key(&f.index) || !fits {
            // Free the fragments; the entry (and its overhead) stays, so later
            // fragments of the message are recognised and discarded, until
            // the sender's floor passes it.
            r.partial_bytes -= p.charged - PARTIAL_OVERHEAD;
            p.charged = PARTIAL_OVERHEAD;
            p.fragments.clear();
            p.bytes = 0;
            p.poisoned = true;
            return Err(());
        }
        p.fragments.insert(f.index, f.payload.to_vec());
        p.bytes += f.payload.len();
        p.charged += charge(f.payload.len());
        r.partial_bytes += charge(f.payload.len());
        if p.fragments.len() as u64 != u64::from(p.count) {
            return Ok(None);
        }
        // Fragments may arrive in any order: nothing relates `seq` to the
        // counters of the fragments before it.
        let p = r.partials.remove(&msg_id).expect("entry just used");
        r.partial_bytes -= p.charged;
        let mut out = Vec::with_capacity(p.bytes);
        for (_, part) in p.fragments {
            out.extend_from_slice(&part);
        }
        Ok(Some(out))
    }
}
