//! Human-readable tables for `stats` and `names`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use rpcd_client::ipc::{NameEntry, PeerCounters, Stats};

/// The daemon's counters: a summary, one row per counter with its total over all peers,
/// then the peers table ([`peers`]).
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
    table.row([String::new(), "total".to_owned()]);
    let counters: [Counter; 18] = [
        ("datagrams sent", |c| c.datagrams_sent),
        ("datagrams received", |c| c.datagrams_received),
        ("retransmissions", |c| c.retransmissions),
        ("  after loss detected", |c| c.fast_retransmissions),
        ("  as probes (timeouts)", |c| c.probes),
        ("  redundant copies", |c| c.redundant_copies),
        ("congestion events", |c| c.congestion_events),
        ("persistent congestion", |c| c.persistent_congestion),
        ("paced delays", |c| c.paced_delays),
        ("forward copies", |c| c.forward_copies),
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
        table.row([label.to_owned(), get(&stats.totals).to_string()]);
    }
    let in_flight: u64 = stats.peers.iter().map(|p| p.in_flight).sum();
    table.row(["datagrams in flight".to_owned(), in_flight.to_string()]);
    table.row([
        "calls in flight".to_owned(),
        calls_in_flight(stats).to_string(),
    ]);
    table.row([
        "invocations running".to_owned(),
        stats.invocations_in_flight.to_string(),
    ]);
    for (outcome, n) in by_outcome(&stats.calls) {
        table.row([format!("calls {outcome}"), n.to_string()]);
    }
    out.push_str(&table.render());
    out.push('\n');
    out.push_str(&peers(stats));
    if !stats.by_function.is_empty() {
        out.push('\n');
        out.push_str(&functions(stats));
    }
    out
}

/// Calls from this daemon's apps by function, one row each: calls finished, of them
/// failed, and the latency this daemon measured (p50, p99 in milliseconds, `-` when no
/// call ended within the window) over the window of `WINDOW` calls.
pub fn functions(stats: &Stats) -> String {
    let mut table = Table::new();
    table.row(["FUNCTION", "CALLS", "ERRORS", "P50_MS", "P99_MS", "WINDOW"].map(str::to_owned));
    let millis = |us: Option<u64>| {
        us.map_or_else(|| "-".to_owned(), |us| format!("{:.3}", us as f64 / 1000.0))
    };
    for (name, f) in &stats.by_function {
        let calls: u64 = f.calls.values().sum();
        let ok = f.calls.get("ok").copied().unwrap_or(0);
        table.row([
            name.clone(),
            calls.to_string(),
            calls.saturating_sub(ok).to_string(),
            millis(f.p50_us),
            millis(f.p99_us),
            f.window_calls.to_string(),
        ]);
    }
    table.render()
}

/// The peer daemons, one row each under a header, every cell one word (`-` when unknown),
/// the same columns in every mode so that a script can count them: address, name, key
/// fingerprint and session age (with keys), epoch, round-trip times, window, datagrams and
/// calls in flight, calls finished, datagrams sent, received and retransmitted.
pub fn peers(stats: &Stats) -> String {
    let mut table = Table::new();
    let header = [
        "PEER",
        "NAME",
        "KEY",
        "SESSION_S",
        "EPOCH",
        "SRTT_MS",
        "RTO_MS",
        "CWND",
        "IN_FLIGHT",
        "CALLS_IN_FLIGHT",
        "CALLS_OK",
        "CALLS_FAILED",
        "SENT",
        "RECEIVED",
        "RETRANSMITTED",
    ];
    table.row(header.into_iter().map(str::to_owned));
    let dash = || "-".to_owned();
    let millis = |us: u64| format!("{:.3}", us as f64 / 1000.0);
    for p in &stats.peers {
        let ok = p.calls.get("ok").copied().unwrap_or(0);
        let finished: u64 = p.calls.values().sum();
        table.row([
            p.addr.clone(),
            p.name.clone().unwrap_or_else(dash),
            p.key_fingerprint.clone().unwrap_or_else(dash),
            p.session_age_ms
                .map_or_else(dash, |ms| (ms / 1000).to_string()),
            p.epoch.map_or_else(dash, |e| format!("{e:016x}")),
            p.srtt_us.map_or_else(dash, millis),
            millis(p.rto_us),
            p.cwnd.to_string(),
            p.in_flight.to_string(),
            p.calls_in_flight.to_string(),
            ok.to_string(),
            finished.saturating_sub(ok).to_string(),
            p.counters.datagrams_sent.to_string(),
            p.counters.datagrams_received.to_string(),
            p.counters.retransmissions.to_string(),
        ]);
    }
    table.left_aligned = true;
    table.render()
}

