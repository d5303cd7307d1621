//! Sums over a sweep and their summary.

use std::time::Duration;

use super::{keyed, CrowdOutcome, KeyedOutcome, Outcome};

/// Sums over a sweep.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub seeds: u64,
    pub strict_seeds: u64,
    pub partition_seeds: u64,
    pub restart_seeds: u64,
    /// Keyed seeds, by fault class: fault-only, with partitions, with restarts.
    pub keyed_seeds: (u64, u64, u64, u64),
    pub rekeying_seeds: u64,
    pub cookie_seeds: u64,
    pub keyed: KeyedOutcome,
    pub sum: Outcome,
    pub max_loss: f64,
    pub max_dup: f64,
    pub max_reorder: f64,
    pub max_corrupt: f64,
    pub max_truncate: f64,
    pub max_one_way: Duration,
    pub virtual_time: Duration,
    /// Seeds by class: [plain, keyed] x [datagram faults only, partitions,
    /// restarts, both].
    pub classes: [[u64; 4]; 2],
    /// Seeds without loss, duplication, corruption or truncation.
    pub clean_seeds: u64,
    /// Crowd runs (`crowd.rs`), and their sums.
    pub crowd_runs: u64,
    pub crowd: CrowdOutcome,
}

impl Totals {
    pub fn add(&mut self, o: &Outcome) {
        self.seeds += 1;
        if let Some(c) = o.class {
            let f = usize::from(c.partitions) + 2 * usize::from(c.restarts);
            self.classes[usize::from(c.keyed)][f] += 1;
            self.clean_seeds += u64::from(c.clean);
        }
        if o.faults.partitions == 0 && o.faults.restarts == 0 {
            self.strict_seeds += 1;
        }
        if o.faults.partitions > 0 {
            self.partition_seeds += 1;
        }
        if o.faults.restarts > 0 {
            self.restart_seeds += 1;
        }
        if let Some(k) = &o.keyed {
            self.keyed_seeds.0 += 1;
            if o.faults.partitions == 0 && o.faults.restarts == 0 {
                self.keyed_seeds.1 += 1;
            }
            if o.faults.partitions > 0 {
                self.keyed_seeds.2 += 1;
            }
            if o.faults.restarts > 0 {
                self.keyed_seeds.3 += 1;
            }
            self.rekeying_seeds += u64::from(k.rekeying);
            self.cookie_seeds += u64::from(k.cookies);
            let t = &mut self.keyed;
            for c in 0..4 {
                t.injected[c] += k.injected[c];
                t.handed[c] += k.handed[c];
            }
            t.answered += k.answered;
            t.tampered.0 += k.tampered.0;
            t.tampered.1 += k.tampered.1;
            t.to_strangers += k.to_strangers;
            for i in 0..4 {
                t.sent_by_type[i] += k.sent_by_type[i];
            }
            t.forged_replayed += k.forged_replayed;
            t.forged_not_authenticated += k.forged_not_authenticated;
            t.forged_unknown_key += k.forged_unknown_key;
            keyed::add_security(&mut t.security, &k.security);
        }
        if let Some(c) = &o.crowd {
            self.crowd_runs += 1;
            let t = &mut self.crowd;
            t.admitted += c.admitted;
            t.contacts += c.contacts;
            t.refused += c.refused;
            t.garbage += c.garbage;
            t.messages += c.messages;
            t.delivered += c.delivered;
        }
        let s = &mut self.sum;
        s.messages += o.messages;
        s.bytes += o.bytes;
        s.delivered += o.delivered;
        s.acked += o.acked;
        s.failed += o.failed;
        s.failed_definite += o.failed_definite;
        s.ambiguous += o.ambiguous;
        s.ambiguous_delivered += o.ambiguous_delivered;
        s.exempt += o.exempt;
        s.duplicates_delivered += o.duplicates_delivered;
        s.lost += o.lost;
        s.datagrams += o.datagrams;
        s.bundles += o.bundles;
        s.bundled += o.bundled;
        s.multi_bundles += o.multi_bundles;
        s.data_datagrams += o.data_datagrams;
        s.retransmissions += o.retransmissions;
        s.fast_retransmissions += o.fast_retransmissions;
        s.dropped += o.dropped;
        s.cut_dropped += o.cut_dropped;
        s.reordered += o.reordered;
        s.cuts += o.cuts;
        s.holds += o.holds;
        s.cancelled += o.cancelled;
        s.cancels_late += o.cancels_late;
        s.explained += o.explained;
        s.explained_lag_max = s.explained_lag_max.max(o.explained_lag_max);
        s.settle_max = s.settle_max.max(o.settle_max);
        s.settle_permille_max = s.settle_permille_max.max(o.settle_permille_max);
        s.crashes += o.crashes;
        s.duplicated += o.duplicated;
        s.corrupted += o.corrupted;
        s.truncated += o.truncated;
        s.refused_sends += o.refused_sends;
        s.peer_restarted_events += o.peer_restarted_events;
        s.peer_unreachable_events += o.peer_unreachable_events;
        s.touch_rounds += o.touch_rounds;
        s.retx_after_done += o.retx_after_done;
        self.max_loss = self.max_loss.max(o.faults.loss);
        self.max_dup = self.max_dup.max(o.faults.dup);
        self.max_reorder = self.max_reorder.max(o.faults.reorder);
        self.max_corrupt = self.max_corrupt.max(o.faults.corrupt);
        self.max_truncate = self.max_truncate.max(o.faults.truncate);
        self.max_one_way = self.max_one_way.max(o.faults.max_one_way());
        self.virtual_time += o.virtual_time;
    }

