//! The daemon's counters, as the `stats` reply and the built-in `rpcd.stats` carry them.
//!
//! Read tolerantly (`docs/ipc-protocol.md` §3): keys a reader does not know are ignored and
//! keys it misses read as zero or empty, so a daemon and a client of different builds
//! still understand each other's counters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::ErrorCode;

/// The daemon's counters, as returned by the `stats` operation and `rpcd.stats`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Stats {
    /// The daemon's current epoch.
    pub epoch: u64,
    /// The daemon's UDP address.
    pub listen: String,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Local app connections open now.
    pub connections: u64,
    /// Functions registered now.
    pub functions: u64,
    /// Datagrams (and RPC envelopes) dropped as malformed.
    pub malformed: u64,
    /// Datagrams dropped for a bad checksum.
    pub corrupt: u64,
    /// Datagrams dropped from new peers beyond `peers_max`.
    pub refused_peers: u64,
    /// Replies from peers for calls that were no longer waiting (deadline
    /// passed, caller gone): dropped.
    pub late_replies: u64,
    /// Results from serving apps for invocations the daemon no longer knows
    /// (deadline passed, caller gone, or not the app's): dropped.
    pub late_results: u64,
    /// Datagrams dropped because the UDP send backlog was full (the
    /// transport retransmits them, as after a loss).
    pub dropped_transmits: u64,
    /// This daemon's public key (base64), when it runs with keys; `None` in
    /// plaintext mode.
    pub public_key: Option<String>,
    /// Peers forgotten after a quiet spell (`transport.peer_idle_timeout`).
    pub evicted_peers: u64,
    /// With keys: the authenticated layer's counters, by name (see
    /// `docs/ipc-protocol.md`: drops by reason, handshakes, cookies).
    /// Empty in plaintext mode.
    pub security: BTreeMap<String, u64>,
    /// Sum of the per-peer counters.
    pub totals: PeerCounters,
    /// Calls finished, by outcome: an [`ErrorCode::as_str`] or `"ok"`.
    pub calls: BTreeMap<String, u64>,
    /// One entry per known peer daemon.
    pub peers: Vec<PeerStats>,
    /// Requests refused `access_denied` by the `[access]` policy, by reason: `register`,
    /// `call`, `stats` (local apps), `remote_call`, `remote_stats` (peer daemons). Empty
    /// until the first refusal; absent from an older daemon's stats.
    #[serde(default)]
    pub access_denied: BTreeMap<String, u64>,
    /// The daemon's version (its crate version, e.g. `0.1.0`). Empty from an older daemon,
    /// whose stats lack it.
    #[serde(default)]
    pub version: String,
    /// Calls from this daemon's apps awaiting their outcome now, whatever their target
    /// (this daemon's own functions included). Zero from an older daemon.
    #[serde(default)]
    pub calls_in_flight: u64,
    /// Invocations this daemon's serving apps are running now, for local and remote
    /// callers. Zero from an older daemon.
    #[serde(default)]
    pub invocations_in_flight: u64,
    /// Calls from this daemon's apps by function name, as this (the calling) daemon
    /// measured them: outcomes, latency over a sliding window and a histogram since
    /// start. At most `metrics.functions_max` names, then `"(other)"`. Empty from an
    /// older daemon.
    #[serde(default)]
    pub by_function: BTreeMap<String, FunctionStats>,
}

/// Calls to one function from this daemon's apps. Latency is measured by the calling
/// daemon, from admitting the app's `call` frame to queueing its outcome frame.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct FunctionStats {
    /// Calls finished since start, by outcome: an [`ErrorCode::as_str`] or `"ok"`.
    pub calls: BTreeMap<String, u64>,
    /// Calls in the sliding window p50 and p99 are taken over: the last
    /// `metrics.latency_window` calls that ended within `metrics.latency_window_ms`.
    pub window_calls: u64,
    /// Median latency over the window in microseconds (nearest rank); `None` when
    /// the window is empty.
    pub p50_us: Option<u64>,
    /// 99th-percentile latency over the window in microseconds (nearest rank).
    pub p99_us: Option<u64>,
    /// Sum of all latencies since start, in microseconds.
    pub latency_sum_us: u64,
    /// The latency histogram since start: cumulative counts at fixed upper bounds,
    /// ascending; calls above the last bound are the rest of the sum of `calls`.
    pub latency_buckets: Vec<LatencyBucket>,
}

/// One bucket of a latency histogram.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LatencyBucket {
    /// Upper bound (inclusive) in microseconds.
    pub le_us: u64,
    /// Calls at most this long (cumulative).
    pub count: u64,
}

/// Transport counters for one peer, or summed over all peers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PeerCounters {
    /// Datagrams sent, retransmissions included.
    pub datagrams_sent: u64,
    /// Datagrams received, duplicates included.
    pub datagrams_received: u64,
    /// Datagrams sent again after a timeout or a selective-ack gap.
    pub retransmissions: u64,
    /// Duplicate datagrams acknowledged but not delivered.
    pub duplicates: u64,
    /// Datagrams dropped for carrying an old epoch.
    pub stale_epoch: u64,
    /// Datagrams dropped for falling outside the receive window.
    pub out_of_window: u64,
    /// Datagrams dropped for claiming a new epoch not (yet) confirmed by a
    /// challenge round trip (a forged "restart", or the first datagrams of a
    /// real one).
    pub unconfirmed_epoch: u64,
    /// Challenges sent to confirm a claimed new epoch.
    pub epoch_challenges: u64,
    /// Messages handed to the channel for sending.
    pub messages_sent: u64,
    /// Messages delivered complete.
    pub messages_delivered: u64,
    /// Messages given up on (retries exhausted, deadline, peer restart).
    pub messages_failed: u64,
    /// Of the retransmissions: datagrams declared lost by loss detection (a
    /// selective-ack gap or RACK's time threshold) and sent again.
    pub fast_retransmissions: u64,
    /// Of the retransmissions: datagrams sent again as a probe after a
    /// probe timeout (tail-loss probe, RTO).
    pub probes: u64,
    /// Of the retransmissions: second copies of a repair sent while the
    /// flight was thin (`transport.redundant_flight_max`).
    pub redundant_copies: u64,
    /// Losses that reduced the congestion window (one per recovery period).
    pub congestion_events: u64,
    /// Times persistent congestion collapsed the window to its minimum.
    pub persistent_congestion: u64,
    /// Times data waited for the pacer while the window had room.
    pub paced_delays: u64,
    /// Copies of an unacknowledged datagram sent with the next new one on a
    /// thin flight (`transport.forward_copies`); not retransmissions. Zero
    /// from an older daemon.
    pub forward_copies: u64,
}

