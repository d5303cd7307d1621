//! `rpcd.stats` and the `stats` frame: the daemon's counters, in all and
//! per peer.

use std::time::Instant;

use rpcd_client::ipc::{PeerCounters, PeerStats, Stats};

use super::Router;

impl Router {
    /// A snapshot of every counter.
    pub fn stats(&self, now: Instant) -> Stats {
        let ep = self.endpoint.stats();
        let mut totals = PeerCounters::default();
        let mut peers = Vec::new();
        for (addr, snap) in self.endpoint.peers() {
            let s = snap.stats;
            let counters = PeerCounters {
                datagrams_sent: s.datagrams_sent,
                datagrams_received: s.datagrams_received,
                retransmissions: s.retransmissions,
                duplicates: s.duplicates,
                stale_epoch: s.stale_epoch,
                out_of_window: s.out_of_window,
                messages_sent: s.messages_sent,
                messages_delivered: s.messages_delivered,
                messages_failed: s.messages_failed,
            };
            add_counters(&mut totals, &counters);
            peers.push(PeerStats {
                addr: addr.to_string(),
                epoch: snap.peer_epoch,
                counters,
                srtt_us: snap.srtt.map(|d| d.as_micros() as u64),
                rto_us: snap.rto.as_micros() as u64,
                in_flight: snap.in_flight as u64,
                cwnd: snap.cwnd,
                calls_in_flight: self.calls.to_peer(addr) as u64,
                calls: self
                    .calls
                    .peer_outcomes
                    .get(&addr)
                    .cloned()
                    .unwrap_or_default(),
            });
        }
        peers.sort_by(|a, b| a.addr.cmp(&b.addr));
        Stats {
            epoch: self.endpoint.epoch(),
            listen: self.me.to_string(),
            uptime_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            connections: self.apps.len() as u64,
            functions: self.registry.len() as u64,
            malformed: ep.malformed
                + self.counters.oversize_datagrams
                + self.counters.bad_envelopes,
            corrupt: ep.corrupt,
            refused_peers: ep.refused_peers,
            late_replies: self.counters.late_replies,
            late_results: self.counters.late_results,
            dropped_transmits: self.counters.dropped_transmits,
            totals,
            calls: self.calls.outcomes.clone(),
            peers,
        }
    }
}

fn add_counters(t: &mut PeerCounters, c: &PeerCounters) {
    t.datagrams_sent += c.datagrams_sent;
    t.datagrams_received += c.datagrams_received;
    t.retransmissions += c.retransmissions;
    t.duplicates += c.duplicates;
    t.stale_epoch += c.stale_epoch;
    t.out_of_window += c.out_of_window;
    t.messages_sent += c.messages_sent;
    t.messages_delivered += c.messages_delivered;
    t.messages_failed += c.messages_failed;
}
