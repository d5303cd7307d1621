//! `rpcctl status` and `rpcctl version`: the local daemon at a glance.
//!
//! `status` combines what the handshake says (the daemon's name, protocol, address, epoch)
//! with one `stats` request (uptime, version, counts), and the socket the connection was
//! made on. `version` needs no daemon: it shows the daemon's version only when one answers.

use std::time::Duration;

use anyhow::Context;
use rpcd_client::conn::Connection;
use rpcd_client::ipc::Stats;
use serde_json::{json, Value};

use crate::{exit, json, show, value};

/// rpcctl's own version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What `status` shows, gathered from one connection.
#[derive(Debug)]
pub struct Status {
    /// The daemon's version; from its stats, else from its handshake (an older daemon).
    pub daemon_version: String,
    /// The protocol version the connection speaks.
    pub protocol: u32,
    /// The socket the connection was made on.
    pub socket: String,
    /// The daemon's counters.
    pub stats: Stats,
}

impl Status {
    /// Asks the daemon on `conn`.
    pub fn fetch(conn: &Connection) -> anyhow::Result<Status> {
        let stats = conn.stats().context("stats on the local rpcd failed")?;
        let info = conn.daemon();
        let daemon_version = if stats.version.is_empty() {
            daemon_version(&info.daemon)
        } else {
            stats.version.clone()
        };
        Ok(Status {
            daemon_version,
            protocol: info.version,
            socket: conn.path().display().to_string(),
            stats,
        })
    }

    /// The `--json` document (docs/cli.md, `status`).
    pub fn json(&self) -> Value {
        let s = &self.stats;
        let finished: u64 = s.calls.values().sum();
        let ok = s.calls.get("ok").copied().unwrap_or(0);
        json!({
            "rpcctl": {"version": VERSION},
            "daemon": {
                "version": self.daemon_version,
                "protocol": self.protocol,
                "uptime_ms": s.uptime_ms,
                "listen": s.listen,
                "socket": self.socket,
                "epoch": json::id(s.epoch),
                "public_key": s.public_key,
            },
            "apps": {"connections": s.connections, "functions": s.functions},
            "peers": {
                "known": s.peers.len(),
                "heard_from": s.peers.iter().filter(|p| p.epoch.is_some()).count(),
            },
            "calls": {
                "in_flight": show::calls_in_flight(s),
                "finished": finished,
                "ok": ok,
                "failed": finished.saturating_sub(ok),
                "by_outcome": s.calls,
                "invocations_in_flight": s.invocations_in_flight,
            },
        })
    }

    /// The human-readable summary.
    pub fn text(&self) -> String {
        let s = &self.stats;
        let uptime = humantime::format_duration(Duration::from_secs(s.uptime_ms / 1000));
        let finished: u64 = s.calls.values().sum();
        let outcomes: Vec<String> = show::by_outcome(&s.calls)
            .map(|(outcome, n)| format!("{outcome} {n}"))
            .collect();
        let outcomes = if outcomes.is_empty() {
            String::new()
        } else {
            format!(" ({})", outcomes.join(", "))
        };
        let security = match &s.public_key {
            Some(key) => format!("keys, public key {key}"),
            None => "plaintext".to_owned(),
        };
        let heard = s.peers.iter().filter(|p| p.epoch.is_some()).count();
        format!(
            "rpcctl {VERSION}, rpcd {} (protocol {})\n\
             rpcd up {uptime}, epoch {:016x}, {security}\n\
             listening on {} (UDP), socket {}\n\
             apps: {} connected, {} functions registered\n\
             peers: {} known, {heard} heard from\n\
             calls: {} in flight, {finished} finished{outcomes}; {} invocations running\n",
            self.daemon_version,
            self.protocol,
            s.epoch,
            s.listen,
            self.socket,
            s.connections,
            s.functions,
            s.peers.len(),
            show::calls_in_flight(s),
            s.invocations_in_flight,
        )
    }
}

