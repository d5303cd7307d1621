//! A seed's class: its mode (plain or keyed), which scheduled faults it
//! has (partitions, restarts, both or neither), whether its datagram faults
//! are all drawn or only delay and reordering, how many messages it
//! sends, and whether it also runs the crowd (`crowd.rs`: more peers than
//! `peers_max`, and strangers, at one endpoint). Every choice is drawn from the seed's own RNG stream (not from
//! its bits), so each combination occurs among any few dozen seeds, in
//! either mode, and a run of consecutive seeds is no different from a run
//! of random ones.
//!
//! `SIM_MODE=plain|keyed` forces the mode (diagnosis: is a failure
//! keyed-specific?); `SIM_MESSAGES` forces the messages per seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What kind of run a seed is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// Authenticated mode, with forgeries (see `keyed.rs`).
    pub keyed: bool,
    /// Loss, duplication, corruption and truncation are off (delay, jitter
    /// and reordering stay).
    pub clean: bool,
    /// Links are cut and heal on a schedule.
    pub partitions: bool,
    /// Nodes crash and come back with a new epoch on a schedule.
    pub restarts: bool,
    /// Messages the seed sends, before the keyed reduction (`messages`).
    pub budget: u64,
    /// The seed also runs the crowd (`crowd.rs`).
    pub crowd: bool,
}

/// Chance that a seed also runs the crowd.
const CROWD_P: f64 = 0.15;
/// Chance that a seed is keyed.
const KEYED_P: f64 = 0.3;
/// A keyed message costs about ten plaintext ones in this build (X25519
/// handshakes and rekeys, retried under loss and partitions, and one AEAD
/// per datagram each way), so a keyed seed sends a quarter of its budget.
const KEYED_SHARE: u64 = 4;

impl Class {
    /// The class of `seed`; `forced_messages` is `SIM_MESSAGES`.
    pub fn of(seed: u64, forced_messages: Option<u64>) -> Class {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x636c_6173_735f_7369);
        let keyed = rng.gen_bool(KEYED_P);
        let clean = rng.gen_bool(0.25);
        let partitions = rng.gen_bool(0.4);
        let restarts = rng.gen_bool(0.3);
        // Many small seeds and some large ones: the small ones cover many
        // configurations, the large ones long runs (windows wrapping, many
        // rekeys, partitions under load).
        let drawn = if rng.gen_bool(0.85) {
            rng.gen_range(100..=1_000)
        } else {
            rng.gen_range(2_000..=8_000)
        };
        // Drawn last, so the draws above are those of the seeds before it existed.
        let crowd = rng.gen_bool(CROWD_P);
        let keyed = match std::env::var("SIM_MODE").as_deref() {
            Ok("keyed") => true,
            Ok("plain") => false,
            Ok(other) => panic!("SIM_MODE must be plain or keyed, got {other:?}"),
            Err(_) => keyed,
        };
        Class {
            keyed,
            clean,
            partitions,
            restarts,
            budget: forced_messages.unwrap_or(drawn),
            crowd,
        }
    }

    /// Neither partitions nor restarts: nothing may fail.
    pub fn strict(&self) -> bool {
        !self.partitions && !self.restarts
    }

    /// Messages the seed sends.
    pub fn messages(&self) -> u64 {
        if self.keyed {
            self.budget.div_ceil(KEYED_SHARE)
        } else {
            self.budget
        }
    }

    /// For failure messages: "keyed, partitions+restarts, clean".
    pub fn name(&self) -> String {
        let mode = if self.keyed { "keyed" } else { "plain" };
        let faults = match (self.partitions, self.restarts) {
            (false, false) => "datagram faults only",
            (true, false) => "partitions",
            (false, true) => "restarts",
            (true, true) => "partitions+restarts",
        };
        let clean = if self.clean { ", no loss" } else { "" };
        let crowd = if self.crowd { ", crowd" } else { "" };
        format!("{mode}, {faults}{clean}{crowd}")
    }
}
