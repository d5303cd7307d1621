//! The simulated network, its fault model, the traffic and the ledger that
//! checks every message's fate. Keyed runs (authenticated mode, forgeries,
//! and which checks are plaintext-only) are in `keyed.rs`.

mod keyed;
pub use keyed::{keyed_mode, mode_name, KeyedOutcome};

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rpcd_transport::secure::wire::Outer;
use rpcd_transport::wire::{Bundle, Datagram, Kind};
use rpcd_transport::{
    ChannelEvent, ChannelSendError, Config, Endpoint, FailReason, MsgId, SendError,
};

/// Virtual time: an offset from the run's origin.
type T = Duration;

const PAYLOAD_MAX: usize = 200;
const MESSAGE_MAX: usize = 20_000;
/// Livelock guards: a run that needs more than this is a bug.
const EVENTS_MAX: u64 = 30_000_000;
/// Events at one virtual instant before the run counts as a busy loop.
const STUCK_MAX: u64 = 200_000;
const VIRTUAL_MAX: Duration = Duration::from_secs(4 * 3600);

/// Fault rates drawn per seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub loss: f64,
    pub dup: f64,
    pub reorder: f64,
    pub corrupt: f64,
    pub truncate: f64,
    pub delay: Duration,
    pub jitter: Duration,
    pub reorder_extra: Duration,
    pub partitions: u32,
    pub restarts: u32,
}

impl Faults {
    fn max_one_way(&self) -> Duration {
        self.delay + self.jitter + self.reorder_extra
    }
}

/// What one seed did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub faults: Faults,
    pub messages: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub acked: u64,
    pub failed: u64,
    pub failed_definite: u64,
    pub ambiguous: u64,
    pub ambiguous_delivered: u64,
    pub exempt: u64,
    pub duplicates_delivered: u64,
    pub lost: u64,
    pub datagrams: u64,
    /// Plaintext runs: the UDP datagrams (bundles) on the wire, and the
    /// channel datagrams in them.
    pub bundles: u64,
    pub bundled: u64,
    /// Of the bundles, those carrying more than one channel datagram.
    pub multi_bundles: u64,
    pub data_datagrams: u64,
    pub retransmissions: u64,
    pub fast_retransmissions: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    pub truncated: u64,
    pub refused_sends: u64,
    pub peer_restarted_events: u64,
    pub peer_unreachable_events: u64,
    /// Runs that needed a round of fresh messages to free receive state
    /// kept for peers that had been given up.
    pub touch_rounds: u64,
    pub virtual_time: Duration,
    /// Retransmissions counted by the channels after every message had its
    /// outcome (must stay zero).
    pub retx_after_done: u64,
    /// Keyed runs: forgeries and the authenticated layer's counters.
    pub keyed: Option<KeyedOutcome>,
}

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
}