/// `rpcctl status`.
pub fn status(conn: &Connection, json: bool) -> anyhow::Result<u8> {
    let status = Status::fetch(conn)?;
    let text = if json {
        value::render(&status.json(), true)
    } else {
        status.text()
    };
    exit::print(&text)?;
    Ok(exit::SUCCESS)
}

/// `rpcctl version`: rpcctl's version, and the daemon's when `conn` is one. No daemon is
/// not an error here: the answer is rpcctl's version either way.
pub fn version(conn: Option<&Connection>, json: bool) -> anyhow::Result<u8> {
    let daemon = conn.map(|c| (daemon_version(&c.daemon().daemon), c.daemon().version));
    let text = if json {
        let doc = json!({
            "rpcctl": VERSION,
            "daemon": daemon.as_ref().map(|(v, _)| v),
            "protocol": daemon.as_ref().map(|(_, p)| p),
        });
        value::render(&doc, true)
    } else {
        match &daemon {
            Some((v, protocol)) => format!("rpcctl {VERSION}\nrpcd {v} (protocol {protocol})\n"),
            None => format!("rpcctl {VERSION}\nrpcd not reachable\n"),
        }
    };
    exit::print(&text)?;
    Ok(exit::SUCCESS)
}

/// The version in a handshake's daemon name, `rpcd 0.1.0` → `0.1.0`; the whole name when
/// it has no space.
fn daemon_version(name: &str) -> String {
    name.rsplit_once(' ')
        .map_or(name, |(_, version)| version)
        .to_owned()
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)] // see show.rs
mod tests {
    use super::*;
    use rpcd_client::ipc::PeerStats;

    fn sample() -> Status {
        let mut heard = PeerStats::default();
        heard.epoch = Some(7);
        heard.calls_in_flight = 1;
        let mut stats = Stats::default();
        stats.epoch = u64::MAX;
        stats.listen = "127.0.0.1:7400".into();
        stats.uptime_ms = 61_000;
        stats.connections = 2;
        stats.functions = 6;
        stats.calls = [("ok".to_owned(), 6), ("deadline_exceeded".to_owned(), 1)].into();
        stats.peers = vec![heard, PeerStats::default()];
        Status {
            daemon_version: "0.1.0".into(),
            protocol: 1,
            socket: "/run/rpcd/rpcd.sock".into(),
            stats,
        }
    }

    #[test]
    fn status_json_has_versions_addresses_and_summaries() {
        let v = sample().json();
        assert_eq!(v["rpcctl"]["version"], VERSION);
        assert_eq!(v["daemon"]["version"], "0.1.0");
        assert_eq!(v["daemon"]["epoch"], "18446744073709551615");
        assert_eq!(v["daemon"]["uptime_ms"], 61_000);
        assert_eq!(v["daemon"]["socket"], "/run/rpcd/rpcd.sock");
        assert_eq!(v["peers"], json!({"known": 2, "heard_from": 1}));
        assert_eq!(v["calls"]["finished"], 7);
        assert_eq!(v["calls"]["failed"], 1);
        assert_eq!(
            v["calls"]["in_flight"], 1,
            "from the peers of an older daemon"
        );
        assert_eq!(v["calls"]["by_outcome"]["deadline_exceeded"], 1);
    }

    #[test]
    fn status_text_says_the_same() {
        let text = sample().text();
        assert_eq!(
            text,
            format!(
                "rpcctl {VERSION}, rpcd 0.1.0 (protocol 1)\n\
                 rpcd up 1m 1s, epoch ffffffffffffffff, plaintext\n\
                 listening on 127.0.0.1:7400 (UDP), socket /run/rpcd/rpcd.sock\n\
                 apps: 2 connected, 6 functions registered\n\
                 peers: 2 known, 1 heard from\n\
                 calls: 1 in flight, 7 finished (ok 6, deadline_exceeded 1); \
                 0 invocations running\n"
            )
        );
    }

    #[test]
    fn version_is_read_from_the_handshake_name() {
        assert_eq!(daemon_version("rpcd 0.1.0"), "0.1.0");
        assert_eq!(daemon_version("rpcd"), "rpcd");
    }
}
