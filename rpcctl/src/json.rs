//! The JSON that `--json` prints for the daemon's structures.
//!
//! Field for field as the daemon sends them (docs/ipc-protocol.md §8), with one change:
//! 64-bit identifiers (epochs) are strings of decimal digits, because a JSON number is a
//! double to most readers (`jq`, JavaScript) and a random 64-bit epoch would come out
//! rounded. Counters stay numbers: they count events and stay far below 2^53.

use rpcd_client::ipc::{PeerStats, Stats};
use serde_json::Value;

/// A 64-bit identifier as JSON: a string of its decimal digits.
pub fn id(value: u64) -> Value {
    Value::String(value.to_string())
}

/// An optional 64-bit identifier: a string, or `null`.
pub fn optional_id(value: Option<u64>) -> Value {
    value.map_or(Value::Null, id)
}

/// The daemon's `Stats`, its epochs as strings.
pub fn stats(stats: &Stats) -> Value {
    let mut value = to_value(stats);
    if let Value::Object(map) = &mut value {
        map.insert("epoch".into(), id(stats.epoch));
        map.insert(
            "peers".into(),
            Value::Array(stats.peers.iter().map(peer).collect()),
        );
    }
    value
}

/// One peer's `PeerStats`, its epoch as a string (or `null`).
pub fn peer(peer: &PeerStats) -> Value {
    let mut value = to_value(peer);
    if let Value::Object(map) = &mut value {
        map.insert("epoch".into(), optional_id(peer.epoch));
    }
    value
}

/// Serialises one of the daemon's structures. They hold strings, integers, options, lists
/// and maps with string keys only, which JSON can always represent.
fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("the daemon's structures have string map keys")
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)] // see show.rs
mod tests {
    use super::*;

    #[test]
    fn epochs_are_decimal_strings_and_counters_numbers() {
        let mut p = PeerStats::default();
        p.addr = "10.0.0.2:7000".into();
        p.epoch = Some(u64::MAX);
        p.calls_in_flight = 2;
        let mut s = Stats::default();
        s.epoch = 0x8000_0000_0000_0001;
        s.uptime_ms = 5;
        s.peers = vec![p, PeerStats::default()];
        let v = stats(&s);
        assert_eq!(v["epoch"], "9223372036854775809");
        assert_eq!(v["uptime_ms"], 5);
        assert_eq!(v["peers"][0]["epoch"], "18446744073709551615");
        assert_eq!(v["peers"][0]["calls_in_flight"], 2);
        assert_eq!(v["peers"][0]["addr"], "10.0.0.2:7000");
        assert_eq!(v["peers"][1]["epoch"], Value::Null);
        assert!(v["totals"]["datagrams_sent"].is_u64());
    }
}
