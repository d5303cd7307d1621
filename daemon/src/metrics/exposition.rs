//! A [`Stats`] snapshot and the process's figures in the Prometheus text
//! exposition format (version 0.0.4), through `prometheus-client`.
//!
//! Every counter of `Stats` appears under its own key: `rpcd_<key>_total`
//! for the daemon's, `rpcd_peer_<key>_total{peer, peer_name}` for each
//! peer's `PeerCounters` (their sum, `Stats.totals`, is left to the query),
//! and the maps by label: `rpcd_calls_total{outcome}`,
//! `rpcd_security_events_total{event}`, `rpcd_access_denied_total{reason}`.
//! `docs/operations.md` lists them all.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use rpcd_client::ipc::{PeerCounters, PeerStats, Stats};

/// The `Content-Type` of the rendered text.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The daemon process's own figures (from `/proc`), named as Prometheus'
/// client libraries name them (`process_*`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Process {
    /// Resident set size in bytes.
    pub resident_memory_bytes: u64,
    /// Virtual memory size in bytes.
    pub virtual_memory_bytes: u64,
    /// User and system CPU time spent, in seconds.
    pub cpu_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors, if known.
    pub max_fds: Option<u64>,
    /// Start time since the Unix epoch, in seconds.
    pub start_time_seconds: f64,
}

/// The daemon's pool of large buffers (`limits.local_buffer_pool_max`), from
/// `rpcd_client::ipc::buffer_pool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferPool {
    /// Capacity of the buffers kept now.
    pub bytes: u64,
    /// The bound in force.
    pub max_bytes: u64,
    /// Large buffers handed out from the pool.
    pub reused: u64,
    /// Large buffers allocated because the pool had none that fit.
    pub missed: u64,
}

/// `stats`, `process` and `pool` as the body of a `GET /metrics` response.
pub fn render(stats: Stats, process: Option<Process>, pool: BufferPool) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot {
        stats,
        process,
        pool,
    }));
    let mut text = String::new();
    // Writing to a String cannot fail, nor can the collector's own writes.
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("encoding into a String");
    text
}

type PeerCounter = fn(&PeerCounters) -> u64;
/// A peer's gauge, if known.
type PeerGauge = fn(&PeerStats) -> Option<Value>;

/// A peer's counters by their `PeerCounters` key, with the help line.
const PEER_COUNTERS: [(&str, PeerCounter, &str); 18] = [
    (
        "datagrams_sent",
        |c| c.datagrams_sent,
        "UDP datagrams sent, retransmissions included",
    ),
    (
        "datagrams_received",
        |c| c.datagrams_received,
        "UDP datagrams received, duplicates included",
    ),
    (
        "retransmissions",
        |c| c.retransmissions,
        "Datagrams sent again",
    ),
    (
        "duplicates",
        |c| c.duplicates,
        "Duplicate datagrams acknowledged but not delivered",
    ),
    (
        "stale_epoch",
        |c| c.stale_epoch,
        "Datagrams dropped for an old epoch",
    ),
    (
        "out_of_window",
        |c| c.out_of_window,
        "Datagrams dropped outside the receive window",
    ),
    (
        "unconfirmed_epoch",
        |c| c.unconfirmed_epoch,
        "Datagrams dropped for an unconfirmed new epoch",
    ),
    (
        "epoch_challenges",
        |c| c.epoch_challenges,
        "Challenges sent to confirm a new epoch",
    ),
    (
        "messages_sent",
        |c| c.messages_sent,
        "Messages handed to the channel",
    ),
    (
        "messages_delivered",
        |c| c.messages_delivered,
        "Messages delivered complete",
    ),
    (
        "messages_failed",
        |c| c.messages_failed,
        "Messages given up on",
    ),
    (
        "fast_retransmissions",
        |c| c.fast_retransmissions,
        "Retransmissions after loss detection",
    ),
    (
        "probes",
        |c| c.probes,
        "Retransmissions as probes after a timeout",
    ),
    (
        "redundant_copies",
        |c| c.redundant_copies,
        "Second copies of a repair on a thin flight",
    ),
    (
        "congestion_events",
        |c| c.congestion_events,
        "Losses that reduced the congestion window",
    ),
    (
        "persistent_congestion",
        |c| c.persistent_congestion,
        "Collapses of the window to its minimum",
    ),
    (
        "paced_delays",
        |c| c.paced_delays,
        "Times data waited for the pacer",
    ),
    (
        "forward_copies",
        |c| c.forward_copies,
        "Copies of an unacknowledged datagram sent ahead",
    ),
];

/// One scrape's data, encoded by `prometheus-client` through [`Collector`].
#[derive(Debug)]
struct Snapshot {
    stats: Stats,
    process: Option<Process>,
    pool: BufferPool,
}

