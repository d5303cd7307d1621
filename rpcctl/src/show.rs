//! Human-readable tables for `stats` and `names`.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::Duration;

use rpcd_client::ipc::{NameEntry, PeerCounters, Stats};

/// The daemon's counters: a summary, then one row per counter with a column for the total
/// and one per peer.
pub fn stats(stats: &Stats) -> String {
    let mut out = String::new();
    let uptime = humantime::format_duration(Duration::from_secs(stats.uptime_ms / 1000));
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "rpcd at {}, epoch {:016x}, up {uptime}",
        stats.listen, stats.epoch
    );
    let _ = writeln!(
        out,
        "connections {}, functions {}, malformed datagrams {}, corrupt datagrams {}, \
         refused peers {}",
        stats.connections, stats.functions, stats.malformed, stats.corrupt, stats.refused_peers
    );
    let _ = writeln!(
        out,
        "late replies {}, late results {}, dropped transmits {}",
        stats.late_replies, stats.late_results, stats.dropped_transmits
    );
    match &stats.public_key {
        Some(key) => {
            let _ = writeln!(
                out,
                "keys: public key {key}, evicted peers {}",
                stats.evicted_peers
            );
            let counters: Vec<String> = stats
                .security
                .iter()
                .map(|(name, n)| format!("{} {n}", name.replace('_', " ")))
                .collect();
            let _ = writeln!(out, "security: {}", counters.join(", "));
        }
        None => {
            let _ = writeln!(
                out,
                "plaintext: no authentication, evicted peers {}",
                stats.evicted_peers
            );
        }
    }
    out.push('\n');

    let mut table = Table::new();
    let mut header = vec![String::new(), "total".to_owned()];
    header.extend(stats.peers.iter().map(|p| p.addr.clone()));
    table.row(header);
    let epoch = |e: Option<u64>| e.map_or_else(|| "-".to_owned(), |e| format!("{e:016x}"));
    if stats.public_key.is_some() {
        let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        table.row(
            ["peer name".to_owned(), "-".to_owned()]
                .into_iter()
                .chain(stats.peers.iter().map(|p| text(&p.name))),
        );
        table.row(
            ["key fingerprint".to_owned(), "-".to_owned()]
                .into_iter()
                .chain(stats.peers.iter().map(|p| text(&p.key_fingerprint))),
        );
        let age = |ms: Option<u64>| {
            ms.map_or_else(
                || "-".to_owned(),
                |ms| humantime::format_duration(Duration::from_secs(ms / 1000)).to_string(),
            )
        };
        table.row(
            ["session age".to_owned(), "-".to_owned()]
                .into_iter()
                .chain(stats.peers.iter().map(|p| age(p.session_age_ms))),
        );
    }
    table.row(
        ["peer epoch".to_owned(), "-".to_owned()]
            .into_iter()
            .chain(stats.peers.iter().map(|p| epoch(p.epoch))),
    );
    let counters: [Counter; 17] = [
        ("datagrams sent", |c| c.datagrams_sent),
        ("datagrams received", |c| c.datagrams_received),
        ("retransmissions", |c| c.retransmissions),
        ("  after loss detected", |c| c.fast_retransmissions),
        ("  as probes (timeouts)", |c| c.probes),
        ("  redundant copies", |c| c.redundant_copies),
        ("congestion events", |c| c.congestion_events),
        ("persistent congestion", |c| c.persistent_congestion),
        ("paced delays", |c| c.paced_delays),
        ("duplicates dropped", |c| c.duplicates),
        ("stale epoch dropped", |c| c.stale_epoch),
        ("out of window dropped", |c| c.out_of_window),
        ("unconfirmed epoch dropped", |c| c.unconfirmed_epoch),
        ("epoch challenges sent", |c| c.epoch_challenges),
        ("messages sent", |c| c.messages_sent),
        ("messages delivered", |c| c.messages_delivered),
        ("messages failed", |c| c.messages_failed),
    ];
    for (label, get) in counters {
        table.row(
            [label.to_owned(), get(&stats.totals).to_string()]
                .into_iter()
                .chain(stats.peers.iter().map(|p| get(&p.counters).to_string())),
        );
    }
    let micros = |us: Option<u64>| {
        us.map_or_else(
            || "-".to_owned(),
            |us| format!("{:.3} ms", us as f64 / 1000.0),
        )
    };
    let sum =
        |get: fn(&rpcd_client::ipc::PeerStats) -> u64| -> u64 { stats.peers.iter().map(get).sum() };
    table.row(
        ["srtt".to_owned(), "-".to_owned()]
            .into_iter()
            .chain(stats.peers.iter().map(|p| micros(p.srtt_us))),
    );
    table.row(
        ["rto".to_owned(), "-".to_owned()]
            .into_iter()
            .chain(stats.peers.iter().map(|p| micros(Some(p.rto_us)))),
    );
    table.row(
        [
            "datagrams in flight".to_owned(),
            sum(|p| p.in_flight).to_string(),
        ]
        .into_iter()
        .chain(stats.peers.iter().map(|p| p.in_flight.to_string())),
    );
    table.row(
        ["congestion window".to_owned(), "-".to_owned()]
            .into_iter()
            .chain(stats.peers.iter().map(|p| p.cwnd.to_string())),
    );
    table.row(
        [
            "calls in flight".to_owned(),
            sum(|p| p.calls_in_flight).to_string(),
        ]
        .into_iter()
        .chain(stats.peers.iter().map(|p| p.calls_in_flight.to_string())),
    );
    // Calls by outcome: "ok" first, then the error codes in order.
    let mut outcomes: BTreeSet<&str> = stats.calls.keys().map(String::as_str).collect();
    for peer in &stats.peers {
        outcomes.extend(peer.calls.keys().map(String::as_str));
    }
    let ok = outcomes.take("ok");
    for outcome in ok.into_iter().chain(outcomes) {
        let count = |calls: &std::collections::BTreeMap<String, u64>| {
            calls.get(outcome).copied().unwrap_or(0).to_string()
        };
        table.row(
            [format!("calls {outcome}"), count(&stats.calls)]
                .into_iter()
                .chain(stats.peers.iter().map(|p| count(&p.calls))),
        );
    }
    out.push_str(&table.render());
    out
}

