//! The chaos test's fault schedule: a pure function of the seed and the run's length, so
//! a seed replays the same faults at the same offsets (the calls' interleaving with
//! them is real time and does not replay exactly).
//!
//! The run is a sequence of episodes. Each episode applies one or two faults, on
//! distinct hosts, holds them for 0.3–2.5 s ([`HOLD_MS`]), then undoes them (heals the
//! host's link, restarts what was killed); a gap of 0.1–0.8 s follows. An episode with a
//! long partition is held longer than the daemons' peer timeout ([`LONG_HOLD_MS`] against
//! [`PEER_TIMEOUT_MS`], which the chaos configures), so the other daemons declare the
//! partitioned one unreachable, fail what waits on it, and must recover after the heal.
//! Fault kinds are dealt from a shuffled deck of all eight, so every kind occurs once in
//! any eight consecutive faults: a 20 s run (about nine episodes) injects each at least
//! once.

use std::fmt;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rpcd_tests::netns::Direction;

/// Hosts in the chaos network.
pub const HOSTS: usize = 3;

/// Quiet time before the first fault, so calls are flowing when it lands.
pub const WARMUP: Duration = Duration::from_millis(500);

/// Shortest and longest time a fault is held.
pub const HOLD_MS: (u64, u64) = (300, 2500);

/// The daemons' `transport.peer_timeout_ms` in the chaos: silence after which a peer
/// with something outstanding is declared unreachable.
pub const PEER_TIMEOUT_MS: u64 = 1500;

/// Shortest and longest time a long partition is held: longer than [`PEER_TIMEOUT_MS`]
/// by 0.5–2 s.
pub const LONG_HOLD_MS: (u64, u64) = (PEER_TIMEOUT_MS + 500, PEER_TIMEOUT_MS + 2000);

/// Shortest and longest quiet gap between episodes.
pub const GAP_MS: (u64, u64) = (100, 800);

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A burst of random loss on one host's link.
    Loss,
    /// A host cut off the network.
    Partition,
    /// A host cut off the network for longer than the peer timeout.
    LongPartition,
    /// Datagrams from one host to another duplicated.
    Duplicate,
    /// Datagrams from one host to another corrupted.
    Corrupt,
    /// Datagrams from one host to another delayed out of order.
    Reorder,
    /// A daemon SIGKILLed, restarted when the episode ends.
    KillDaemon,
    /// A serving app SIGKILLed, restarted when the episode ends.
    KillApp,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 8] = [
        Kind::Loss,
        Kind::Partition,
        Kind::LongPartition,
        Kind::Duplicate,
        Kind::Corrupt,
        Kind::Reorder,
        Kind::KillDaemon,
        Kind::KillApp,
    ];
}

/// One fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Drop a fraction `p` of `host`'s traffic in `dir`.
    Loss { host: usize, dir: Direction, p: f64 },
    /// Drop everything in and out of `host`.
    Partition { host: usize },
    /// Drop everything in and out of `host`, for longer than the peer timeout.
    LongPartition { host: usize },
    /// Duplicate a fraction `p` of what `from` sends to `to`.
    Duplicate { from: usize, to: usize, p: f64 },
    /// Corrupt a fraction `p` of what `from` sends to `to`.
    Corrupt { from: usize, to: usize, p: f64 },
    /// Delay a fraction `p` of what `from` sends to `to` out of order.
    Reorder { from: usize, to: usize, p: f64 },
    /// SIGKILL `host`'s daemon.
    KillDaemon { host: usize },
    /// SIGKILL `host`'s serving app.
    KillApp { host: usize },
}

impl Action {
    /// The fault's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Action::Loss { .. } => Kind::Loss,
            Action::Partition { .. } => Kind::Partition,
            Action::LongPartition { .. } => Kind::LongPartition,
            Action::Duplicate { .. } => Kind::Duplicate,
            Action::Corrupt { .. } => Kind::Corrupt,
            Action::Reorder { .. } => Kind::Reorder,
            Action::KillDaemon { .. } => Kind::KillDaemon,
            Action::KillApp { .. } => Kind::KillApp,
        }
    }

    /// The host whose link or processes the fault changes (undone on that host).
    pub fn host(&self) -> usize {
        match *self {
            Action::Loss { host, .. }
            | Action::Partition { host }
            | Action::LongPartition { host }
            | Action::KillDaemon { host }
            | Action::KillApp { host } => host,
            Action::Duplicate { from, .. }
            | Action::Corrupt { from, .. }
            | Action::Reorder { from, .. } => from,
        }
    }
}

