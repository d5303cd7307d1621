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
            // Field by field: the type is `#[non_exhaustive]` (it grows).
            let mut counters = PeerCounters::default();
            counters.datagrams_sent = s.datagrams_sent;
            counters.datagrams_received = s.datagrams_received;
            counters.retransmissions = s.retransmissions;
            counters.duplicates = s.duplicates;
            counters.stale_epoch = s.stale_epoch;
            counters.out_of_window = s.out_of_window;
            counters.unconfirmed_epoch = s.unconfirmed_epoch;
            counters.epoch_challenges = s.epoch_challenges;
            counters.messages_sent = s.messages_sent;
            counters.messages_delivered = s.messages_delivered;
            counters.messages_failed = s.messages_failed;
            counters.fast_retransmissions = s.fast_retransmissions;
            counters.probes = s.probes;
            counters.redundant_copies = s.redundant_copies;
            counters.congestion_events = s.congestion_events;
            counters.persistent_congestion = s.persistent_congestion;
            counters.paced_delays = s.paced_delays;
            counters.forward_copies = s.forward_copies;
            add_counters(&mut totals, &counters);
            let key = self.endpoint.peer_key(addr);
            let mut peer = PeerStats::default();
            peer.addr = addr.to_string();
            peer.name = key.map(|k| k.name.clone());
            peer.key_fingerprint = key.map(|k| k.public.fingerprint());
            peer.session_age_ms = self
                .endpoint
                .session_age(now, addr)
                .map(|d| d.as_millis() as u64);
            peer.epoch = snap.peer_epoch;
            peer.counters = counters;
            peer.srtt_us = snap.srtt.map(|d| d.as_micros() as u64);
            peer.rto_us = snap.rto.as_micros() as u64;
            peer.in_flight = snap.in_flight as u64;
            peer.cwnd = snap.cwnd;
            peer.calls_in_flight = self.calls.to_peer(addr) as u64;
            peer.calls = self
                .calls
                .peer_outcomes
                .get(&addr)
                .cloned()
                .unwrap_or_default();
            peers.push(peer);
        }
        peers.sort_by(|a, b| a.addr.cmp(&b.addr));
        // Field by field: `Stats` is `#[non_exhaustive]` (it grows).
        let mut stats = Stats::default();
        stats.epoch = self.endpoint.epoch();
        stats.listen = self.me.to_string();
        stats.uptime_ms = now.saturating_duration_since(self.started).as_millis() as u64;
        stats.connections = self.apps.len() as u64;
        stats.functions = self.registry.len() as u64;
        stats.malformed =
            ep.malformed + self.counters.oversize_datagrams + self.counters.bad_envelopes;
        stats.corrupt = ep.corrupt;
        stats.refused_peers = ep.refused_peers;
        stats.late_replies = self.counters.late_replies;
        stats.late_results = self.counters.late_results;
        stats.dropped_transmits = self.counters.dropped_transmits;
        stats.public_key = self.endpoint.public_key().map(|k| k.to_string());
        stats.evicted_peers = ep.evicted_peers;
        stats.security = security_counters(&self.endpoint);
        stats.totals = totals;
        stats.calls = self.calls.outcomes.clone();
        stats.peers = peers;
        stats.access_denied = self.denials.counts.clone();
        stats.version = env!("CARGO_PKG_VERSION").to_owned();
        stats.calls_in_flight = self.calls.len() as u64;
        stats.invocations_in_flight = self.invocations.len() as u64;
        stats.by_function = self
            .calls
            .figures
            .stats(now, self.settings.metrics.window());
        stats
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
    t.forward_copies += c.forward_copies;
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
