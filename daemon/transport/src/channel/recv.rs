//! The receiving half: duplicate detection, the receive window,
//! reassembly, the peer's floors, and acknowledgements.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::{Buffers, Channel, Event, MsgId};
use crate::config::Config;
use crate::seq::Seq;
use crate::wire::{AckInfo, Fragment};

/// Memory a partial message costs besides its fragments (its map and entry),
/// charged from its first fragment until it completes or is abandoned.
pub const PARTIAL_OVERHEAD: usize = 512;
/// Memory a held fragment costs besides its payload (its map slot and the
/// allocation's header and rounding, when it waits apart from the message's
/// buffer): an empty or 1-byte fragment is not free.
pub const FRAGMENT_OVERHEAD: usize = 64;

/// What holding a fragment of `payload` bytes is charged.
pub fn charge(payload: usize) -> usize {
    FRAGMENT_OVERHEAD + payload
}

/// A message being reassembled. Fragments are written straight into one
/// buffer in index order (the message's bytes so far, `data`); one that
/// arrives ahead of its predecessors waits in `ahead` until they are in.
/// So a message whose fragments come in order (loopback, most paths) is
/// copied once on receipt and never again: completing it hands `data` over.
/// Only what is written is ever touched: a fragment far ahead of the prefix
/// does not make the buffer grow to reach it.
#[derive(Debug)]
pub(super) struct Partial {
    pub(super) count: u32,
    /// Fragments `0..next` back to back; its spare capacity is charged too.
    data: Vec<u8>,
    /// The index of the fragment `data` waits for.
    next: u32,
    /// Fragments beyond `next`, by index.
    ahead: BTreeMap<u32, Vec<u8>>,
    /// Payload bytes held.
    pub(super) bytes: usize,
    /// What this partial is charged against the reassembly budgets: its own
    /// overhead, each fragment's overhead and payload (see [`charge`]), and
    /// the spare capacity of `data` (see [`Partial::charge_now`]).
    pub(super) charged: usize,
    /// Set when the message broke a rule (too large, inconsistent): later
    /// fragments are acknowledged and discarded.
    pub(super) poisoned: bool,
}

impl Partial {
    fn new(count: u32) -> Self {
        Partial {
            count,
            data: Vec::new(),
            next: 0,
            ahead: BTreeMap::new(),
            bytes: 0,
            charged: PARTIAL_OVERHEAD,
            poisoned: false,
        }
    }

    /// Whether fragment `index` is held already.
    fn holds(&self, index: u32) -> bool {
        index < self.next || self.ahead.contains_key(&index)
    }

    /// What this partial costs now: the same as `charged` kept per fragment
    /// (`PARTIAL_OVERHEAD` plus [`charge`] of each held payload), plus the
    /// buffer's spare capacity, which is memory taken as surely.
    fn charge_now(&self) -> usize {
        let held = self.next as usize + self.ahead.len();
        PARTIAL_OVERHEAD
            + held * FRAGMENT_OVERHEAD
            + self.bytes
            + (self.data.capacity() - self.data.len())
    }

    /// Append fragment `next` to `data`. The first fragment takes exactly
    /// its size (a message may never get further). When the buffer must
    /// grow later, it reserves what the rest of the message needs at this
    /// fragment's size (one allocation for the message: the first fragment
    /// is copied once more), else it doubles, each only if `room` (budget
    /// bytes this partial may still take as spare capacity) allows; else
    /// it grows by exactly the fragment. A buffer from the owner's `buffers`
    /// whose spare capacity `room` allows is taken before allocating one.
    fn append(&mut self, payload: &[u8], room: usize, buffers: Option<&dyn Buffers>) {
        let (len, cap) = (self.data.len(), self.data.capacity());
        let need = len + payload.len();
        if cap < need {
            let rest = (self.count - self.next) as usize;
            let whole = len.saturating_add(rest.saturating_mul(payload.len()));
            let target = if len == 0 {
                need
            } else {
                [whole, (2 * cap).min(whole)]
                    .into_iter()
                    .find(|&t| t >= need && t - need <= room)
                    .unwrap_or(need)
            };
            let reused = buffers
                .filter(|_| len > 0)
                .and_then(|b| b.take(target, need.saturating_add(room)));
            match reused {
                Some(mut buf) => {
                    buf.clear();
                    buf.extend_from_slice(&self.data);
                    self.data = buf;
                }
                None => self.data.reserve_exact(target - len),
            }
        }
        self.data.extend_from_slice(payload);
        self.next += 1;
    }