type Labels = Vec<(&'static str, String)>;

/// A sample's value: counters are integers, gauges may not be.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.stats;
        let e = &mut enc;
        let none = Labels::new;
        let int = |v: u64| Value::Int(v);
        let info = vec![
            ("version", s.version.clone()),
            ("listen", s.listen.clone()),
            ("epoch", format!("{:016x}", s.epoch)),
        ];
        gauge(
            e,
            "rpcd_info",
            "The daemon: version, UDP address, epoch",
            [(info, int(1))],
        )?;
        let seconds = |us: u64| Value::Float(us as f64 / 1e6);
        gauge(
            e,
            "rpcd_uptime_seconds",
            "Time since the daemon started",
            [(none(), seconds(s.uptime_ms * 1000))],
        )?;
        let gauges = [
            (
                "rpcd_connections",
                "Local app connections open",
                s.connections,
            ),
            ("rpcd_functions", "Functions registered", s.functions),
            (
                "rpcd_calls_in_flight",
                "Calls of this daemon's apps awaiting their outcome",
                s.calls_in_flight,
            ),
            (
                "rpcd_invocations_in_flight",
                "Invocations this daemon's serving apps run",
                s.invocations_in_flight,
            ),
            ("rpcd_peers", "Peer daemons known", s.peers.len() as u64),
        ];
        for (name, help, v) in gauges {
            gauge(e, name, help, [(none(), int(v))])?;
        }
        let counters = [
            (
                "rpcd_malformed",
                "Datagrams and RPC envelopes dropped as malformed",
                s.malformed,
            ),
            (
                "rpcd_corrupt",
                "Datagrams dropped for a bad checksum",
                s.corrupt,
            ),
            (
                "rpcd_refused_peers",
                "Datagrams dropped from new peers beyond peers_max",
                s.refused_peers,
            ),
            (
                "rpcd_late_replies",
                "Replies for calls no longer waiting, dropped",
                s.late_replies,
            ),
            (
                "rpcd_late_results",
                "Results for invocations no longer known, dropped",
                s.late_results,
            ),
            (
                "rpcd_dropped_transmits",
                "Datagrams dropped on a full UDP send backlog",
                s.dropped_transmits,
            ),
            (
                "rpcd_evicted_peers",
                "Peers forgotten after a quiet spell",
                s.evicted_peers,
            ),
        ];
        for (name, help, v) in counters {
            counter(e, name, help, [(none(), v)])?;
        }
        let by = |key: &'static str, map: &std::collections::BTreeMap<String, u64>| {
            map.iter()
                .map(|(k, &v)| (vec![(key, k.clone())], v))
                .collect::<Vec<_>>()
        };
        counter(
            e,
            "rpcd_calls",
            "Calls of this daemon's apps finished, by outcome",
            by("outcome", &s.calls),
        )?;
        counter(
            e,
            "rpcd_security_events",
            "The authenticated layer's counters, by event",
            by("event", &s.security),
        )?;
        counter(
            e,
            "rpcd_access_denied",
            "Requests refused by the [access] policy, by reason",
            by("reason", &s.access_denied),
        )?;

        let peer = |p: &PeerStats| -> Labels {
            vec![
                ("peer", p.addr.clone()),
                ("peer_name", p.name.clone().unwrap_or_default()),
            ]
        };
        for (key, get, help) in PEER_COUNTERS {
            let name = format!("rpcd_peer_{key}");
            counter(
                e,
                &name,
                help,
                s.peers.iter().map(|p| (peer(p), get(&p.counters))),
            )?;
        }
        let calls = s.peers.iter().flat_map(|p| {
            p.calls.iter().map(move |(code, &n)| {
                let mut l = peer(p);
                l.push(("outcome", code.clone()));
                (l, n)
            })
        });
        counter(
            e,
            "rpcd_peer_calls",
            "Calls finished by the peer they went to last, by outcome",
            calls,
        )?;
        let peer_gauges: [(&str, &str, PeerGauge); 6] = [
            ("rpcd_peer_srtt_seconds", "Smoothed round-trip time", |p| {
                p.srtt_us.map(|us| Value::Float(us as f64 / 1e6))
            }),
            ("rpcd_peer_rto_seconds", "Retransmission timeout", |p| {
                Some(Value::Float(p.rto_us as f64 / 1e6))
            }),
            (
                "rpcd_peer_in_flight_datagrams",
                "Datagrams sent and not yet acknowledged",
                |p| Some(Value::Int(p.in_flight)),
            ),
            ("rpcd_peer_cwnd_datagrams", "Congestion window", |p| {
                Some(Value::Int(u64::from(p.cwnd)))
            }),
            (
                "rpcd_peer_calls_in_flight",
                "Calls to the peer awaiting a reply",
                |p| Some(Value::Int(p.calls_in_flight)),
            ),
            (
                "rpcd_peer_session_age_seconds",
                "Age of the session in use (with keys)",
                |p| p.session_age_ms.map(|ms| Value::Float(ms as f64 / 1e3)),
            ),
        ];
        for (name, help, get) in peer_gauges {
            gauge(
                e,
                name,
                help,
                s.peers.iter().filter_map(|p| get(p).map(|v| (peer(p), v))),
            )?;
        }

        let function = |name: &String| vec![("function", name.clone())];
        let calls = s.by_function.iter().flat_map(|(name, f)| {
            f.calls.iter().map(move |(code, &n)| {
                let mut l = function(name);
                l.push(("outcome", code.clone()));
                (l, n)
            })
        });
        counter(
            e,
            "rpcd_function_calls",
            "Calls of this daemon's apps finished, by function and outcome",
            calls,
        )?;
        let mut m = e.encode_descriptor(
            "rpcd_call_duration_seconds",
            "Latency of this daemon's apps' calls as this daemon measured it, by function",
            None,
            MetricType::Histogram,
        )?;
        for (name, f) in &s.by_function {
            let count: u64 = f.calls.values().sum();
            // prometheus-client takes per-bucket counts and sums them up again.
            let mut previous = 0;
            let buckets: Vec<(f64, u64)> = f
                .latency_buckets
                .iter()
                .map(|b| {
                    let n = b.count.saturating_sub(previous);
                    previous = b.count;
                    (b.le_us as f64 / 1e6, n)
                })
                .collect();
            let labels = function(name);
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                f.latency_sum_us as f64 / 1e6,
                count,
                &buckets,
                None,
            )?;
        }
        let quantiles = s.by_function.iter().flat_map(|(name, f)| {
            [("0.5", f.p50_us), ("0.99", f.p99_us)]
                .into_iter()
                .filter_map(move |(q, us)| {
                    let mut l = function(name);
                    l.push(("quantile", q.to_owned()));
                    us.map(|us| (l, seconds(us)))
                })
        });
        gauge(
            e,
            "rpcd_call_duration_window_seconds",
            "p50 and p99 latency over the sliding window, by function",
            quantiles,
        )?;
        let window = s
            .by_function
            .iter()
            .map(|(name, f)| (function(name), int(f.window_calls)));
        gauge(
            e,
            "rpcd_call_duration_window_calls",
            "Calls in the sliding window, by function",
            window,
        )?;

        let pool = &self.pool;
        gauge(
            e,
            "rpcd_buffer_pool_bytes",
            "Bytes of large buffers kept for reuse",
            [(none(), int(pool.bytes))],
        )?;
        gauge(
            e,
            "rpcd_buffer_pool_max_bytes",
            "The most bytes of large buffers kept for reuse (limits.local_buffer_pool_max)",
            [(none(), int(pool.max_bytes))],
        )?;
        counter(
            e,
            "rpcd_buffer_pool_reused",
            "Large buffers taken from the pool instead of allocated",
            [(none(), pool.reused)],
        )?;
        counter(
            e,
            "rpcd_buffer_pool_missed",
            "Large buffers allocated because the pool held none that fit",
            [(none(), pool.missed)],
        )?;

        if let Some(p) = &self.process {
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                [(none(), int(p.resident_memory_bytes))],
            )?;
            gauge(
                e,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                [(none(), int(p.virtual_memory_bytes))],
            )?;
            let mut m = e.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?;
            m.encode_counter::<NoLabelSet, _, u64>(&p.cpu_seconds, None)?;
            gauge(
                e,
                "process_open_fds",
                "Number of open file descriptors",
                [(none(), int(p.open_fds))],
            )?;
            if let Some(max) = p.max_fds {
                gauge(
                    e,
                    "process_max_fds",
                    "Maximum number of open file descriptors",
                    [(none(), int(max))],
                )?;
            }
            gauge(
                e,
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                [(none(), Value::Float(p.start_time_seconds))],
            )?;
        }
        Ok(())
    }
}

/// A counter family (`name` gets `_total`), one sample per label set.
fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        if labels.is_empty() {
            m.encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        } else {
            m.encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
    }
    Ok(())
}

/// A gauge family, one sample per label set.
fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, Value)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        match (labels.is_empty(), v) {
            (true, Value::Int(i)) => m.encode_gauge(&i)?,
            (true, Value::Float(f)) => m.encode_gauge(&f)?,
            (false, Value::Int(i)) => m.encode_family(&labels)?.encode_gauge(&i)?,
            (false, Value::Float(f)) => m.encode_family(&labels)?.encode_gauge(&f)?,
        }
    }
    Ok(())
}
