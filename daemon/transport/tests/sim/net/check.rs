//! The ledger's checks: every event as it happens, the recovery rounds,
//! and the end-of-run verdict.

use std::fmt::Write as _;

use rand::Rng;
use rpcd_transport::{ChannelEvent, FailReason};

use super::{content, oracle, MsgRec, Outcome, Sim};

impl Sim {
    pub(super) fn on_event(&mut self, i: usize, ev: rpcd_transport::Event) {
        self.note_forged_event(i, &ev);
        let Some(peer) = self.node_index(ev.peer) else {
            self.violation(format!(
                "node {i}: event {:?} for {}, which is no node",
                ev.kind, ev.peer
            ));
            return;
        };
        let me = self.nodes[i].epoch;
        match ev.kind {
            ChannelEvent::Delivered { msg_id, data } => {
                let epoch = self.nodes[i]
                    .ep
                    .as_ref()
                    .and_then(|ep| ep.peer(ev.peer))
                    .and_then(|s| s.peer_epoch)
                    .unwrap_or(0);
                let key = (peer, epoch, i, msg_id);
                self.note(|| format!("delivered {key:?} len {}", data.len()));
                let now = self.now;
                let max_delay = self.faults.max_one_way();
                let Some(m) = self.msgs.get_mut(&key) else {
                    self.violation(format!("delivered {key:?}, which was never sent"));
                    return;
                };
                m.delivered += 1;
                let (delivered, failed, expect) = (m.delivered, m.failed, (m.nonce, m.len));
                let addressed = m.addressed;
                // Plaintext only: in keyed runs the receiver epoch a Data
                // datagram names is sealed (see keyed.rs).
                if self.keyed.is_none() && addressed != Some(me) {
                    self.violation(format!(
                        "{key:?} delivered by incarnation {me:#x}, but was addressed to {addressed:?}"
                    ));
                }
                if delivered > 1 {
                    self.out.duplicates_delivered += 1;
                    self.violation(format!("{key:?} delivered {delivered} times"));
                }
                if let Some((at, reason, maybe)) = failed {
                    if !maybe {
                        self.violation(format!(
                            "{key:?} delivered after failing ({reason:?}) with maybe_delivered = false"
                        ));
                    }
                    if now > at + max_delay {
                        self.violation(format!(
                            "{key:?} delivered at {now:?}, later than its failure at {at:?} + max one-way {max_delay:?}"
                        ));
                    }
                }
                if data != content(expect.0, expect.1) {
                    self.violation(format!(
                        "{key:?} delivered {} bytes that differ from the {} sent",
                        data.len(),
                        expect.1
                    ));
                }
                if self.rng.gen_bool(self.reply_p) {
                    self.replies.push(peer);
                }
            }
            ChannelEvent::Acked { msg_id } => {
                let key = (i, me, peer, msg_id);
                self.note(|| format!("acked {key:?}"));
                let Some(m) = self.msgs.get_mut(&key) else {
                    self.violation(format!("acked {key:?}, which was never sent"));
                    return;
                };
                if m.acked || m.failed.is_some() {
                    self.violation(format!("{key:?} got a second outcome: acked"));
                    return;
                }
                m.acked = true;
                self.outstanding -= 1;
                self.check_done();
            }
            ChannelEvent::Failed {
                msg_id,
                reason,
                maybe_delivered,
            } => {
                let key = (i, me, peer, msg_id);
                self.note(|| format!("failed {key:?} {reason:?} maybe {maybe_delivered}"));
                let now = self.now;
                let Some(m) = self.msgs.get_mut(&key) else {
                    self.violation(format!("failed {key:?}, which was never sent"));
                    return;
                };
                if m.acked || m.failed.is_some() {
                    self.violation(format!("{key:?} got a second outcome: failed"));
                    return;
                }
                m.failed = Some((now, reason, maybe_delivered));
                let (delivered, addressed, sent) = (m.delivered, m.addressed, m.sent);
                let cancel_requested = m.cancel_requested;
                self.outstanding -= 1;
                if !maybe_delivered && delivered > 0 {
                    self.violation(format!(
                        "{key:?} failed ({reason:?}) with maybe_delivered = false but was delivered"
                    ));
                }
                if reason == FailReason::Cancelled || cancel_requested {
                    // Checked by the cancel itself (app.rs).
                    if !cancel_requested {
                        self.violation(format!(
                            "{key:?} failed as cancelled, but nobody cancelled it"
                        ));
                    }
                } else if self.strict {
                    self.violation(format!(
                        "{key:?} failed ({reason:?}) in a run without partitions or restarts"
                    ));
                } else {
                    // Plaintext: the data named an incarnation of the
                    // receiver that is gone.
                    let unseen = self.keyed.is_none()
                        && addressed.is_some_and(|e| e != self.nodes[peer].epoch);
                    match oracle::explain(
                        &self.schedule,
                        self.give_up,
                        i,
                        peer,
                        now,
                        reason,
                        unseen,
                    ) {
                        Ok(lag) => {
                            self.out.explained += 1;
                            self.out.explained_lag_max = self.out.explained_lag_max.max(lag);
                        }
                        Err(why) => self.violation(format!(
                            "{key:?} (sent at {sent:?}) failed ({reason:?}): {why}"
                        )),
                    }
                }
                self.check_done();
            }
            ChannelEvent::PeerRestarted => self.out.peer_restarted_events += 1,
            ChannelEvent::PeerUnreachable => {
                self.out.peer_unreachable_events += 1;
                if self.strict {
                    self.violation(format!(
                        "node {i}: peer {peer} unreachable in a run without partitions"
                    ));
                } else if let Err(why) = oracle::explain(
                    &self.schedule,
                    self.give_up,
                    i,
                    peer,
                    self.now,
                    FailReason::PeerUnreachable,
                    false,
                ) {
                    self.violation(format!("node {i}: peer {peer} unreachable: {why}"));
                }
            }
        }
    }