/// The state of the channel to one peer daemon.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PeerStats {
    /// The peer's `host:port`.
    pub addr: String,
    /// With keys: the configured name of the peer authenticated there.
    pub name: Option<String>,
    /// With keys: a short fingerprint of its public key.
    pub key_fingerprint: Option<String>,
    /// With keys: the age of the session in use, in milliseconds.
    pub session_age_ms: Option<u64>,
    /// The peer's epoch, once heard from.
    pub epoch: Option<u64>,
    /// The channel's counters.
    pub counters: PeerCounters,
    /// Smoothed round-trip time in microseconds, once measured.
    pub srtt_us: Option<u64>,
    /// Current retransmission timeout in microseconds.
    pub rto_us: u64,
    /// Datagrams sent and not yet acknowledged.
    pub in_flight: u64,
    /// Congestion window in datagrams.
    pub cwnd: u32,
    /// Calls to this peer awaiting a reply.
    pub calls_in_flight: u64,
    /// Calls to this peer finished, by outcome code or `"ok"`.
    pub calls: BTreeMap<String, u64>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ipc::testutil::round_trip;

    /// Stats with every field set, extremes included.
    pub(crate) fn sample_stats() -> Stats {
        let counters = PeerCounters {
            datagrams_sent: 1,
            datagrams_received: 2,
            retransmissions: 3,
            duplicates: 4,
            stale_epoch: 5,
            out_of_window: 6,
            unconfirmed_epoch: 9,
            epoch_challenges: 10,
            messages_sent: 7,
            messages_delivered: 8,
            messages_failed: u64::MAX,
            fast_retransmissions: 11,
            probes: 12,
            redundant_copies: 13,
            congestion_events: 14,
            persistent_congestion: 15,
            paced_delays: 16,
            forward_copies: 17,
        };
        Stats {
            epoch: 0xdead_beef_dead_beef,
            listen: "127.0.0.1:7000".into(),
            uptime_ms: 10,
            connections: 1,
            functions: 4,
            malformed: 0,
            corrupt: 2,
            refused_peers: 0,
            late_replies: 3,
            late_results: 0,
            dropped_transmits: 1,
            public_key: Some("k".repeat(44)),
            evicted_peers: 2,
            security: BTreeMap::from([("replayed".into(), 3), ("handshakes".into(), u64::MAX)]),
            totals: counters.clone(),
            calls: BTreeMap::from([("ok".into(), 10), ("deadline_exceeded".into(), 1)]),
            peers: vec![
                PeerStats {
                    addr: "10.0.0.2:7000".into(),
                    name: Some("b".into()),
                    key_fingerprint: Some("0123456789abcdef".into()),
                    session_age_ms: Some(1),
                    epoch: Some(42),
                    counters,
                    srtt_us: Some(120),
                    rto_us: 2000,
                    in_flight: 3,
                    cwnd: 16,
                    calls_in_flight: 1,
                    calls: BTreeMap::from([("ok".into(), 10)]),
                },
                PeerStats::default(),
            ],
            access_denied: BTreeMap::from([("call".into(), 2)]),
            version: "0.1.0".into(),
            calls_in_flight: 3,
            invocations_in_flight: u64::MAX,
            by_function: BTreeMap::from([(
                "kv.get".into(),
                FunctionStats {
                    calls: BTreeMap::from([("ok".into(), 3), ("not_found".into(), 1)]),
                    window_calls: 4,
                    p50_us: Some(120),
                    p99_us: Some(u64::MAX),
                    latency_sum_us: 900,
                    latency_buckets: vec![
                        LatencyBucket {
                            le_us: 100,
                            count: 1,
                        },
                        LatencyBucket {
                            le_us: 250,
                            count: 3,
                        },
                    ],
                },
            )]),
        }
    }

    #[test]
    fn stats_round_trip() {
        round_trip(sample_stats());
        round_trip(Stats::default());
    }

    /// An older daemon's stats lack the fields added later: they decode as empty and zero.
    #[test]
    fn stats_without_the_later_fields_decode() {
        let mut value = serde_json::to_value(sample_stats()).expect("stats as a value");
        let map = value.as_object_mut().expect("stats is a map");
        for key in [
            "access_denied",
            "version",
            "calls_in_flight",
            "invocations_in_flight",
            "by_function",
        ] {
            assert!(map.remove(key).is_some(), "{key} is a field");
        }
        let bytes = rmp_serde::to_vec_named(&value).expect("encode");
        let decoded: Stats = rmp_serde::from_slice(&bytes).expect("older stats decode");
        let mut expected = sample_stats();
        expected.access_denied.clear();
        expected.version.clear();
        expected.calls_in_flight = 0;
        expected.invocations_in_flight = 0;
        expected.by_function.clear();
        assert_eq!(decoded, expected);
    }
}