    /// The headline: seeds, messages and their fates, and every fault
    /// injected, by kind.
    pub fn headline(&self, wall: Duration) -> String {
        let s = &self.sum;
        let k = &self.keyed;
        let c = &self.classes;
        format!(
            "sim totals: {} seeds, {} messages, delivered {}, failed {}, lost {}, duplicated deliveries {}; wall {:.1?}\n\
             sim seeds by class: plain {}/{}/{}/{}, keyed {}/{}/{}/{} (datagram faults only / partitions / restarts / both), {} without loss\n\
             sim faults injected: loss {}, duplication {}, reordering {}, corruption {}, truncation {}, \
             link cuts {} (dropping {} datagrams), crashes {}, holds {}, cancels {} (and {} too late), forgeries plain {} junk {} replay {} stranger {}\n\
             sim oracle: {} failures, each explained by a scheduled fault (latest {:?} after its fault ended); \
             outcomes settled at most {:?} after the last fault or send ({}.{}% of the seed's bound at most)\n\
             sim crowd (more peers than peers_max, strangers): {} runs, {} addresses contacted a hub, {} admitted, \
             {} well-formed bundles refused (refused_peers), {} garbage datagrams dropped (malformed + corrupt), \
             {} of {} real peers' messages delivered (the rest refused)",
            self.seeds,
            s.messages,
            s.delivered,
            s.failed,
            s.lost,
            s.duplicates_delivered,
            wall,
            c[0][0],
            c[0][1],
            c[0][2],
            c[0][3],
            c[1][0],
            c[1][1],
            c[1][2],
            c[1][3],
            self.clean_seeds,
            s.dropped,
            s.duplicated,
            s.reordered,
            s.corrupted,
            s.truncated,
            s.cuts,
            s.cut_dropped,
            s.crashes,
            s.holds,
            s.cancelled,
            s.cancels_late,
            k.injected[0],
            k.injected[1],
            k.injected[2],
            k.injected[3],
            s.explained,
            s.explained_lag_max,
            s.settle_max,
            s.settle_permille_max / 10,
            s.settle_permille_max % 10,
            self.crowd_runs,
            self.crowd.contacts,
            self.crowd.admitted,
            self.crowd.refused,
            self.crowd.garbage,
            self.crowd.delivered,
            self.crowd.messages,
        )
    }