/// A row label and how to read its counter.
type Counter = (&'static str, fn(&PeerCounters) -> u64);

/// The naming table: one row per name, its targets and what they resolved to.
pub fn names(names: &[NameEntry]) -> String {
    let mut table = Table::new();
    table.row(["NAME", "TARGETS", "RESOLVED", "ERRORS"].map(str::to_owned));
    for entry in names {
        let join = |v: &[String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(", ")
            }
        };
        table.row([
            entry.name.clone(),
            join(&entry.targets),
            join(&entry.resolved),
            join(&entry.errors),
        ]);
    }
    table.left_aligned = true;
    table.render()
}

/// Columns padded to their widest cell: the first left-aligned, the rest right-aligned
/// (numbers) unless `left_aligned`.
struct Table {
    rows: Vec<Vec<String>>,
    left_aligned: bool,
}

impl Table {
    fn new() -> Table {
        Table {
            rows: Vec::new(),
            left_aligned: false,
        }
    }

    fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.rows.push(cells.into_iter().collect());
    }

    fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let width = widths[c];
                if c > 0 {
                    line.push_str("  ");
                }
                if c == 0 || self.left_aligned {
                    let _ = write!(line, "{cell:<width$}");
                } else {
                    let _ = write!(line, "{cell:>width$}");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpcd_client::ipc::PeerStats;

    #[test]
    fn stats_table_has_a_column_per_peer_and_a_row_per_outcome() {
        // Field by field: the stats types are `#[non_exhaustive]`.
        let mut peer = PeerStats::default();
        peer.addr = "127.0.0.1:7401".into();
        peer.epoch = Some(0xabc);
        peer.counters = PeerCounters::default();
        peer.counters.datagrams_sent = 12;
        peer.srtt_us = Some(120);
        peer.rto_us = 2000;
        peer.calls = [("ok".to_owned(), 5), ("peer_unreachable".to_owned(), 1)].into();
        let mut stats = Stats::default();
        stats.listen = "127.0.0.1:7400".into();
        stats.uptime_ms = 62_500;
        stats.totals = peer.counters.clone();
        stats.calls = [("ok".to_owned(), 7), ("app_error".to_owned(), 2)].into();
        stats.peers = vec![peer];
        let text = super::stats(&stats);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "rpcd at 127.0.0.1:7400, epoch 0000000000000000, up 1m 2s"
        );
        let words = |prefix: &str| -> Vec<String> {
            let line = lines
                .iter()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} row in\n{text}"));
            line[prefix.len()..]
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(words(" "), ["total", "127.0.0.1:7401"]);
        assert_eq!(words("datagrams sent"), ["12", "12"]);
        assert_eq!(words("srtt"), ["-", "0.120", "ms"]);
        assert_eq!(words("rto"), ["-", "2.000", "ms"]);
        let calls: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("calls "))
            .map(|l| l.split_whitespace().next().unwrap_or(""))
            .collect();
        // "ok" first, then the codes in order, each with a total and a per-peer count.
        assert_eq!(calls, ["in", "ok", "app_error", "peer_unreachable"]);
        assert_eq!(words("calls app_error"), ["2", "0"]);
        assert_eq!(words("calls peer_unreachable"), ["0", "1"]);
    }

    #[test]
    fn names_table_lists_each_entry() {
        let mut entry = NameEntry::default();
        entry.name = "kv".into();
        entry.targets = vec!["localhost:7400".into(), "nowhere:1".into()];
        entry.resolved = vec!["127.0.0.1:7400".into()];
        entry.errors = vec!["nowhere:1: not found".into()];
        let text = super::names(&[entry]);
        assert_eq!(
            text,
            "NAME  TARGETS                    RESOLVED        ERRORS\n\
             kv    localhost:7400, nowhere:1  127.0.0.1:7400  nowhere:1: not found\n"
        );
        assert_eq!(super::names(&[]), "NAME  TARGETS  RESOLVED  ERRORS\n");
    }

    #[test]
    fn keyed_stats_show_the_key_the_drops_by_reason_and_each_peers_identity() {
        let mut peer = PeerStats::default();
        peer.addr = "10.0.0.2:7000".into();
        peer.name = Some("db1".into());
        peer.key_fingerprint = Some("0123456789abcdef".into());
        peer.session_age_ms = Some(61_000);
        let mut stats = Stats::default();
        stats.public_key = Some("A".repeat(43) + "=");
        stats.security = [("replayed".to_owned(), 4), ("unknown_key".to_owned(), 9)].into();
        stats.peers = vec![peer];
        let text = super::stats(&stats);
        assert!(
            text.contains(&format!("keys: public key {}=", "A".repeat(43))),
            "{text}"
        );
        assert!(
            text.contains("security: replayed 4, unknown key 9"),
            "{text}"
        );
        let row = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .map(|l| {
                    l[prefix.len()..]
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_else(|| panic!("no {prefix:?} row in\n{text}"))
        };
        assert_eq!(row("peer name"), "- db1");
        assert_eq!(row("key fingerprint"), "- 0123456789abcdef");
        assert_eq!(row("session age"), "- 1m 1s");
        let plain = super::stats(&Stats::default());
        assert!(plain.contains("plaintext: no authentication"), "{plain}");
        assert!(!plain.contains("peer name"), "{plain}");
    }
}
