//! The faults of a [`Net`]: loss and partitions (iptables chains `FAULT_IN`,
//! `FAULT_OUT` in the host's namespace), duplication and corruption (an nftables table
//! of their own), and healing, which removes them all (the reordering lane of
//! `chaos.rs` included).

use std::process::{Command, Output};

use super::{run, Net, PORT};

/// The nftables table holding duplication and corruption rules.
const NFT_TABLE: &str = "rpcd_fault";

/// Which traffic of a host a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Datagrams arriving at the host.
    In,
    /// Datagrams leaving the host.
    Out,
    /// Both.
    Both,
}

impl Direction {
    fn chains(self) -> &'static [&'static str] {
        match self {
            Direction::In => &["FAULT_IN"],
            Direction::Out => &["FAULT_OUT"],
            Direction::Both => &["FAULT_IN", "FAULT_OUT"],
        }
    }
}

impl Net {
    /// Drop a random fraction `probability` (0..=1) of host `i`'s traffic in `dir`,
    /// in addition to any fault already in force.
    pub fn loss(&self, i: usize, dir: Direction, probability: f64) {
        assert!((0.0..=1.0).contains(&probability));
        if probability == 0.0 {
            return;
        }
        let p = format!("{probability:.4}");
        for chain in dir.chains() {
            iptables(
                &self.hosts[i].ns,
                &[
                    "-A",
                    chain,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ],
            );
        }
    }

    /// Cut host `i` off the network: drop everything in and out of its link.
    pub fn partition(&self, i: usize) {
        for chain in Direction::Both.chains() {
            iptables(&self.hosts[i].ns, &["-I", chain, "-j", "DROP"]);
        }
    }

    /// Remove every fault of host `i`: its iptables rules, its nftables table, and its
    /// reordering lane (see [`Net::reorder`]).
    pub fn heal(&self, i: usize) {
        for chain in Direction::Both.chains() {
            iptables(&self.hosts[i].ns, &["-F", chain]);
        }
        let _ = run(Command::new("ip").args([
            "netns",
            "exec",
            &self.hosts[i].ns,
            "nft",
            "delete",
            "table",
            "ip",
            NFT_TABLE,
        ]));
        self.remove_reorder_lane(i);
    }

    /// Duplicate a random fraction `probability` of the datagrams host `i` sends to
    /// host `to`'s `rpcd` (nftables `dup to`: the kernel sends the copy to the same
    /// next hop, so `to` receives the datagram twice). Needs `nft`.
    pub fn duplicate(&self, i: usize, to: usize, probability: f64) {
        let dst = self.hosts[to].addr;
        self.nft_rule(
            i,
            &format!(
                "ip daddr {dst} udp dport {PORT} {} dup to {dst} device eth0",
                chance(probability)
            ),
        );
    }

    /// Corrupt a random fraction `probability` of the datagrams host `i` sends to host
    /// `to`'s `rpcd`: one byte (in the sequence counter, the selective ack, or the
    /// payload, a third of the time each) is overwritten and the UDP checksum set to 0
    /// ("none" in IPv4), so the datagram reaches `rpcd` corrupt. Needs `nft`.
    pub fn corrupt(&self, i: usize, to: usize, probability: f64) {
        let dst = self.hosts[to].addr;
        // Offsets in the rpcd datagram (see docs/wire-protocol.md), after the 8-byte
        // UDP header.
        for offset in [27u32, 44, 100] {
            let bits = (8 + offset) * 8;
            self.nft_rule(
                i,
                &format!(
                    "ip daddr {dst} udp dport {PORT} {} udp checksum set 0 @th,{bits},8 set 0x55",
                    chance(probability / 3.0)
                ),
            );
        }
    }

    pub(super) fn nft_rule(&self, i: usize, rule: &str) {
        let ns = &self.hosts[i].ns;
        nft(ns, &format!("add table ip {NFT_TABLE}"));
        nft(
            ns,
            &format!("add chain ip {NFT_TABLE} out {{ type filter hook output priority 0; }}"),
        );
        nft(ns, &format!("add rule ip {NFT_TABLE} out {rule}"));
    }

    /// Packets dropped so far by host `i`'s fault rules.
    pub fn dropped(&self, i: usize) -> u64 {
        let mut total = 0;
        for chain in Direction::Both.chains() {
            let out = iptables(&self.hosts[i].ns, &["-L", chain, "-v", "-n", "-x"]);
            // Lines after the two headers: `pkts bytes target ...`.
            for line in String::from_utf8_lossy(&out.stdout).lines().skip(2) {
                let mut cols = line.split_whitespace();
                let packets = cols.next().and_then(|n| n.parse::<u64>().ok());
                if cols.nth(1) == Some("DROP") {
                    total += packets.unwrap_or(0);
                }
            }
        }
        total
    }
}

/// An nftables match true for a random fraction `probability` of packets.
pub(super) fn chance(probability: f64) -> String {
    assert!((0.0..=1.0).contains(&probability));
    format!(
        "numgen random mod 10000 < {}",
        (probability * 10_000.0).round() as u32
    )
}

/// Run `nft COMMAND` in `ns`; panic on failure.
fn nft(ns: &str, command: &str) {
    let out = run(Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .arg(command));
    assert!(
        out.status.success(),
        "nft {command} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `iptables ARGS` in `ns` (waiting for the xtables lock); panic on failure.
pub(super) fn iptables(ns: &str, args: &[&str]) -> Output {
    let out = run(Command::new("ip")
        .args(["netns", "exec", ns, "iptables", "-w", "5"])
        .args(args));
    assert!(
        out.status.success(),
        "iptables {} in {ns}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