    pub(super) fn all_idle(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.ep.as_ref().is_none_or(|ep| ep.is_idle()))
    }

    pub(super) fn touch_all_pairs(&mut self, needed: bool) {
        if needed {
            self.out.touch_rounds += 1;
        }
        self.touch_from = self.msgs.len();
        // On a network that has become clean: these must get through.
        self.faults.loss = 0.0;
        self.faults.corrupt = 0.0;
        self.faults.truncate = 0.0;
        self.settle_retx();
        self.all_done = None;
        let n = self.nodes.len();
        for i in 0..n {
            for j in 0..n {
                if i != j && self.nodes[i].ep.is_some() && self.nodes[j].ep.is_some() {
                    self.budget += 1;
                    self.app_send(i, j);
                    self.drain(i);
                }
            }
        }
    }

    pub(super) fn check_done(&mut self) {
        if self.all_done.is_none() && self.out.messages >= self.budget && self.outstanding == 0 {
            if self.settled.is_none() {
                // Liveness (oracle.rs): within `give_up` of the last fault's
                // end or the last send, whichever is later.
                let last_fault = self.schedule.iter().map(|f| f.end).max();
                let from = last_fault.unwrap_or_default().max(self.last_sent);
                self.settled = Some((self.now, from + self.give_up));
                let took = self.now.saturating_sub(from);
                self.out.settle_max = took;
                self.out.settle_permille_max =
                    (took.as_micros() * 1000 / self.give_up.as_micros().max(1)) as u64;
                if self.now > from + self.give_up {
                    let g = self.give_up;
                    self.violation(format!(
                        "every message had its outcome only {took:?} after the last fault ended or the last send (at {from:?}): over the bound {g:?}"
                    ));
                }
            }
            self.all_done = Some(self.now);
            self.retx_at_done = Some(self.retransmissions_total());
        }
    }

    /// Retransmissions counted by every channel of every incarnation so far.
    pub(super) fn retransmissions_total(&self) -> u64 {
        let live: u64 = self
            .nodes
            .iter()
            .filter_map(|n| n.ep.as_ref())
            .flat_map(|ep| ep.peers().map(|(_, s)| s.stats.retransmissions))
            .sum();
        self.dead_stats.1 + live
    }

    /// Retransmission stops once every message has its outcome: what the
    /// counters grew by since then. Checked in both modes; in keyed runs it
    /// stands for the plaintext check that no Data datagram is on the wire
    /// after that point.
    pub(super) fn settle_retx(&mut self) {
        if let Some(r) = self.retx_at_done.take() {
            self.out.retx_after_done += self.retransmissions_total() - r;
        }
    }

    pub(super) fn finish(mut self) -> Result<Outcome, String> {
        self.out.virtual_time = self.now;
        self.settle_retx();
        if self.out.retx_after_done > 0 {
            let n = self.out.retx_after_done;
            self.violation(format!(
                "{n} retransmissions after every message was acknowledged or failed (at {:?})",
                self.all_done
            ));
        }
        if self.data_after_done > 0 {
            let n = self.data_after_done;
            self.violation(format!(
                "{n} data datagrams emitted after every message was acknowledged or failed (at {:?})",
                self.all_done
            ));
        }
        if self.out.messages < self.budget {
            let (m, b) = (self.out.messages, self.budget);
            self.violation(format!("only {m} of {b} messages were sent"));
        }
        if self.settled.is_none() {
            self.violation("the messages never all had their outcome".into());
        }
        let mut problems = Vec::new();
        for (key, m) in &self.msgs {
            if m.delivered > 0 {
                self.out.delivered += 1;
            }
            if m.acked {
                self.out.acked += 1;
                if m.delivered != 1 {
                    problems.push(format!(
                        "{key:?} acknowledged but delivered {} times",
                        m.delivered
                    ));
                }
            } else if let Some((_, reason, maybe)) = m.failed {
                self.out.failed += 1;
                if maybe {
                    self.out.ambiguous += 1;
                    if m.delivered > 0 {
                        self.out.ambiguous_delivered += 1;
                    }
                } else {
                    self.out.failed_definite += 1;
                    if m.delivered > 0 {
                        problems.push(format!(
                            "{key:?} failed definitely ({reason:?}) but was delivered"
                        ));
                    }
                }
            } else if !m.sender_died {
                self.out.lost += 1;
                problems.push(format!(
                    "{key:?} (len {}) neither acknowledged nor failed (delivered {})",
                    m.len, m.delivered
                ));
            }
        }
        for key in &self.touch_round_one {
            if let Some(MsgRec {
                failed: Some((_, reason, _)),
                ..
            }) = self.msgs.get(key)
            {
                if *reason != FailReason::PeerRestarted {
                    problems.push(format!(
                        "{key:?}, sent after the network healed, failed: {reason:?}"
                    ));
                }
            }
        }
        for key in &self.touch_keys {
            if self.msgs.get(key).is_some_and(|m| !m.acked) {
                problems.push(format!(
                    "{key:?}, sent after the network healed, was not acknowledged"
                ));
            }
        }
        problems.sort();
        for p in problems.into_iter().take(10) {
            self.violation(p);
        }
        let cancelled = self.out.cancelled;
        if self.strict
            && (self.out.acked + cancelled != self.out.messages
                || (cancelled == 0 && self.out.delivered != self.out.messages))
        {
            let (a, d, m) = (self.out.acked, self.out.delivered, self.out.messages);
            self.violation(format!("fault-only run: {a} acked, {d} delivered of {m}"));
        }
        // Every endpoint idle, counters gathered.
        let mut tampered_dropped = self.dead_stats.0;
        self.out.retransmissions = self.dead_stats.1;
        self.out.fast_retransmissions = self.dead_stats.2;
        let mut idle_problems = Vec::new();
        for n in &self.nodes {
            let Some(ep) = n.ep.as_ref() else {
                continue;
            };
            let st = ep.stats();
            tampered_dropped += st.corrupt + st.malformed;
            for (p, snap) in ep.peers() {
                self.out.retransmissions += snap.stats.retransmissions;
                self.out.fast_retransmissions += snap.stats.fast_retransmissions;
                let _ = p;
            }
            if !ep.is_idle() {
                let mut s = format!("endpoint {} not idle after quiescence:", n.addr);
                for (p, snap) in ep.peers() {
                    let _ = write!(s, "\n    {p}: {snap:?}");
                }
                idle_problems.push(s);
            }
        }
        for p in idle_problems {
            self.violation(p);
        }
        if self.out.fast_retransmissions > self.out.retransmissions {
            let (f, r) = (self.out.fast_retransmissions, self.out.retransmissions);
            self.violation(format!(
                "{f} fast retransmissions counted, but only {r} retransmissions"
            ));
        }
        // Plaintext only: in keyed runs tampered datagrams are dropped by the
        // authenticated layer (checked one by one in keyed.rs) and the inner
        // counters must stay zero (finish_keyed).
        if self.keyed.is_none() && tampered_dropped != self.tampered_handed {
            let (a, b) = (tampered_dropped, self.tampered_handed);
            self.violation(format!(
                "{b} corrupt or truncated datagrams reached endpoints, {a} were dropped as corrupt/malformed"
            ));
        }
        self.finish_keyed();
        if self.violations.is_empty() {
            return Ok(self.out);
        }
        let mode = match &self.keyed {
            Some(k) => format!("keyed {k:?}, forgeries {:?}", k.enabled_names()),
            None => "plain".into(),
        };
        let mut s = format!(
            "{} violation(s); mode {mode}; faults {:?}; config {:?}; strict {}\n",
            self.violations.len(),
            self.faults,
            self.cfg,
            self.strict
        );
        for v in &self.violations {
            let _ = writeln!(s, "  - {v}");
        }
        if let Some(tr) = &self.trace {
            let path = std::env::temp_dir().join(format!("rpcd-sim-{}.trace", self.seed));
            let _ = std::fs::write(&path, tr.join("\n"));
            let _ = writeln!(s, "trace written to {}", path.display());
        } else {
            let _ = writeln!(s, "set SIM_TRACE=1 to write a datagram trace");
        }
        Err(s)
    }
}
