//! The applications' traffic and the network: sending, draining an
//! endpoint, routing and the datagram faults.

use std::net::SocketAddr;

use rand::{Rng, RngCore};
use rpcd_transport::secure::wire::Outer;
use rpcd_transport::wire::{Bundle, Datagram, Kind};
use rpcd_transport::{ChannelSendError, MsgId, SendError};

use super::{content, keyed, us, MsgRec, Sim, What, MESSAGE_MAX, PAYLOAD_MAX};

impl Sim {
    // -------------------------------------------------------------- traffic

    pub(super) fn app_tick(&mut self) -> Option<usize> {
        if self.out.messages >= self.budget {
            return None;
        }
        let n = self.nodes.len();
        let burst = if self.rng.gen_bool(self.burst_p) {
            self.rng.gen_range(10..=60)
        } else {
            1
        };
        let from = self.rng.gen_range(0..n);
        let to = (from + self.rng.gen_range(1..n)) % n;
        for _ in 0..burst {
            self.app_send(from, to);
        }
        self.maybe_hold(from, to);
        let gap = us(self.rng.gen_range(0..=2 * self.gap_mean_us));
        let at = self.now + gap;
        self.push(at, What::AppTick);
        Some(from)
    }

    pub(super) fn message_len(&mut self) -> usize {
        if self.small_p > 0.0 && self.rng.gen_bool(self.small_p) {
            return self.rng.gen_range(0..=16);
        }
        let r: f64 = self.rng.gen();
        if r < 0.1 {
            self.rng.gen_range(0..=16)
        } else if r < 0.6 {
            self.rng.gen_range(17..=PAYLOAD_MAX)
        } else if r < 0.99 {
            self.rng.gen_range(PAYLOAD_MAX + 1..=3_000)
        } else {
            self.rng.gen_range(3_001..=MESSAGE_MAX)
        }
    }

    pub(super) fn app_send(&mut self, from: usize, to: usize) {
        if self.out.messages >= self.budget {
            return;
        }
        let len = self.message_len();
        let epoch = self.nodes[from].epoch;
        let peer = self.nodes[to].addr;
        let now = self.instant(self.now);
        let Some(ep) = self.nodes[from].ep.as_mut() else {
            return;
        };
        // Contents derive from a nonce kept in the ledger.
        let key_base = (from, epoch, to);
        let nonce = self.rng.next_u64();
        let bytes = content(nonce, len);
        match ep.send(now, peer, bytes) {
            Ok(id) => {
                let key = (key_base.0, key_base.1, key_base.2, id);
                self.out.messages += 1;
                self.last_sent = self.now;
                self.out.bytes += len as u64;
                self.outstanding += 1;
                self.note(|| format!("send {key:?} len {len}"));
                if let Some(k) = self.keyed.as_mut() {
                    k.note_sent(from, to, u64::from(id), nonce, len);
                }
                if self
                    .msgs
                    .insert(
                        key,
                        MsgRec {
                            len,
                            nonce,
                            addressed: None,
                            delivered: 0,
                            acked: false,
                            failed: None,
                            sender_died: false,
                            sent: self.now,
                            cancel_requested: false,
                        },
                    )
                    .is_some()
                {
                    self.violation(format!("msg id {key:?} returned twice by send"));
                }
                self.maybe_schedule_cancel(from, to, id);
                if self.msgs.len() > self.touch_from {
                    self.touch_keys.push(key);
                }
            }
            Err(SendError::Channel(ChannelSendError::QueueFull)) => self.out.refused_sends += 1,
            Err(e) => self.violation(format!("send of {len} bytes refused: {e}")),
        }
    }

    // -------------------------------------------------------------- plumbing

    /// Collect what node `i` wants to send and tell, until it has nothing.
    pub(super) fn drain(&mut self, i: usize) {
        let now = self.instant(self.now);
        loop {
            let mut progressed = false;
            while let Some(t) = self.nodes[i]
                .ep
                .as_mut()
                .and_then(|ep| ep.poll_transmit(now))
            {
                progressed = true;
                self.route(i, t.to, t.bytes);
            }
            while let Some(ev) = self.nodes[i].ep.as_mut().and_then(|ep| ep.poll_event()) {
                progressed = true;
                self.on_event(i, ev);
            }
            while let Some(to) = self.replies.pop() {
                progressed = true;
                self.app_send(i, to);
            }
            if !progressed {
                break;
            }
        }
        let origin = self.origin;
        let n = &mut self.nodes[i];
        n.timeout =
            n.ep.as_mut()
                .and_then(|ep| ep.poll_timeout())
                .map(|t| t.saturating_duration_since(origin));
    }