    /// A sweep that injected too few of some fault proves little: each
    /// kind must have been injected at least once per `per` seeds (and
    /// every class of seed must have occurred), or an injector is broken.
    pub fn check_fault_counts(&self, per: u64) -> Result<(), String> {
        let s = &self.sum;
        let k = &self.keyed;
        let min = self.seeds / per;
        let kinds = [
            ("loss", s.dropped),
            ("duplication", s.duplicated),
            ("reordering", s.reordered),
            ("corruption", s.corrupted),
            ("truncation", s.truncated),
            ("link cuts", s.cuts),
            ("datagrams dropped by cut links", s.cut_dropped),
            ("crashes", s.crashes),
            ("holds", s.holds),
            ("cancels", s.cancelled),
            ("cancels after the outcome", s.cancels_late),
            ("plaintext forgeries", k.injected[0]),
            ("junk forgeries", k.injected[1]),
            ("replays", k.injected[2]),
            ("strangers", k.injected[3]),
            ("crowd refusals (peers_max)", self.crowd.refused),
            ("crowd garbage from strangers", self.crowd.garbage),
        ];
        let mut short: Vec<String> = kinds
            .iter()
            .filter(|(_, n)| *n < min)
            .map(|(what, n)| format!("{what}: {n}"))
            .collect();
        // About 15 % of seeds draw the crowd; at least 5 % must have run it.
        if self.crowd_runs * 20 < self.seeds {
            short.push(format!("crowd runs: {}", self.crowd_runs));
        }
        for (m, mode) in self.classes.iter().zip(["plain", "keyed"]) {
            for (n, class) in m
                .iter()
                .zip(["faults only", "partitions", "restarts", "both"])
            {
                if *n == 0 {
                    short.push(format!("no {mode} seed with {class}"));
                }
            }
        }
        if short.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "too few faults injected over {} seeds (at least {min} of each expected): {}",
                self.seeds,
                short.join(", ")
            ))
        }
    }

    pub fn summary(&self, wall: Duration) -> String {
        let s = &self.sum;
        let k = &self.keyed;
        let sec = &k.security;
        let keyed = format!(
            "\nsim keyed: {} seeds ({} fault-only, {} with partitions, {} with restarts; {} rekeying, {} cookies), \
             forgeries injected plain {} junk {} replay {} stranger {} (handed {} {} {} {}), all dropped \
             (of them: not authenticated {}, replayed {}, unknown key {}; initiation replays answered again {}), \
             tampered handed {} dropped {}, sent to strangers {}; sent: initiations {} responses {} cookies {} transport {}; security counters: handshakes {} (timeouts {}), \
             not authenticated {}, malformed {}, bad mac {}, handshake failed {}, unknown key {}, address not allowed {}, \
             handshake replayed {}, rate limited {}, cookies sent {}, unknown session {}, auth failed {}, replayed {}, \
             queue dropped {}",
            self.keyed_seeds.0,
            self.keyed_seeds.1,
            self.keyed_seeds.2,
            self.keyed_seeds.3,
            self.rekeying_seeds,
            self.cookie_seeds,
            k.injected[0],
            k.injected[1],
            k.injected[2],
            k.injected[3],
            k.handed[0],
            k.handed[1],
            k.handed[2],
            k.handed[3],
            k.forged_not_authenticated,
            k.forged_replayed,
            k.forged_unknown_key,
            k.answered,
            k.tampered.0,
            k.tampered.1,
            k.to_strangers,
            k.sent_by_type[0],
            k.sent_by_type[1],
            k.sent_by_type[2],
            k.sent_by_type[3],
            sec.handshakes,
            sec.handshake_timeouts,
            sec.not_authenticated,
            sec.malformed,
            sec.bad_mac,
            sec.handshake_failed,
            sec.unknown_key,
            sec.address_not_allowed,
            sec.handshake_replayed,
            sec.rate_limited,
            sec.cookies_sent,
            sec.unknown_session,
            sec.auth_failed,
            sec.replayed,
            sec.queue_dropped,
        );
        format!(
            "sim: {} seeds ({} fault-only, {} with partitions, {} with restarts), {} messages ({} MB), \
             delivered {}, acked {}, failed {} (definite {}, ambiguous {} of which delivered {}), sender-died {}, \
             duplicates delivered {}, lost {}, touch rounds {}, datagrams {} (in plaintext runs: {} bundles ({} of several datagrams) of {} channel datagrams, of which data {}), retransmissions {} (fast {}), \
             injected: dropped {} dup {} corrupt {} truncated {}; rates up to loss {:.0}% dup {:.0}% reorder {:.0}% \
             corrupt {:.1}% truncate {:.1}% one-way {:?}; virtual {:?}, wall {:.1?}{}",
            self.seeds,
            self.strict_seeds,
            self.partition_seeds,
            self.restart_seeds,
            s.messages,
            s.bytes / 1_000_000,
            s.delivered,
            s.acked,
            s.failed,
            s.failed_definite,
            s.ambiguous,
            s.ambiguous_delivered,
            s.exempt,
            s.duplicates_delivered,
            s.lost,
            s.touch_rounds,
            s.datagrams,
            s.bundles,
            s.multi_bundles,
            s.bundled,
            s.data_datagrams,
            s.retransmissions,
            s.fast_retransmissions,
            s.dropped,
            s.duplicated,
            s.corrupted,
            s.truncated,
            self.max_loss * 100.0,
            self.max_dup * 100.0,
            self.max_reorder * 100.0,
            self.max_corrupt * 100.0,
            self.max_truncate * 100.0,
            self.max_one_way,
            self.virtual_time,
            wall,
            keyed,
        )
    }
}