    /// What taking `f` adds to the charge: a fragment that fits the
    /// buffer's spare capacity only its overhead.
    fn cost(&self, f: &Fragment<'_>) -> usize {
        let spare = self.data.capacity() - self.data.len();
        if !self.poisoned && f.index == self.next && f.payload.len() <= spare {
            FRAGMENT_OVERHEAD
        } else {
            charge(f.payload.len())
        }
    }

    fn poison(&mut self) {
        self.data = Vec::new();
        self.ahead.clear();
        self.next = 0;
        self.bytes = 0;
        self.poisoned = true;
    }
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
        // Nor more than our socket holds: a peer's whole flight may land
        // there while we are busy elsewhere, and what does not fit is lost.
        AckInfo {
            ack: r.expected,
            sack,
            window: self
                .cfg
                .recv_window
                .min(budget)
                .min(self.cfg.socket_window()),
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
            let cost = r
                .partials
                .get(&msg_id)
                .map_or(PARTIAL_OVERHEAD + charge(f.payload.len()), |p| p.cost(f));
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
            match Self::reassemble(&self.cfg, r, f, free, self.buffers.as_deref()) {
                Ok(done) => done,
                Err(()) => {
                    self.stats.inconsistent += 1;
                    None
                }
            }
        };
        let in_order = seq == r.expected;
        if in_order {
            // Every counter in `seen` lies beyond `expected`: the next
            // expected one is `seq + 1`, or further if it was seen already.
            // (Inserting `seq` only to pop it again costs a tree node.)
            r.expected = r.expected.plus(1);
            while r.seen.first() == Some(&r.expected) {
                r.seen.pop_first();
                r.expected = r.expected.plus(1);
            }
        } else {
            r.seen.insert(seq);
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
    /// the size limit (the message is then poisoned and discarded). `free`:
    /// the budget left before this fragment, of which the caller checked
    /// that it covers the fragment's cost; the reassembly buffer may take
    /// what is left of it as spare capacity.
    pub(super) fn reassemble(
        cfg: &Config,
        r: &mut RecvState,
        f: &Fragment<'_>,
        free: usize,
        buffers: Option<&dyn Buffers>,
    ) -> Result<Option<Vec<u8>>, ()> {
        let msg_id = MsgId::from(f.msg_id);
        let mut spent = 0;
        let p = r.partials.entry(msg_id).or_insert_with(|| {
            r.partial_bytes += PARTIAL_OVERHEAD;
            spent = PARTIAL_OVERHEAD;
            Partial::new(f.count)
        });
        if p.poisoned {
            return Ok(None);
        }
        let before = p.charged;
        let fits = p.bytes + f.payload.len() <= cfg.message_max;
        let outcome = if p.count != f.count || p.holds(f.index) || !fits {
            // Free the fragments; the entry (and its overhead) stays, so later
            // fragments of the message are recognised and discarded, until
            // the sender's floor passes it.
            p.poison();
            Err(())
        } else if f.index == p.next {
            let left = free.saturating_sub(spent + charge(f.payload.len()));
            p.bytes += f.payload.len();
            p.append(f.payload, left, buffers);
            // Fragments that waited for this one follow it in.
            while p.ahead.first_key_value().is_some_and(|(&i, _)| i == p.next) {
                let left = free.saturating_sub(spent + p.charge_now().saturating_sub(before));
                let part = p.ahead.remove(&p.next).expect("just seen");
                p.append(&part, left, buffers);
            }
            Ok(p.next == p.count)
        } else {
            p.bytes += f.payload.len();
            p.ahead.insert(f.index, f.payload.to_vec());
            Ok(false)
        };
        p.charged = p.charge_now();
        r.partial_bytes = r.partial_bytes - before + p.charged;
        match outcome {
            Err(()) => Err(()),
            Ok(false) => Ok(None),
            Ok(true) => {
                // Fragments may arrive in any order: nothing relates `seq` to
                // the counters of the fragments before it.
                let p = r.partials.remove(&msg_id).expect("entry just used");
                r.partial_bytes -= p.charged;
                debug_assert!(p.ahead.is_empty() && p.data.len() == p.bytes);
                Ok(Some(p.data))
            }
        }
    }
}
