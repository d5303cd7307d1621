//! What the chaos test adds to [`Net`]: reordering through a slow lane, and an oracle
//! app broken on purpose (to prove a checker catches a double execution).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

use crate::ProcessGuard;

use super::{chance, run, Net, PORT};

/// The rate of [`Net::reorder`]'s slow lane: a 200-byte datagram waits 8 ms behind each
/// one queued before it.
pub const REORDER_LANE_RATE: &str = "200kbit";

/// The queue of [`Net::reorder`]'s slow lane, in datagrams (more are dropped).
pub const REORDER_LANE_PACKETS: u32 = 50;

impl Net {
    /// [`Net::oracle_server`] broken on purpose: every `every`th invocation it takes is
    /// logged as two executions (`fault_helper oracle --double-every`). Only for tests
    /// that prove a checker catches a double execution.
    pub fn oracle_server_doubling(&self, i: usize, log: &Path, every: u64) -> ProcessGuard {
        self.spawn_oracle(i, log, &["--double-every", &every.to_string()])
    }

    /// Reorder a random fraction `probability` of the datagrams host `i` sends to host
    /// `to`'s `rpcd`: they are steered into a slow lane (an HTB class limited to
    /// [`REORDER_LANE_RATE`], with a queue of [`REORDER_LANE_PACKETS`]) while the rest
    /// leave at once, so they arrive late and out of order (the kernel has no `netem`).
    /// The lane is an HTB qdisc on the host's link whose unclassified traffic passes
    /// unshaped; an nftables rule sets the chosen datagrams' priority to the lane's class.
    /// Healing ([`Net::heal`]) deletes the rule and the lane (the qdisc): datagrams still
    /// queued in it (at most [`REORDER_LANE_PACKETS`]) are lost. Needs `tc` (iproute2)
    /// and the kernel's HTB.
    pub fn reorder(&self, i: usize, to: usize, probability: f64) {
        let ns = &self.hosts[i].ns;
        if !self.reorder_lane(i) {
            let lane = REORDER_LANE_PACKETS.to_string();
            for args in [
                &[
                    "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "0",
                ][..],
                &[
                    "class",
                    "add",
                    "dev",
                    "eth0",
                    "parent",
                    "1:",
                    "classid",
                    "1:2",
                    "htb",
                    "rate",
                    REORDER_LANE_RATE,
                    "burst",
                    "1600",
                    "cburst",
                    "1600",
                ],
                &[
                    "qdisc", "add", "dev", "eth0", "parent", "1:2", "handle", "2:", "pfifo",
                    "limit", &lane,
                ],
            ] {
                tc(ns, args);
            }
        }
        let dst = self.hosts[to].addr;
        self.nft_rule(
            i,
            &format!(
                "ip daddr {dst} udp dport {PORT} {} meta priority set 1:2",
                chance(probability)
            ),
        );
    }

    /// Whether host `i`'s link has a reordering lane (an HTB qdisc) now.
    pub fn reorder_lane(&self, i: usize) -> bool {
        let shows = run(Command::new("ip").args([
            "netns",
            "exec",
            &self.hosts[i].ns,
            "tc",
            "qdisc",
            "show",
            "dev",
            "eth0",
        ]));
        String::from_utf8_lossy(&shows.stdout).contains("htb 1:")
    }

    /// Deletes host `i`'s reordering lane, if it has one, after adding what it sent to
    /// the host's count of [`Net::reordered`] datagrams.
    pub(super) fn remove_reorder_lane(&self, i: usize) {
        if !self.reorder_lane(i) {
            return;
        }
        let sent = self.lane_sent(i);
        self.hosts[i]
            .reordered_earlier
            .fetch_add(sent, Ordering::Relaxed);
        tc(&self.hosts[i].ns, &["qdisc", "del", "dev", "eth0", "root"]);
    }

    /// Datagrams host `i` has sent through reordering lanes so far, deleted ones included.
    pub fn reordered(&self, i: usize) -> u64 {
        self.hosts[i].reordered_earlier.load(Ordering::Relaxed) + self.lane_sent(i)
    }

    /// Datagrams host `i`'s current reordering lane has sent (0 without one).
    fn lane_sent(&self, i: usize) -> u64 {
        let out = run(Command::new("ip").args([
            "netns",
            "exec",
            &self.hosts[i].ns,
            "tc",
            "-s",
            "class",
            "show",
            "dev",
            "eth0",
        ]));
        // ` Sent BYTES bytes PACKETS pkt ...` follows the class line.
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == "Sent" {
                let packets = words.nth(2).and_then(|n| n.parse::<u64>().ok());
                return packets.unwrap_or(0);
            }
        }
        0
    }
}

/// Run `tc ARGS` in `ns`; panic on failure.
fn tc(ns: &str, args: &[&str]) {
    let out = run(Command::new("ip")
        .args(["netns", "exec", ns, "tc"])
        .args(args));
    assert!(
        out.status.success(),
        "tc {} in {ns}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
