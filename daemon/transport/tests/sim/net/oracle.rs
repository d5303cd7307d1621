//! The failure oracle and the liveness bound: in a seed with partitions or
//! restarts a message may fail only where the schedule explains it, and
//! every message has its outcome within a stated time of the last fault.
//!
//! The schedule is the list of scheduled faults (`Fault`), each with the
//! pair of nodes it affects and its span `[start, end]`: a cut link between
//! `a` and `b` (either direction) from the cut to the heal; a crashed node
//! from the crash to the boot of its next incarnation. A `Failed` event of
//! a message from node `i` to node `p` at time `t` is explained when
//! - `PeerUnreachable`: some fault affecting `i` and `p` (a cut between
//!   them, or a crash of either) has `start <= t <= end + give_up`;
//! - `PeerRestarted`: `p` crashed at `start <= t`, and either `t <= end +
//!   give_up`, or (plaintext runs, where the simulator reads the epochs on
//!   the wire) the incarnation the message's data named is not `p`'s
//!   current one;
//! - `Cancelled`: never (the simulator's traffic cancels nothing).
//!
//! `give_up` bounds how long a channel takes to give up on a peer it cannot
//! hear, or to learn that it restarted: `peer_timeout` (silence while
//! busy) plus `retransmits_max + 2` backed-off RTOs at `rto_max` (a
//! datagram's own give-up, and the probe that learns a new epoch), plus
//! `revalidate_after` and `keepalive_interval` (a quiet channel confirms
//! the peer's epoch before it sends), plus four maximal one-way delays.
//!
//! So that datagram faults alone cannot explain a failure, seeds with
//! partitions or restarts draw loss of at most 15 %, at least 30
//! retransmissions, a `peer_timeout` of at least 25 maximal RTOs, and a
//! keepalive at most a 25th of it: a give-up then needs about 25
//! consecutive lost round trips (under 1e-10 at 39 % per round trip, loss
//! plus corruption plus truncation).
//!
//! Liveness: once the last fault has ended and the last message was sent,
//! every message has its outcome within `give_up`.

use std::time::Duration;

use rpcd_transport::{Config, FailReason};

use super::T;

/// A scheduled fault.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fault {
    /// The nodes it affects: a cut link's ends, or a crashed node twice.
    pub(super) a: usize,
    pub(super) b: usize,
    pub(super) start: T,
    pub(super) end: T,
    pub(super) crash: bool,
}

/// See the module doc.
pub(super) fn give_up(cfg: &Config, max_one_way: Duration) -> Duration {
    cfg.peer_timeout
        + cfg.rto_max * (cfg.retransmits_max + 2)
        + cfg.revalidate_after
        + cfg.keepalive_interval
        + max_one_way * 4
}

/// Why a failure of a message from `i` to `p` at `t` is allowed, or why not.
/// `restarted_unseen`: the data named an incarnation of `p` that is gone
/// (plaintext runs only).
pub(super) fn explain(
    schedule: &[Fault],
    give_up: Duration,
    i: usize,
    p: usize,
    t: T,
    reason: FailReason,
    restarted_unseen: bool,
) -> Result<Duration, String> {
    let within = |f: &Fault| f.start <= t && t <= f.end + give_up;
    let lag = |f: &Fault| t.saturating_sub(f.end);
    let found = match reason {
        FailReason::PeerUnreachable => schedule
            .iter()
            .filter(|f| {
                let pair = (f.a == i && f.b == p) || (f.a == p && f.b == i);
                let node = f.crash && (f.a == i || f.a == p);
                (pair || node) && within(f)
            })
            .map(lag)
            .min(),
        FailReason::PeerRestarted => {
            let crashes = schedule.iter().filter(|f| f.crash && f.a == p);
            if restarted_unseen && crashes.clone().any(|f| f.start <= t) {
                Some(Duration::ZERO)
            } else {
                crashes.filter(|f| within(f)).map(lag).min()
            }
        }
        FailReason::Cancelled => None,
    };
    found.ok_or_else(|| {
        let near: Vec<String> = schedule
            .iter()
            .filter(|f| f.a == i || f.a == p || f.b == i || f.b == p)
            .map(|f| format!("{f:?}"))
            .collect();
        format!(
            "no scheduled fault explains it (give-up bound {give_up:?}); faults on these nodes: [{}]",
            near.join(", ")
        )
    })
}
