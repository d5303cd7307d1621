//! The simulated network, its fault model, the traffic and the ledger that
//! checks every message's fate. Keyed runs (authenticated mode, forgeries,
//! and which checks are plaintext-only) are in `keyed.rs`.

mod keyed;
pub use keyed::KeyedOutcome;
mod app;
mod check;
mod class;
mod crowd;
pub use crowd::CrowdOutcome;
mod fast_rng;
mod oracle;
mod run;
mod setup;
mod totals;
use fast_rng::FastRng;
mod traffic;
pub use class::Class;
pub use totals::Totals;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use rpcd_transport::{Config, Endpoint, FailReason, MsgId};

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
    pub class: Option<Class>,
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
    /// Datagrams the network dropped at random (loss), and those it
    /// dropped because their link was cut.
    pub dropped: u64,
    pub cut_dropped: u64,
    /// Datagrams delayed by the extra reordering delay.
    pub reordered: u64,
    /// Failures the schedule explained, and the longest time after its
    /// explaining fault ended that one came.
    pub explained: u64,
    pub explained_lag_max: Duration,
    /// Seeds with faults: the longest time from the end of the last fault
    /// (or the last send) until every message had its outcome, and that
    /// time over the seed's bound, at most (per mille).
    pub settle_max: Duration,
    pub settle_permille_max: u64,
    /// Holds taken, cancels that failed a message, cancels too late.
    pub holds: u64,
    pub cancelled: u64,
    pub cancels_late: u64,
    /// Links cut (partitions applied) and nodes crashed.
    pub cuts: u64,
    pub crashes: u64,
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
    /// Seeds of the crowd class: what the crowd run counted.
    pub crowd: Option<CrowdOutcome>,
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
    /// The application cancels a message.
    Cancel {
        node: usize,
        epoch: u64,
        peer: usize,
        id: MsgId,
    },
    /// The application releases a hold.
    Release {
        node: usize,
        epoch: u64,
        peer: usize,
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
    /// When `send` accepted it.
    sent: T,
    /// The application cancelled it (see `app.rs`).
    cancel_requested: bool,
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
    /// Partitions and crashes, as scheduled (see `oracle.rs`).
    schedule: Vec<oracle::Fault>,
    /// `oracle::give_up` for this seed.
    give_up: Duration,
    /// When the last message was sent.
    last_sent: T,
    /// Per message sent, the chance the application cancels it; per tick,
    /// the chance it holds a peer (see `app.rs`).
    cancel_p: f64,
    hold_p: f64,
    /// The first time every message had its outcome (before the recovery
    /// rounds), and the liveness bound then in force.
    settled: Option<(T, T)>,
    rng: FastRng,
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
pub fn run_seed(seed: u64, class: Class) -> Result<Outcome, String> {
    let mut sim = Sim::new(seed, class);
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
    let mut out = sim.finish()?;
    if class.crowd {
        out.crowd = Some(crowd::run_crowd(seed)?);
    }
    Ok(out)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

impl Sim {
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
}

fn rand_time(rng: &mut FastRng, phase: Duration) -> Duration {
    us(rng.gen_range(0..=phase.as_micros() as u64))
}

/// Pseudo-random contents of a message, determined by its nonce and length.
fn content(nonce: u64, len: usize) -> Vec<u8> {
    let mut r = FastRng::new(nonce);
    let mut v = vec![0; len];
    r.fill_bytes(&mut v);
    // A readable header where there is room, for traces.
    let head = nonce.to_be_bytes();
    let n = head.len().min(len);
    v[..n].copy_from_slice(&head[..n]);
    v
}