    pub(super) fn node_index(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    pub(super) fn route(&mut self, from: usize, to_addr: SocketAddr, bytes: Vec<u8>) {
        self.out.datagrams += 1;
        let forging = self.note_forged_output(to_addr, bytes.len());
        let Some(to) = self.node_index(to_addr) else {
            // Only a cookie reply to a stranger's forged initiation may go
            // to an address that is no node's (checked with the forgery).
            match self.keyed.as_mut() {
                Some(k) if forging => k.to_strangers += 1,
                _ => self.violation(format!(
                    "node {from} sent {} bytes to {to_addr}, which is no node, outside any forgery",
                    bytes.len()
                )),
            }
            return;
        };
        if self.keyed.is_some() {
            // The wire carries sealed bytes: the plaintext checks below are
            // replaced by this one (see keyed.rs for the list).
            match Outer::parse(&bytes) {
                Ok(o) => {
                    let (t, i) = match o {
                        Outer::Init { .. } => ("initiation", 0),
                        Outer::Resp { .. } => ("response", 1),
                        Outer::Cookie { .. } => ("cookie", 2),
                        Outer::Transport { .. } => ("transport", 3),
                    };
                    if let Some(k) = self.keyed.as_mut() {
                        k.sent_by_type[i] += 1;
                    }
                    self.note(|| format!("tx {from}->{to} {t} {} bytes", bytes.len()));
                }
                Err(e) => self.violation(format!(
                    "node {from} emitted a datagram that is not an authenticated one: {e}"
                )),
            }
            self.maybe_forge(from, to);
        } else {
            self.route_plaintext(from, to, &bytes);
        }
        self.transmit(from, to, bytes);
    }

    /// Plaintext-only checks of a datagram on the wire (see keyed.rs).
    pub(super) fn route_plaintext(&mut self, from: usize, to: usize, bytes: &[u8]) {
        match Bundle::parse(bytes) {
            Ok(bundle) => {
                self.out.bundles += 1;
                self.out.bundled += bundle.datagrams.len() as u64;
                if bundle.datagrams.len() > 1 {
                    self.out.multi_bundles += 1;
                }
                for d in &bundle.datagrams {
                    self.check_plaintext(from, to, d);
                }
            }
            Err(e) => self.violation(format!("node {from} emitted an invalid bundle: {e}")),
        }
    }

    /// One channel datagram of a bundle on the wire.
    pub(super) fn check_plaintext(&mut self, from: usize, to: usize, d: &Datagram<'_>) {
        {
            {
                if d.kind == Kind::Data {
                    self.out.data_datagrams += 1;
                    // Data names the receiver's incarnation, always the same
                    // one for every fragment of a message.
                    if let Some(f) = &d.fragment {
                        let key = (from, d.sender_epoch, to, MsgId::from(f.msg_id));
                        if let Some(m) = self.msgs.get_mut(&key) {
                            match m.addressed {
                                None => m.addressed = Some(d.receiver_epoch),
                                Some(e) if e == d.receiver_epoch => {}
                                Some(e) => {
                                    let r = d.receiver_epoch;
                                    self.violation(format!(
                                        "{key:?} sent to receiver epoch {r:#x} after {e:#x}"
                                    ));
                                }
                            }
                        }
                    }
                    if self.all_done.is_some() {
                        self.data_after_done += 1;
                    }
                }
                self.note(|| {
                    format!(
                        "tx {from}->{to} {:?} seq {} ack {:?} floors {}/{} frag {:?} ack_now {}",
                        d.kind,
                        d.seq.0,
                        d.ack.map(|a| (a.ack.0, a.sack, a.window)),
                        d.send_floor.0,
                        d.msg_floor,
                        d.fragment.as_ref().map(|f| (f.msg_id, f.index, f.count)),
                        d.ack_now
                    )
                });
            }
        }
    }

    /// The network's faults, then the copies that arrive.
    pub(super) fn transmit(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        if self.cut[from][to] > 0 {
            self.out.cut_dropped += 1;
            return;
        }
        if self.rng.gen_bool(self.faults.loss) {
            self.out.dropped += 1;
            return;
        }
        let copies = if self.rng.gen_bool(self.faults.dup) {
            self.out.duplicated += 1;
            2
        } else {
            1
        };
        let from_addr = self.nodes[from].addr;
        for _ in 0..copies {
            let f = self.faults;
            let mut delay = f.delay + f.jitter.mul_f64(self.rng.gen::<f64>());
            if self.rng.gen_bool(f.reorder) {
                self.out.reordered += 1;
                delay += f.reorder_extra.mul_f64(self.rng.gen::<f64>());
            }
            let mut b = bytes.clone();
            let mut tampered = false;
            if self.rng.gen_bool(f.corrupt) {
                for _ in 0..self.rng.gen_range(1..=3) {
                    let i = self.rng.gen_range(0..b.len());
                    b[i] ^= 1 << self.rng.gen_range(0..8);
                }
                // Three flips may cancel out (same bit twice).
                tampered = b != bytes;
                if tampered {
                    self.out.corrupted += 1;
                }
            }
            if self.rng.gen_bool(f.truncate) {
                let n = self.rng.gen_range(0..b.len());
                b.truncate(n);
                tampered = true;
                self.out.truncated += 1;
            }
            let benign =
                tampered && self.keyed.is_some() && keyed::only_unchecked_bytes(&bytes, &b);
            let at = self.now + delay;
            self.push(
                at,
                What::Arrive {
                    to,
                    from: from_addr,
                    bytes: b,
                    tampered,
                    benign,
                    forged: None,
                },
            );
        }
    }
}
