//! `rpcd.stats` and the `stats` frame: the daemon's counters, in all and
//! per peer.

use std::collections::BTreeMap;
use std::time::Instant;

use rpcd_client::ipc::{PeerCounters, PeerStats, Stats};
use rpcd_transport::Endpoint;

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
                unconfirmed_epoch: s.unconfirmed_epoch,
                epoch_challenges: s.epoch_challenges,
                messages_sent: s.messages_sent,
                messages_delivered: s.messages_delivered,
                messages_failed: s.messages_failed,
                fast_retransmissions: s.fast_retransmissions,
                probes: s.probes,
                redundant_copies: s.redundant_copies,
                congestion_events: s.congestion_events,
                persistent_congestion: s.persistent_congestion,
                paced_delays: s.paced_delays,
            };
            add_counters(&mut totals, &counters);
            let key = self.endpoint.peer_key(addr);
            peers.push(PeerStats {
                addr: addr.to_string(),
                name: key.map(|k| k.name.clone()),
                key_fingerprint: key.map(|k| k.public.fingerprint()),
                session_age_ms: self
                    .endpoint
                    .session_age(now, addr)
                    .map(|d| d.as_millis() as u64),
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
            public_key: self.endpoint.public_key().map(|k| k.to_string()),
            evicted_peers: ep.evicted_peers,
            security: security_counters(&self.endpoint),
            totals,
            calls: self.calls.outcomes.clone(),
            peers,
            access_denied: self.denials.counts.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            calls_in_flight: self.calls.len() as u64,
            invocations_in_flight: self.invocations.len() as u64,
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
    t.unconfirmed_epoch += c.unconfirmed_epoch;
    t.epoch_challenges += c.epoch_challenges;
    t.messages_sent += c.messages_sent;
    t.messages_delivered += c.messages_delivered;
    t.messages_failed += c.messages_failed;
    t.fast_retransmissions += c.fast_retransmissions;
    t.probes += c.probes;
    t.redundant_copies += c.redundant_copies;
    t.congestion_events += c.congestion_events;
    t.persistent_congestion += c.persistent_congestion;
    t.paced_delays += c.paced_delays;
}

/// The authenticated layer's counters by name; empty in plaintext mode.
fn security_counters(endpoint: &Endpoint) -> BTreeMap<String, u64> {
    if endpoint.public_key().is_none() {
        return BTreeMap::new();
    }
    let s = endpoint.stats().security;
    [
        ("not_authenticated", s.not_authenticated),
        ("malformed", s.malformed),
        ("bad_mac", s.bad_mac),
        ("handshake_failed", s.handshake_failed),
        ("unknown_key", s.unknown_key),
        ("address_not_allowed", s.address_not_allowed),
        ("handshake_replayed", s.handshake_replayed),
        ("rate_limited", s.rate_limited),
        ("cookies_sent", s.cookies_sent),
        ("unknown_session", s.unknown_session),
        ("auth_failed", s.auth_failed),
        ("replayed", s.replayed),
        ("handshakes", s.handshakes),
        ("handshake_timeouts", s.handshake_timeouts),
        ("queue_dropped", s.queue_dropped),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