/// Calls in flight from this daemon's apps, to any target. An older daemon does not report
/// it: then the sum over its peers, the calls that left the host.
pub fn calls_in_flight(stats: &Stats) -> u64 {
    let to_peers: u64 = stats.peers.iter().map(|p| p.calls_in_flight).sum();
    stats.calls_in_flight.max(to_peers)
}

/// Finished calls by outcome: `ok` first, then the error codes in order.
pub fn by_outcome(calls: &BTreeMap<String, u64>) -> impl Iterator<Item = (&str, u64)> {
    let ok = calls.get_key_value("ok");
    ok.into_iter()
        .chain(calls.iter().filter(|(k, _)| *k != "ok"))
        .map(|(k, n)| (k.as_str(), *n))
}

/// A row label and how to read its counter.
type Counter = (&'static str, fn(&PeerCounters) -> u64);

/// The naming table: one row per name, its targets and what they resolved to;
/// then, when any target is an `srv:` name, one row per SRV record with the
/// answer's age and the TTL it has left.
pub fn names(names: &[NameEntry]) -> String {
    let mut text = names_table(names);
    let mut srv = Table::new();
    srv.row(
        [
            "SRV",
            "PRIORITY",
            "WEIGHT",
            "TARGET",
            "PORT",
            "ADDRESSES",
            "AGE",
            "TTL",
        ]
        .map(str::to_owned),
    );
    for s in names.iter().flat_map(|e| &e.srv) {
        for r in &s.records {
            srv.row([
                s.target.clone(),
                r.priority.to_string(),
                r.weight.to_string(),
                r.target.clone(),
                r.port.to_string(),
                if r.addresses.is_empty() {
                    "-".to_owned()
                } else {
                    r.addresses.join(",")
                },
                seconds(s.age_ms),
                seconds(s.ttl_ms),
            ]);
        }
    }
    if srv.rows.len() > 1 {
        srv.left_aligned = true;
        text.push('\n');
        text.push_str(&srv.render());
    }
    text
}

/// Milliseconds as seconds with one decimal.
fn seconds(ms: u64) -> String {
    format!("{}.{}s", ms / 1000, ms % 1000 / 100)
}

fn names_table(names: &[NameEntry]) -> String {
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
// Field by field, not with struct update syntax: the daemon's structures may become
// `#[non_exhaustive]`, which forbids that syntax outside their crate.
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use rpcd_client::ipc::PeerStats;

    fn peer(addr: &str) -> PeerStats {
        let mut peer = PeerStats::default();
        peer.addr = addr.into();
        peer.rto_us = 2000;
        peer
    }

    /// The words after `prefix` on the line that starts with it.
    fn words(text: &str, prefix: &str) -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} row in\n{text}"));
        line[prefix.len()..]
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn stats_has_a_total_column_a_row_per_outcome_and_a_row_per_peer() {
        let mut a = peer("127.0.0.1:7401");
        a.epoch = Some(0xabc);
        a.counters.datagrams_sent = 12;
        a.srtt_us = Some(120);
        a.calls = [("ok".to_owned(), 5), ("peer_unreachable".to_owned(), 1)].into();
        let mut b = peer("127.0.0.1:7402");
        b.counters.datagrams_sent = 3;
        b.calls_in_flight = 1;
        let mut stats = Stats::default();
        stats.listen = "127.0.0.1:7400".into();
        stats.uptime_ms = 62_500;
        stats.totals.datagrams_sent = 15;
        stats.calls = [("ok".to_owned(), 7), ("app_error".to_owned(), 2)].into();
        stats.calls_in_flight = 4;
        stats.peers = vec![a, b];
        let text = super::stats(&stats);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "rpcd at 127.0.0.1:7400, epoch 0000000000000000, up 1m 2s"
        );
        assert_eq!(
            words(&text, " "),
            ["total"],
            "one column, whatever the peers"
        );
        assert_eq!(words(&text, "datagrams sent"), ["15"]);
        assert_eq!(words(&text, "calls in flight"), ["4"]);
        let calls: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("calls "))
            .map(|l| l.split_whitespace().next().unwrap_or(""))
            .collect();
        // "ok" first, then the codes in order.
        assert_eq!(calls, ["in", "ok", "app_error"]);
        assert_eq!(words(&text, "calls app_error"), ["2"]);
        assert!(text.ends_with(&peers(&stats)), "{text}");
    }

    #[test]
    fn functions_table_has_calls_errors_and_percentiles_per_function() {
        let mut get = rpcd_client::ipc::FunctionStats::default();
        get.calls = [("ok".to_owned(), 9), ("not_found".to_owned(), 1)].into();
        get.window_calls = 10;
        get.p50_us = Some(1_250);
        get.p99_us = Some(40_000);
        let mut put = rpcd_client::ipc::FunctionStats::default();
        put.calls = [("deadline_exceeded".to_owned(), 2)].into();
        let mut stats = Stats::default();
        stats.by_function = [("kv.get".to_owned(), get), ("kv.put".to_owned(), put)].into();
        let text = super::stats(&stats);
        assert!(text.ends_with(&functions(&stats)), "{text}");
        assert_eq!(
            words(&text, "FUNCTION"),
            ["CALLS", "ERRORS", "P50_MS", "P99_MS", "WINDOW"]
        );
        assert_eq!(words(&text, "kv.get"), ["10", "1", "1.250", "40.000", "10"]);
        assert_eq!(words(&text, "kv.put"), ["2", "2", "-", "-", "0"]);
        assert!(!super::stats(&Stats::default()).contains("FUNCTION"));
    }

    #[test]
    fn peers_table_has_one_row_of_one_word_cells_per_peer() {
        let mut a = peer("127.0.0.1:7401");
        a.epoch = Some(0xabc);
        a.counters.datagrams_sent = 12;
        a.counters.datagrams_received = 10;
        a.counters.retransmissions = 1;
        a.srtt_us = Some(120);
        a.cwnd = 22;
        a.calls = [("ok".to_owned(), 5), ("peer_unreachable".to_owned(), 1)].into();
        let b = peer("127.0.0.1:7402");
        let mut stats = Stats::default();
        stats.peers = vec![a, b];
        let text = peers(&stats);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert_eq!(
            rows[0],
            [
                "PEER",
                "NAME",
                "KEY",
                "SESSION_S",
                "EPOCH",
                "SRTT_MS",
                "RTO_MS",
                "CWND",
                "IN_FLIGHT",
                "CALLS_IN_FLIGHT",
                "CALLS_OK",
                "CALLS_FAILED",
                "SENT",
                "RECEIVED",
                "RETRANSMITTED"
            ]
        );
        assert_eq!(
            rows[1],
            [
                "127.0.0.1:7401",
                "-",
                "-",
                "-",
                "0000000000000abc",
                "0.120",
                "2.000",
                "22",
                "0",
                "0",
                "5",
                "1",
                "12",
                "10",
                "1"
            ]
        );
        assert_eq!(rows[2][..6], ["127.0.0.1:7402", "-", "-", "-", "-", "-"]);
        assert_eq!(peers(&Stats::default()).lines().count(), 1, "header only");
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
    fn srv_records_follow_the_table() {
        let mut record = rpcd_client::ipc::SrvRecordEntry::default();
        record.target = "one.test.".into();
        record.port = 7401;
        record.priority = 10;
        record.weight = 5;
        record.addresses = vec!["127.0.0.1".into()];
        let mut srv = rpcd_client::ipc::SrvEntry::default();
        srv.target = "srv:_kv._udp.test.".into();
        srv.records = vec![record];
        srv.age_ms = 1250;
        srv.ttl_ms = 28_750;
        let mut entry = NameEntry::default();
        entry.name = "kv".into();
        entry.targets = vec!["srv:_kv._udp.test.".into()];
        entry.resolved = vec!["127.0.0.1:7401".into()];
        entry.srv = vec![srv];
        assert_eq!(
            super::names(&[entry]),
            "NAME  TARGETS             RESOLVED        ERRORS\n\
             kv    srv:_kv._udp.test.  127.0.0.1:7401  -\n\
             \n\
             SRV                 PRIORITY  WEIGHT  TARGET     PORT  ADDRESSES  AGE   TTL\n\
             srv:_kv._udp.test.  10        5       one.test.  7401  127.0.0.1  1.2s  28.7s\n"
        );
    }

    #[test]
    fn keyed_stats_show_the_key_the_drops_by_reason_and_each_peers_identity() {
        let mut p = peer("10.0.0.2:7000");
        p.name = Some("db1".into());
        p.key_fingerprint = Some("0123456789abcdef".into());
        p.session_age_ms = Some(61_000);
        let mut stats = Stats::default();
        stats.public_key = Some("A".repeat(43) + "=");
        stats.security = [("replayed".to_owned(), 4), ("unknown_key".to_owned(), 9)].into();
        stats.peers = vec![p];
        let text = super::stats(&stats);
        assert!(
            text.contains(&format!("keys: public key {}=", "A".repeat(43))),
            "{text}"
        );
        assert!(
            text.contains("security: replayed 4, unknown key 9"),
            "{text}"
        );
        let table = peers(&stats);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0][..5], ["PEER", "NAME", "KEY", "SESSION_S", "EPOCH"]);
        assert_eq!(
            rows[1][..5],
            ["10.0.0.2:7000", "db1", "0123456789abcdef", "61", "-"]
        );
        let plain = super::stats(&Stats::default());
        assert!(plain.contains("plaintext: no authentication"), "{plain}");
    }
}
