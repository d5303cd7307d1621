//! Per-message accounting for the messages an owner asked to follow (a traced
//! RPC call): the datagrams that carried the message's fragments, how many of
//! them were retransmissions, when the first left, and the RTT samples they gave.
//!
//! Only followed messages pay for it: an untraced channel checks one empty map
//! per transmission. The map is bounded ([`TRACED_MAX`]); the owner takes each
//! record back with [`Channel::take_message_trace`](super::Channel::take_message_trace)
//! once the message is settled.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::MsgId;

/// Messages followed at once per channel; more are not followed.
pub const TRACED_MAX: usize = 1024;

/// RTT samples kept per message (the first ones).
pub const RTT_SAMPLES_MAX: usize = 16;

/// What the channel did for one followed message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageTrace {
    /// Datagrams sent carrying one of its fragments, retransmissions included.
    pub datagrams: u32,
    /// Of those, retransmissions.
    pub retransmissions: u32,
    /// When its first datagram left (None: still queued).
    pub first_sent: Option<Instant>,
    /// When its last fragment was acknowledged (None: not, or not yet).
    pub acked: Option<Instant>,
    /// RTT samples taken from its datagrams (Karn's rule: sent once).
    pub rtt_samples: Vec<Duration>,
}

/// The followed messages of one channel.
#[derive(Debug, Default)]
pub(super) struct Traced {
    map: HashMap<MsgId, MessageTrace>,
}

impl Traced {
    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Start following `msg`; false when [`TRACED_MAX`] are followed already.
    pub(super) fn follow(&mut self, msg: MsgId) -> bool {
        if self.map.len() >= TRACED_MAX && !self.map.contains_key(&msg) {
            return false;
        }
        self.map.entry(msg).or_default();
        true
    }

    pub(super) fn take(&mut self, msg: MsgId) -> Option<MessageTrace> {
        self.map.remove(&msg)
    }

    pub(super) fn on_transmit(&mut self, msg: MsgId, now: Instant, retransmission: bool) {
        if let Some(t) = self.map.get_mut(&msg) {
            t.datagrams += 1;
            if retransmission {
                t.retransmissions += 1;
            }
            t.first_sent.get_or_insert(now);
        }
    }

    pub(super) fn on_rtt_sample(&mut self, msg: MsgId, rtt: Duration) {
        if let Some(t) = self.map.get_mut(&msg) {
            if t.rtt_samples.len() < RTT_SAMPLES_MAX {
                t.rtt_samples.push(rtt);
            }
        }
    }

    pub(super) fn on_acked(&mut self, msg: MsgId, now: Instant) {
        if let Some(t) = self.map.get_mut(&msg) {
            t.acked = Some(now);
        }
    }
}