/// The host's name in the network (`a`, `b`, `c`).
pub fn name(host: usize) -> char {
    char::from(b'a' + host as u8)
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Action::Loss { host, dir, p } => {
                write!(f, "loss {:.0}% {dir:?} on {}", p * 100.0, name(host))
            }
            Action::Partition { host } => write!(f, "partition {}", name(host)),
            Action::LongPartition { host } => {
                write!(f, "partition {} (beyond the peer timeout)", name(host))
            }
            Action::Duplicate { from, to, p } => {
                write!(
                    f,
                    "duplicate {:.0}% {}->{}",
                    p * 100.0,
                    name(from),
                    name(to)
                )
            }
            Action::Corrupt { from, to, p } => {
                write!(f, "corrupt {:.0}% {}->{}", p * 100.0, name(from), name(to))
            }
            Action::Reorder { from, to, p } => {
                write!(f, "reorder {:.0}% {}->{}", p * 100.0, name(from), name(to))
            }
            Action::KillDaemon { host } => write!(f, "SIGKILL rpcd {}", name(host)),
            Action::KillApp { host } => write!(f, "SIGKILL app {}", name(host)),
        }
    }
}

/// Faults applied together at `start` (from the run's beginning) and undone after `hold`.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// When the faults are applied.
    pub start: Duration,
    /// How long they stay.
    pub hold: Duration,
    /// The faults, each on a host of its own.
    pub actions: Vec<Action>,
}

/// Schedules drawn for one seed before [`schedule`] settles for one lacking a kind.
const DRAWS_MAX: usize = 64;

/// The schedule of a run of `length` with `seed`: every episode ends within `length`. Its
/// first draw can run out of time before the deck has dealt every kind (the episode that
/// would not fit is dropped), so it draws again from the same generator until a schedule
/// holds every kind, at most [`DRAWS_MAX`] times: still a function of the seed.
pub fn schedule(seed: u64, length: Duration) -> Vec<Episode> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut drawn = draw(&mut rng, length);
    for _ in 1..DRAWS_MAX {
        let kinds: std::collections::BTreeSet<Kind> = drawn
            .iter()
            .flat_map(|e| &e.actions)
            .map(|a| a.kind())
            .collect();
        if kinds.len() == Kind::ALL.len() {
            break;
        }
        drawn = draw(&mut rng, length);
    }
    drawn
}

/// One schedule drawn from `rng`.
fn draw(rng: &mut ChaCha8Rng, length: Duration) -> Vec<Episode> {
    let mut deck: Vec<Kind> = Vec::new();
    let mut episodes = Vec::new();
    let mut t = WARMUP;
    loop {
        let mut hold = Duration::from_millis(rng.gen_range(HOLD_MS.0..=HOLD_MS.1));
        let mut hosts: Vec<usize> = (0..HOSTS).collect();
        hosts.shuffle(rng);
        let count = if rng.gen_bool(0.35) { 2 } else { 1 };
        let mut actions = Vec::new();
        for &host in &hosts[..count] {
            if deck.is_empty() {
                deck = Kind::ALL.to_vec();
                deck.shuffle(rng);
            }
            let kind = deck.pop().unwrap_or(Kind::Loss);
            let other = (host + rng.gen_range(1..HOSTS)) % HOSTS;
            let action = match kind {
                Kind::Loss => Action::Loss {
                    host,
                    dir: *[Direction::In, Direction::Out, Direction::Both]
                        .choose(rng)
                        .unwrap_or(&Direction::Both),
                    p: rng.gen_range(0.2..0.6),
                },
                Kind::Partition => Action::Partition { host },
                Kind::LongPartition => {
                    hold = Duration::from_millis(rng.gen_range(LONG_HOLD_MS.0..=LONG_HOLD_MS.1));
                    Action::LongPartition { host }
                }
                Kind::Duplicate => Action::Duplicate {
                    from: host,
                    to: other,
                    p: rng.gen_range(0.1..0.5),
                },
                Kind::Corrupt => Action::Corrupt {
                    from: host,
                    to: other,
                    p: rng.gen_range(0.05..0.3),
                },
                Kind::Reorder => Action::Reorder {
                    from: host,
                    to: other,
                    p: rng.gen_range(0.1..0.4),
                },
                Kind::KillDaemon => Action::KillDaemon { host },
                Kind::KillApp => Action::KillApp { host },
            };
            actions.push(action);
        }
        if t + hold > length {
            break;
        }
        episodes.push(Episode {
            start: t,
            hold,
            actions,
        });
        t += hold + Duration::from_millis(rng.gen_range(GAP_MS.0..=GAP_MS.1));
    }
    episodes
}