impl Totals {
    pub fn add(&mut self, o: &Outcome) {
        self.seeds += 1;
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

// ------------------------------------------------------------------ events

#[derive(Debug)]
enum What {
    /// A datagram arrives at `to`.
    Arrive {
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
        tampered: bool,
        /// Keyed runs: only bytes that no check covers were tampered with.
        benign: bool,
        /// Keyed runs: injected by the network as a forgery.
        forged: Option<keyed::Forged>,
    },
    /// The traffic generator's next tick.
    AppTick,
    /// Cut (or heal, `cut == false`) the link `a -> b` (and `b -> a` when symmetric).
    Link {
        a: usize,
        b: usize,
        symmetric: bool,
        cut: bool,
    },
    /// Node goes down (its endpoint is discarded).
    Crash { node: usize },
    /// Node comes back with a fresh endpoint and a new epoch.
    Boot { node: usize },
}

#[derive(Debug)]
struct Ev {
    at: T,
    order: u64,
    what: What,
}

impl PartialEq for Ev {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ev {
    // Reversed: BinaryHeap is a max-heap, we want the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

// ------------------------------------------------------------------ ledger

/// (sender node, sender epoch, receiver node, msg id)
type Key = (usize, u64, usize, MsgId);

/// The ledger: one record per message sent. Its keys are not adversarial,
/// so a cheap hash (FxHash's) serves; nothing depends on its order.
type Ledger = HashMap<Key, MsgRec, BuildHasherDefault<FxHasher>>;

#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Debug)]
struct MsgRec {
    len: usize,
    nonce: u64,
    /// The receiver epoch its data datagrams named.
    addressed: Option<u64>,
    delivered: u32,
    acked: bool,
    failed: Option<(T, FailReason, bool)>,
    sender_died: bool,
}

#[derive(Debug)]
struct Node {
    addr: SocketAddr,
    ep: Option<Endpoint>,
    epoch: u64,
    /// `ep.poll_timeout()` as of the last input: every input to an endpoint
    /// is followed by `drain`, which refreshes it.
    timeout: Option<T>,
}

struct Sim {
    seed: u64,
    rng: ChaCha8Rng,
    origin: Instant,
    now: T,
    order: u64,
    queue: BinaryHeap<Ev>,
    nodes: Vec<Node>,
    cut: Vec<Vec<u32>>,
    faults: Faults,
    cfg: Config,
    strict: bool,
    reply_p: f64,
    burst_p: f64,
    /// Chance that a message is small (at most 16 bytes), so that bursts
    /// coalesce several datagrams per bundle (two data datagrams, or three
    /// acks, fill a bundle of `PAYLOAD_MAX` = 200): zero for half the seeds.
    small_p: f64,
    gap_mean_us: u64,
    budget: u64,
    msgs: Ledger,
    /// Messages neither acknowledged nor failed, and not exempt.
    outstanding: u64,
    /// Virtual time at which every message had its outcome and none could
    /// be sent any more.
    all_done: Option<T>,
    data_after_done: u64,
    violations: Vec<String>,
    tampered_handed: u64,
    /// Counters of discarded incarnations.
    dead_stats: (u64, u64, u64, u64),
    out: Outcome,
    trace: Option<Vec<String>>,
    /// Ledger size when the recovery round started; its messages are kept
    /// in `touch_keys` and must all be acknowledged.
    touch_from: usize,
    touch_keys: Vec<Key>,
    touch_round_one: Vec<Key>,
    /// Replies the app wants to send from the node being drained.
    replies: Vec<usize>,
    /// Keyed runs: keys, forgeries, counters.
    keyed: Option<Box<keyed::Keyed>>,
    /// Channels' retransmissions (every incarnation) when `all_done` was set.
    retx_at_done: Option<u64>,
    /// End `run` once the wire is empty and every channel idle, whatever
    /// the sessions' timers (keyed runs, before the last phase).
    stop_at_idle_channels: bool,
}

/// Run one seed; `Err` describes every violated rule.
pub fn run_seed(seed: u64, messages: u64) -> Result<Outcome, String> {
    let mut sim = Sim::new(seed, messages);
    sim.stop_at_idle_channels = sim.keyed.is_some() && !sim.strict;
    sim.run();
    // A channel that gave up on a silent peer keeps its (bounded) receive
    // state, and arms no timer, until it hears from that peer again: the
    // floors in the peer's next datagram free what the peer abandoned. After
    // partitions, let every pair exchange one more message, once, over a
    // network without loss, and only then require idleness.
    // The same round checks recovery: once partitions have healed and
    // restarts are over, a fresh message between every pair must get through.
    // The first message to a peer that restarted unseen fails "peer
    // restarted" (that is how the restart is learnt), so two rounds: the
    // first may fail only that way, the second must be acknowledged.
    if !sim.strict && sim.violations.is_empty() {
        let needed = !sim.all_idle();
        sim.touch_all_pairs(needed);
        sim.run();
        sim.touch_round_one = std::mem::take(&mut sim.touch_keys);
        sim.touch_all_pairs(false);
        // The last phase runs until nothing at all is left.
        sim.stop_at_idle_channels = false;
        sim.run();
    }
    sim.finish()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

impl Sim {
    fn new(seed: u64, messages: u64) -> Self {
        // A keyed seed sends half as many messages: its handshakes (X25519)
        // and per-datagram AEAD make it about three times dearer per message,
        // and the sweep's run time is kept within half again of plaintext's.
        let messages = if keyed_mode(seed) {
            messages.div_ceil(2)
        } else {
            messages
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nodes_n = rng.gen_range(2..=4);
        // A quarter of the seeds are clean apart from the odd fault; the
        // others draw every rate.
        let mut faults = Faults {
            loss: rng.gen_range(0.0..=0.5),
            dup: rng.gen_range(0.0..=0.1),
            reorder: rng.gen_range(0.0..=0.2),
            corrupt: rng.gen_range(0.0..=0.05),
            truncate: rng.gen_range(0.0..=0.02),
            delay: us(rng.gen_range(20..=2_000)),
            jitter: us(rng.gen_range(0..=1_000)),
            reorder_extra: us(rng.gen_range(0..=5_000)),
            partitions: 0,
            restarts: 0,
        };
        if seed.is_multiple_of(4) {
            faults.loss = 0.0;
            faults.dup = 0.0;
            faults.corrupt = 0.0;
            faults.truncate = 0.0;
        }
        // Half the seeds: only datagram faults, and nothing may fail.
        let strict = seed.is_multiple_of(2);
        if !strict {
            faults.partitions = rng.gen_range(1..=6);
            if seed % 4 == 3 {
                faults.restarts = rng.gen_range(1..=3);
            }
        }
        let recv_window = rng.gen_range(16..=256);
        let cwnd_max = rng.gen_range(4..=256);
        let cwnd_initial = rng.gen_range(1..=cwnd_max.min(16));
        let mut cfg = Config {
            payload_max: PAYLOAD_MAX,
            message_max: MESSAGE_MAX,
            send_queue_max: rng.gen_range(4..=256),
            send_queue_bytes_max: MESSAGE_MAX * rng.gen_range(1..=8),
            recv_window,
            // The draw stays here to keep the seeds' streams; the floor is added below.
            reassembly_bytes_max: rng.gen_range(0..=40_000),
            reassembly_total_max: 0,
            cwnd_initial,
            cwnd_min: cwnd_initial.min(2),
            cwnd_max,
            rto_initial: ms(20),
            rto_min: ms(2),
            rto_max: ms(200),
            retransmits_max: 64,
            ack_delay: us(rng.gen_range(100..=1_500)),
            ack_every: rng.gen_range(1..=4),
            keepalive_interval: ms(100),
            peer_timeout: Duration::from_secs(120),
            revalidate_after: ms(rng.gen_range(20..=2_000)),
            peers_max: 8,
            ..Config::default()
        };
        if !strict {
            cfg.retransmits_max = rng.gen_range(3..=16);
            cfg.rto_max = ms(rng.gen_range(50..=500));
            cfg.keepalive_interval = ms(rng.gen_range(20..=200));
            cfg.peer_timeout = ms(rng.gen_range(300..=3_000));
            cfg.revalidate_after = cfg.revalidate_after.min(cfg.peer_timeout);
        }
        cfg.reassembly_bytes_max += cfg.reassembly_floor();
        cfg.reassembly_total_max = 2 * cfg.reassembly_bytes_max;
        // Keyed runs draw their own parameters from their own stream: the
        // network's draws above and below stay those of the seed.
        let keyed = keyed_mode(seed).then(|| Box::new(keyed::Keyed::new(seed, nodes_n, &mut cfg)));
        cfg.validate().expect("simulated config is valid");
        let origin = Instant::now();
        let nodes = (0..nodes_n)
            .map(|i| Node {
                addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 7400)),
                ep: None,
                epoch: 0,
                timeout: None,
            })
            .collect();
        let gap_mean_us = rng.gen_range(10..=2_000);
        let mut sim = Sim {
            seed,
            reply_p: rng.gen_range(0.0..=0.6),
            burst_p: rng.gen_range(0.0..=0.05),
            small_p: 0.0,
            gap_mean_us,
            rng,
            origin,
            now: Duration::ZERO,
            order: 0,
            queue: BinaryHeap::new(),
            nodes,
            cut: vec![vec![0; nodes_n]; nodes_n],
            faults,
            cfg,
            strict,
            budget: messages,
            msgs: Ledger::default(),
            outstanding: 0,
            all_done: None,
            data_after_done: 0,
            violations: Vec::new(),
            tampered_handed: 0,
            dead_stats: (0, 0, 0, 0),
            out: Outcome {
                faults,
                ..Outcome::default()
            },
            trace: std::env::var("SIM_TRACE").ok().map(|_| Vec::new()),
            replies: Vec::new(),
            touch_from: usize::MAX,
            touch_keys: Vec::new(),
            touch_round_one: Vec::new(),
            keyed,
            retx_at_done: None,
            stop_at_idle_channels: false,
        };
        for i in 0..nodes_n {
            sim.boot(i);
        }
        // Partitions and restarts fall in the expected sending phase.
        let phase = us(messages * gap_mean_us).max(ms(200));
        for _ in 0..faults.partitions {
            let at = rand_time(&mut sim.rng, phase);
            let a = sim.rng.gen_range(0..nodes_n);
            let b = (a + sim.rng.gen_range(1..nodes_n)) % nodes_n;
            let symmetric = sim.rng.gen_bool(0.7);
            let max_len = (cfg.peer_timeout * 2).as_micros() as u64;
            let len = us(sim.rng.gen_range(1_000..=max_len));
            sim.push(
                at,
                What::Link {
                    a,
                    b,
                    symmetric,
                    cut: true,
                },
            );
            sim.push(
                at + len,
                What::Link {
                    a,
                    b,
                    symmetric,
                    cut: false,
                },
            );
        }
        for _ in 0..faults.restarts {
            let at = rand_time(&mut sim.rng, phase);
            // Sometimes every node restarts within a few milliseconds, so
            // late datagrams of dead incarnations meet new ones.
            let together = sim.rng.gen_bool(0.3);
            let first = sim.rng.gen_range(0..nodes_n);
            let nodes: Vec<usize> = if together {
                (0..nodes_n).collect()
            } else {
                vec![first]
            };
            for node in nodes {
                let at = at + us(sim.rng.gen_range(0..=5_000));
                let down = us(sim
                    .rng
                    .gen_range(0..=if together { 5_000 } else { 300_000 }));
                sim.push(at, What::Crash { node });
                sim.push(at + down, What::Boot { node });
            }
        }
        if sim.rng.gen_bool(0.5) {
            sim.small_p = sim.rng.gen_range(0.5..=1.0);
            sim.burst_p = sim.rng.gen_range(0.05..=0.3);
        }
        sim.push(Duration::ZERO, What::AppTick);
        sim
    }

    fn push(&mut self, at: T, what: What) {
        self.order += 1;
        self.queue.push(Ev {
            at,
            order: self.order,
            what,
        });
    }

    fn instant(&self, t: T) -> Instant {
        self.origin + t
    }

    fn note(&mut self, f: impl FnOnce() -> String) {
        if let Some(tr) = &mut self.trace {
            tr.push(format!("{:>12?} {}", self.now, f()));
        }
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(format!("at {:?}: {what}", self.now));
        }
    }

    // -------------------------------------------------------------- run loop

    fn run(&mut self) {
        let mut events = 0u64;
        let mut stuck = 0u64;
        loop {
            let next_net = self.queue.peek().map(|e| e.at);
            let mut next_timer: Option<(T, usize)> = None;
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(t) = n.timeout {
                    if next_timer.is_none_or(|(b, _)| t < b) {
                        next_timer = Some((t, i));
                    }
                }
            }
            let take_timer = match (next_net, next_timer) {
                (None, None) => break,
                // Keyed runs, before the recovery rounds: with nothing on
                // the wire and every channel idle (no state, no timer), only
                // the sessions' timers are left (keypairs expire after
                // `reject_after`, minutes by default). Start the rounds now,
                // over the sessions as they are, rather than after they
                // expired.
                (None, Some(_)) if self.stop_at_idle_channels && self.all_idle() => break,
                (Some(n), Some((t, _))) => t < n,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            events += 1;
            let t = if take_timer {
                next_timer.map(|x| x.0)
            } else {
                next_net
            };
            if t.is_some_and(|t| t <= self.now) {
                stuck += 1;
            } else {
                stuck = 0;
            }
            if events > EVENTS_MAX || self.now > VIRTUAL_MAX || stuck > STUCK_MAX {
                let mut s = String::new();
                for n in &mut self.nodes {
                    if let Some(ep) = n.ep.as_mut() {
                        let _ = write!(
                            s,
                            "\n  {} timeout {:?} idle {}",
                            n.addr,
                            ep.poll_timeout().map(|t| t - self.origin),
                            ep.is_idle()
                        );
                        for (p, snap) in ep.peers() {
                            let _ = write!(s, "\n    {p}: {snap:?}");
                        }
                    }
                }
                self.violation(format!(
                    "no quiescence after {events} events ({stuck} at the same instant) (outstanding {}, all_done {:?}){s}",
                    self.outstanding, self.all_done
                ));
                return;
            }
            if take_timer {
                let (t, i) = next_timer.expect("chosen");
                self.now = self.now.max(t);
                let now = self.instant(self.now);
                if let Some(ep) = self.nodes[i].ep.as_mut() {
                    ep.handle_timeout(now);
                }
                self.drain(i);
                continue;
            }
            let ev = self.queue.pop().expect("peeked");
            self.now = self.now.max(ev.at);
            match ev.what {
                What::Arrive {
                    to,
                    from,
                    bytes,
                    tampered,
                    benign,
                    forged,
                } => {
                    if tampered && self.nodes[to].ep.is_some() {
                        self.tampered_handed += 1;
                    }
                    if self.keyed.is_some() {
                        self.arrive_keyed(to, from, bytes, tampered, benign, forged);
                    } else if let Some(ep) = self.nodes[to].ep.as_mut() {
                        let now = self.origin + self.now;
                        ep.handle_datagram(now, from, &bytes);
                        self.drain(to);
                    }
                }
                What::AppTick => {
                    if let Some(i) = self.app_tick() {
                        self.drain(i);
                    }
                }
                What::Link {
                    a,
                    b,
                    symmetric,
                    cut,
                } => {
                    let d: i64 = if cut { 1 } else { -1 };
                    self.note(|| format!("link {a}->{b} sym {symmetric} cut {cut}"));
                    self.cut[a][b] = (i64::from(self.cut[a][b]) + d) as u32;
                    if symmetric {
                        self.cut[b][a] = (i64::from(self.cut[b][a]) + d) as u32;
                    }
                }
                What::Crash { node } => self.crash(node),
                What::Boot { node } => self.boot(node),
            }
        }
    }

    fn crash(&mut self, node: usize) {
        let Some(ep) = self.nodes[node].ep.take() else {
            return;
        };
        self.note(|| format!("crash node {node}"));
        self.nodes[node].timeout = None;
        self.absorb_stats(&ep);
        let epoch = self.nodes[node].epoch;
        let mut died = 0;
        for (k, m) in self.msgs.iter_mut() {
            if k.0 == node && k.1 == epoch && !m.acked && m.failed.is_none() && !m.sender_died {
                m.sender_died = true;
                died += 1;
            }
        }
        self.outstanding -= died;
        self.out.exempt += died;
        self.check_done();
    }

    fn boot(&mut self, node: usize) {
        if self.nodes[node].ep.is_some() {
            // Overlapping restarts: crash first.
            self.crash(node);
        }
        let epoch = loop {
            let e = self.rng.next_u64();
            if e != 0 && self.nodes.iter().all(|n| n.epoch != e) {
                break e;
            }
        };
        self.note(|| format!("boot node {node} epoch {epoch:#x}"));
        self.nodes[node].epoch = epoch;
        let ep = match self.keyed.as_mut() {
            None => Endpoint::new(self.cfg, epoch),
            Some(k) => {
                // Same key, new epoch and seed; the wall clock keeps growing.
                let addrs: Vec<SocketAddr> = self.nodes.iter().map(|n| n.addr).collect();
                k.endpoint(self.cfg, epoch, node, &addrs, self.now)
            }
        };
        self.nodes[node].ep = Some(ep);
        self.drain(node);
    }

    fn absorb_stats(&mut self, ep: &Endpoint) {
        if let Some(k) = self.keyed.as_mut() {
            k.absorb(ep);
        }
        let st = ep.stats();
        self.dead_stats.0 += st.corrupt + st.malformed;
        for (_, snap) in ep.peers() {
            self.dead_stats.1 += snap.stats.retransmissions;
            self.dead_stats.2 += snap.stats.fast_retransmissions;
            self.dead_stats.3 += snap.stats.datagrams_sent;
        }
    }

    // -------------------------------------------------------------- traffic

    fn app_tick(&mut self) -> Option<usize> {
        if self.out.messages >= self.budget {
            return None;
        }
        let n = self.nodes.len();
        let burst = if self.rng.gen_bool(self.burst_p) {
            self.rng.gen_range(10..=60)
        } else {
            1
        };
        let from = self.rng.gen_range(0..n);
        let to = (from + self.rng.gen_range(1..n)) % n;
        for _ in 0..burst {
            self.app_send(from, to);
        }
        let gap = us(self.rng.gen_range(0..=2 * self.gap_mean_us));
        let at = self.now + gap;
        self.push(at, What::AppTick);
        Some(from)
    }

    fn message_len(&mut self) -> usize {
        if self.small_p > 0.0 && self.rng.gen_bool(self.small_p) {
            return self.rng.gen_range(0..=16);
        }
        let r: f64 = self.rng.gen();
        if r < 0.1 {
            self.rng.gen_range(0..=16)
        } else if r < 0.6 {
            self.rng.gen_range(17..=PAYLOAD_MAX)
        } else if r < 0.99 {
            self.rng.gen_range(PAYLOAD_MAX + 1..=3_000)
        } else {
            self.rng.gen_range(3_001..=MESSAGE_MAX)
        }
    }

    fn app_send(&mut self, from: usize, to: usize) {
        if self.out.messages >= self.budget {
            return;
        }
        let len = self.message_len();
        let epoch = self.nodes[from].epoch;
        let peer = self.nodes[to].addr;
        let now = self.instant(self.now);
        let Some(ep) = self.nodes[from].ep.as_mut() else {
            return;
        };
        // Contents derive from a nonce kept in the ledger.
        let key_base = (from, epoch, to);
        let nonce = self.rng.next_u64();
        let bytes = content(nonce, len);
        match ep.send(now, peer, bytes) {
            Ok(id) => {
                let key = (key_base.0, key_base.1, key_base.2, id);
                self.out.messages += 1;
                self.out.bytes += len as u64;
                self.outstanding += 1;
                self.note(|| format!("send {key:?} len {len}"));
                if let Some(k) = self.keyed.as_mut() {
                    k.note_sent(from, to, u64::from(id), nonce, len);
                }
                if self
                    .msgs
                    .insert(
                        key,
                        MsgRec {
                            len,
                            nonce,
                            addressed: None,
                            delivered: 0,
                            acked: false,
                            failed: None,
                            sender_died: false,
                        },
                    )
                    .is_some()
                {
                    self.violation(format!("msg id {key:?} returned twice by send"));
                }
                if self.msgs.len() > self.touch_from {
                    self.touch_keys.push(key);
                }
            }
            Err(SendError::Channel(ChannelSendError::QueueFull)) => self.out.refused_sends += 1,
            Err(e) => self.violation(format!("send of {len} bytes refused: {e}")),
        }
    }

    // -------------------------------------------------------------- plumbing

    /// Collect what node `i` wants to send and tell, until it has nothing.
    fn drain(&mut self, i: usize) {
        let now = self.instant(self.now);
        loop {
            let mut progressed = false;
            while let Some(t) = self.nodes[i]
                .ep
                .as_mut()
                .and_then(|ep| ep.poll_transmit(now))
            {
                progressed = true;
                self.route(i, t.to, t.bytes);
            }
            while let Some(ev) = self.nodes[i].ep.as_mut().and_then(|ep| ep.poll_event()) {
                progressed = true;
                self.on_event(i, ev);
            }
            while let Some(to) = self.replies.pop() {
                progressed = true;
                self.app_send(i, to);
            }
            if !progressed {
                break;
            }
        }
        let origin = self.origin;
        let n = &mut self.nodes[i];
        n.timeout =
            n.ep.as_mut()
                .and_then(|ep| ep.poll_timeout())
                .map(|t| t.saturating_duration_since(origin));
    }

    fn node_index(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    fn route(&mut self, from: usize, to_addr: SocketAddr, bytes: Vec<u8>) {
        self.out.datagrams += 1;
        let forging = self.note_forged_output(to_addr, bytes.len());
        let Some(to) = self.node_index(to_addr) else {
            // Only a cookie reply to a stranger's forged initiation may go
            // to an address that is no node's (checked with the forgery).
            match self.keyed.as_mut() {
                Some(k) if forging => k.to_strangers += 1,
                _ => self.violation(format!(
                    "node {from} sent {} bytes to {to_addr}, which is no node, outside any forgery",
                    bytes.len()
                )),
            }
            return;
        };
        if self.keyed.is_some() {
            // The wire carries sealed bytes: the plaintext checks below are
            // replaced by this one (see keyed.rs for the list).
            match Outer::parse(&bytes) {
                Ok(o) => {
                    let (t, i) = match o {
                        Outer::Init { .. } => ("initiation", 0),
                        Outer::Resp { .. } => ("response", 1),
                        Outer::Cookie { .. } => ("cookie", 2),
                        Outer::Transport { .. } => ("transport", 3),
                    };
                    if let Some(k) = self.keyed.as_mut() {
                        k.sent_by_type[i] += 1;
                    }
                    self.note(|| format!("tx {from}->{to} {t} {} bytes", bytes.len()));
                }
                Err(e) => self.violation(format!(
                    "node {from} emitted a datagram that is not an authenticated one: {e}"
                )),
            }
            self.maybe_forge(from, to);
        } else {
            self.route_plaintext(from, to, &bytes);
        }
        self.transmit(from, to, bytes);
    }

    /// Plaintext-only checks of a datagram on the wire (see keyed.rs).
    fn route_plaintext(&mut self, from: usize, to: usize, bytes: &[u8]) {
        match Bundle::parse(bytes) {
            Ok(bundle) => {
                self.out.bundles += 1;
                self.out.bundled += bundle.datagrams.len() as u64;
                if bundle.datagrams.len() > 1 {
                    self.out.multi_bundles += 1;
                }
                for d in &bundle.datagrams {
                    self.check_plaintext(from, to, d);
                }
            }
            Err(e) => self.violation(format!("node {from} emitted an invalid bundle: {e}")),
        }
    }

    /// One channel datagram of a bundle on the wire.
    fn check_plaintext(&mut self, from: usize, to: usize, d: &Datagram<'_>) {
        {
            {
                if d.kind == Kind::Data {
                    self.out.data_datagrams += 1;
                    // Data names the receiver's incarnation, always the same
                    // one for every fragment of a message.
                    if let Some(f) = &d.fragment {
                        let key = (from, d.sender_epoch, to, MsgId::from(f.msg_id));
                        if let Some(m) = self.msgs.get_mut(&key) {
                            match m.addressed {
                                None => m.addressed = Some(d.receiver_epoch),
                                Some(e) if e == d.receiver_epoch => {}
                                Some(e) => {
                                    let r = d.receiver_epoch;
                                    self.violation(format!(
                                        "{key:?} sent to receiver epoch {r:#x} after {e:#x}"
                                    ));
                                }
                            }
                        }
                    }
                    if self.all_done.is_some() {
                        self.data_after_done += 1;
                    }
                }
                self.note(|| {
                    format!(
                        "tx {from}->{to} {:?} seq {} ack {:?} floors {}/{} frag {:?} ack_now {}",
                        d.kind,
                        d.seq.0,
                        d.ack.map(|a| (a.ack.0, a.sack, a.window)),
                        d.send_floor.0,
                        d.msg_floor,
                        d.fragment.as_ref().map(|f| (f.msg_id, f.index, f.count)),
                        d.ack_now
                    )
                });
            }
        }
    }

    /// The network's faults, then the copies that arrive.
    fn transmit(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        if self.cut[from][to] > 0 || self.rng.gen_bool(self.faults.loss) {
            self.out.dropped += 1;
            return;
        }
        let copies = if self.rng.gen_bool(self.faults.dup) {
            self.out.duplicated += 1;
            2
        } else {
            1
        };
        let from_addr = self.nodes[from].addr;
        for _ in 0..copies {
            let f = self.faults;
            let mut delay = f.delay + f.jitter.mul_f64(self.rng.gen::<f64>());
            if self.rng.gen_bool(f.reorder) {
                delay += f.reorder_extra.mul_f64(self.rng.gen::<f64>());
            }
            let mut b = bytes.clone();
            let mut tampered = false;
            if self.rng.gen_bool(f.corrupt) {
                for _ in 0..self.rng.gen_range(1..=3) {
                    let i = self.rng.gen_range(0..b.len());
                    b[i] ^= 1 << self.rng.gen_range(0..8);
                }
                // Three flips may cancel out (same bit twice).
                tampered = b != bytes;
                if tampered {
                    self.out.corrupted += 1;
                }
            }
            if self.rng.gen_bool(f.truncate) {
                let n = self.rng.gen_range(0..b.len());
                b.truncate(n);
                tampered = true;
                self.out.truncated += 1;
            }
            let benign =
                tampered && self.keyed.is_some() && keyed::only_unchecked_bytes(&bytes, &b);
            let at = self.now + delay;
            self.push(
                at,
                What::Arrive {
                    to,
                    from: from_addr,
                    bytes: b,
                    tampered,
                    benign,
                    forged: None,
                },
            );
        }
    }

    fn on_event(&mut self, i: usize, ev: rpcd_transport::Event) {
        self.note_forged_event(i, &ev);
        let Some(peer) = self.node_index(ev.peer) else {
            self.violation(format!(
                "node {i}: event {:?} for {}, which is no node",
                ev.kind, ev.peer
            ));
            return;
        };
        let me = self.nodes[i].epoch;
        match ev.kind {
            ChannelEvent::Delivered { msg_id, data } => {
                let epoch = self.nodes[i]
                    .ep
                    .as_ref()
                    .and_then(|ep| ep.peer(ev.peer))
                    .and_then(|s| s.peer_epoch)
                    .unwrap_or(0);
                let key = (peer, epoch, i, msg_id);
                self.note(|| format!("delivered {key:?} len {}", data.len()));
                let now = self.now;
                let max_delay = self.faults.max_one_way();
                let Some(m) = self.msgs.get_mut(&key) else {
                    self.violation(format!("delivered {key:?}, which was never sent"));
                    return;
                };
                m.delivered += 1;
                let (delivered, failed, expect) = (m.delivered, m.failed, (m.nonce, m.len));
                let addressed = m.addressed;
                // Plaintext only: in keyed runs the receiver epoch a Data
                // datagram names is sealed (see keyed.rs).
                if self.keyed.is_none() && addressed != Some(me) {
                    self.violation(format!(
                        "{key:?} delivered by incarnation {me:#x}, but was addressed to {addressed:?}"
                    ));
                }
                if delivered > 1 {
                    self.out.duplicates_delivered += 1;
                    self.violation(format!("{key:?} delivered {delivered} times"));
                }
                if let Some((at, reason, maybe)) = failed {
                    if !maybe {
                        self.violation(format!(
                            "{key:?} delivered after failing ({reason:?}) with maybe_delivered = false"
                        ));
                    }
                    if now > at + max_delay {
                        self.violation(format!(
                            "{key:?} delivered at {now:?}, later than its failure at {at:?} + max one-way {max_delay:?}"
                        ));
                    }
                }
                if data != content(expect.0, expect.1) {
                    self.violation(format!(
                        "{key:?} delivered {} bytes that differ from the {} sent",
                        data.len(),
                        expect.1
                    ));
                }
                if self.rng.gen_bool(self.reply_p) {
                    self.replies.push(peer);
                }
            }
            ChannelEvent::Acked { msg_id } => {
                let key = (i, me, peer, msg_id);
                self.note(|| format!("acked {key:?}"));
                let Some(m) = self.msgs.get_mut(&key) else {
                    self.violation(format!("acked {key:?}, which was never sent"));
                    return;
                };
                if m.acked || m.failed.is_some() {
                    self.violation(format!("{key:?} got a second outcome: acked"));
                    return;
                }
                m.acked = true;
                self.outstanding -= 1;
                self.check_done();
            }
            ChannelEvent::Failed {
                msg_id,
                reason,
                maybe_delivered,
            } => {
                let key = (i, me, peer, msg_id);
                self.note(|| format!("failed {key:?} {reason:?} maybe {maybe_delivered}"));
                let now = self.now;
                let Some(m) = self.msgs.get_mut(&key) else {
                    self.violation(format!("failed {key:?}, which was never sent"));
                    return;
                };
                if m.acked || m.failed.is_some() {
                    self.violation(format!("{key:?} got a second outcome: failed"));
                    return;
                }
                m.failed = Some((now, reason, maybe_delivered));
                let delivered = m.delivered;
                self.outstanding -= 1;
                if !maybe_delivered && delivered > 0 {
                    self.violation(format!(
                        "{key:?} failed ({reason:?}) with maybe_delivered = false but was delivered"
                    ));
                }
                if self.strict {
                    self.violation(format!(
                        "{key:?} failed ({reason:?}) in a run without partitions or restarts"
                    ));
                }
                self.check_done();
            }
            ChannelEvent::PeerRestarted => self.out.peer_restarted_events += 1,
            ChannelEvent::PeerUnreachable => {
                self.out.peer_unreachable_events += 1;
                if self.strict {
                    self.violation(format!(
                        "node {i}: peer {peer} unreachable in a run without partitions"
                    ));
                }
            }
        }
    }

    fn all_idle(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.ep.as_ref().is_none_or(|ep| ep.is_idle()))
    }

    fn touch_all_pairs(&mut self, needed: bool) {
        if needed {
            self.out.touch_rounds += 1;
        }
        self.touch_from = self.msgs.len();
        // On a network that has become clean: these must get through.
        self.faults.loss = 0.0;
        self.faults.corrupt = 0.0;
        self.faults.truncate = 0.0;
        self.settle_retx();
        self.all_done = None;
        let n = self.nodes.len();
        for i in 0..n {
            for j in 0..n {
                if i != j && self.nodes[i].ep.is_some() && self.nodes[j].ep.is_some() {
                    self.budget += 1;
                    self.app_send(i, j);
                    self.drain(i);
                }
            }
        }
    }

    fn check_done(&mut self) {
        if self.all_done.is_none() && self.out.messages >= self.budget && self.outstanding == 0 {
            self.all_done = Some(self.now);
            self.retx_at_done = Some(self.retransmissions_total());
        }
    }

    /// Retransmissions counted by every channel of every incarnation so far.
    fn retransmissions_total(&self) -> u64 {
        let live: u64 = self
            .nodes
            .iter()
            .filter_map(|n| n.ep.as_ref())
            .flat_map(|ep| ep.peers().map(|(_, s)| s.stats.retransmissions))
            .sum();
        self.dead_stats.1 + live
    }

    /// Retransmission stops once every message has its outcome: what the
    /// counters grew by since then. Checked in both modes; in keyed runs it
    /// stands for the plaintext check that no Data datagram is on the wire
    /// after that point.
    fn settle_retx(&mut self) {
        if let Some(r) = self.retx_at_done.take() {
            self.out.retx_after_done += self.retransmissions_total() - r;
        }
    }

    fn finish(mut self) -> Result<Outcome, String> {
        self.out.virtual_time = self.now;
        self.settle_retx();
        if self.out.retx_after_done > 0 {
            let n = self.out.retx_after_done;
            self.violation(format!(
                "{n} retransmissions after every message was acknowledged or failed (at {:?})",
                self.all_done
            ));
        }
        if self.data_after_done > 0 {
            let n = self.data_after_done;
            self.violation(format!(
                "{n} data datagrams emitted after every message was acknowledged or failed (at {:?})",
                self.all_done
            ));
        }
        if self.out.messages < self.budget {
            let (m, b) = (self.out.messages, self.budget);
            self.violation(format!("only {m} of {b} messages were sent"));
        }
        let mut problems = Vec::new();
        for (key, m) in &self.msgs {
            if m.delivered > 0 {
                self.out.delivered += 1;
            }
            if m.acked {
                self.out.acked += 1;
                if m.delivered != 1 {
                    problems.push(format!(
                        "{key:?} acknowledged but delivered {} times",
                        m.delivered
                    ));
                }
            } else if let Some((_, reason, maybe)) = m.failed {
                self.out.failed += 1;
                if maybe {
                    self.out.ambiguous += 1;
                    if m.delivered > 0 {
                        self.out.ambiguous_delivered += 1;
                    }
                } else {
                    self.out.failed_definite += 1;
                    if m.delivered > 0 {
                        problems.push(format!(
                            "{key:?} failed definitely ({reason:?}) but was delivered"
                        ));
                    }
                }
            } else if !m.sender_died {
                self.out.lost += 1;
                problems.push(format!(
                    "{key:?} (len {}) neither acknowledged nor failed (delivered {})",
                    m.len, m.delivered
                ));
            }
        }
        for key in &self.touch_round_one {
            if let Some(MsgRec {
                failed: Some((_, reason, _)),
                ..
            }) = self.msgs.get(key)
            {
                if *reason != FailReason::PeerRestarted {
                    problems.push(format!(
                        "{key:?}, sent after the network healed, failed: {reason:?}"
                    ));
                }
            }
        }
        for key in &self.touch_keys {
            if self.msgs.get(key).is_some_and(|m| !m.acked) {
                problems.push(format!(
                    "{key:?}, sent after the network healed, was not acknowledged"
                ));
            }
        }
        problems.sort();
        for p in problems.into_iter().take(10) {
            self.violation(p);
        }
        if self.strict
            && (self.out.acked != self.out.messages || self.out.delivered != self.out.messages)
        {
            let (a, d, m) = (self.out.acked, self.out.delivered, self.out.messages);
            self.violation(format!("fault-only run: {a} acked, {d} delivered of {m}"));
        }
        // Every endpoint idle, counters gathered.
        let mut tampered_dropped = self.dead_stats.0;
        self.out.retransmissions = self.dead_stats.1;
        self.out.fast_retransmissions = self.dead_stats.2;
        let mut idle_problems = Vec::new();
        for n in &self.nodes {
            let Some(ep) = n.ep.as_ref() else {
                continue;
            };
            let st = ep.stats();
            tampered_dropped += st.corrupt + st.malformed;
            for (p, snap) in ep.peers() {
                self.out.retransmissions += snap.stats.retransmissions;
                self.out.fast_retransmissions += snap.stats.fast_retransmissions;
                let _ = p;
            }
            if !ep.is_idle() {
                let mut s = format!("endpoint {} not idle after quiescence:", n.addr);
                for (p, snap) in ep.peers() {
                    let _ = write!(s, "\n    {p}: {snap:?}");
                }
                idle_problems.push(s);
            }
        }
        for p in idle_problems {
            self.violation(p);
        }
        if self.out.fast_retransmissions > self.out.retransmissions {
            let (f, r) = (self.out.fast_retransmissions, self.out.retransmissions);
            self.violation(format!(
                "{f} fast retransmissions counted, but only {r} retransmissions"
            ));
        }
        // Plaintext only: in keyed runs tampered datagrams are dropped by the
        // authenticated layer (checked one by one in keyed.rs) and the inner
        // counters must stay zero (finish_keyed).
        if self.keyed.is_none() && tampered_dropped != self.tampered_handed {
            let (a, b) = (tampered_dropped, self.tampered_handed);
            self.violation(format!(
                "{b} corrupt or truncated datagrams reached endpoints, {a} were dropped as corrupt/malformed"
            ));
        }
        self.finish_keyed();
        if self.violations.is_empty() {
            return Ok(self.out);
        }
        let mode = match &self.keyed {
            Some(k) => format!("keyed {k:?}, forgeries {:?}", k.enabled_names()),
            None => "plain".into(),
        };
        let mut s = format!(
            "{} violation(s); mode {mode}; faults {:?}; config {:?}; strict {}\n",
            self.violations.len(),
            self.faults,
            self.cfg,
            self.strict
        );
        for v in &self.violations {
            let _ = writeln!(s, "  - {v}");
        }
        if let Some(tr) = &self.trace {
            let path = std::env::temp_dir().join(format!("rpcd-sim-{}.trace", self.seed));
            let _ = std::fs::write(&path, tr.join("\n"));
            let _ = writeln!(s, "trace written to {}", path.display());
        } else {
            let _ = writeln!(s, "set SIM_TRACE=1 to write a datagram trace");
        }
        Err(s)
    }
}

fn rand_time(rng: &mut ChaCha8Rng, phase: Duration) -> Duration {
    us(rng.gen_range(0..=phase.as_micros() as u64))
}

/// Pseudo-random contents of a message, determined by its nonce and length.
fn content(nonce: u64, len: usize) -> Vec<u8> {
    let mut r = ChaCha8Rng::seed_from_u64(nonce);
    let mut v = vec![0; len];
    r.fill_bytes(&mut v);
    // A readable header where there is room, for traces.
    let head = nonce.to_be_bytes();
    let n = head.len().min(len);
    v[..n].copy_from_slice(&head[..n]);
    v
}
