//! The run loop: timers and the event queue in virtual time, crashes and
//! boots.

use std::fmt::Write as _;
use std::net::SocketAddr;

use rand::RngCore;
use rpcd_transport::Endpoint;

use super::{Sim, What, EVENTS_MAX, STUCK_MAX, T, VIRTUAL_MAX};

impl Sim {
    // -------------------------------------------------------------- run loop

    pub(super) fn run(&mut self) {
        let mut events = 0u64;
        let mut stuck = 0u64;
        loop {
            let next_net = self.queue.peek().map(|e| e.at);
            let mut next_timer: Option<(T, usize)> = None;
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(t) = n.timeout {
                    if next_timer.is_none_or(|(b, _)| t < b) {
                        next_timer = Some((t, i));
                    }
                }
            }
            let take_timer = match (next_net, next_timer) {
                (None, None) => break,
                // Keyed runs, before the recovery rounds: with nothing on
                // the wire and every channel idle (no state, no timer), only
                // the sessions' timers are left (keypairs expire after
                // `reject_after`, minutes by default). Start the rounds now,
                // over the sessions as they are, rather than after they
                // expired.
                (None, Some(_)) if self.stop_at_idle_channels && self.all_idle() => break,
                (Some(n), Some((t, _))) => t < n,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            events += 1;
            let t = if take_timer {
                next_timer.map(|x| x.0)
            } else {
                next_net
            };
            if t.is_some_and(|t| t <= self.now) {
                stuck += 1;
            } else {
                stuck = 0;
            }
            if events > EVENTS_MAX || self.now > VIRTUAL_MAX || stuck > STUCK_MAX {
                let mut s = String::new();
                for n in &mut self.nodes {
                    if let Some(ep) = n.ep.as_mut() {
                        let _ = write!(
                            s,
                            "\n  {} timeout {:?} idle {}",
                            n.addr,
                            ep.poll_timeout().map(|t| t - self.origin),
                            ep.is_idle()
                        );
                        for (p, snap) in ep.peers() {
                            let _ = write!(s, "\n    {p}: {snap:?}");
                        }
                    }
                }
                self.violation(format!(
                    "no quiescence after {events} events ({stuck} at the same instant) (outstanding {}, all_done {:?}){s}",
                    self.outstanding, self.all_done
                ));
                return;
            }
            if take_timer {
                let (t, i) = next_timer.expect("chosen");
                self.now = self.now.max(t);
                let now = self.instant(self.now);
                if let Some(ep) = self.nodes[i].ep.as_mut() {
                    ep.handle_timeout(now);
                }
                self.drain(i);
                continue;
            }
            let ev = self.queue.pop().expect("peeked");
            self.now = self.now.max(ev.at);
            match ev.what {
                What::Arrive {
                    to,
                    from,
                    bytes,
                    tampered,
                    benign,
                    forged,
                } => {
                    if tampered && self.nodes[to].ep.is_some() {
                        self.tampered_handed += 1;
                    }
                    if self.keyed.is_some() {
                        self.arrive_keyed(to, from, bytes, tampered, benign, forged);
                    } else if let Some(ep) = self.nodes[to].ep.as_mut() {
                        let now = self.origin + self.now;
                        ep.handle_datagram(now, from, &bytes);
                        self.drain(to);
                    }
                }
                What::AppTick => {
                    if let Some(i) = self.app_tick() {
                        self.drain(i);
                    }
                }
                What::Link {
                    a,
                    b,
                    symmetric,
                    cut,
                } => {
                    let d: i64 = if cut { 1 } else { -1 };
                    self.out.cuts += u64::from(cut);
                    self.note(|| format!("link {a}->{b} sym {symmetric} cut {cut}"));
                    self.cut[a][b] = (i64::from(self.cut[a][b]) + d) as u32;
                    if symmetric {
                        self.cut[b][a] = (i64::from(self.cut[b][a]) + d) as u32;
                    }
                }
                What::Cancel {
                    node,
                    epoch,
                    peer,
                    id,
                } => self.cancel(node, epoch, peer, id),
                What::Release { node, epoch, peer } => self.release(node, epoch, peer),
                What::Crash { node } => self.crash(node),
                What::Boot { node } => self.boot(node),
            }
        }
    }

    pub(super) fn crash(&mut self, node: usize) {
        let Some(ep) = self.nodes[node].ep.take() else {
            return;
        };
        self.note(|| format!("crash node {node}"));
        self.out.crashes += 1;
        self.nodes[node].timeout = None;
        self.absorb_stats(&ep);
        let epoch = self.nodes[node].epoch;
        let mut died = 0;
        for (k, m) in self.msgs.iter_mut() {
            if k.0 == node && k.1 == epoch && !m.acked && m.failed.is_none() && !m.sender_died {
                m.sender_died = true;
                died += 1;
            }
        }
        self.outstanding -= died;
        self.out.exempt += died;
        self.check_done();
    }

    pub(super) fn boot(&mut self, node: usize) {
        if self.nodes[node].ep.is_some() {
            // Overlapping restarts: crash first.
            self.crash(node);
        }
        let epoch = loop {
            let e = self.rng.next_u64();
            if e != 0 && self.nodes.iter().all(|n| n.epoch != e) {
                break e;
            }
        };
        self.note(|| format!("boot node {node} epoch {epoch:#x}"));
        self.nodes[node].epoch = epoch;
        let ep = match self.keyed.as_mut() {
            None => Endpoint::new(self.cfg, epoch),
            Some(k) => {
                // Same key, new epoch and seed; the wall clock keeps growing.
                let addrs: Vec<SocketAddr> = self.nodes.iter().map(|n| n.addr).collect();
                k.endpoint(self.cfg, epoch, node, &addrs, self.now)
            }
        };
        self.nodes[node].ep = Some(ep);
        self.drain(node);
    }

    pub(super) fn absorb_stats(&mut self, ep: &Endpoint) {
        if let Some(k) = self.keyed.as_mut() {
            k.absorb(ep);
        }
        let st = ep.stats();
        self.dead_stats.0 += st.corrupt + st.malformed;
        for (_, snap) in ep.peers() {
            self.dead_stats.1 += snap.stats.retransmissions;
            self.dead_stats.2 += snap.stats.fast_retransmissions;
            self.dead_stats.3 += snap.stats.datagrams_sent;
        }
    }
}
